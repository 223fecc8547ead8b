//! Choosing the blob store by URL (`serve --store`): `file:///var/lib/nex-backup/blobs`
//! (the embedded default, under the data dir), `s3://bucket/prefix?endpoint=...`
//! (credentials from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` or the usual AWS
//! variables), or `memory://` (tests).

use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::prefix::PrefixStore;

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

/// Open the blob store `url` names.
pub fn open(url: &str) -> Result<Arc<dyn BlobStore>, StoreUrlError> {
    if let Some(p) = url.strip_prefix("file://") {
        let store = FsStore::open(std::path::Path::new(p)).map_err(|e| bad(url, e.to_string()))?;
        return Ok(Arc::new(store));
    }
    if url == "memory://" {
        return Ok(Arc::new(ObjectBlobStore::memory()));
    }
    let Some(rest) = url.strip_prefix("s3://") else {
        return Err(bad(
            url,
            "use file:///path, s3://bucket/prefix?endpoint=... or memory://",
        ));
    };
    let (loc, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (bucket, prefix) = loc.split_once('/').unwrap_or((loc, ""));
    if bucket.len() < 3 {
        return Err(bad(url, "the bucket name needs at least 3 characters"));
    }
    let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        b = match k {
            "endpoint" => b.with_endpoint(v),
            "region" => b.with_region(v),
            "allow_http" => b.with_allow_http(v == "true"),
            "virtual_hosted" => b.with_virtual_hosted_style_request(v == "true"),
            other => {
                return Err(bad(
                    url,
                    format!(
                        "unknown option {other:?} (endpoint, region, allow_http, virtual_hosted)"
                    ),
                ));
            }
        };
    }
    if std::env::var_os("AWS_REGION").is_none() && !query.contains("region=") {
        b = b.with_region("us-east-1");
    }
    let s3 = b.build().map_err(|e| bad(url, e.to_string()))?;
    let location = format!("s3://{loc}");
    let inner: Arc<dyn object_store::ObjectStore> = if prefix.trim_matches('/').is_empty() {
        Arc::new(s3)
    } else {
        Arc::new(PrefixStore::new(s3, prefix.trim_matches('/')))
    };
    Ok(Arc::new(ObjectBlobStore::new(inner, location)))
}
