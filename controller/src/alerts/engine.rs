//! Incidents from conditions. Each evaluation compares the conditions that hold now
//! ([`super::rules::evaluate`]) with the open incidents:
//!
//! - a condition that has held for its rule's hold time opens one incident (per rule,
//!   site and subject) and queues one "opened" notice per channel;
//! - an open incident whose condition still holds gets a reminder once per reminder
//!   interval, unless acknowledged;
//! - an open incident whose condition is gone is resolved, with one "resolved" notice;
//!   one whose rule was turned off closes without a notice.
//!
//! The incident and its notices are written in one transaction, so a restart neither
//! repeats nor loses a notice. How long a condition has held is kept in memory: after a
//! restart the hold time starts again (a delay, never a duplicate).

use std::collections::HashMap;
use std::sync::Mutex;

use tracing::{info, warn};

use super::notice::{NoticeKind, incident_notice};
use super::rules::{Condition, Rule, evaluate, settings};
use crate::catalog::CatalogError;
use crate::catalog::alerts::{IncidentChange, IncidentRecord};
use crate::state::State;

type Key = (String, String, String);

/// See module docs.
#[derive(Default)]
pub struct Engine {
    /// Since when each condition not yet an incident has held.
    pending: Mutex<HashMap<Key, u64>>,
}

impl Engine {
    /// One evaluation at `now`.
    pub async fn run(&self, state: &State, now: u64) -> Result<(), CatalogError> {
        let conditions = evaluate(state, now).await?;
        let records = state.alerts.rules().await?;
        let open: HashMap<Key, IncidentRecord> = state
            .alerts
            .incidents()
            .await?
            .into_iter()
            .filter(IncidentRecord::is_open)
            .map(|i| (i.key(), i))
            .collect();
        let mut holding: HashMap<Key, &Condition> = HashMap::new();
        for c in &conditions {
            holding.insert((c.rule.name().into(), c.site.clone(), c.subject.clone()), c);
        }
        let due: Vec<(Key, &Condition)> = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            pending.retain(|k, _| holding.contains_key(k) && !open.contains_key(k));
            holding
                .iter()
                .filter(|(k, _)| !open.contains_key(*k))
                .filter_map(|(k, c)| {
                    let since = *pending.entry(k.clone()).or_insert(now);
                    let hold = settings(c.rule, &c.site, &records).hold_secs * 1000;
                    (now.saturating_sub(since) >= hold).then(|| (k.clone(), *c))
                })
                .collect()
        };
        for (k, c) in due {
            self.open(state, c, now).await?;
            self.pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&k);
        }
        for (k, inc) in open {
            let disabled =
                Rule::parse(&inc.rule).is_none_or(|r| !settings(r, &inc.site, &records).enabled);
            match holding.get(&k) {
                None if disabled => self.close_quietly(state, inc, now).await?,
                None => self.resolve(state, inc, now).await?,
                Some(c) => self.remind_if_due(state, inc, c, &records, now).await?,
            }
        }
        Ok(())
    }

    async fn open(&self, state: &State, c: &Condition, now: u64) -> Result<(), CatalogError> {
        let inc = IncidentRecord {
            v: 1,
            id: state.alerts.next_id().await?,
            rule: c.rule.name().into(),
            site: c.site.clone(),
            subject: c.subject.clone(),
            opened_unix_ms: now,
            resolved_unix_ms: None,
            summary: c.summary.clone(),
            last_notice_unix_ms: now,
            reminders: 0,
            acked_by: None,
            acked_unix_ms: None,
        };
        let notices = notices(state, &inc, NoticeKind::Opened, now).await?;
        let n = notices.len();
        if state
            .alerts
            .apply_incident(IncidentChange {
                incident: inc.clone(),
                notices,
            })
            .await?
        {
            warn!(incident = inc.id, rule = %inc.rule, site = %inc.site, subject = %inc.subject,
                notices = n, summary = %inc.summary, "incident opened");
            state.outbox_wake.notify_one();
        }
        Ok(())
    }

    async fn resolve(
        &self,
        state: &State,
        mut inc: IncidentRecord,
        now: u64,
    ) -> Result<(), CatalogError> {
        inc.resolved_unix_ms = Some(now);
        inc.last_notice_unix_ms = now;
        let notices = notices(state, &inc, NoticeKind::Resolved, now).await?;
        info!(incident = inc.id, rule = %inc.rule, site = %inc.site, subject = %inc.subject, "incident resolved");
        write(state, inc, notices).await
    }

    /// The rule was turned off: the incident closes without a "resolved" notice (the
    /// condition did not clear; the operator chose not to hear about it).
    async fn close_quietly(
        &self,
        state: &State,
        mut inc: IncidentRecord,
        now: u64,
    ) -> Result<(), CatalogError> {
        inc.resolved_unix_ms = Some(now);
        inc.summary = format!("{} (closed: the rule was turned off)", inc.summary);
        info!(incident = inc.id, rule = %inc.rule, site = %inc.site, "incident closed: its rule was turned off");
        state
            .alerts
            .apply_incident(IncidentChange {
                incident: inc,
                notices: vec![],
            })
            .await?;
        Ok(())
    }

    async fn remind_if_due(
        &self,
        state: &State,
        mut inc: IncidentRecord,
        c: &Condition,
        records: &[crate::catalog::alerts::RuleRecord],
        now: u64,
    ) -> Result<(), CatalogError> {
        let Some(rule) = Rule::parse(&inc.rule) else {
            return Ok(());
        };
        let every = settings(rule, &inc.site, records).remind_secs * 1000;
        if inc.acked_by.is_some()
            || every == 0
            || now.saturating_sub(inc.last_notice_unix_ms) < every
        {
            return Ok(());
        }
        inc.summary = c.summary.clone();
        inc.reminders += 1;
        inc.last_notice_unix_ms = now;
        let notices = notices(state, &inc, NoticeKind::Reminder, now).await?;
        info!(
            incident = inc.id,
            reminders = inc.reminders,
            "incident reminder"
        );
        write(state, inc, notices).await
    }
}

/// Write an incident change with its notices, and wake the notifier.
async fn write(
    state: &State,
    incident: IncidentRecord,
    notices: Vec<crate::catalog::alerts::OutboxEntry>,
) -> Result<(), CatalogError> {
    state
        .alerts
        .apply_incident(IncidentChange { incident, notices })
        .await?;
    state.outbox_wake.notify_one();
    Ok(())
}

/// One notice per channel that hears about `inc`: every global channel and the site's own.
async fn notices(
    state: &State,
    inc: &IncidentRecord,
    kind: NoticeKind,
    now: u64,
) -> Result<Vec<crate::catalog::alerts::OutboxEntry>, CatalogError> {
    let mut out = vec![];
    for ch in state.alerts.channels().await? {
        if ch.site.is_empty() || ch.site == inc.site {
            let id = state.alerts.next_id().await?;
            out.push(incident_notice(id, &ch.name, inc, kind, &state.host, now));
        }
    }
    Ok(out)
}
