//! An S3 (or S3-compatible) object store from a URL, as the controller's `--store`
//! and the agent's offline `restore --store` both take it:
//! `s3://bucket/prefix?endpoint=https://...&region=...&allow_http=true&virtual_hosted=true&credentials_file=/path&profile=name`.
//!
//! Credentials come from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (and the other
//! usual AWS variables), or from an AWS shared credentials file. The client bounds
//! connects (5 s) and requests (60 s), keeps at most `max_requests` in flight, and
//! retries failed requests itself for a short while. Errors never carry a credential.

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::limit::LimitStore;
use object_store::prefix::PrefixStore;
use object_store::{BackoffConfig, ClientConfigKey, ObjectStore, RetryConfig};

/// A store URL that cannot be used, and why (the URL without its query).
#[derive(Debug, thiserror::Error)]
#[error("{url}: {reason}")]
pub struct S3UrlError {
    pub url: String,
    pub reason: String,
}

fn bad(url: &str, reason: impl Into<String>) -> S3UrlError {
    S3UrlError {
        url: url.split('?').next().unwrap_or(url).to_string(),
        reason: reason.into(),
    }
}

/// A credentials file that could not be read or lacks the keys; names the file, never a
/// value.
#[derive(Debug, thiserror::Error)]
#[error("credentials file {}: {reason}", path.display())]
struct BadCredentials {
    path: std::path::PathBuf,
    reason: String,
}

/// Keys read from an AWS credentials file.
struct Credentials {
    key_id: String,
    secret: String,
    token: Option<String>,
}

/// Read `profile` of an AWS shared credentials file (`[name]` sections of
/// `aws_access_key_id = ...` lines). Errors name the file, never a value.
fn read_credentials(path: &std::path::Path, profile: &str) -> Result<Credentials, BadCredentials> {
    let text = std::fs::read_to_string(path).map_err(|e| BadCredentials {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
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
        _ => Err(BadCredentials {
            path: path.to_path_buf(),
            reason: format!(
                "profile [{profile}] needs aws_access_key_id and aws_secret_access_key"
            ),
        }),
    }
}

/// Apply the URL's query options to the builder.
fn with_options(
    url: &str,
    query: &str,
    mut b: AmazonS3Builder,
) -> Result<AmazonS3Builder, S3UrlError> {
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
                    .map_err(|e| bad(url, e.to_string()))?;
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
    Ok(b)
}

/// An S3 client for the `s3://` URL, before the request limit and the prefix.
pub struct Client {
    pub s3: object_store::aws::AmazonS3,
    /// The key prefix inside the bucket (no leading or trailing `/`; may be empty).
    pub prefix: String,
    /// `s3://bucket/prefix`, shown to people.
    pub location: String,
}

/// Build the client the `s3://` URL names.
pub fn client(url: &str) -> Result<Client, S3UrlError> {
    let Some(rest) = url.strip_prefix("s3://") else {
        return Err(bad(url, "not an s3:// URL"));
    };
    let (loc, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (bucket, prefix) = loc.split_once('/').unwrap_or((loc, ""));
    if bucket.len() < 3 {
        return Err(bad(url, "the bucket name needs at least 3 characters"));
    }
    let mut b = with_options(
        url,
        query,
        AmazonS3Builder::from_env().with_bucket_name(bucket),
    )?;
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
    Ok(Client {
        s3,
        prefix: prefix.trim_matches('/').to_string(),
        location: format!("s3://{loc}"),
    })
}

/// Open the `s3://` URL: the store (under the URL's prefix) and its location shown to
/// people (`s3://bucket/prefix`).
pub fn open(url: &str, max_requests: usize) -> Result<(Arc<dyn ObjectStore>, String), S3UrlError> {
    let Client {
        s3,
        prefix,
        location,
    } = client(url)?;
    let s3 = LimitStore::new(s3, max_requests);
    let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
        Arc::new(s3)
    } else {
        Arc::new(PrefixStore::new(s3, prefix))
    };
    Ok((store, location))
}
