//! Conformance checks for deletion, garbage collection and policies.

use nex_backup_shared::ids::ChunkId;

use super::conformance::sample_snapshot;
use super::{Catalog, CatalogError, PolicyRecord};

pub(super) async fn run_all(cat: &dyn Catalog) {
    delete_and_collect(cat).await;
    policies_round_trip(cat).await;
    safety_records(cat).await;
}

async fn delete_and_collect(cat: &dyn Catalog) {
    let site = "gcsite";
    let (a, b) = (
        sample_snapshot(site, "t", 41),
        sample_snapshot(site, "t", 42),
    );
    for s in [&a, &b] {
        for id in &s.chunk_ids {
            cat.record_chunk(site, id, 10, &[7; 32]).await.unwrap();
        }
        cat.commit_snapshot(s.clone()).await.unwrap();
    }
    let orphan = ChunkId([250; 32]);
    cat.record_chunk(site, &orphan, 7, &[7; 32]).await.unwrap();
    let all = cat.unreferenced_chunks(site, &[], None, 100).await.unwrap();
    assert_eq!(all, vec![(orphan, 7)], "only the orphan is unreferenced");
    let doomed = [a.record.snapshot_id.clone()];
    let without_a = cat
        .unreferenced_chunks(site, &doomed, None, 100)
        .await
        .unwrap();
    assert_eq!(
        without_a.len(),
        3,
        "a's own chunks and the orphan: {without_a:?}"
    );
    assert!(without_a.windows(2).all(|w| w[0].0 < w[1].0), "in id order");
    // Pages: after the cursor, at most `limit`, and together the whole answer.
    let first = cat
        .unreferenced_chunks(site, &doomed, None, 2)
        .await
        .unwrap();
    let rest = cat
        .unreferenced_chunks(site, &doomed, Some(&first[1].0), 2)
        .await
        .unwrap();
    assert_eq!(first.len(), 2);
    assert_eq!([first, rest].concat(), without_a);

    let gone = cat
        .delete_snapshot(site, &a.record.snapshot_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(gone.snapshot_id, a.record.snapshot_id);
    assert!(
        cat.snapshot(site, &a.record.snapshot_id)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        cat.manifest(site, &a.record.snapshot_id)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        cat.delete_snapshot(site, &a.record.snapshot_id)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(cat.snapshots(Some(site), None).await.unwrap().len(), 1);

    // Only unreferenced chunks are deleted, whatever the caller asks.
    let c = sample_snapshot(site, "t", 43);
    for id in &c.chunk_ids {
        cat.record_chunk(site, id, 10, &[7; 32]).await.unwrap();
    }
    cat.commit_snapshot(c.clone()).await.unwrap();
    let deleted = cat
        .delete_unreferenced(site, &[orphan, c.chunk_ids[0]])
        .await
        .unwrap();
    assert_eq!(deleted, vec![orphan]);
    assert!(cat.chunk_len(site, &orphan).await.unwrap().is_none());
    assert_eq!(
        cat.chunk_len(site, &c.chunk_ids[0]).await.unwrap(),
        Some(10)
    );

    // A commit referencing a deleted chunk is refused, atomically.
    let d = sample_snapshot(site, "t", 44);
    for id in &d.chunk_ids {
        cat.record_chunk(site, id, 10, &[7; 32]).await.unwrap();
    }
    assert_eq!(
        cat.delete_unreferenced(site, &[d.chunk_ids[1]])
            .await
            .unwrap(),
        vec![d.chunk_ids[1]]
    );
    let e = cat.commit_snapshot(d.clone()).await.unwrap_err();
    assert!(matches!(e, CatalogError::MissingChunks { .. }), "{e}");
    assert!(
        cat.snapshot(site, &d.record.snapshot_id)
            .await
            .unwrap()
            .is_none()
    );
}

async fn policies_round_trip(cat: &dyn Catalog) {
    let rec = PolicyRecord {
        v: 1,
        site: "s".into(),
        target: "t".into(),
        policy: crate::policy::Policy::default(),
        updated_unix_ms: 5,
    };
    cat.put_policy(&rec).await.unwrap();
    let mut changed = rec.clone();
    changed.policy.rpo_secs = 7200;
    cat.put_policy(&changed).await.unwrap();
    assert_eq!(cat.policies().await.unwrap(), vec![changed]);
    let site = super::SitePolicyRecord {
        v: 1,
        site: "s".into(),
        policy: crate::policy::site::SitePolicy::default(),
        updated_unix_ms: 5,
    };
    cat.put_site_policy(&site).await.unwrap();
    let mut site2 = site.clone();
    site2.policy.window = Some("22:00-06:00".into());
    cat.put_site_policy(&site2).await.unwrap();
    let mut other = site.clone();
    other.site = "s2".into();
    cat.put_site_policy(&other).await.unwrap();
    assert_eq!(cat.site_policies().await.unwrap(), vec![site2, other]);
    let mut sched = super::ScheduleRecord {
        v: 1,
        site: "s".into(),
        target: "t".into(),
        next_due_unix_ms: 10,
        ..Default::default()
    };
    cat.put_schedule(&sched).await.unwrap();
    sched.pending_since_unix_ms = Some(10);
    cat.put_schedule(&sched).await.unwrap();
    assert_eq!(cat.schedules().await.unwrap(), vec![sched]);
    let ev = |site: &str, at: u64, state| crate::rpo::RpoEvent {
        v: 1,
        site: site.into(),
        target: "t".into(),
        at_unix_ms: at,
        state,
        reason: "r".into(),
    };
    use crate::rpo::RpoState::*;
    for e in [ev("s", 300, Violated), ev("s", 2, Ok), ev("s2", 1, AtRisk)] {
        cat.put_rpo_event(&e).await.unwrap();
    }
    let mine = cat.rpo_events(Some("s")).await.unwrap();
    assert_eq!(
        mine,
        vec![ev("s", 2, Ok), ev("s", 300, Violated)],
        "oldest first"
    );
    assert_eq!(cat.rpo_events(None).await.unwrap().len(), 3);
    // Deleting a target's policy takes its schedule state along; a second delete finds
    // nothing; the site's settings go on their own.
    assert!(cat.delete_policy("s", Some("t")).await.unwrap());
    assert!(!cat.delete_policy("s", Some("t")).await.unwrap());
    assert!(cat.policies().await.unwrap().is_empty());
    assert!(cat.schedules().await.unwrap().is_empty());
    assert!(cat.delete_policy("s", None).await.unwrap());
    assert_eq!(cat.site_policies().await.unwrap().len(), 1);
}

/// Audit entries come back oldest first, per site; holds are per (site, target).
pub(super) async fn safety_records(cat: &dyn Catalog) {
    use super::safety::{AuditEntry, HoldRecord};
    let entry = |site: &str, at: u64| AuditEntry {
        v: 1,
        unix_ms: at,
        site: site.into(),
        target: String::new(),
        action: "retention lock shortened".into(),
        detail: "7d -> 1d".into(),
        outcome: "ok".into(),
        actor: "operator".into(),
    };
    for e in [entry("s", 30), entry("s", 10), entry("s2", 20)] {
        cat.put_audit(&e).await.unwrap();
    }
    assert_eq!(
        cat.audit(Some("s"), 0, 100).await.unwrap(),
        vec![entry("s", 10), entry("s", 30)]
    );
    assert_eq!(cat.audit(None, 0, 100).await.unwrap().len(), 3);
    // The newest `limit` since a time, still oldest first.
    assert_eq!(
        cat.audit(None, 0, 2).await.unwrap(),
        vec![entry("s2", 20), entry("s", 30)]
    );
    assert_eq!(
        cat.audit(None, 15, 100).await.unwrap(),
        vec![entry("s2", 20), entry("s", 30)]
    );
    let mut hold = HoldRecord {
        v: 1,
        site: "s".into(),
        target: "t".into(),
        since_unix_ms: 1,
        reason: "r".into(),
        suspicious: vec!["a".into()],
    };
    cat.put_hold(&hold).await.unwrap();
    hold.suspicious.push("b".into());
    cat.put_hold(&hold).await.unwrap();
    assert_eq!(cat.holds().await.unwrap(), vec![hold.clone()]);
    assert_eq!(cat.delete_hold("s", "t").await.unwrap(), Some(hold));
    assert_eq!(cat.delete_hold("s", "t").await.unwrap(), None);
    assert!(cat.holds().await.unwrap().is_empty());
}
