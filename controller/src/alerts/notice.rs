//! What a notice says: the subject, a plain-text and an HTML body, and the webhook's
//! JSON (with a `text` field that Slack and Teams show as is).

use serde_json::json;

use crate::catalog::alerts::{IncidentRecord, OutboxEntry};

/// A UTC time for notices: "2026-11-30 09:12:03Z".
pub fn utc(unix_ms: u64) -> String {
    jiff::Timestamp::from_millisecond(unix_ms as i64)
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%SZ").to_string())
        .unwrap_or_else(|_| "-".into())
}

/// Escape text for HTML.
pub fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// What kind of notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeKind {
    Opened,
    Reminder,
    Resolved,
}

impl NoticeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::Opened => "opened",
            NoticeKind::Reminder => "reminder",
            NoticeKind::Resolved => "resolved",
        }
    }

    fn word(self) -> &'static str {
        match self {
            NoticeKind::Opened => "OPEN",
            NoticeKind::Reminder => "STILL OPEN",
            NoticeKind::Resolved => "RESOLVED",
        }
    }
}

/// The notice of `kind` about `inc` for `channel`, as outbox entry `id`.
pub fn incident_notice(
    id: u64,
    channel: &str,
    inc: &IncidentRecord,
    kind: NoticeKind,
    host: &str,
    now: u64,
) -> OutboxEntry {
    let rule = super::rules::Rule::parse(&inc.rule).map_or(inc.rule.as_str(), |r| r.title());
    let place = if inc.site.is_empty() {
        inc.subject.clone()
    } else {
        format!("{}/{}", inc.site, inc.subject)
    };
    let subject = format!("[NEX Backup] {}: {rule} — {place}", kind.word());
    let mut lines = vec![
        format!("{}: {rule}", kind.word()),
        String::new(),
        inc.summary.clone(),
        String::new(),
        format!("Incident:  #{}", inc.id),
        format!("Rule:      {}", inc.rule),
        format!(
            "Site:      {}",
            if inc.site.is_empty() { "-" } else { &inc.site }
        ),
        format!("Subject:   {}", inc.subject),
        format!("Opened:    {}", utc(inc.opened_unix_ms)),
    ];
    if let Some(r) = inc.resolved_unix_ms {
        lines.push(format!("Resolved:  {}", utc(r)));
    }
    if kind != NoticeKind::Resolved {
        lines.push(String::new());
        lines.push(format!(
            "Reminders follow until it clears or someone acknowledges it: nex-backup incidents ack {}",
            inc.id
        ));
    }
    lines.push(String::new());
    lines.push(format!("-- NEX Backup controller {host}"));
    let text = lines.join("\n");
    let html = format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{t}</title></head><body><h2>{w}: {r}</h2><p>{s}</p><table><tr><th align=\"left\">Incident</th><td>#{id}</td></tr><tr><th align=\"left\">Rule</th><td>{rule}</td></tr><tr><th align=\"left\">Site</th><td>{site}</td></tr><tr><th align=\"left\">Subject</th><td>{subj}</td></tr><tr><th align=\"left\">Opened</th><td>{opened}</td></tr></table><p>NEX Backup controller {host}</p></body></html>",
        t = html_escape(&subject),
        w = kind.word(),
        r = html_escape(rule),
        s = html_escape(&inc.summary),
        id = inc.id,
        rule = html_escape(&inc.rule),
        site = html_escape(&inc.site),
        subj = html_escape(&inc.subject),
        opened = utc(inc.opened_unix_ms),
        host = html_escape(host),
    );
    let message_id = format!("nexb.{}.{}.{}@{host}", inc.id, kind.as_str(), id);
    let body = json!({
        "id": message_id,
        "event": kind.as_str(),
        "text": format!("{subject}\n{}", inc.summary),
        "incident": {
            "id": inc.id, "rule": inc.rule, "site": inc.site, "subject": inc.subject,
            "summary": inc.summary, "opened_unix_ms": inc.opened_unix_ms,
            "resolved_unix_ms": inc.resolved_unix_ms,
        },
        "controller": host,
    });
    OutboxEntry {
        v: 1,
        id,
        channel: channel.into(),
        incident_id: inc.id,
        kind: kind.as_str().into(),
        message_id,
        subject,
        text,
        html,
        json: body.to_string(),
        created_unix_ms: now,
        attempts: 0,
        next_attempt_unix_ms: now,
        last_error: String::new(),
    }
}

/// A test message for a channel.
pub fn test_notice(id: u64, channel: &str, host: &str, now: u64) -> OutboxEntry {
    let subject = format!("[NEX Backup] test message for channel {channel}");
    let text = format!(
        "This is a test message from the NEX Backup controller {host} for channel {channel}, sent at {}.\nIf you read this, the channel works.",
        utc(now)
    );
    let message_id = format!("nexb.test.{id}@{host}");
    OutboxEntry {
        v: 1,
        id,
        channel: channel.into(),
        incident_id: 0,
        kind: "test".into(),
        message_id: message_id.clone(),
        subject: subject.clone(),
        html: format!(
            "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{s}</title></head><body><p>{t}</p></body></html>",
            s = html_escape(&subject),
            t = html_escape(&text)
        ),
        json: json!({"id": message_id, "event": "test", "text": format!("{subject}\n{text}"), "controller": host}).to_string(),
        text,
        created_unix_ms: now,
        attempts: 0,
        next_attempt_unix_ms: now,
        last_error: String::new(),
    }
}
