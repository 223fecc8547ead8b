//! Catalog size benchmark (a command, not a test): the PostgreSQL catalog filled to
//! CHUNKS million chunk records and SNAPSHOTS snapshots over 100 sites, then, through
//! the catalog's own code:
//!
//! - find-missing over 40,000 ids (half recorded, half not);
//! - the commit of a 4,000-chunk snapshot (its chunks recorded first, timed apart);
//! - garbage collection of one site after a tenth of its snapshots are deleted: the
//!   paged query for unreferenced chunks and their deletion, with this process's RSS
//!   before and after (it must not grow with the site).
//!
//! `cargo run --release -p nex-backup-tests --bin nexb-catalog -- [CHUNKS_M] [SNAPSHOTS]`
//! (default 50 and 100000). The fill uses SQL (`generate_series`, indexes built after
//! the load); everything measured goes through `PgCatalog`.

use std::time::{Duration, Instant};

use nex_backup::catalog::pg::PgCatalog;
use nex_backup::catalog::{Catalog, NewSnapshot, SnapshotRecord};
use nex_backup_shared::ids::ChunkId;
use nex_backup_tests::pg::PgCluster;
use sha2::{Digest, Sha256};

const SITES: u64 = 100;

/// The id the fill gives chunk `i` of site `s` (PostgreSQL's `sha256` of the same text).
fn chunk_id(s: u64, i: u64) -> ChunkId {
    ChunkId(Sha256::digest(format!("c{s}-{i}")).into())
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// Fill the catalog: `per_site` chunks and `snaps` snapshots a site, each snapshot
/// referencing its own run of `per_site / snaps` chunks (every chunk referenced once).
fn fill(pg: &PgCluster, db: &str, per_site: u64, snaps: u64) {
    let refs = per_site / snaps;
    let t = Instant::now();
    let template = serde_json::to_string(&record("S", "T", 0, refs)).unwrap();
    let sql = format!(
        "SET synchronous_commit = off; SET maintenance_work_mem = '512MB';
         ALTER TABLE snapshot_chunks DROP CONSTRAINT snapshot_chunks_pkey;
         DROP INDEX snapshot_chunks_by_chunk;
         ALTER TABLE chunks DROP CONSTRAINT chunks_pkey;
         INSERT INTO chunks (site, id, len, sha)
           SELECT 'site-' || s, sha256(('c' || s || '-' || i)::bytea), 1048576, NULL
           FROM generate_series(0, {sites}) s, generate_series(0, {last}) i;
         INSERT INTO snapshots (site, snapshot_id, target, created, rec, manifest)
           SELECT 'site-' || s, 'snap-' || k, 'db', 1700000000000 + k::bigint * 3600000,
                  '{template}'::jsonb || jsonb_build_object('site', 'site-' || s,
                    'snapshot_id', 'snap-' || k, 'created_unix_ms', 1700000000000 + k::bigint * 3600000),
                  '\\x00'::bytea
           FROM generate_series(0, {sites}) s, generate_series(0, {snaps_last}) k;
         INSERT INTO snapshot_chunks (site, snapshot_id, chunk)
           SELECT 'site-' || s, 'snap-' || (i / {refs}), sha256(('c' || s || '-' || i)::bytea)
           FROM generate_series(0, {sites}) s, generate_series(0, {last}) i;
         INSERT INTO site_seq (site, seq) SELECT 'site-' || s, 1 FROM generate_series(0, {sites}) s;
         ALTER TABLE chunks ADD PRIMARY KEY (site, id);
         ALTER TABLE snapshot_chunks ADD PRIMARY KEY (site, snapshot_id, chunk);
         CREATE INDEX snapshot_chunks_by_chunk ON snapshot_chunks (site, chunk);",
        sites = SITES - 1,
        last = per_site - 1,
        snaps_last = snaps - 1,
    );
    pg.psql(db, &sql);
    pg.psql(db, "VACUUM ANALYZE");
    let size = pg.psql(
        db,
        "SELECT pg_size_pretty(pg_database_size(current_database()))",
    );
    eprintln!(
        "filled in {:.0} s, database {size}",
        t.elapsed().as_secs_f64()
    );
}

fn record(site: &str, id: &str, created: u64, chunks: u64) -> SnapshotRecord {
    SnapshotRecord {
        v: 1,
        site: site.into(),
        target: "db".into(),
        snapshot_id: id.into(),
        job_id: format!("job-{id}"),
        created_unix_ms: created,
        committed_unix_ms: created,
        logical_bytes: chunks << 20,
        stored_bytes: chunks << 20,
        new_bytes: 0,
        duration_ms: 1000,
        chunks,
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let chunks_m: u64 = args.next().map_or(50, |a| a.parse().expect("CHUNKS_M"));
    let snapshots: u64 = args
        .next()
        .map_or(100_000, |a| a.parse().expect("SNAPSHOTS"));
    let per_site = chunks_m * 1_000_000 / SITES;
    let snaps = snapshots / SITES;
    let pg = PgCluster::start();
    let url = pg.create_catalog("nexscale");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cat = rt.block_on(PgCatalog::connect(&url)).unwrap();
    fill(&pg, "nexscale", per_site, snaps);
    let rows = pg.psql("nexscale", "SELECT count(*) FROM chunks");
    let snap_rows = pg.psql("nexscale", "SELECT count(*) FROM snapshots");
    rt.block_on(async {
        let site = "site-7";
        // Find-missing: 20,000 recorded ids spread over the site and 20,000 unknown.
        let mut times = vec![];
        for round in 0..5u64 {
            let ids: Vec<ChunkId> = (0..20_000u64)
                .map(|i| chunk_id(7, (i * 7919 + round * 13) % per_site))
                .chain((0..20_000u64).map(|i| chunk_id(1000 + round, i)))
                .collect();
            let t = Instant::now();
            let missing = cat.missing_chunks(site, &ids).await.unwrap();
            times.push(t.elapsed());
            assert_eq!(missing.len(), 20_000);
        }
        println!("| find-missing, 40,000 ids | {} |", ms(median(times)));

        // Commit of a 4,000-chunk snapshot: 3,000 chunks it shares, 1,000 new.
        let mut record_times = vec![];
        let mut commit_times = vec![];
        for round in 0..5u64 {
            let new: Vec<ChunkId> = (0..1_000u64).map(|i| chunk_id(5000 + round, i)).collect();
            let t = Instant::now();
            for id in &new {
                cat.record_chunk(site, id, 1 << 20, &[0; 32]).await.unwrap();
            }
            record_times.push(t.elapsed());
            let ids: Vec<ChunkId> = (0..3_000u64)
                .map(|i| chunk_id(7, i * 97 % per_site))
                .chain(new)
                .collect();
            let id = format!("bench-{round}");
            let snap = NewSnapshot {
                record: record(site, &id, 1_800_000_000_000 + round, 4_000),
                manifest: vec![1; 64],
                chunk_ids: ids,
                settles: None,
            };
            let t = Instant::now();
            cat.commit_snapshot(snap).await.unwrap();
            commit_times.push(t.elapsed());
        }
        println!(
            "| record 1,000 new chunks (one call each) | {} |",
            ms(median(record_times))
        );
        println!(
            "| commit of a 4,000-chunk snapshot | {} |",
            ms(median(commit_times))
        );

        // GC of one site: a tenth of its snapshots go, then the paged collection.
        let gc_site = "site-3";
        let doomed = (snaps / 10).max(1);
        for k in 0..doomed {
            cat.delete_snapshot(gc_site, &format!("snap-{k}"))
                .await
                .unwrap();
        }
        let rss_before = rss_mib();
        let t = Instant::now();
        let (mut after, mut deleted, mut pages) = (None, 0usize, 0);
        loop {
            let page = cat
                .unreferenced_chunks(gc_site, &[], after.as_ref(), 10_000)
                .await
                .unwrap();
            pages += 1;
            let ids: Vec<ChunkId> = page.iter().map(|(id, _)| *id).collect();
            let gone = cat.delete_unreferenced(gc_site, &ids).await.unwrap();
            cat.purge_chunks(gc_site, &gone).await.unwrap();
            deleted += gone.len();
            match page.last() {
                Some((last, _)) if page.len() == 10_000 => after = Some(*last),
                _ => break,
            }
        }
        let gc = t.elapsed();
        assert_eq!(deleted as u64, doomed * (per_site / snaps));
        println!(
            "| GC of one site ({per_site} chunks, {deleted} unreferenced, {pages} pages) | {} |",
            ms(gc)
        );
        println!(
            "| RSS of the GC process, before → after | {rss_before:.0} → {:.0} MiB |",
            rss_mib()
        );
    });
    println!("\n{rows} chunk records, {snap_rows} snapshots, {SITES} sites.");
}
