//! The keep set of a target's snapshot history (grandfather-father-son), in the policy's
//! time zone. Each rule keeps the newest snapshot of each of the N most recent periods
//! *that have a snapshot* (as restic and borg count), so a target that stopped backing up
//! keeps its last N days of history instead of losing all of it when days pass:
//!
//! - `keep_daily N`: newest of each of the last N local calendar days;
//! - `keep_weekly N`: newest of each of the last N ISO weeks;
//! - `keep_monthly N`: newest of each of the last N calendar months;
//! - `keep_last N`: the N newest snapshots;
//! - and always the newest good snapshot, whatever the rules say.
//!
//! Only *good* snapshots are candidates for the newest-good guarantee; the rules apply to
//! all committed snapshots. Everything not kept is to be deleted.

use std::collections::BTreeSet;

use chrono::{Datelike, TimeZone, Utc};
use chrono_tz::Tz;

use super::Retention;

/// One snapshot as the retention rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snap {
    pub id: String,
    pub unix_ms: u64,
    /// Committed whole and not marked suspect by a failed drill.
    pub good: bool,
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
    let mut newest_first: Vec<&Snap> = snaps.iter().collect();
    newest_first.sort_by(|a, b| b.unix_ms.cmp(&a.unix_ms).then(b.id.cmp(&a.id)));
    let mut keep = BTreeSet::new();
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
    if let Some(newest_good) = newest_first.iter().find(|s| s.good) {
        keep.insert(newest_good.id.clone());
    } else if let Some(newest) = newest_first.first() {
        // No good snapshot at all: never leave the target empty.
        keep.insert(newest.id.clone());
    }
    keep
}

#[cfg(test)]
mod tests;
