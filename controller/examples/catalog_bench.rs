//! Benchmark of the embedded sled catalog at fleet size (see docs/benchmarks.md):
//! insert rate of chunk records, commit rate of snapshots, find-missing over 40,000 ids,
//! size on disk, and reopen time after the writer was killed with SIGKILL.
//!
//! `cargo run --release -p nex-backup --example catalog_bench -- [CHUNKS] [SNAPSHOTS]`

use std::path::Path;
use std::time::Instant;

use nex_backup::catalog::sled_catalog::SledCatalog;
use nex_backup::catalog::{Catalog, NewSnapshot, SnapshotRecord};
use nex_backup_shared::ids::{ChunkId, new_snapshot_id};
use sha2::{Digest, Sha256};

fn id(i: u64) -> ChunkId {
    ChunkId(Sha256::digest(i.to_le_bytes()).into())
}

fn du(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            if e.path().is_dir() {
                du(&e.path())
            } else {
                e.metadata().map_or(0, |m| m.len())
            }
        })
        .sum()
}

/// Child: fill the catalog, then keep writing unflushed records until killed.
async fn populate(dir: &Path, chunks: u64, snapshots: u64) {
    let cat = SledCatalog::open(dir).expect("open");
    let t = Instant::now();
    for i in 0..chunks {
        cat.record_chunk("bench-site", &id(i), 70_000, &[1; 32])
            .await
            .expect("record");
    }
    let s = t.elapsed().as_secs_f64();
    println!(
        "chunk inserts: {chunks} in {s:.1} s = {:.0}/s",
        chunks as f64 / s
    );
    let per = chunks / snapshots;
    let manifest: Vec<u8> = (0..per * 40).map(|i| (i * 7919 % 251) as u8).collect();
    let t = Instant::now();
    for n in 0..snapshots {
        let snap = NewSnapshot {
            record: SnapshotRecord {
                v: 1,
                site: "bench-site".into(),
                target: format!("db{}", n % 20),
                snapshot_id: new_snapshot_id(1_700_000_000_000 + n * 60_000),
                job_id: format!("job-{n}"),
                created_unix_ms: 1_700_000_000_000 + n * 60_000,
                committed_unix_ms: 0,
                logical_bytes: per * 250_000,
                stored_bytes: 0,
                new_bytes: 0,
                duration_ms: 1000,
                chunks: 0,
            },
            manifest: manifest.clone(),
            chunk_ids: (n * per..(n + 1) * per).map(id).collect(),
            settles: None,
        };
        cat.commit_snapshot(snap).await.expect("commit");
    }
    let s = t.elapsed().as_secs_f64();
    println!(
        "snapshot commits ({per} chunks, {} KiB manifest each): {snapshots} in {s:.1} s = {:.0}/s",
        manifest.len() / 1024,
        snapshots as f64 / s
    );
    cat.flush().await.expect("flush");
    println!("flushed");
    // Unflushed tail, interrupted by SIGKILL from the parent.
    for i in chunks..chunks + 10_000_000 {
        cat.record_chunk("bench-site", &id(i), 70_000, &[1; 32])
            .await
            .expect("record");
        if i == chunks + 50_000 {
            println!("dirty");
        }
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        populate(
            Path::new(&args[2]),
            args[3].parse().expect("chunks"),
            args[4].parse().expect("snapshots"),
        )
        .await;
        return;
    }
    let chunks: u64 = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5_000_000);
    let snapshots: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("catalog");
    let mut child = std::process::Command::new(std::env::current_exe().expect("exe"))
        .args([
            "--child",
            &dir.display().to_string(),
            &chunks.to_string(),
            &snapshots.to_string(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn writer");
    let out = child.stdout.take().expect("stdout");
    for line in std::io::BufRead::lines(std::io::BufReader::new(out)).map_while(Result::ok) {
        println!("{line}");
        if line == "dirty" {
            break;
        }
    }
    child.kill().expect("SIGKILL writer");
    child.wait().expect("reap");
    println!("writer killed with SIGKILL while writing unflushed records");

    let t = Instant::now();
    let cat = SledCatalog::open(&dir).expect("reopen");
    let snaps = cat.snapshots(Some("bench-site"), None).await.expect("list");
    println!(
        "reopen after crash + list {} snapshots: {:.2} s",
        snaps.len(),
        t.elapsed().as_secs_f64()
    );
    assert_eq!(
        snaps.len() as u64,
        snapshots,
        "every committed snapshot survives"
    );

    let probe: Vec<ChunkId> = (0..20_000)
        .map(|i| id(i * (chunks / 20_000)))
        .chain((0..20_000).map(|i| id(u64::MAX - i)))
        .collect();
    for run in ["cold", "warm"] {
        let t = Instant::now();
        let missing = cat
            .missing_chunks("bench-site", &probe)
            .await
            .expect("missing");
        let secs = t.elapsed().as_secs_f64();
        println!(
            "find-missing over {} ids ({} missing), {run}: {secs:.3} s",
            probe.len(),
            missing.len()
        );
        assert_eq!(missing.len(), 20_000);
    }
    println!(
        "size on disk: {:.2} GiB (sled reports {:.2} GiB)",
        du(&dir) as f64 / (1u64 << 30) as f64,
        cat.size_on_disk() as f64 / (1u64 << 30) as f64
    );
}
