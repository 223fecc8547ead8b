//! Conformance checks for pages and history retention.

use super::conformance::{running_backup, sample_snapshot};
use super::history::JobFilter;
use super::{Catalog, JobRecord, JobState};
use crate::rpo::{RpoEvent, RpoState};

pub(super) async fn run_all(cat: &dyn Catalog) {
    job_pages(cat).await;
    snapshot_pages(cat).await;
    history_retention(cat).await;
}

fn ids_of(jobs: &[JobRecord]) -> Vec<&str> {
    jobs.iter().map(|j| j.job_id.as_str()).collect()
}

fn finished(id: &str, site: &str, target: &str, at: u64, state: JobState) -> JobRecord {
    let mut j = running_backup(id, site, at);
    j.target = target.into();
    j.state = state;
    j.ended_unix_ms = Some(at + 10);
    j
}

async fn job_pages(cat: &dyn Catalog) {
    for (i, state) in [
        JobState::Succeeded,
        JobState::Failed,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Succeeded,
    ]
    .into_iter()
    .enumerate()
    {
        let at = 1_000 * (i as u64 + 1);
        cat.put_job(&finished(&format!("hp-{i}"), "s-pages", "db", at, state))
            .await
            .unwrap();
    }
    cat.put_job(&finished(
        "hp-other",
        "s-pages-2",
        "db",
        9_000,
        JobState::Failed,
    ))
    .await
    .unwrap();
    let site = JobFilter {
        site: Some("s-pages".into()),
        ..Default::default()
    };
    let ids = |jobs: Vec<JobRecord>| jobs.into_iter().map(|j| j.job_id).collect::<Vec<_>>();
    let first = cat.jobs_page(&site, None, 2).await.unwrap();
    assert_eq!(ids(first.clone()), ["hp-4", "hp-3"], "newest first");
    let last = first.last().unwrap();
    let cursor = (last.started_unix_ms, last.job_id.clone());
    let next = cat.jobs_page(&site, Some(&cursor), 10).await.unwrap();
    assert_eq!(ids(next), ["hp-2", "hp-1", "hp-0"]);
    let failed = JobFilter {
        failed_only: true,
        ..site.clone()
    };
    assert_eq!(
        ids(cat.jobs_page(&failed, None, 10).await.unwrap()),
        ["hp-3", "hp-1"]
    );
    let other_target = JobFilter {
        target: Some("nope".into()),
        ..site
    };
    assert!(
        cat.jobs_page(&other_target, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let mine = cat.site_jobs("s-pages-2").await.unwrap();
    assert_eq!(ids(mine), ["hp-other"]);
    // The whole fleet's page is in time order across sites.
    let all = cat.jobs_page(&JobFilter::default(), None, 3).await.unwrap();
    let at: Vec<u64> = all.iter().map(|j| j.started_unix_ms).collect();
    assert!(at.windows(2).all(|w| w[0] >= w[1]), "newest first: {at:?}");
    assert!(all.iter().any(|j| j.job_id == "hp-other"), "newest of all");
    // A changed job is what the pages show; a settled one is no longer "failed".
    let old = cat.job("hp-3").await.unwrap().unwrap();
    let mut fixed = old.clone();
    fixed.state = JobState::Succeeded;
    assert!(cat.update_job(&old, &fixed).await.unwrap());
    assert_eq!(
        ids(cat.jobs_page(&failed, None, 10).await.unwrap()),
        ["hp-1"]
    );
    assert!(cat.update_job(&fixed, &old).await.unwrap());
    let newest = cat.newest_jobs(super::JobKind::Backup).await.unwrap();
    let of = |site: &str| {
        newest
            .iter()
            .filter(|j| j.site == site && j.target == "db")
            .map(|j| j.job_id.as_str())
            .collect::<Vec<_>>()
    };
    assert_eq!(of("s-pages"), ["hp-4"], "one per target, the newest");
    assert_eq!(of("s-pages-2"), ["hp-other"]);
    assert!(
        cat.newest_jobs(super::JobKind::Restore)
            .await
            .unwrap()
            .iter()
            .all(|j| j.kind == super::JobKind::Restore)
    );
}

async fn snapshot_pages(cat: &dyn Catalog) {
    let site = "s-snap-pages";
    let mut want = vec![];
    for seed in 60..63u8 {
        let s = sample_snapshot(site, "db", seed);
        for id in &s.chunk_ids {
            cat.record_chunk(site, id, 10, &[7; 32]).await.unwrap();
        }
        want.push(s.record.snapshot_id.clone());
        cat.commit_snapshot(s).await.unwrap();
    }
    let first = cat
        .snapshots_page(Some(site), Some("db"), None, 2)
        .await
        .unwrap();
    let last = first.last().unwrap();
    let cursor = (last.created_unix_ms, last.snapshot_id.clone());
    let rest = cat
        .snapshots_page(Some(site), None, Some(&cursor), 2)
        .await
        .unwrap();
    let got: Vec<String> = first
        .iter()
        .chain(&rest)
        .map(|s| s.snapshot_id.clone())
        .collect();
    assert_eq!(got, want, "oldest first, each once");
}

/// Old finished jobs go, except a held snapshot's job, a running one and the newest of
/// each target; old RPO events go except the last before the horizon.
async fn history_retention(cat: &dyn Catalog) {
    let site = "s-history";
    let snap = sample_snapshot(site, "db", 70);
    for id in &snap.chunk_ids {
        cat.record_chunk(site, id, 10, &[7; 32]).await.unwrap();
    }
    let held = snap.record.snapshot_id.clone();
    cat.commit_snapshot(snap).await.unwrap();
    let mut of_held = finished("h-held", site, "db", 100, JobState::Succeeded);
    of_held.snapshot_id = Some(held);
    let mut of_gone = finished("h-gone", site, "db", 110, JobState::Succeeded);
    of_gone.snapshot_id = Some("20200101T000000Z-gone".into());
    let jobs = [
        of_held,
        of_gone,
        finished("h-failed", site, "db", 120, JobState::Failed),
        running_backup("h-running", site, 130),
        finished("h-newest-old", site, "other", 140, JobState::Failed),
        finished("h-recent", site, "db", 5_000, JobState::Failed),
    ];
    for j in &jobs {
        cat.put_job(j).await.unwrap();
    }
    for at in [100, 200, 300] {
        let ev = RpoEvent {
            v: 1,
            site: site.into(),
            target: "db".into(),
            at_unix_ms: at,
            state: RpoState::Ok,
            reason: String::new(),
        };
        cat.put_rpo_event(&ev).await.unwrap();
    }
    let of_snapshot = cat
        .jobs_of_snapshots(&[(site.to_string(), jobs[0].snapshot_id.clone().unwrap())])
        .await
        .unwrap();
    assert_eq!(
        ids_of(&of_snapshot),
        ["h-held"],
        "the jobs about that snapshot only"
    );
    let gone = cat.forget_history(250).await.unwrap();
    assert!(gone.jobs >= 2, "{gone:?}");
    for (id, kept) in [
        ("h-held", true),
        ("h-gone", false),
        ("h-failed", false),
        ("h-running", true),
        ("h-newest-old", true),
        ("h-recent", true),
    ] {
        assert_eq!(cat.job(id).await.unwrap().is_some(), kept, "job {id}");
    }
    let mut listed = ids_of(&cat.site_jobs(site).await.unwrap())
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
    listed.sort();
    assert_eq!(
        listed,
        ["h-held", "h-newest-old", "h-recent", "h-running"],
        "a forgotten job is gone from the site's listing too"
    );
    let at: Vec<u64> = cat
        .rpo_events(Some(site))
        .await
        .unwrap()
        .iter()
        .map(|e| e.at_unix_ms)
        .collect();
    assert_eq!(at, [200, 300], "the last event before the horizon stays");
}
