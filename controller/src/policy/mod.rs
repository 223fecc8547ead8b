//! Per-target policy: when to back up (cron in a time zone), the RPO and RTO, how long
//! to keep snapshots, and how often to rehearse a restore.
//!
//! A [`Policy`] is validated as a whole by [`Policy::validate`] before it is stored, so a
//! bad field is named and nothing is half-applied. Cron evaluation is croner's, in the
//! policy's IANA time zone (chrono-tz): a wall-clock time skipped by a DST change fires at
//! the first valid time after the gap, a repeated one fires once.
//!
//! - [`retention`]: the keep set of a snapshot history (GFS: daily/weekly/monthly/last).
//! - [`site`]: per-site settings: the backup window, the upload bandwidth limit and the
//!   designated drill agent.

pub mod durations;
pub mod retention;
pub mod site;

use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use serde::{Deserialize, Serialize};

/// A policy problem, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("policy {field}: {reason}")]
pub struct PolicyError {
    pub field: &'static str,
    pub reason: String,
}

fn err(field: &'static str, reason: impl Into<String>) -> PolicyError {
    PolicyError {
        field,
        reason: reason.into(),
    }
}

/// How long to keep snapshots (see [`retention::keep_set`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    pub keep_daily: u32,
    pub keep_weekly: u32,
    pub keep_monthly: u32,
    pub keep_last: u32,
    /// The newest N drill-verified snapshots are kept whatever else the rules say.
    #[serde(default = "default_keep_verified")]
    pub keep_verified: u32,
}

/// Verified snapshots always kept by default.
pub const DEFAULT_KEEP_VERIFIED: u32 = 3;

fn default_keep_verified() -> u32 {
    DEFAULT_KEEP_VERIFIED
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            keep_daily: 7,
            keep_weekly: 4,
            keep_monthly: 0,
            keep_last: 3,
            keep_verified: DEFAULT_KEEP_VERIFIED,
        }
    }
}

/// The policy of one (site, target).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub v: u32,
    /// Cron expression, e.g. `30 1 * * *` (a sixth, leading field gives seconds).
    pub schedule: String,
    /// IANA time zone the schedule and the retention days are read in.
    pub timezone: String,
    pub rpo_secs: u64,
    pub rto_secs: u64,
    pub retention: Retention,
    /// Rehearse a restore this often; 0 = never.
    pub drill_every_secs: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            v: 1,
            schedule: "0 1 * * *".into(),
            timezone: "UTC".into(),
            rpo_secs: 24 * 3600,
            rto_secs: 3600,
            retention: Retention::default(),
            drill_every_secs: 7 * 24 * 3600,
        }
    }
}

/// A validated, ready-to-evaluate schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    pub tz: Tz,
    /// `<cron> <zone>`, as written in the policy.
    pub key: String,
}

impl Schedule {
    pub fn parse(expr: &str, timezone: &str) -> Result<Self, PolicyError> {
        let tz = Tz::from_str(timezone)
            .map_err(|_| err("timezone", format!("unknown time zone {timezone:?}")))?;
        if !(5..=6).contains(&expr.split_whitespace().count()) {
            return Err(err(
                "schedule",
                format!(
                    "{expr:?}: expected five fields (minute hour day month weekday), or six with seconds first"
                ),
            ));
        }
        let cron = Cron::from_str(expr).map_err(|e| err("schedule", format!("{expr:?}: {e}")))?;
        Ok(Schedule {
            cron,
            tz,
            key: format!("{expr} {timezone}"),
        })
    }

    /// The first run strictly after `after_ms` (unix milliseconds), on a whole second
    /// (croner would carry the milliseconds of `after_ms` into the slot).
    pub fn next_after(&self, after_ms: u64) -> Option<u64> {
        let t = Utc
            .timestamp_millis_opt((after_ms - after_ms % 1000) as i64)
            .single()?;
        let local: DateTime<Tz> = t.with_timezone(&self.tz);
        let next = self.cron.find_next_occurrence(&local, false).ok()?;
        u64::try_from(next.timestamp_millis()).ok()
    }

    /// How many runs fall in `(from_ms, to_ms]`, counting at most `cap`.
    pub fn slots_between(&self, from_ms: u64, to_ms: u64, cap: usize) -> usize {
        let mut n = 0;
        let mut t = from_ms;
        while n < cap {
            match self.next_after(t) {
                Some(next) if next <= to_ms => {
                    n += 1;
                    t = next;
                }
                _ => break,
            }
        }
        n
    }

    /// Wall-clock time of a run, in the schedule's zone.
    fn local(&self, ms: u64) -> chrono::NaiveDateTime {
        Utc.timestamp_millis_opt(ms as i64)
            .single()
            .unwrap_or_default()
            .with_timezone(&self.tz)
            .naive_local()
    }

    /// The longest gap between consecutive runs over the 60 days after `from_ms`, on the
    /// wall clock: a daily schedule's interval is 24 h even across a DST change.
    pub fn max_interval_ms(&self, from_ms: u64) -> Option<u64> {
        let end = from_ms + 60 * 86_400_000;
        let mut prev = self.next_after(from_ms)?;
        let mut max = 0u64;
        for _ in 0..20_000 {
            let Some(next) = self.next_after(prev) else {
                break;
            };
            let gap = (self.local(next) - self.local(prev)).num_milliseconds();
            max = max.max(gap.max(0) as u64);
            if next > end {
                break;
            }
            prev = next;
        }
        (max > 0).then_some(max)
    }
}

impl Policy {
    /// Check every field; `force` accepts an RPO shorter than the schedule's interval.
    pub fn validate(&self, now_ms: u64, force: bool) -> Result<Schedule, PolicyError> {
        let schedule = Schedule::parse(&self.schedule, &self.timezone)?;
        let r = &self.retention;
        if r.keep_daily + r.keep_weekly + r.keep_monthly + r.keep_last == 0 {
            return Err(err(
                "retention",
                "keeps nothing: set at least one of keep-daily, keep-weekly, keep-monthly, keep-last",
            ));
        }
        if self.rpo_secs == 0 {
            return Err(err("rpo", "must be longer than zero"));
        }
        if self.rto_secs == 0 {
            return Err(err("rto", "must be longer than zero"));
        }
        let interval = schedule
            .max_interval_ms(now_ms)
            .ok_or_else(|| err("schedule", format!("{:?} never runs", self.schedule)))?;
        if self.rpo_secs * 1000 < interval && !force {
            return Err(err(
                "rpo",
                format!(
                    "{} is shorter than the schedule's longest interval ({}): it would be violated by design (use --force to accept)",
                    human_secs(self.rpo_secs),
                    human_secs(interval / 1000)
                ),
            ));
        }
        Ok(schedule)
    }
}

/// "1d2h", "30m", "45s".
/// 1536 -> "1.5 KiB" (binary units, one decimal; bytesize).
pub fn human_bytes(n: u64) -> String {
    bytesize::ByteSize::b(n).display().iec().to_string()
}

pub fn human_secs(s: u64) -> String {
    let (d, h, m, sec) = (s / 86400, s % 86400 / 3600, s % 3600 / 60, s % 60);
    let parts: Vec<String> = [(d, "d"), (h, "h"), (m, "m"), (sec, "s")]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, u)| format!("{n}{u}"))
        .collect();
    if parts.is_empty() {
        "0s".into()
    } else {
        parts.concat()
    }
}

#[cfg(test)]
mod tests;
