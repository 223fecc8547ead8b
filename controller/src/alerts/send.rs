//! Delivery of one notice to one channel: e-mail over SMTP (lettre, rustls) or a signed
//! webhook (reqwest, rustls). Secrets are read from the environment or a file at send
//! time; errors name the channel and the secret's source, never the secret.

use std::time::Duration;

use hmac::{Hmac, Mac};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use sha2::Sha256;

use crate::catalog::alerts::{ChannelKind, ChannelRecord, OutboxEntry, SecretRef, SmtpTls};

/// How long one SMTP conversation may take.
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);
/// Most bytes of a webhook answer kept for the operator.
const ANSWER_MAX: usize = 300;

/// A failed delivery, naming the channel.
#[derive(Debug, thiserror::Error)]
#[error("channel {channel}: {reason}")]
pub struct SendError {
    pub channel: String,
    pub reason: String,
}

fn fail(c: &ChannelRecord, reason: impl std::fmt::Display) -> SendError {
    SendError {
        channel: c.name.clone(),
        reason: reason.to_string(),
    }
}

/// Read a secret; the error says where it looked, never what it found.
pub fn read_secret(c: &ChannelRecord, s: &SecretRef) -> Result<String, SendError> {
    match s {
        SecretRef::Env(var) => std::env::var(var).map_err(|_| {
            fail(c, format!("the environment variable {var} (the channel's secret) is not set in the controller's environment"))
        }),
        SecretRef::File(path) => std::fs::read_to_string(path)
            .map(|t| t.lines().next().unwrap_or_default().trim().to_string())
            .map_err(|e| fail(c, format!("read the channel's secret file {path}: {e}"))),
    }
}

/// Whether a host name is this machine (plain SMTP is allowed only there).
pub fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Deliver `n` on `c`; returns what the server answered.
pub async fn deliver(c: &ChannelRecord, n: &OutboxEntry) -> Result<String, SendError> {
    match &c.kind {
        ChannelKind::Email { .. } => email(c, n).await,
        ChannelKind::Webhook { .. } => webhook(c, n).await,
    }
}

async fn email(c: &ChannelRecord, n: &OutboxEntry) -> Result<String, SendError> {
    let ChannelKind::Email {
        host,
        port,
        tls,
        from,
        to,
        username,
        password,
    } = &c.kind
    else {
        unreachable!("email channel")
    };
    let from: Mailbox = from
        .parse()
        .map_err(|e| fail(c, format!("from address {from}: {e}")))?;
    let mut b = Message::builder()
        .from(from)
        .subject(n.subject.clone())
        .message_id(Some(format!("<{}>", n.message_id)));
    for r in to {
        b = b.to(r
            .parse()
            .map_err(|e| fail(c, format!("recipient {r}: {e}")))?);
    }
    let msg = b
        .multipart(MultiPart::alternative_plain_html(
            n.text.clone(),
            n.html.clone(),
        ))
        .map_err(|e| fail(c, format!("build the message: {e}")))?;
    let builder = match tls {
        SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host),
        SmtpTls::Implicit => AsyncSmtpTransport::<Tokio1Executor>::relay(host),
        SmtpTls::None if is_loopback(host) => Ok(
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
        ),
        SmtpTls::None => {
            return Err(fail(
                c,
                format!(
                    "plain SMTP (no TLS) is refused to {host}: only to this machine (localhost)"
                ),
            ));
        }
    }
    .map_err(|e| fail(c, format!("SMTP server {host}:{port}: {e}")))?;
    let mut builder = builder.port(*port).timeout(Some(SMTP_TIMEOUT));
    if let Some(user) = username {
        let pw = match password {
            Some(p) => read_secret(c, p)?,
            None => String::new(),
        };
        // PLAIN first, then LOGIN; the server's answer to a bad password is reported.
        builder = builder
            .credentials(Credentials::new(user.clone(), pw))
            .authentication(vec![Mechanism::Plain, Mechanism::Login]);
    }
    let transport = builder.build();
    let resp = transport
        .send(msg)
        .await
        .map_err(|e| fail(c, format!("SMTP server {host}:{port}: {}", smtp_reason(&e))))?;
    Ok(format!(
        "{} {}",
        resp.code(),
        resp.message().collect::<Vec<_>>().join(" ")
    ))
}

/// lettre's error with its causes (the first line alone often says only "Connection error").
fn smtp_reason(e: &lettre::transport::smtp::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// The webhook signature: hex HMAC-SHA256 of `timestamp.body` under the secret.
pub fn signature(secret: &str, timestamp: u64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("{timestamp}.{body}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

async fn webhook(c: &ChannelRecord, n: &OutboxEntry) -> Result<String, SendError> {
    let ChannelKind::Webhook {
        url,
        secret,
        timeout_secs,
    } = &c.kind
    else {
        unreachable!("webhook channel")
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs((*timeout_secs).clamp(1, 120)))
        .build()
        .map_err(|e| fail(c, format!("HTTP client: {e}")))?;
    let ts = nex_backup_shared::clock::unix_now().max(0) as u64;
    let mut req = client
        .post(url)
        .header("content-type", "application/json")
        .header("idempotency-key", &n.message_id)
        .header("x-nex-timestamp", ts.to_string());
    if let Some(s) = secret {
        let key = read_secret(c, s)?;
        req = req.header(
            "x-nex-signature",
            format!("sha256={}", signature(&key, ts, &n.json)),
        );
    }
    let resp = req.body(n.json.clone()).send().await.map_err(|e| {
        fail(
            c,
            format!("POST {}: {}", redact_url(url), reqwest_reason(e)),
        )
    })?;
    let status = resp.status();
    let text: String = resp
        .text()
        .await
        .unwrap_or_default()
        .chars()
        .take(ANSWER_MAX)
        .collect();
    if status.is_success() {
        Ok(format!("HTTP {status} {text}").trim().to_string())
    } else {
        Err(fail(
            c,
            format!("POST {} answered HTTP {status}: {text}", redact_url(url)),
        ))
    }
}

fn reqwest_reason(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut s = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// A URL without its query (tokens often travel there) or user info.
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            u.set_query(None);
            let _ = u.set_password(None);
            let _ = u.set_username("");
            u.to_string()
        }
        Err(_) => "(invalid URL)".into(),
    }
}
