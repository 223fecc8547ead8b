//! Concurrency cases of the conformance suite (part of [`super::conformance::run_all`]):
//! writers that race each other on one record. On a backend with real concurrency
//! (PostgreSQL, one connection per future) the two sides overlap in the engine; on sled
//! they interleave at their awaits. Either way exactly one side may win.

use nex_backup_shared::ids::ChunkId;

use super::conformance::{running_backup, sample_snapshot};
use super::{Catalog, CatalogError, JobState};

pub(super) async fn run_all(cat: &dyn Catalog) {
    two_writers_race_on_a_job(cat).await;
    a_commit_races_garbage_collection(cat).await;
    the_same_commit_twice_at_once(cat).await;
    a_deleted_chunk_cannot_be_recorded_until_purged(cat).await;
    two_schedulers_claim_one_slot(cat).await;
}

/// Two schedulers (an old and a new leader) claim the same due slot: one job is named.
async fn two_schedulers_claim_one_slot(cat: &dyn Catalog) {
    use super::ScheduleRecord;
    let due = ScheduleRecord {
        v: 1,
        site: "s-sched".into(),
        target: "db".into(),
        next_due_unix_ms: 100,
        ..Default::default()
    };
    let claim = |job: &str| {
        let mut r = due.clone();
        r.last_job = Some(job.into());
        r
    };
    // The first claim of a target that has no record yet, then one of a stored record.
    for expected in [None, Some(due.clone())] {
        if let Some(stored) = &expected {
            cat.put_schedule(stored).await.unwrap();
        }
        let (a, b) = (claim("job-a"), claim("job-b"));
        let (x, y) = futures::join!(
            cat.claim_schedule(expected.as_ref(), &a),
            cat.claim_schedule(expected.as_ref(), &b)
        );
        let (x, y) = (x.unwrap(), y.unwrap());
        assert!(x ^ y, "exactly one scheduler claims the slot: {x} {y}");
        let stored = cat.schedules().await.unwrap();
        let rec = stored.iter().find(|r| r.site == "s-sched").unwrap();
        assert_eq!(rec, if x { &a } else { &b });
        cat.delete_policy("s-sched", Some("db")).await.unwrap();
    }
}

/// Between a deletion and its purge a chunk is missing, no commit may use it, and
/// recording it again is either refused as being deleted (engines with tombstones) or a
/// fresh record (engines that delete at once); after the purge it records normally.
async fn a_deleted_chunk_cannot_be_recorded_until_purged(cat: &dyn Catalog) {
    let site = "s-tomb";
    let id = ChunkId([42; 32]);
    cat.record_chunk(site, &id, 10, &[1; 32]).await.unwrap();
    assert_eq!(
        cat.delete_unreferenced(site, &[id]).await.unwrap(),
        vec![id]
    );
    assert_eq!(cat.missing_chunks(site, &[id]).await.unwrap(), vec![id]);
    assert_eq!(cat.chunk_len(site, &id).await.unwrap(), None);
    let tombstoned = match cat.record_chunk(site, &id, 10, &[1; 32]).await {
        Err(CatalogError::ChunkBeingDeleted { .. }) => true,
        Ok(true) => false,
        other => panic!("recording a chunk being deleted: {other:?}"),
    };
    if tombstoned {
        assert_eq!(cat.pending_deletions(site).await.unwrap(), vec![id]);
        let snap = super::conformance::sample_snapshot(site, "db", 42);
        assert!(matches!(
            cat.commit_snapshot(snap).await,
            Err(CatalogError::MissingChunks { .. })
        ));
    }
    cat.purge_chunks(site, &[id]).await.unwrap();
    assert!(cat.pending_deletions(site).await.unwrap().is_empty());
    let again = cat.record_chunk(site, &id, 10, &[1; 32]).await.unwrap();
    assert!(
        again || !tombstoned,
        "after the purge the chunk records anew"
    );
    // An orphan claim: only ids without any record are claimed.
    let orphan = ChunkId([43; 32]);
    let claimed = cat.claim_orphans(site, &[orphan]).await.unwrap();
    assert_eq!(claimed, vec![orphan]);
    cat.purge_chunks(site, &claimed).await.unwrap();
    assert!(cat.record_chunk(site, &orphan, 1, &[0; 32]).await.unwrap());
}

/// A stall check and a cancel both finish one running job: one wins, the other writes
/// nothing, and the record is the winner's.
async fn two_writers_race_on_a_job(cat: &dyn Catalog) {
    for round in 0..10 {
        let id = format!("race-job-{round}");
        let running = running_backup(&id, "s-race", 1);
        cat.put_job(&running).await.unwrap();
        let finish = |why: &str| {
            let mut j = running.clone();
            j.state = JobState::Failed;
            j.error = Some(why.into());
            j
        };
        let (stalled, cancelled) = (finish("stalled"), finish("cancelled"));
        let (a, b) = futures::join!(
            cat.update_job(&running, &stalled),
            cat.update_job(&running, &cancelled)
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert!(a ^ b, "exactly one writer wins: {a} {b}");
        let stored = cat.job(&id).await.unwrap().unwrap();
        assert_eq!(stored, if a { stalled } else { cancelled });
        assert!(
            !cat.update_job(&running, &running).await.unwrap(),
            "a stale expectation writes nothing"
        );
    }
}

/// A commit that needs a chunk and a GC pass deleting it: never both.
async fn a_commit_races_garbage_collection(cat: &dyn Catalog) {
    for seed in 150..170u8 {
        let snap = sample_snapshot("s-gc-race", "db", seed);
        for id in &snap.chunk_ids {
            cat.record_chunk("s-gc-race", id, 10, &[7; 32])
                .await
                .unwrap();
        }
        let victims: Vec<ChunkId> = snap.chunk_ids[..1].to_vec();
        let (committed, collected) = futures::join!(
            cat.commit_snapshot(snap.clone()),
            cat.delete_unreferenced("s-gc-race", &victims)
        );
        match (committed, collected.unwrap().is_empty()) {
            (Ok(_), true) => {
                assert_eq!(
                    cat.chunk_len("s-gc-race", &victims[0]).await.unwrap(),
                    Some(10)
                );
            }
            (Err(CatalogError::MissingChunks { .. }), false) => {
                assert!(
                    cat.snapshot("s-gc-race", &snap.record.snapshot_id)
                        .await
                        .unwrap()
                        .is_none()
                );
            }
            (c, none) => panic!("a commit and a GC both went through: {c:?}, none deleted: {none}"),
        }
    }
}

/// Two deliveries of the same commit at once: one snapshot, both answered with it.
async fn the_same_commit_twice_at_once(cat: &dyn Catalog) {
    let snap = sample_snapshot("s-twice", "db", 200);
    for id in &snap.chunk_ids {
        cat.record_chunk("s-twice", id, 10, &[7; 32]).await.unwrap();
    }
    let (a, b) = futures::join!(
        cat.commit_snapshot(snap.clone()),
        cat.commit_snapshot(snap.clone())
    );
    assert_eq!(a.unwrap(), b.unwrap());
    assert_eq!(cat.snapshots(Some("s-twice"), None).await.unwrap().len(), 1);
}
