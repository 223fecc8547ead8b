//! The conformance suite every [`Catalog`] backend must pass. Backends call
//! [`run_all`] from their own tests.

use nex_backup_shared::ids::{ChunkId, new_snapshot_id};

use super::{AgentRecord, Catalog, CatalogError, JobRecord, JobState, NewSnapshot, SnapshotRecord};

/// A snapshot of `site`/`target` referencing three chunks derived from `seed`.
pub fn sample_snapshot(site: &str, target: &str, seed: u8) -> NewSnapshot {
    let chunk_ids = vec![
        ChunkId([seed; 32]),
        ChunkId([seed.wrapping_add(100); 32]),
        ChunkId([seed; 32]),
    ];
    NewSnapshot {
        record: SnapshotRecord {
            v: 1,
            site: site.into(),
            target: target.into(),
            snapshot_id: new_snapshot_id(1_700_000_000_000 + u64::from(seed) * 1000),
            job_id: format!("job-{seed}"),
            created_unix_ms: 1_700_000_000_000 + u64::from(seed) * 1000,
            committed_unix_ms: 0,
            logical_bytes: 30,
            stored_bytes: 0,
            new_bytes: 0,
            duration_ms: 5,
            chunks: 0,
        },
        manifest: vec![seed; 40],
        chunk_ids,
        settles: None,
    }
}

/// A running backup job of target `db` on agent `a1`.
pub(super) fn running_backup(job_id: &str, site: &str, started_unix_ms: u64) -> JobRecord {
    JobRecord {
        v: 1,
        job_id: job_id.into(),
        site: site.into(),
        target: "db".into(),
        kind: super::JobKind::Backup,
        state: JobState::Running,
        started_unix_ms,
        ended_unix_ms: None,
        error: None,
        snapshot_id: None,
        trigger: super::Trigger::Manual,
        logical_bytes: 0,
        new_bytes: 0,
        agent_id: "a1".into(),
        expected_snapshot: None,
    }
}

/// Run every conformance check against an empty catalog.
pub async fn run_all(cat: &dyn Catalog) {
    chunks_and_missing(cat).await;
    commit_is_checked_and_idempotent(cat).await;
    sites_are_isolated(cat).await;
    agents_and_jobs(cat).await;
    a_commit_settles_its_running_job_once(cat).await;
    super::conformance_trust::run_all(cat).await;
    super::conformance_gc::run_all(cat).await;
    super::conformance_race::run_all(cat).await;
    newest_snapshot_per_target(cat).await;
    super::conformance_history::run_all(cat).await;
}

/// `newest_snapshots` is the last snapshot of each (site, target), in (site, target)
/// order, over whatever the suite committed before.
async fn newest_snapshot_per_target(cat: &dyn Catalog) {
    let all = cat.snapshots(None, None).await.unwrap();
    let mut want: Vec<&SnapshotRecord> = vec![];
    for s in &all {
        match want
            .iter_mut()
            .find(|w| (&w.site, &w.target) == (&s.site, &s.target))
        {
            Some(w) => *w = s,
            None => want.push(s),
        }
    }
    want.sort_by(|a, b| (&a.site, &a.target).cmp(&(&b.site, &b.target)));
    assert!(want.len() >= 3, "the suite committed several targets");
    let got = cat.newest_snapshots().await.unwrap();
    assert_eq!(got.iter().collect::<Vec<_>>(), want);
}

async fn chunks_and_missing(cat: &dyn Catalog) {
    let a = ChunkId([1; 32]);
    let b = ChunkId([2; 32]);
    assert_eq!(cat.missing_chunks("s1", &[a, b]).await.unwrap(), vec![a, b]);
    assert!(cat.record_chunk("s1", &a, 77, &[7; 32]).await.unwrap());
    assert!(
        !cat.record_chunk("s1", &a, 77, &[7; 32]).await.unwrap(),
        "second record reports already present"
    );
    assert_eq!(cat.missing_chunks("s1", &[a, b]).await.unwrap(), vec![b]);
    assert_eq!(cat.chunk_len("s1", &a).await.unwrap(), Some(77));
    assert_eq!(cat.chunk_len("s1", &b).await.unwrap(), None);
}

async fn commit_is_checked_and_idempotent(cat: &dyn Catalog) {
    let snap = sample_snapshot("s1", "db", 10);
    let err = cat.commit_snapshot(snap.clone()).await.unwrap_err();
    assert!(
        matches!(err, CatalogError::MissingChunks { missing: 2, .. }),
        "{err}"
    );
    assert!(
        cat.snapshots(Some("s1"), None).await.unwrap().is_empty(),
        "refused commit is invisible"
    );
    for id in &snap.chunk_ids {
        cat.record_chunk("s1", id, 100, &[7; 32]).await.unwrap();
    }
    let rec = cat.commit_snapshot(snap.clone()).await.unwrap();
    assert_eq!(rec.chunks, 2);
    assert_eq!(rec.stored_bytes, 200);
    assert_eq!(
        cat.commit_snapshot(snap.clone()).await.unwrap(),
        rec,
        "re-commit is a no-op"
    );
    let mut conflicting = snap.clone();
    conflicting.manifest = vec![0; 3];
    assert!(matches!(
        cat.commit_snapshot(conflicting).await,
        Err(CatalogError::Conflict { .. })
    ));
    assert_eq!(
        cat.manifest("s1", &rec.snapshot_id).await.unwrap(),
        Some(snap.manifest.clone())
    );
    assert_eq!(
        cat.snapshot("s1", &rec.snapshot_id).await.unwrap(),
        Some(rec.clone())
    );

    let later = sample_snapshot("s1", "db", 11);
    for id in &later.chunk_ids {
        cat.record_chunk("s1", id, 1, &[7; 32]).await.unwrap();
    }
    cat.commit_snapshot(later.clone()).await.unwrap();
    let list = cat.snapshots(Some("s1"), Some("db")).await.unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(
        list[1].snapshot_id, later.record.snapshot_id,
        "oldest first"
    );
    assert_eq!(cat.snapshots(None, Some("db")).await.unwrap().len(), 2);
    assert!(
        cat.snapshots(Some("s1"), Some("other"))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn sites_are_isolated(cat: &dyn Catalog) {
    // s2 references chunks that only s1 holds: refused.
    let snap = sample_snapshot("s2", "db", 10);
    assert!(matches!(
        cat.commit_snapshot(snap).await,
        Err(CatalogError::MissingChunks { .. })
    ));
    assert_eq!(
        cat.missing_chunks("s2", &[ChunkId([1; 32])])
            .await
            .unwrap()
            .len(),
        1
    );
    let s1 = cat.snapshots(Some("s1"), None).await.unwrap();
    assert!(
        cat.snapshot("s2", &s1[0].snapshot_id)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        cat.manifest("s2", &s1[0].snapshot_id)
            .await
            .unwrap()
            .is_none()
    );
}

async fn agents_and_jobs(cat: &dyn Catalog) {
    let mut agent = AgentRecord {
        v: 1,
        site: "s1".into(),
        agent_id: "host-a".into(),
        version: "0.1.0".into(),
        last_seen_unix_ms: 1,
        targets: vec![("db".into(), "postgres".into())],
    };
    cat.put_agent(&agent).await.unwrap();
    agent.last_seen_unix_ms = 2;
    cat.put_agent(&agent).await.unwrap();
    assert_eq!(cat.agents().await.unwrap(), vec![agent]);

    let mut job = running_backup("j1", "s1", 5);
    cat.put_job(&job).await.unwrap();
    job.state = JobState::Failed;
    job.error = Some("boom".into());
    cat.put_job(&job).await.unwrap();
    assert_eq!(cat.job("j1").await.unwrap(), Some(job.clone()));
    assert_eq!(cat.jobs().await.unwrap(), vec![job]);
    cat.flush().await.unwrap();
}

/// A commit that settles a job happens only while that job runs, and settles it in the
/// same step; a second commit for the job (another snapshot) is refused and invisible.
async fn a_commit_settles_its_running_job_once(cat: &dyn Catalog) {
    let running = running_backup("job-settle", "s9", 1);
    let first = sample_snapshot("s9", "db", 61);
    let second = sample_snapshot("s9", "db", 62);
    for id in first.chunk_ids.iter().chain(&second.chunk_ids) {
        cat.record_chunk("s9", id, 10, &[7; 32]).await.unwrap();
    }
    let settle = |snap: &NewSnapshot| {
        let mut s = snap.clone();
        let mut j = running.clone();
        j.state = JobState::Succeeded;
        j.snapshot_id = Some(s.record.snapshot_id.clone());
        s.record.job_id = j.job_id.clone();
        s.settles = Some(j);
        s
    };
    assert!(
        matches!(
            cat.commit_snapshot(settle(&first)).await,
            Err(CatalogError::JobNotRunning { .. })
        ),
        "a job that was never recorded settles nothing"
    );
    cat.put_job(&running).await.unwrap();
    cat.commit_snapshot(settle(&first)).await.unwrap();
    let job = cat.job("job-settle").await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Succeeded);
    assert_eq!(
        job.snapshot_id.as_deref(),
        Some(&first.record.snapshot_id[..])
    );
    assert!(matches!(
        cat.commit_snapshot(settle(&second)).await,
        Err(CatalogError::JobNotRunning { .. })
    ));
    assert!(
        cat.snapshot("s9", &second.record.snapshot_id)
            .await
            .unwrap()
            .is_none()
    );
}
