//! Blobs in an object store (the `object_store` crate): S3 or any S3-compatible endpoint,
//! and memory for tests. Write-once comes from the engine itself: a conditional create
//! (`PutMode::Create`, S3's `If-None-Match: *`) never replaces a stored object.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use super::{BlobMeta, BlobStore, BlobStream, Result, StoreError};

/// See module docs.
pub struct ObjectBlobStore {
    inner: Arc<dyn ObjectStore>,
    location: String,
}

fn err(key: &str, e: object_store::Error) -> StoreError {
    StoreError::Io {
        key: key.into(),
        source: std::io::Error::other(e.to_string()),
    }
}

fn path(key: &str) -> Result<ObjectPath> {
    let clean = !key.is_empty()
        && key
            .split('/')
            .all(|p| !p.is_empty() && p != "." && p != "..");
    if !clean {
        return Err(StoreError::BadKey { key: key.into() });
    }
    ObjectPath::parse(key).map_err(|_| StoreError::BadKey { key: key.into() })
}

impl ObjectBlobStore {
    pub fn new(inner: Arc<dyn ObjectStore>, location: String) -> Self {
        ObjectBlobStore { inner, location }
    }

    /// An in-memory store (tests).
    pub fn memory() -> Self {
        Self::new(
            Arc::new(object_store::memory::InMemory::new()),
            "memory://".into(),
        )
    }
}

#[async_trait]
impl BlobStore for ObjectBlobStore {
    async fn put(&self, key: &str, data: Bytes) -> Result<bool> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .inner
            .put_opts(&path(key)?, PutPayload::from(data), opts)
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(err(key, e)),
        }
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        match self.inner.get(&path(key)?).await {
            Ok(r) => Ok(Some(r.bytes().await.map_err(|e| err(key, e))?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(err(key, e)),
        }
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        match self.inner.head(&path(key)?).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(err(key, e)),
        }
    }

    async fn delete(&self, key: &str) -> Result<()> {
        match self.inner.delete(&path(key)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(err(key, e)),
        }
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BlobStream<'a> {
        // Listing is by whole path segments: list the directory part, then filter.
        let dir = prefix.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        let from = (!dir.is_empty()).then(|| ObjectPath::from(dir));
        self.inner
            .list(from.as_ref())
            .map_ok(|m| BlobMeta {
                key: m.location.to_string(),
                size: m.size,
                modified_unix_ms: m.last_modified.timestamp_millis().max(0) as u64,
            })
            .map_err(move |e| err(prefix, e))
            .try_filter(move |m| futures::future::ready(m.key.starts_with(prefix)))
            .boxed()
    }

    fn location(&self) -> String {
        self.location.clone()
    }

    async fn free_bytes(&self) -> Result<Option<u64>> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_store_conformance() {
        super::super::conformance::run_all(&ObjectBlobStore::memory()).await;
    }

    #[tokio::test]
    async fn keys_that_leave_their_place_are_refused() {
        let s = ObjectBlobStore::memory();
        for k in ["", "a//b", "../x", "a/./b"] {
            assert!(s.put(k, Bytes::from_static(b"x")).await.is_err(), "{k:?}");
        }
    }
}
