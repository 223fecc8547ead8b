//! Identifiers: chunk ids, snapshot ids, and validated site/target names.

use std::fmt;

use crate::error::FormatError;

mod typed;
pub use typed::{AgentId, JobId, SiteId, SnapshotId, TargetName};

/// A chunk id: HMAC-SHA256 of the chunk plaintext under the site's id key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkId(pub [u8; 32]);

impl ChunkId {
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parse the 64 hex digits [`ChunkId::to_hex`] writes.
    pub fn from_hex(s: &str) -> Result<Self, FormatError> {
        let b = hex::decode(s).map_err(|e| FormatError::invalid("chunk id", e.to_string()))?;
        ChunkId::try_from(b.as_slice())
    }

    /// A short form for logs and errors (first 12 hex digits).
    pub fn short(&self) -> String {
        hex::encode(&self.0[..6])
    }
}

impl TryFrom<&[u8]> for ChunkId {
    type Error = FormatError;
    fn try_from(b: &[u8]) -> Result<Self, FormatError> {
        let arr: [u8; 32] = b.try_into().map_err(|_| {
            FormatError::invalid("chunk id", format!("{} bytes, expected 32", b.len()))
        })?;
        Ok(ChunkId(arr))
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({})", self.short())
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Validate a site, target or database-like name: 1..=64 chars of `[A-Za-z0-9_.-]`,
/// not starting with `.` or `-`. Names end up in file paths and catalog keys.
pub fn validate_name(kind: &str, name: &str) -> Result<(), FormatError> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
    if name.is_empty() || name.len() > 64 || !ok_chars || name.starts_with(['.', '-']) {
        return Err(FormatError::invalid(
            kind,
            format!(
                "{name:?} must be 1-64 characters of A-Z a-z 0-9 _ . - and not start with . or -"
            ),
        ));
    }
    Ok(())
}

/// Snapshot ids are `YYYYMMDDTHHMMSSZ-<8 hex>`: sortable by time and readable by people.
pub fn new_snapshot_id(unix_ms: u64) -> String {
    let ts =
        jiff::Timestamp::from_millisecond(unix_ms as i64).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let rand: u32 = rand::random();
    format!("{}-{rand:08x}", ts.strftime("%Y%m%dT%H%M%SZ"))
}

/// Check the shape of a snapshot id received from the network.
pub fn validate_snapshot_id(id: &str) -> Result<(), FormatError> {
    let b = id.as_bytes();
    let shape_ok = b.len() == 25
        && b[8] == b'T'
        && b[15] == b'Z'
        && b[16] == b'-'
        && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit)
        && b[17..].iter().all(|c| c.is_ascii_hexdigit());
    if !shape_ok {
        return Err(FormatError::invalid(
            "snapshot id",
            format!("{id:?} is malformed"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_ids_are_valid_and_sortable() {
        let a = new_snapshot_id(1_764_339_600_000); // 2025-11-28T14:20:00Z
        assert!(a.starts_with("20251128T142000Z-"), "{a}");
        validate_snapshot_id(&a).unwrap();
        let b = new_snapshot_id(1_764_339_601_000);
        assert!(a < b);
        assert!(validate_snapshot_id("../../etc/passwd").is_err());
    }

    #[test]
    fn names_are_checked() {
        validate_name("site", "acme-01.prod").unwrap();
        for bad in ["", "../x", "a/b", "-x", &"x".repeat(65), "ü"] {
            assert!(validate_name("site", bad).is_err(), "{bad}");
        }
    }
}
