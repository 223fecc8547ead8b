//! The keep set of a target's snapshot history (grandfather-father-son), in the policy's
//! time zone. Each rule keeps the newest snapshot of each of the N most recent periods
//! *that have a snapshot* (as restic and borg count), so a target that stopped backing up
//! keeps its last N days of history instead of losing all of it when days pass:
//!
//! - `keep_daily N`: newest of each of the last N local calendar days;
//! - `keep_weekly N`: newest of each of the last N ISO weeks;
//! - `keep_monthly N`: newest of each of the last N calendar months;
//! - `keep_last N`: the N newest snapshots;
//! - `keep_verified N`: the N newest snapshots whose restore drill passed;
//! - and always the newest good snapshot, whatever the rules say.
//!
//! The rules count only *good* snapshots (from a backup job that succeeded, not made
//! suspect by a failed drill, not flagged by an anomaly): a flood of junk or suspicious
//! snapshots can never push a good one out of its day, week or keep-last slot, and a
//! verified snapshot is never deleted to make room for unverified ones.
//!
//! [`plan`] adds what no policy can override: nothing younger than the site's retention
//! lock is deleted, and nothing of a target on anomaly hold.

use std::collections::BTreeSet;

use chrono::{Datelike, TimeZone, Utc};
use chrono_tz::Tz;

use super::Retention;

/// One snapshot as the retention rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snap {
    pub id: String,
    pub unix_ms: u64,
    /// From a backup job that succeeded, not suspect (failed drill) nor suspicious.
    pub good: bool,
    /// Its most recent restore drill passed (implies good).
    pub verified: bool,
}

/// The calendar periods of a moment in `tz`.
fn periods(tz: &Tz, unix_ms: u64) -> (chrono::NaiveDate, (i32, u32), (i32, u32)) {
    let local = Utc
        .timestamp_millis_opt(unix_ms as i64)
        .single()
        .unwrap_or_default()
        .with_timezone(tz);
    let d = local.date_naive();
    let w = d.iso_week();
    (d, (w.year(), w.week()), (d.year(), d.month()))
}

/// Keep the newest of each of the first `n` distinct buckets, newest first.
fn newest_per_bucket<K: PartialEq>(
    newest_first: &[&Snap],
    n: u32,
    key: impl Fn(&Snap) -> K,
    keep: &mut BTreeSet<String>,
) {
    let mut last: Option<K> = None;
    let mut taken = 0;
    for s in newest_first {
        if taken >= n {
            break;
        }
        let k = key(s);
        if last.as_ref() != Some(&k) {
            keep.insert(s.id.clone());
            taken += 1;
            last = Some(k);
        }
    }
}

/// The ids to keep (see module docs). `snaps` may be in any order.
pub fn keep_set(snaps: &[Snap], r: &Retention, tz: &Tz) -> BTreeSet<String> {
    let mut all: Vec<&Snap> = snaps.iter().collect();
    all.sort_by(|a, b| b.unix_ms.cmp(&a.unix_ms).then(b.id.cmp(&a.id)));
    let newest_first: Vec<&Snap> = all.iter().copied().filter(|s| s.good).collect();
    let mut keep = BTreeSet::new();
    for s in all
        .iter()
        .filter(|s| s.verified)
        .take(r.keep_verified as usize)
    {
        keep.insert(s.id.clone());
    }
    for s in newest_first.iter().take(r.keep_last as usize) {
        keep.insert(s.id.clone());
    }
    newest_per_bucket(
        &newest_first,
        r.keep_daily,
        |s| periods(tz, s.unix_ms).0,
        &mut keep,
    );
    newest_per_bucket(
        &newest_first,
        r.keep_weekly,
        |s| periods(tz, s.unix_ms).1,
        &mut keep,
    );
    newest_per_bucket(
        &newest_first,
        r.keep_monthly,
        |s| periods(tz, s.unix_ms).2,
        &mut keep,
    );
    if let Some(newest_good) = newest_first.first() {
        keep.insert(newest_good.id.clone());
    } else if let Some(newest) = all.first() {
        // No good snapshot at all: never leave the target empty.
        keep.insert(newest.id.clone());
    }
    keep
}

/// What protects snapshots beyond the policy.
#[derive(Debug, Clone, Copy)]
pub struct Guards {
    pub now_ms: u64,
    /// The site's retention lock: nothing younger is deleted.
    pub lock_ms: u64,
    /// The target is on anomaly hold: nothing is deleted.
    pub held: bool,
}

/// Why a snapshot the policy would delete is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spared {
    Lock,
    Hold,
}

/// The policy's keep set plus the guards: `(keep, delete, spared)`, ids in input order;
/// `spared` lists snapshots kept only because of the lock or the hold.
pub fn plan(
    snaps: &[Snap],
    r: &Retention,
    tz: &Tz,
    g: Guards,
) -> (Vec<String>, Vec<String>, Vec<(String, Spared)>) {
    let by_policy = keep_set(snaps, r, tz);
    let (mut keep, mut delete, mut spared) = (vec![], vec![], vec![]);
    for s in snaps {
        if by_policy.contains(&s.id) {
            keep.push(s.id.clone());
        } else if g.held {
            spared.push((s.id.clone(), Spared::Hold));
            keep.push(s.id.clone());
        } else if s.unix_ms.saturating_add(g.lock_ms) > g.now_ms {
            spared.push((s.id.clone(), Spared::Lock));
            keep.push(s.id.clone());
        } else {
            delete.push(s.id.clone());
        }
    }
    (keep, delete, spared)
}

#[cfg(test)]
mod tests;
