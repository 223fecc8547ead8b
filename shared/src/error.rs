//! Errors of the archive format. Each failure mode has its own variant so that a restore
//! can say exactly what is wrong with which object (see `docs/error-handling.md`).

use thiserror::Error;

/// What went wrong decoding or verifying a stored object.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FormatError {
    #[error("{what}: not a NEX Backup object (bad magic)")]
    BadMagic { what: String },
    #[error("{what}: unsupported format version {version}")]
    UnsupportedVersion { what: String, version: u8 },
    #[error("{what}: truncated ({actual} bytes, expected {expected})")]
    Truncated {
        what: String,
        actual: usize,
        expected: usize,
    },
    #[error("{what}: sealed with a different key (key id {found}, ours {ours})")]
    WrongKey {
        what: String,
        found: String,
        ours: String,
    },
    #[error("{what}: stored under the wrong name: it holds object {found}")]
    Swapped { what: String, found: String },
    #[error("{what}: authentication failed: the object was modified or corrupted")]
    Corrupted { what: String },
    #[error("{what}: decompression failed: {reason}")]
    Decompress { what: String, reason: String },
    #[error(
        "{what}: content does not match its id (expected length {expected_len}, got {actual_len})"
    )]
    ContentMismatch {
        what: String,
        expected_len: usize,
        actual_len: usize,
    },
    #[error("{what}: invalid: {reason}")]
    Invalid { what: String, reason: String },
    #[error("stream {stream}: SHA-256 mismatch (manifest {expected}, restored {actual})")]
    StreamHash {
        stream: String,
        expected: String,
        actual: String,
    },
}

impl FormatError {
    pub(crate) fn invalid(what: impl Into<String>, reason: impl Into<String>) -> Self {
        FormatError::Invalid {
            what: what.into(),
            reason: reason.into(),
        }
    }
}
