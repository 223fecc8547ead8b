//! Dashboard benchmark (a command, not a test): seed an embedded catalog with a fleet
//! (default 500 sites, 5 targets each, 200 snapshots a target = 500,000 snapshots, and
//! 200,000 jobs), start a real controller on it with the dashboard, log in, and time
//! every page and API call: p50 and p99 over repeated requests, and the fleet page's
//! weight. Prints a markdown table for `docs/benchmarks.md`.
//!
//! `cargo run --release -p nex-backup-tests --bin nexb-dashboard -- [SITES] [SNAPS_PER_TARGET] [REQUESTS] [pg]`
//! The data dir is put under /dev/shm when it exists (seeding commits durably). With
//! `pg`, the catalog is a throwaway PostgreSQL cluster (seeded by four sites at a time,
//! with `synchronous_commit` off while seeding only).

use std::time::{Duration, Instant};

use nex_backup::catalog::pg::PgCatalog;
use nex_backup::catalog::sled_catalog::SledCatalog;
use nex_backup::catalog::{
    AgentRecord, Catalog, JobKind, JobRecord, JobState, NewSnapshot, SnapshotRecord, Trigger,
};
use nex_backup_shared::ids::ChunkId;
use nex_backup_tests::pg::PgCluster;
use nex_backup_tests::procs::Controller;
use nex_backup_tests::web::{Web, dashboard_url};

const TARGETS: u64 = 5;
const JOBS_PER_TARGET: u64 = 80;
const T0: u64 = 1_780_000_000_000;

fn chunk(site: u64, t: u64, k: u64) -> ChunkId {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&site.to_le_bytes());
    b[8..16].copy_from_slice(&t.to_le_bytes());
    b[16..24].copy_from_slice(&k.to_le_bytes());
    ChunkId(b)
}

async fn seed(cat: &dyn Catalog, sites: u64, snaps: u64, now: u64) {
    for s in 0..sites {
        seed_site(cat, s, snaps, now).await;
        if s % 50 == 49 {
            eprintln!("seeded {} sites", s + 1);
        }
    }
}

/// Seed sites `first, first + every, ...` (one of `every` concurrent seeders).
async fn seed_some(
    cat: std::sync::Arc<PgCatalog>,
    first: u64,
    every: u64,
    sites: u64,
    snaps: u64,
    now: u64,
) {
    for s in (first..sites).step_by(every as usize) {
        seed_site(&*cat, s, snaps, now).await;
        if s % 50 == 49 {
            eprintln!("seeded site {}", s + 1);
        }
    }
}

async fn seed_site(cat: &dyn Catalog, s: u64, snaps: u64, now: u64) {
    let step = 3_600_000 * 6;
    let start = now - snaps * step;
    {
        let site = format!("site-{s:03}");
        let targets: Vec<(String, String)> = (0..TARGETS)
            .map(|t| (format!("db{t}"), "postgres".into()))
            .collect();
        cat.put_agent(&AgentRecord {
            v: 1,
            site: site.clone(),
            agent_id: format!("{site}-srv"),
            version: "0.1.0".into(),
            last_seen_unix_ms: now,
            targets,
        })
        .await
        .unwrap();
        for t in 0..TARGETS {
            let target = format!("db{t}");
            for k in 0..snaps {
                let id = chunk(s, t, k);
                cat.record_chunk(&site, &id, 1 << 20, &[7; 32])
                    .await
                    .unwrap();
                let created = start + k * step;
                let sid = format!(
                    "{}-{s:03}{t}{k:04}",
                    jiff::Timestamp::from_millisecond(created as i64)
                        .unwrap()
                        .strftime("%Y%m%dT%H%M%SZ")
                );
                let record = SnapshotRecord {
                    v: 1,
                    site: site.clone(),
                    target: target.clone(),
                    snapshot_id: sid.clone(),
                    job_id: format!("job-{sid}"),
                    created_unix_ms: created,
                    committed_unix_ms: created + 60_000,
                    logical_bytes: 1 << 30,
                    stored_bytes: 1 << 28,
                    new_bytes: 1 << 22,
                    duration_ms: 60_000,
                    chunks: 1,
                };
                cat.commit_snapshot(NewSnapshot {
                    record,
                    manifest: vec![0; 64],
                    chunk_ids: vec![id],
                    settles: None,
                })
                .await
                .unwrap();
                if k + JOBS_PER_TARGET >= snaps {
                    cat.put_job(&JobRecord {
                        v: 1,
                        job_id: format!("job-{sid}"),
                        site: site.clone(),
                        target: target.clone(),
                        kind: JobKind::Backup,
                        state: if k % 50 == 7 {
                            JobState::Failed
                        } else {
                            JobState::Succeeded
                        },
                        started_unix_ms: created,
                        ended_unix_ms: Some(created + 60_000),
                        error: (k % 50 == 7).then(|| "pg_dump: connection refused".into()),
                        snapshot_id: Some(sid),
                        trigger: Trigger::Schedule,
                        logical_bytes: 1 << 30,
                        new_bytes: 1 << 22,
                        agent_id: format!("{site}-srv"),
                        expected_snapshot: None,
                    })
                    .await
                    .unwrap();
                }
            }
        }
    }
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
    v[i].as_secs_f64() * 1000.0
}

fn main() {
    let mut args = std::env::args().skip(1);
    let sites: u64 = args.next().map_or(500, |a| a.parse().expect("SITES"));
    let snaps: u64 = args
        .next()
        .map_or(200, |a| a.parse().expect("SNAPS_PER_TARGET"));
    let requests: usize = args.next().map_or(100, |a| a.parse().expect("REQUESTS"));
    let on_pg = args.next().is_some_and(|a| a == "pg");
    let root = if std::path::Path::new("/dev/shm").is_dir() {
        "/dev/shm"
    } else {
        "/tmp"
    };
    let dir = tempfile::Builder::new()
        .prefix("nexdash")
        .tempdir_in(root)
        .unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let now = nex_backup_shared::clock::now_ms().max(T0);
    let t = Instant::now();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (cluster, catalog_args) = if on_pg {
        let cluster = PgCluster::start();
        let url = cluster.create_catalog("nexdash");
        cluster.psql("postgres", "ALTER SYSTEM SET synchronous_commit = off");
        cluster.psql("postgres", "SELECT pg_reload_conf()");
        let cat = std::sync::Arc::new(rt.block_on(PgCatalog::connect(&url)).unwrap());
        rt.block_on(async {
            let tasks: Vec<_> = (0..4)
                .map(|i| tokio::spawn(seed_some(cat.clone(), i, 4, sites, snaps, now)))
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        });
        cluster.psql("postgres", "ALTER SYSTEM RESET synchronous_commit");
        cluster.psql("postgres", "SELECT pg_reload_conf()");
        cluster.psql("nexdash", "VACUUM ANALYZE");
        (Some(cluster), vec!["--catalog".to_string(), url])
    } else {
        let cat = SledCatalog::open(&data.join("catalog")).unwrap();
        rt.block_on(seed(&cat, sites, snaps, now));
        rt.block_on(cat.flush()).unwrap();
        (None, vec![])
    };
    drop(rt);
    let jobs = sites * TARGETS * JOBS_PER_TARGET.min(snaps);
    eprintln!(
        "seeded {sites} sites, {} targets, {} snapshots, {jobs} jobs in {:.0} s",
        sites * TARGETS,
        sites * TARGETS * snaps,
        t.elapsed().as_secs_f64()
    );
    let mut serve_args = ["--no-scheduler", "--http-listen", "127.0.0.1:0"]
        .map(String::from)
        .to_vec();
    serve_args.extend(catalog_args);
    let c = Controller::start(&data, 0, &dir.path().join("controller.log"), &serve_args);
    let out = c.cli(&["account", "add", "bench", "--role", "admin"]);
    assert!(out.ok, "{}", out.stderr);
    let pw = out.stdout.lines().last().unwrap().trim().to_string();
    let cust = c.cli(&[
        "account", "add", "cust", "--role", "customer", "--site", "site-001",
    ]);
    let cust_pw = cust.stdout.lines().last().unwrap().trim().to_string();
    let base = dashboard_url(&c.log);
    let mut web = Web::with_timeout(&base, Duration::from_secs(900));
    assert_eq!(web.login("bench", &pw).status, 303);
    // The first fleet page computes the shared figures (later ones read them).
    let t = Instant::now();
    let first = web.get("/fleet");
    assert_eq!(first.status, 200);
    println!(
        "first `/fleet` (computes the fleet's figures): {:.0} ms\n",
        t.elapsed().as_secs_f64() * 1000.0
    );
    let mut cw = Web::with_timeout(&base, Duration::from_secs(900));
    assert_eq!(cw.login("cust", &cust_pw).status, 303);
    let fleet_page = web.get("/fleet").body;
    let fleet_bytes = fleet_page.len();
    if let Ok(p) = std::env::var("NEXB_SAVE_FLEET") {
        std::fs::write(p, &fleet_page).unwrap();
    }
    let mid = format!("site-{:03}", sites / 2);
    let paths = [
        "/fleet".to_string(),
        "/fleet?state=violated".into(),
        format!("/sites/{mid}"),
        format!("/sites/{mid}/targets/db2"),
        format!("/sites/{mid}/targets/db2/policy"),
        "/jobs".into(),
        format!("/jobs?site={mid}&outcome=failed"),
        "/incidents".into(),
        "/audit".into(),
        "/api/v1/fleet".into(),
        format!("/api/v1/sites/{mid}"),
        format!("/api/v1/sites/{mid}/targets/db2"),
        "/api/v1/jobs?limit=100".into(),
    ];
    println!(
        "| page or call ({sites} sites, {} snapshots, {jobs} jobs; {requests} requests each; {} catalog) | p50 ms | p99 ms |",
        sites * TARGETS * snaps,
        if cluster.is_some() {
            "PostgreSQL"
        } else {
            "embedded"
        }
    );
    println!("|---|---|---|");
    let time = |w: &mut Web, label: &str, path: &str| {
        for _ in 0..3 {
            assert_eq!(w.get(path).status, 200, "{path}");
        }
        let mut v = vec![];
        for _ in 0..requests {
            let t = Instant::now();
            let r = w.get(path);
            v.push(t.elapsed());
            assert_eq!(r.status, 200, "{path}");
        }
        println!(
            "| {label}`{path}` | {:.1} | {:.1} |",
            pct(&mut v, 0.5),
            pct(&mut v, 0.99)
        );
    };
    for p in &paths {
        time(&mut web, "", p);
    }
    time(&mut cw, "customer ", "/fleet");
    println!("\nfleet page: {:.0} KB", fleet_bytes as f64 / 1024.0);
    let log = std::fs::read_to_string(&c.log).unwrap_or_default();
    let rss = std::fs::read_to_string(format!("/proc/{}/status", c.pid()))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM")).map(String::from))
        .unwrap_or_default();
    println!(
        "controller peak memory: {rss}; log lines {}",
        log.lines().count()
    );
}
