//! Choosing the blob store by URL (`serve --store`): `file:///var/lib/nex-backup/blobs`
//! (the embedded default, under the data dir), `s3://bucket/prefix?endpoint=...`
//! (credentials from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` or the usual AWS
//! variables, or from an AWS credentials file with `credentials_file=/path` and
//! optionally `profile=name`), or `memory://` (tests).
//!
//! The S3 client ([`nex_backup_shared::s3`], shared with the agent's offline restore)
//! keeps at most [`MAX_REQUESTS`] requests in flight, bounds connects and requests by
//! timeouts, and retries failed requests itself for a short while; the
//! [`super::layers`] above it retry longer.

use std::sync::Arc;

use super::BlobStore;
use super::fs::FsStore;
use super::object::ObjectBlobStore;

/// A store URL that cannot be used, and why; never carries credentials.
#[derive(Debug, thiserror::Error)]
pub enum StoreUrlError {
    #[error("--store {url}: {reason}")]
    Bad { url: String, reason: String },
}

fn bad(url: &str, reason: impl Into<String>) -> StoreUrlError {
    StoreUrlError::Bad {
        url: url.split('?').next().unwrap_or(url).to_string(),
        reason: reason.into(),
    }
}

/// Requests one controller keeps in flight to an object store.
pub const MAX_REQUESTS: usize = 64;

/// Open the blob store `url` names.
pub fn open(url: &str) -> Result<Arc<dyn BlobStore>, StoreUrlError> {
    if let Some(p) = url.strip_prefix("file://") {
        let store = FsStore::open(std::path::Path::new(p)).map_err(|e| bad(url, e.to_string()))?;
        return Ok(Arc::new(store));
    }
    if url == "memory://" {
        return Ok(Arc::new(ObjectBlobStore::memory()));
    }
    if !url.starts_with("s3://") {
        return Err(bad(
            url,
            "use file:///path, s3://bucket/prefix?endpoint=... or memory://",
        ));
    }
    let (inner, location) =
        nex_backup_shared::s3::open(url, MAX_REQUESTS).map_err(|e| bad(url, e.reason))?;
    Ok(Arc::new(ObjectBlobStore::new(inner, location)))
}
