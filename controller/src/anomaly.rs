//! Anomaly holds. Ransomware that encrypts a customer's rows makes the next backups look
//! wrong long before anyone notices: the dump no longer compresses, or it shrinks to
//! almost nothing, or backups suddenly come in bursts. When a new snapshot of a target
//! looks wrong against the target's recent history, the target goes on hold: the
//! snapshot is marked suspicious (it does not count as good), rotation deletes nothing
//! of the target, and the operator is told, until an operator releases the hold.
//!
//! [`judge`] is pure; [`check_commit`] loads the history and records the hold.

use tracing::{error, warn};

use crate::catalog::SnapshotRecord;
use crate::catalog::safety::{HoldRecord, MAX_SUSPICIOUS};
use crate::state::State;

/// Snapshots of history compared against (the newest ones).
const HISTORY: usize = 10;
/// Least history before size and ratio are judged.
const MIN_HISTORY: usize = 3;
/// A logical size this many times smaller or larger than the median is an anomaly.
const SIZE_FACTOR: f64 = 4.0;
/// A compression ratio below this fraction of the median is an anomaly (the median must
/// itself show real compression, above [`MIN_RATIO`]).
const RATIO_FRACTION: f64 = 0.6;
const MIN_RATIO: f64 = 1.5;
/// More snapshots than this within the last hour (and than twice the schedule makes) is a
/// burst. Only dispatched jobs commit, so a burst means a runaway script or schedule.
const BURST: usize = 24;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn ratio(s: &SnapshotRecord) -> f64 {
    s.logical_bytes as f64 / s.stored_bytes.max(1) as f64
}

/// Why `new` looks wrong against `history` (earlier snapshots of the target that are not
/// themselves suspicious, oldest first), if it does. `recent` counts the target's
/// snapshots committed in the hour before `new`, `expected` how many its schedule made.
pub fn judge(
    new: &SnapshotRecord,
    history: &[SnapshotRecord],
    recent: usize,
    expected: usize,
) -> Option<String> {
    if recent > BURST.max(expected * 2 + 4) {
        return Some(format!(
            "{recent} snapshots within an hour, where the schedule makes {expected}"
        ));
    }
    let tail = &history[history.len().saturating_sub(HISTORY)..];
    if tail.len() < MIN_HISTORY {
        return None;
    }
    let size = median(tail.iter().map(|s| s.logical_bytes as f64).collect());
    let logical = new.logical_bytes as f64;
    if logical * SIZE_FACTOR < size || logical > size * SIZE_FACTOR {
        return Some(format!(
            "logical size {} bytes is far from the recent median of {} bytes",
            new.logical_bytes, size as u64
        ));
    }
    let usual = median(tail.iter().map(ratio).collect());
    if usual >= MIN_RATIO && ratio(new) < usual * RATIO_FRACTION {
        return Some(format!(
            "the data compresses {:.2}:1 where it used to compress {usual:.2}:1 (encrypted or random data?)",
            ratio(new)
        ));
    }
    None
}

/// Judge a just-committed snapshot and put its target on hold if it looks wrong (or add
/// it to a hold already standing). Failures are logged: a hold that cannot be recorded
/// must not fail the commit.
pub async fn check_commit(state: &State, new: &SnapshotRecord) {
    let cat = &state.catalog;
    let (site, target) = (&new.site, &new.target);
    let hour_ago = new.committed_unix_ms.saturating_sub(3_600_000);
    // How many runs the target's schedule made in that hour (a burst is measured
    // against it).
    let expected_per_hour = crate::state::policy_of(state, site, target)
        .await
        .ok()
        .and_then(|p| crate::policy::Schedule::parse(&p.schedule, &p.timezone).ok())
        .map_or(1, |s| {
            s.slots_between(hour_ago, new.committed_unix_ms, 10_000)
        });
    let loaded = async {
        let snaps = cat.snapshots(Some(site), Some(target)).await?;
        let hold = cat
            .holds()
            .await?
            .into_iter()
            .find(|h| &h.site == site && &h.target == target);
        Ok::<_, crate::catalog::CatalogError>((snaps, hold))
    };
    let (snaps, hold) = match loaded.await {
        Ok(x) => x,
        Err(e) => {
            error!(%site, %target, error = %e, "anomaly check: load history");
            return;
        }
    };
    let flagged = |id: &str| {
        hold.as_ref()
            .is_some_and(|h| h.suspicious.iter().any(|s| s == id))
    };
    let history: Vec<SnapshotRecord> = snaps
        .iter()
        .filter(|s| s.snapshot_id != new.snapshot_id && !flagged(&s.snapshot_id))
        .cloned()
        .collect();
    let recent = snaps
        .iter()
        .filter(|s| s.committed_unix_ms > hour_ago)
        .count();
    let verdict = judge(new, &history, recent, expected_per_hour);
    let Some(reason) = verdict.or_else(|| {
        hold.as_ref()
            .map(|_| "taken while the target is on hold".to_string())
    }) else {
        return;
    };
    let mut h = hold.unwrap_or_else(|| HoldRecord {
        v: 1,
        site: site.clone(),
        target: target.clone(),
        since_unix_ms: new.committed_unix_ms,
        reason: format!("snapshot {}: {reason}", new.snapshot_id),
        suspicious: vec![],
    });
    if h.suspicious.len() < MAX_SUSPICIOUS {
        h.suspicious.push(new.snapshot_id.clone());
    }
    warn!(%site, %target, snapshot = %new.snapshot_id, %reason,
        "ANOMALY: snapshot marked suspicious; rotation of the target is held until an operator releases it (nex-backup hold release)");
    if let Err(e) = cat.put_hold(&h).await.and(cat.flush().await) {
        error!(%site, %target, error = %e, "record anomaly hold");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(id: &str, logical: u64, stored: u64) -> SnapshotRecord {
        SnapshotRecord {
            v: 1,
            site: "s".into(),
            target: "t".into(),
            snapshot_id: id.into(),
            job_id: String::new(),
            created_unix_ms: 0,
            committed_unix_ms: 0,
            logical_bytes: logical,
            stored_bytes: stored,
            new_bytes: 0,
            duration_ms: 0,
            chunks: 1,
        }
    }

    #[test]
    fn encrypted_shrunk_and_bursty_backups_are_anomalies() {
        let history: Vec<_> = (0..5)
            .map(|i| snap(&format!("h{i}"), 10_000_000 + i * 1000, 2_500_000))
            .collect();
        assert_eq!(
            judge(&snap("ok", 10_200_000, 2_600_000), &history, 1, 1),
            None
        );
        let enc = judge(&snap("enc", 10_100_000, 9_900_000), &history, 1, 1).unwrap();
        assert!(enc.contains("compresses 1.02:1"), "{enc}");
        let tiny = judge(&snap("tiny", 20_000, 5_000), &history, 1, 1).unwrap();
        assert!(tiny.contains("far from the recent median"), "{tiny}");
        let burst = judge(&snap("b", 10_000_000, 2_500_000), &history, 30, 1).unwrap();
        assert!(burst.contains("30 snapshots within an hour"), "{burst}");
        // A schedule that runs every few seconds is not a burst.
        assert_eq!(
            judge(&snap("b", 10_000_000, 2_500_000), &history, 600, 600),
            None
        );
        // Too little history: no judgement on size or ratio.
        assert_eq!(judge(&snap("x", 1, 1), &history[..2], 1, 1), None);
    }
}
