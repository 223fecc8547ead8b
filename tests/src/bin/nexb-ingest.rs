//! Ingest benchmark (a command, not a test): four agents of four sites (so nothing
//! deduplicates across them) back up the same database at once, two through each of
//! two controller replicas sharing a PostgreSQL catalog, first into SeaweedFS (S3),
//! then into the local file store. Reports wall time, throughput, and the CPU each
//! party used, which shows where the bottleneck is.
//!
//! `cargo run --release -p nex-backup-tests --bin nexb-ingest -- [ROWS]` (default
//! 4,000,000 invoice rows, a ~1 GB dump).

use std::time::Instant;

use nex_backup_tests::fleet::{real_agent, replica_args};
use nex_backup_tests::measure::cpu_secs;
use nex_backup_tests::pg::PgCluster;
use nex_backup_tests::procs::{Agent, Controller, cli};
use nex_backup_tests::s3::S3Server;
use nex_backup_tests::sample::invoices_sql;
use nex_backup_tests::wait_for;

const AGENTS: usize = 4;

/// Busy and total jiffies of the whole machine.
fn machine() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    let total: f64 = f.iter().sum();
    let idle = f.get(3).copied().unwrap_or(0.0) + f.get(4).copied().unwrap_or(0.0);
    (total - idle, total)
}

fn run(kind: &str, data: &PgCluster, logical: u64) {
    let dir = tempfile::Builder::new()
        .prefix("nexingest")
        .tempdir()
        .unwrap();
    let cat_pg = PgCluster::start();
    let catalog = cat_pg.create_catalog("nexingest");
    let s3 = (kind == "s3").then(S3Server::start);
    let store = s3.as_ref().map_or_else(
        || format!("file://{}", dir.path().join("blobs").display()),
        |s| s.url("ingest"),
    );
    let env = s3.as_ref().map(S3Server::env).unwrap_or_default();
    let mut args = replica_args(dir.path(), &catalog, &store);
    args.push("--no-scheduler".into());
    let replicas: Vec<Controller> = ["a", "b"]
        .iter()
        .map(|n| {
            let d = dir.path().join(n);
            Controller::start_env(&d, 0, &dir.path().join(format!("{n}.log")), &args, &env)
        })
        .collect();
    let agents: Vec<Agent> = (0..AGENTS)
        .map(|i| {
            let r = &replicas[i % 2];
            real_agent(
                &replicas[0],
                &r.url(),
                &format!("ing-{i}"),
                data,
                "invoices",
                dir.path(),
            )
        })
        .collect();
    wait_for("every agent online", 60, || {
        let out = replicas[0].cli(&["status", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
        let online = v["sites"]
            .as_array()?
            .iter()
            .filter(|s| s["online"] == true)
            .count();
        (online == AGENTS).then_some(())
    });
    let pid = |p: u32| p.to_string();
    let cpu_of = |pids: &[String]| pids.iter().map(|p| cpu_secs(p)).sum::<f64>();
    let ctl: Vec<String> = replicas.iter().map(|r| pid(r.pid())).collect();
    let ags: Vec<String> = agents.iter().map(|a| pid(a.pid())).collect();
    let s3p: Vec<String> = s3.iter().map(|s| pid(s.pid())).collect();
    let before = (cpu_of(&ctl), cpu_of(&ags), cpu_of(&s3p), machine());
    let t = Instant::now();
    let jobs: Vec<_> = (0..AGENTS)
        .map(|i| {
            let (config, url) = (replicas[i % 2].cli_config(), replicas[i % 2].url());
            std::thread::spawn(move || {
                cli(
                    &config,
                    &url,
                    &[
                        "backup",
                        "--site",
                        &format!("ing-{i}"),
                        "--target",
                        "erp",
                        "--json",
                    ],
                )
            })
        })
        .collect();
    for j in jobs {
        let out = j.join().unwrap();
        assert!(out.ok, "backup failed: {}\n{}", out.stdout, out.stderr);
    }
    let wall = t.elapsed().as_secs_f64();
    let (ctl_s, ags_s, s3_s) = (
        cpu_of(&ctl) - before.0,
        cpu_of(&ags) - before.1,
        cpu_of(&s3p) - before.2,
    );
    let m = machine();
    let busy_cores = (m.0 - before.3.0) / (m.1 - before.3.1) * num_cores();
    let rest = busy_cores * wall - ctl_s - ags_s - s3_s;
    println!(
        "| {kind} | {wall:.1} s | {:.0} MB/s | {ctl_s:.1} | {ags_s:.1} | {s3_s:.1} | {rest:.1} | {:.0} % |",
        (logical * AGENTS as u64) as f64 / wall / 1e6,
        busy_cores / num_cores() * 100.0
    );
}

fn num_cores() -> f64 {
    std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64)
}

fn main() {
    let rows: u32 = std::env::args()
        .nth(1)
        .map_or(4_000_000, |a| a.parse().expect("ROWS"));
    let data = PgCluster::start();
    data.psql("postgres", "CREATE DATABASE invoices");
    eprintln!("creating {rows} invoice rows");
    data.psql("invoices", &invoices_sql(rows));
    data.psql("invoices", "VACUUM ANALYZE");
    let size: u64 = data
        .psql("invoices", "SELECT pg_database_size('invoices')")
        .parse()
        .unwrap();
    println!(
        "| store | wall | throughput (logical) | controllers CPU-s | agents CPU-s (with pg_dump) | S3 CPU-s | PostgreSQL and rest CPU-s | machine busy |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for kind in ["s3", "file"] {
        run(kind, &data, size);
    }
    println!(
        "\n{AGENTS} concurrent backups of a {:.2} GB database (throughput counts the database size once per backup).",
        size as f64 / 1e9
    );
}
