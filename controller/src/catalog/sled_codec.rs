//! What every sled tree of the catalog shares: composite keys, the JSON record codec,
//! error mapping, and the per-site commit sequence garbage collection is fenced by.

use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::transaction::{TransactionalTree, UnabortableTransactionError};

use super::{CatalogError, Result};

/// A sled failure; a full disk (or quota) is told apart, so that callers can say whose
/// disk is full instead of failing as if it were a passing fault.
pub(super) fn sled_err(e: sled::Error) -> CatalogError {
    match &e {
        sled::Error::Io(io) if crate::store::is_disk_full(io) => {
            CatalogError::DiskFull(e.to_string())
        }
        _ => storage(e),
    }
}

pub(super) fn storage(e: impl std::fmt::Display) -> CatalogError {
    CatalogError::Storage(e.to_string())
}

pub(super) fn key(parts: &[&[u8]]) -> Vec<u8> {
    parts.join(&0u8)
}

pub(super) fn decode<T: DeserializeOwned>(k: &[u8], v: &[u8]) -> Result<T> {
    serde_json::from_slice(v).map_err(|e| CatalogError::Corrupt {
        key: String::from_utf8_lossy(k).into_owned(),
        reason: e.to_string(),
    })
}

pub(super) fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("catalog records serialize")
}

pub(super) fn seq_key(site: &str) -> Vec<u8> {
    [b"commit_seq/".as_slice(), site.as_bytes()].concat()
}

pub(super) fn read_seq(v: Option<sled::IVec>) -> u64 {
    v.and_then(|v| v.as_ref().try_into().ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0)
}

pub(super) fn bump_seq(
    meta: &TransactionalTree,
    k: &[u8],
) -> std::result::Result<(), UnabortableTransactionError> {
    let next = read_seq(meta.get(k)?) + 1;
    meta.insert(k, &next.to_le_bytes())?;
    Ok(())
}
