//! Choosing the blob store by URL (`serve --store`): `file:///var/lib/nex-backup/blobs`
//! (the embedded default, under the data dir), `s3://bucket/prefix?endpoint=...`
//! (credentials from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` or the usual AWS
//! variables, or from an AWS credentials file with `credentials_file=/path` and
//! optionally `profile=name`), or `memory://` (tests).
//!
//! The S3 client keeps at most [`MAX_REQUESTS`] requests in flight, bounds connects and
//! requests by timeouts, and retries failed requests itself for a short while; the
//! [`super::layers`] above it retry longer.

use std::sync::Arc;

use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::limit::LimitStore;
use object_store::prefix::PrefixStore;
use object_store::{BackoffConfig, ClientConfigKey, RetryConfig};

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

/// Keys read from an AWS credentials file.
struct Credentials {
    key_id: String,
    secret: String,
    token: Option<String>,
}

/// Read `profile` of an AWS shared credentials file (`[name]` sections of
/// `aws_access_key_id = ...` lines). Errors name the file, never a value.
fn read_credentials(path: &std::path::Path, profile: &str) -> Result<Credentials, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("credentials file {}: {e}", path.display()))?;
    let (mut section, mut found) = (String::new(), std::collections::HashMap::new());
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().trim_start_matches("profile ").to_string();
        } else if section == profile
            && let Some((k, v)) = line.split_once('=')
        {
            found.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let mut take = |k: &str| found.remove(k).filter(|v| !v.is_empty());
    match (take("aws_access_key_id"), take("aws_secret_access_key")) {
        (Some(key_id), Some(secret)) => Ok(Credentials {
            key_id,
            secret,
            token: take("aws_session_token"),
        }),
        _ => Err(format!(
            "credentials file {}: profile [{profile}] needs aws_access_key_id and aws_secret_access_key",
            path.display()
        )),
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
            "credentials_file" => {
                let profile = query
                    .split('&')
                    .find_map(|p| p.strip_prefix("profile="))
                    .unwrap_or("default");
                let c = read_credentials(std::path::Path::new(v), profile)
                    .map_err(|reason| bad(url, reason))?;
                let b = b
                    .with_access_key_id(c.key_id)
                    .with_secret_access_key(c.secret);
                match c.token {
                    Some(t) => b.with_token(t),
                    None => b,
                }
            }
            "profile" => b,
            other => {
                return Err(bad(
                    url,
                    format!(
                        "unknown option {other:?} (endpoint, region, allow_http, virtual_hosted, credentials_file, profile)"
                    ),
                ));
            }
        };
    }
    // Set as config keys: `with_client_options` would replace what the URL set.
    b = b
        .with_config(
            AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
            "5s",
        )
        .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::Timeout), "60s")
        .with_retry(RetryConfig {
            backoff: BackoffConfig::default(),
            max_retries: 3,
            retry_timeout: Duration::from_secs(20),
        });
    if std::env::var_os("AWS_REGION").is_none() && !query.contains("region=") {
        b = b.with_region("us-east-1");
    }
    let s3 = b.build().map_err(|e| bad(url, e.to_string()))?;
    let location = format!("s3://{loc}");
    let s3 = LimitStore::new(s3, MAX_REQUESTS);
    let inner: Arc<dyn object_store::ObjectStore> = if prefix.trim_matches('/').is_empty() {
        Arc::new(s3)
    } else {
        Arc::new(PrefixStore::new(s3, prefix.trim_matches('/')))
    };
    Ok(Arc::new(ObjectBlobStore::new(inner, location)))
}
