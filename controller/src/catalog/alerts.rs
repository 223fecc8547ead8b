//! Alerting records: notification channels, rule overrides, incidents and the outbox of
//! notices still to deliver. A separate trait from [`super::Catalog`] (the catalog split
//! by area); the sled catalog implements both.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::Result;

/// How an e-mail channel talks to its SMTP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// STARTTLS on the submission port (default 587).
    Starttls,
    /// TLS from the first byte (default port 465).
    Implicit,
    /// No TLS: allowed only to a loopback address.
    None,
}

/// Where a secret is read from when a notice is sent; the secret itself is never stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretRef {
    /// An environment variable of the controller process.
    Env(String),
    /// A file readable by the controller (first line).
    File(String),
}

/// What a channel is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    Email {
        host: String,
        port: u16,
        tls: SmtpTls,
        from: String,
        to: Vec<String>,
        username: Option<String>,
        password: Option<SecretRef>,
    },
    Webhook {
        url: String,
        secret: Option<SecretRef>,
        timeout_secs: u64,
    },
}

/// A named notification channel: global (the IT company's on-call list, `site` empty)
/// or a site's own (that customer's contacts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelRecord {
    pub v: u32,
    pub name: String,
    pub site: String,
    pub kind: ChannelKind,
}

/// An operator's change to one rule, globally (`site` empty) or for one site.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleRecord {
    pub v: u32,
    pub rule: String,
    pub site: String,
    pub enabled: Option<bool>,
    /// How long the condition must hold before an incident opens.
    pub hold_secs: Option<u64>,
    /// Reminder interval while open and not acknowledged.
    pub remind_secs: Option<u64>,
    /// The rule's threshold (its unit depends on the rule).
    pub threshold: Option<u64>,
}

/// An incident: one per site, subject (target, agent or the store) and rule at a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentRecord {
    pub v: u32,
    pub id: u64,
    pub rule: String,
    pub site: String,
    pub subject: String,
    pub opened_unix_ms: u64,
    pub resolved_unix_ms: Option<u64>,
    /// One line: what is wrong, with the figures.
    pub summary: String,
    pub last_notice_unix_ms: u64,
    pub reminders: u32,
    pub acked_by: Option<String>,
    pub acked_unix_ms: Option<u64>,
}

impl IncidentRecord {
    pub fn is_open(&self) -> bool {
        self.resolved_unix_ms.is_none()
    }

    /// The key that makes an incident unique while open.
    pub fn key(&self) -> (String, String, String) {
        (self.rule.clone(), self.site.clone(), self.subject.clone())
    }
}

/// A notice waiting for delivery to one channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    pub v: u32,
    pub id: u64,
    pub channel: String,
    /// 0 for a test message or a summary.
    pub incident_id: u64,
    /// `opened`, `reminder`, `resolved`, `test`, `summary`.
    pub kind: String,
    /// Stable across retries and restarts (e-mail Message-ID, webhook idempotency key).
    pub message_id: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    /// The webhook body (JSON text).
    pub json: String,
    pub created_unix_ms: u64,
    pub attempts: u32,
    pub next_attempt_unix_ms: u64,
    pub last_error: String,
}

/// When the summary goes out, and when it last did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SummaryRecord {
    pub v: u32,
    /// Local time of day, "HH:MM".
    pub at: String,
    pub timezone: String,
    /// Day of the weekly report (0 = Monday), if any.
    pub weekly_day: Option<u8>,
    /// Local date ("2026-11-30") of the last daily summary and weekly report sent.
    pub last_daily: String,
    pub last_weekly: String,
}

/// What one incident transition writes, atomically: the incident and its notices.
#[derive(Debug, Clone)]
pub struct IncidentChange {
    pub incident: IncidentRecord,
    pub notices: Vec<OutboxEntry>,
}

/// See module docs.
#[async_trait]
pub trait AlertCatalog: Send + Sync + 'static {
    async fn put_channel(&self, c: &ChannelRecord) -> Result<()>;
    async fn channels(&self) -> Result<Vec<ChannelRecord>>;
    async fn delete_channel(&self, name: &str) -> Result<bool>;
    async fn put_rule(&self, r: &RuleRecord) -> Result<()>;
    async fn rules(&self) -> Result<Vec<RuleRecord>>;
    /// A new id for an incident or an outbox entry (never reused).
    async fn next_id(&self) -> Result<u64>;
    /// Write an incident and its notices in one transaction. Opening refuses (returns
    /// false) when an incident with the same key is already open.
    async fn apply_incident(&self, change: IncidentChange) -> Result<bool>;
    async fn incidents(&self) -> Result<Vec<IncidentRecord>>;
    async fn incident(&self, id: u64) -> Result<Option<IncidentRecord>>;
    async fn enqueue(&self, e: &OutboxEntry) -> Result<()>;
    async fn outbox(&self) -> Result<Vec<OutboxEntry>>;
    /// Update an entry after a failed attempt.
    async fn put_outbox(&self, e: &OutboxEntry) -> Result<()>;
    /// Remove a delivered entry.
    async fn delivered(&self, id: u64) -> Result<()>;
    async fn summary(&self) -> Result<Option<SummaryRecord>>;
    /// Set (or with `None` remove) the summary schedule, durably.
    async fn put_summary(&self, s: Option<&SummaryRecord>) -> Result<()>;
}
