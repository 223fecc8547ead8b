//! S3 Object Lock on an off-site copy (`serve --copy-to s3://... --copy-lock 400d`):
//! every object the copy worker writes carries a retention in the PUT itself, and the
//! retention of objects a kept snapshot still needs is extended before it runs out.
//! While an object version is locked, no one (not the controller, not whoever holds
//! its credentials) can delete or overwrite it; a plain DELETE only hides it behind a
//! delete marker, and the locked version stays readable by its version id.
//!
//! object_store has no Object Lock calls, so the four requests used here (bucket lock
//! configuration, a locked PUT, a retention read and a retention extension) are signed
//! by object_store's own SigV4 signer (`signed_url_opts`, which binds the lock headers
//! into the signature, as S3 requires for `x-amz-*` headers) and sent with reqwest.
//! Errors name the key, never the signed URL (it carries the access key id).

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use md5::Digest;
use object_store::path::Path;
use object_store::signer::{SignedUrlOptions, Signer};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};

/// The Object Lock retention mode (S3's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// No one can shorten or remove the retention, not even the account's root user.
    Compliance,
    /// Users with `s3:BypassGovernanceRetention` can remove it.
    Governance,
}

/// A lock mode that is neither.
#[derive(Debug, thiserror::Error)]
#[error("{0:?}: use compliance or governance")]
pub struct BadLockMode(String);

impl std::str::FromStr for LockMode {
    type Err = BadLockMode;
    fn from_str(s: &str) -> Result<Self, BadLockMode> {
        match s.to_ascii_lowercase().as_str() {
            "compliance" => Ok(LockMode::Compliance),
            "governance" => Ok(LockMode::Governance),
            _ => Err(BadLockMode(s.to_string())),
        }
    }
}

impl LockMode {
    fn as_s3(self) -> &'static str {
        match self {
            LockMode::Compliance => "COMPLIANCE",
            LockMode::Governance => "GOVERNANCE",
        }
    }
}

/// An Object Lock request that failed, naming the object and never a credential.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "{location}: the bucket has no S3 Object Lock ({why}); create it with Object Lock enabled (for example `aws s3api create-bucket --object-lock-enabled-for-bucket`) or drop --copy-lock"
    )]
    NotEnabled { location: String, why: String },
    #[error("--copy-to {0}")]
    Url(#[from] nex_backup_shared::s3::S3UrlError),
    #[error("{location}: {reason}")]
    Client { location: String, reason: String },
    #[error("{location}/{key}: {op} failed: {reason}")]
    Request {
        location: String,
        key: String,
        op: &'static str,
        reason: String,
    },
}

/// Object Lock calls on one `s3://` copy destination.
pub struct ObjectLock {
    s3: object_store::aws::AmazonS3,
    prefix: String,
    location: String,
    http: reqwest::Client,
    pub mode: LockMode,
    /// How long each copied object stays locked at least.
    pub period: Duration,
}

/// The ISO 8601 form S3 takes for a retain-until date.
fn iso(ms: u64) -> String {
    DateTime::<Utc>::from_timestamp_millis(i64::try_from(ms).unwrap_or(i64::MAX))
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The text of the first `<tag>` in an S3 XML answer.
fn xml_text<'a>(body: &'a str, tag: &str) -> Option<&'a str> {
    let start = body.find(&format!("<{tag}>"))? + tag.len() + 2;
    let len = body[start..].find(&format!("</{tag}>"))?;
    Some(body[start..start + len].trim())
}

fn header(name: &'static str, value: &str) -> (HeaderName, HeaderValue) {
    (
        HeaderName::from_static(name),
        HeaderValue::from_str(value).unwrap_or(HeaderValue::from_static("")),
    )
}

impl ObjectLock {
    /// The lock client for the copy at `url` (an `s3://` URL).
    pub fn open(url: &str, mode: LockMode, period: Duration) -> Result<Self, LockError> {
        let c = nex_backup_shared::s3::client(url)?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| LockError::Client {
                location: c.location.clone(),
                reason: e.to_string(),
            })?;
        Ok(ObjectLock {
            s3: c.s3,
            prefix: c.prefix,
            location: c.location,
            http,
            mode,
            period,
        })
    }

    pub fn location(&self) -> &str {
        &self.location
    }

    fn path(&self, key: &str) -> Path {
        if self.prefix.is_empty() {
            Path::from(key)
        } else {
            Path::from(format!("{}/{key}", self.prefix))
        }
    }

    fn fail(&self, key: &str, op: &'static str, reason: impl ToString) -> LockError {
        LockError::Request {
            location: self.location.clone(),
            key: key.to_string(),
            op,
            reason: reason.to_string(),
        }
    }

    /// Sign and send one request; its status and body.
    async fn send(
        &self,
        op: &'static str,
        method: Method,
        path: &Path,
        query: &[(&str, &str)],
        signed: &[(HeaderName, HeaderValue)],
        body: Option<Bytes>,
    ) -> Result<(StatusCode, String), LockError> {
        let key = path.as_ref();
        let mut headers = HeaderMap::new();
        let mut opts = SignedUrlOptions::new().with_query(query.iter().copied());
        for (k, v) in signed {
            headers.insert(k.clone(), v.clone());
            opts = opts.with_signed_header(k.clone(), v.clone());
        }
        let url = self
            .s3
            .signed_url_opts(method.clone(), path, Duration::from_secs(300), &opts)
            .await
            .map_err(|e| self.fail(key, op, e))?;
        let mut req = self.http.request(method, url).headers(headers);
        if let Some(b) = body {
            let md5 = md5::Md5::digest(&b);
            req = req
                .header("content-md5", base64::prelude::BASE64_STANDARD.encode(md5))
                .body(b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| self.fail(key, op, e.without_url()))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| self.fail(key, op, e.without_url()))?;
        Ok((status, text))
    }

    /// Check that the bucket has Object Lock enabled: a copy is never written unlocked
    /// when a lock was asked for.
    pub async fn check_bucket(&self) -> Result<(), LockError> {
        let (status, body) = self
            .send(
                "reading the bucket's Object Lock configuration",
                Method::GET,
                &Path::from(""),
                &[("object-lock", "")],
                &[],
                None,
            )
            .await?;
        let enabled =
            status.is_success() && xml_text(&body, "ObjectLockEnabled") == Some("Enabled");
        if enabled {
            return Ok(());
        }
        let why = match xml_text(&body, "Code") {
            Some(code) => format!("the server answered {status} {code}"),
            None => format!("the server answered {status}"),
        };
        Err(LockError::NotEnabled {
            location: self.location.clone(),
            why,
        })
    }

    /// PUT `key` locked until `until_ms`.
    pub async fn put(&self, key: &str, data: Bytes, until_ms: u64) -> Result<(), LockError> {
        let signed = [
            header("x-amz-object-lock-mode", self.mode.as_s3()),
            header("x-amz-object-lock-retain-until-date", &iso(until_ms)),
        ];
        let (status, body) = self
            .send(
                "a locked PUT",
                Method::PUT,
                &self.path(key),
                &[],
                &signed,
                Some(data),
            )
            .await?;
        if status.is_success() {
            return Ok(());
        }
        Err(self.fail(key, "a locked PUT", answer(status, &body)))
    }

    /// Extend the retention of `key` to `until_ms` (S3 refuses to shorten a retention).
    pub async fn extend(&self, key: &str, until_ms: u64) -> Result<(), LockError> {
        let xml = format!(
            r#"<Retention xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Mode>{}</Mode><RetainUntilDate>{}</RetainUntilDate></Retention>"#,
            self.mode.as_s3(),
            iso(until_ms)
        );
        let (status, body) = self
            .send(
                "extending the retention",
                Method::PUT,
                &self.path(key),
                &[("retention", "")],
                &[],
                Some(Bytes::from(xml)),
            )
            .await?;
        if status.is_success() {
            return Ok(());
        }
        Err(self.fail(key, "extending the retention", answer(status, &body)))
    }

    /// When the current version of `key` is locked until (ms), if it is locked.
    pub async fn retained_until(&self, key: &str) -> Result<Option<u64>, LockError> {
        let (status, body) = self
            .send(
                "reading the retention",
                Method::GET,
                &self.path(key),
                &[("retention", "")],
                &[],
                None,
            )
            .await?;
        if !status.is_success() {
            if xml_text(&body, "Code") == Some("NoSuchObjectLockConfiguration") {
                return Ok(None);
            }
            return Err(self.fail(key, "reading the retention", answer(status, &body)));
        }
        let until = xml_text(&body, "RetainUntilDate")
            .and_then(|d| DateTime::parse_from_rfc3339(d).ok())
            .and_then(|d| u64::try_from(d.timestamp_millis()).ok());
        Ok(until)
    }
}

/// An S3 error answer in a line: its status and code.
fn answer(status: StatusCode, body: &str) -> String {
    match (xml_text(body, "Code"), xml_text(body, "Message")) {
        (Some(c), Some(m)) => format!("{status} {c}: {m}"),
        (Some(c), None) => format!("{status} {c}"),
        _ => status.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_answers_read_as_s3_writes_them() {
        assert_eq!(iso(1_767_574_800_000), "2026-01-05T01:00:00.000Z");
        let body = "<Error><Code>AccessDenied</Code><Message>Access Denied.</Message></Error>";
        assert_eq!(xml_text(body, "Code"), Some("AccessDenied"));
        assert_eq!(
            answer(StatusCode::FORBIDDEN, body),
            "403 Forbidden AccessDenied: Access Denied."
        );
        assert_eq!(xml_text("<a>x</a>", "b"), None);
    }
}
