//! `nex-backup-shared`: everything the agent and the controller agree on.
//!
//! Module map:
//! - [`pb`]: generated protobuf/gRPC code (package `nexbackup.v1`). It stops at the edge:
//!   callers convert into the domain types below with `TryFrom`, validated once.
//! - [`clock`]: the wall clock (`now_ms`, `unix_now`) and the stop signal.
//! - [`ids`]: [`ids::ChunkId`], [`ids::SnapshotId`], site/target name validation.
//! - [`keys`]: the site master key, HKDF-derived sub-keys, the agent's key file.
//! - [`seal`]: the sealed-object container (header + AES-256-GCM) and its errors.
//! - [`chunk`]: chunk codec: id (HMAC-SHA256), zstd, seal; and the verifying decoder.
//! - [`chunker`]: streaming content-defined chunking (FastCDC) over any `AsyncRead`,
//!   with a whole-stream SHA-256 and stall detection.
//! - [`files`]: file and environment sets: the archive stream and its per-file entries.
//! - [`manifest`]: the snapshot manifest domain type, sealing and validation.
//! - [`keyring`]: the agent's key epochs on disk (current epoch seals new snapshots).
//! - [`recovery`]: sealing a master key to offline X25519 recovery keys.
//! - [`statecopy`]: the controller's state copy sealed to the recovery keys.
//! - [`retry`]: the one retry policy (exponential backoff with jitter, backon).
//! - [`s3`]: an S3 object store from an `s3://bucket/prefix?...` URL.
//! - [`tls`]: TLS 1.3 client setup pinned to the controller CA fingerprint.
//! - [`identity`]: the agent identity inside a client certificate.
//! - [`text`]: free text from across the trust boundary, capped and escaped.
//! - [`error`]: [`error::FormatError`], the format-level error type.
//!
//! The on-disk format is specified in `docs/format.md`.

pub mod chunk;
pub mod chunker;
pub mod clock;
pub mod error;
pub mod files;
pub mod identity;
pub mod ids;
pub mod keyring;
pub mod keys;
pub mod manifest;
pub mod recovery;
pub mod retry;
pub mod s3;
pub mod seal;
pub mod statecopy;
pub mod text;
pub mod tls;

/// Generated protocol code for `nexbackup.v1`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("nexbackup.v1");
}

/// Version of this software, reported in hellos and manifests.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Largest gRPC message either side accepts (a chunk is at most 1 MiB plus header).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
