//! The end-to-end benchmark: NEX Backup against plain pg_dump / zstd / pg_restore on the
//! same data, in one run, on real processes. See docs/benchmarks.md.
//!
//! `bash tests/bench.sh [--scale N] [--invoice-rows R] [--only pgbench|invoices]`

use std::process::Command;
use std::time::Duration;

use nex_backup_tests::env::{Env, EnvOpts, PW_ENV, target_toml};
use nex_backup_tests::measure::{
    Sample, cpu_secs, measure, peak_rss, reset_peak_rss, tree_cpu_secs,
};
use nex_backup_tests::pg::PASSWORD;
use nex_backup_tests::procs::Agent;
use nex_backup_tests::proxy::Shaping;
use nex_backup_tests::sample::invoices_sql;
use nex_backup_tests::wait_for;

struct Row {
    name: String,
    s: Sample,
    /// CPU seconds on the customer's host: the measured client (the agent or a shell,
    /// with children such as pg_dump) and the PostgreSQL server serving it.
    host: f64,
    /// CPU seconds of the controller (another machine in a real deployment).
    ctl: f64,
    stored: u64,
    sent: u64,
    rss: u64,
    /// Alternating rounds: the median, lowest and highest ratio to the same round's
    /// `pg_restore` (`s` is the median round).
    range: Option<(f64, f64, f64)>,
}

impl Row {
    fn new(name: &str, c: Cost) -> Row {
        Row {
            name: name.into(),
            s: c.s,
            host: c.host,
            ctl: c.ctl,
            stored: 0,
            sent: 0,
            rss: 0,
            range: None,
        }
    }
}

/// What a step cost: wall time, CPU by host (see [`Row`]).
struct Cost {
    s: Sample,
    host: f64,
    ctl: f64,
}

/// Run `f`, measuring the `client` processes, the PostgreSQL server and the controller.
fn cost<T>(env: &Env, client: &[String], f: impl FnOnce() -> T) -> (T, Cost) {
    let (server, ctl) = (env.pg.postmaster_pid(), env.controller.pid().to_string());
    let (srv0, ctl0) = (tree_cpu_secs(server), cpu_secs(&ctl));
    let (out, s) = measure(client, f);
    let host = s.cpu + tree_cpu_secs(server) - srv0;
    let ctl = cpu_secs(&ctl) - ctl0;
    (out, Cost { s, host, ctl })
}

/// Rounds of the alternating restore comparison.
const ROUNDS: usize = 3;

/// The second site's agent (`restore_split_tables = true`), kept for the restores.
struct Far {
    agent: Agent,
    site: String,
}

struct Args {
    scale: u32,
    invoice_rows: u32,
    only: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        scale: 100,
        invoice_rows: 4_000_000,
        only: None,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    for pair in v.chunks(2) {
        let val = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--scale" => a.scale = val.parse().expect("--scale N"),
            "--invoice-rows" => a.invoice_rows = val.parse().expect("--invoice-rows N"),
            "--only" => a.only = Some(val),
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

fn sh(env: &Env, script: &str) -> Cost {
    let (st, s) = cost(env, &["self".into()], || {
        Command::new("bash")
            .args(["-c", script])
            .env("PGPASSWORD", PASSWORD)
            .env("PATH", path(env))
            .status()
            .expect("bash")
    });
    assert!(st.success(), "benchmark step failed: {script}");
    s
}

fn path(env: &Env) -> String {
    format!(
        "{}:{}",
        env.pg.bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

fn conn(env: &Env) -> String {
    format!("-h 127.0.0.1 -p {} -U postgres", env.pg.port)
}

fn nex_backup(env: &Env, target: &str, name: &str) -> Row {
    let agent = env.agent.as_ref().expect("agent").pid();
    let proxy = env.proxy.as_ref().expect("proxy");
    reset_peak_rss(agent);
    let sent0 = proxy.upstream_bytes();
    let (out, c) = cost(env, &[agent.to_string()], || env.backup_ok(target));
    eprintln!(
        "   {name}: customer host CPU {:.2} s (agent and pg_dump {:.2} s), controller CPU {:.2} s",
        c.host, c.s.cpu, c.ctl
    );
    Row {
        stored: out["new_bytes"].as_u64().unwrap_or(0),
        sent: proxy.upstream_bytes() - sent0,
        rss: peak_rss(agent),
        ..Row::new(name, c)
    }
}

fn bench_dataset(env: &Env, target: &str, db: &str, table: &str, key: &str, n: u64) -> Vec<Row> {
    let c = conn(env);
    let dir = env.dir.path();
    let local = dir.join(format!("{db}.dump"));
    let zst = dir.join(format!("{db}.dump.zst"));
    eprintln!("== {db}: baselines");
    let raw = sh(env, &format!("pg_dump {c} -Fc -Z0 {db} > /dev/null"));
    sh(
        env,
        &format!("pg_dump {c} -Fc -Z0 -f {} {db}", local.display()),
    );
    let dump_size = std::fs::metadata(&local).expect("dump").len();
    let zstd = sh(
        env,
        &format!(
            "pg_dump {c} -Fc -Z0 {db} | zstd -3 -q -c > {}",
            zst.display()
        ),
    );
    let zst_size = std::fs::metadata(&zst).expect("zst").len();
    let mut rows = vec![
        Row {
            stored: dump_size,
            ..Row::new("raw pg_dump -Fc -Z0 > /dev/null", raw)
        },
        Row {
            stored: zst_size,
            ..Row::new("pg_dump -Fc -Z0 | zstd -3", zstd)
        },
    ];
    eprintln!("== {db}: NEX full backup");
    rows.push(nex_backup(env, target, "NEX full backup"));
    let one = (n / 100).max(1);
    // Append first: after spread updates and a vacuum, PostgreSQL would put appended rows
    // into the freed slots all over the table, which measures PostgreSQL, not us.
    let append = match table {
        "pgbench_accounts" => format!(
            "INSERT INTO pgbench_accounts SELECT aid + {n}, bid, abalance, filler FROM pgbench_accounts WHERE aid <= {one}"
        ),
        _ => format!(
            "INSERT INTO invoices SELECT id + {n}, customer_id, issued, total, 'draft', lines, pdf, md5(note) FROM invoices WHERE id <= {one}"
        ),
    };
    env.pg.psql(db, &append);
    let newest = match table {
        "pgbench_accounts" => format!(
            "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid > {n} - {one} AND aid <= {n}"
        ),
        _ => format!("UPDATE invoices SET status = 'paid' WHERE id > {n} - {one} AND id <= {n}"),
    };
    env.pg.psql(db, &newest);
    eprintln!("== {db}: NEX after appending 1% and updating the newest 1%");
    rows.push(nex_backup(
        env,
        target,
        "NEX after append 1% + update newest 1%",
    ));
    env.pg.psql(
        db,
        &format!("UPDATE {table} SET {key} = {key} WHERE {key} % 100 = 0"),
    );
    eprintln!("== {db}: NEX after 1% spread updates");
    rows.push(nex_backup(env, target, "NEX after updating 1% spread"));
    let far = latency_rows(env, target, &mut rows);
    restore_rows(env, target, db, &local, far, &mut rows);
    rows
}

/// Restores in alternating rounds (A B C, A B C, ...): `pg_restore --single-transaction`
/// from a local file, NEX's verified restore (each table by one connection), and NEX's
/// with `restore_split_tables` (the far site's agent); each row is the median round, with
/// the min–max of its wall times. Then `pg_restore -j 2` once, for reference.
fn restore_rows(
    env: &Env,
    target: &str,
    db: &str,
    local: &std::path::Path,
    mut far: Far,
    rows: &mut Vec<Row>,
) {
    let c = conn(env);
    let agent = env.agent.as_ref().expect("agent").pid();
    let mut rounds: [Vec<(Cost, u64)>; 3] = Default::default();
    for round in 0..ROUNDS {
        eprintln!("== {db}: restores, round {}", round + 1);
        let pgr = format!("{db}_pgr{round}");
        env.pg.psql(
            "postgres",
            &format!("CREATE DATABASE {pgr} TEMPLATE template0"),
        );
        let script = format!(
            "pg_restore {c} --single-transaction -d {pgr} {}",
            local.display()
        );
        rounds[0].push((sh(env, &script), 0));
        reset_peak_rss(agent);
        let (out, s) = cost(env, &[agent.to_string()], || {
            env.restore(target, &format!("{db}_nex{round}"), &[])
        });
        assert!(out.ok, "NEX restore failed: {}\n{}", out.stdout, env.logs());
        rounds[1].push((s, peak_rss(agent)));
        reset_peak_rss(far.agent.pid());
        let to = format!("{db}_split{round}");
        let (out, s) = cost(env, &[far.agent.pid().to_string()], || {
            let args = ["restore", "--site", &far.site, "--target", target];
            env.cli(&[&args[..], &["--to-database", &to, "--json"]].concat())
        });
        assert!(
            out.ok,
            "NEX split restore failed: {}{}",
            out.stdout, out.stderr
        );
        rounds[2].push((s, peak_rss(far.agent.pid())));
        for d in [pgr, format!("{db}_nex{round}"), to] {
            env.pg.psql("postgres", &format!("DROP DATABASE {d}"));
        }
    }
    far.agent.kill();
    let names = [
        "pg_restore --single-transaction from local file",
        "NEX restore (verified)",
        "NEX restore (verified), restore_split_tables",
    ];
    let base: Vec<f64> = rounds[0].iter().map(|g| g.0.s.wall.as_secs_f64()).collect();
    for (name, got) in names.into_iter().zip(rounds) {
        let mut ratios: Vec<f64> = got
            .iter()
            .zip(&base)
            .map(|(g, b)| g.0.s.wall.as_secs_f64() / b)
            .collect();
        ratios.sort_by(f64::total_cmp);
        let rss = got.iter().map(|g| g.1).max().unwrap_or(0);
        let mut by_wall: Vec<Cost> = got.into_iter().map(|g| g.0).collect();
        by_wall.sort_by_key(|a| a.s.wall);
        let mid = by_wall.len() / 2;
        rows.push(Row {
            rss,
            range: Some((ratios[mid], ratios[0], ratios[ratios.len() - 1])),
            ..Row::new(name, by_wall.swap_remove(mid))
        });
    }
    env.pg.psql(
        "postgres",
        &format!("CREATE DATABASE {db}_pgr2 TEMPLATE template0"),
    );
    let pgr2 = sh(
        env,
        &format!("pg_restore {c} -j 2 -d {db}_pgr2 {}", local.display()),
    );
    rows.push(Row::new(
        "pg_restore -j 2 from local file (reference only)",
        pgr2,
    ));
}

/// A backup with no change on loopback, then through 10 ms and 50 ms of added round
/// trip; then a full backup of the same database by a second site's agent (another key,
/// nothing deduplicated) at 50 ms and 100 Mbit/s, which the uplink should limit.
fn latency_rows(env: &Env, target: &str, rows: &mut Vec<Row>) -> Far {
    let proxy = env.proxy.as_ref().expect("proxy");
    eprintln!("== NEX with no change: loopback, 10 ms, 50 ms RTT");
    rows.push(nex_backup(env, target, "NEX no change, loopback"));
    for ms in [10, 50] {
        proxy.shape(Shaping {
            rtt: Duration::from_millis(ms),
            upstream_rate: 0,
        });
        rows.push(nex_backup(
            env,
            target,
            &format!("NEX no change, {ms} ms RTT"),
        ));
    }
    let site = format!("far-{target}");
    let config = env.second_agent_config(&format!("{site}-srv"));
    let text = std::fs::read_to_string(&config).expect("far config");
    std::fs::write(&config, format!("restore_split_tables = true\n{text}")).expect("far config");
    proxy.shape(Shaping::default());
    let out = env.enroll(&config, &site);
    assert!(out.ok, "enroll the far site: {}", out.stderr);
    let agent = Agent::start(
        &config,
        &[(PW_ENV, PASSWORD)],
        &config.with_extension("log"),
    );
    wait_for("the far site's agent online", 60, || {
        let v = env.cli(&["status", "--json"]).json();
        v["sites"]
            .as_array()?
            .iter()
            .any(|s| s["site"] == site.as_str() && s["online"] == true)
            .then_some(())
    });
    let rate = 100_000_000 / 8;
    proxy.shape(Shaping {
        rtt: Duration::from_millis(50),
        upstream_rate: rate,
    });
    eprintln!("== NEX full backup of a new site at 50 ms RTT, 100 Mbit/s up");
    let sent0 = proxy.upstream_bytes();
    let (out, c) = cost(env, &[agent.pid().to_string()], || {
        env.cli(&["backup", "--site", &site, "--target", target, "--json"])
    });
    assert!(out.ok, "far backup: {}{}", out.stdout, out.stderr);
    let sent = proxy.upstream_bytes() - sent0;
    eprintln!(
        "   the uplink alone needs {:.2} s for {} MiB",
        sent as f64 / rate as f64,
        mib(sent)
    );
    rows.push(Row {
        stored: out.json()["new_bytes"].as_u64().unwrap_or(0),
        sent,
        rss: peak_rss(agent.pid()),
        ..Row::new("NEX full, new site, 50 ms RTT, 100 Mbit/s", c)
    });
    proxy.shape(Shaping::default());
    Far { agent, site }
}

fn mib(b: u64) -> String {
    format!("{:.1}", b as f64 / 1048576.0)
}

fn print(db: &str, rows: &[Row]) {
    let base = &rows[0].s;
    let (zst, zst_host) = (rows[1].stored as f64, rows[1].host.max(0.001));
    let pgr = rows
        .iter()
        .find(|r| r.name.starts_with("pg_restore"))
        .map_or(1.0, |r| r.s.wall.as_secs_f64());
    println!("\n### {db}\n");
    println!(
        "| step | wall s | × pg_dump | customer host CPU s | × zstd -3 | controller CPU s | stored MiB | × zstd | sent MiB | agent peak RSS MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let w = r.s.wall.as_secs_f64();
        let mut wall_ratio = if r.name.contains("restore") {
            format!("{:.2} × pg_restore", w / pgr)
        } else {
            format!("{:.2}", w / base.wall.as_secs_f64())
        };
        if let Some((mid, lo, hi)) = r.range {
            wall_ratio = format!("{mid:.2} × pg_restore ({lo:.2}–{hi:.2})");
        }
        let stored = if r.stored > 0 {
            mib(r.stored)
        } else {
            "-".into()
        };
        let stored_ratio = if r.stored > 0 {
            format!("{:.3}", r.stored as f64 / zst)
        } else {
            "-".into()
        };
        let sent = if r.sent > 0 { mib(r.sent) } else { "-".into() };
        let rss = if r.rss > 0 { mib(r.rss) } else { "-".into() };
        println!(
            "| {} | {w:.2} | {wall_ratio} | {:.2} | {:.2} | {:.2} | {stored} | {stored_ratio} | {sent} | {rss} |",
            r.name,
            r.host,
            r.host / zst_host,
            r.ctl
        );
    }
}

fn main() {
    let a = args();
    eprintln!(
        "== building data: invoices {} rows, pgbench scale {}",
        a.invoice_rows, a.scale
    );
    let want = |d: &str| a.only.as_deref().is_none_or(|o| o == d);
    let inv_sql = if want("invoices") {
        invoices_sql(a.invoice_rows)
    } else {
        "SELECT 1".into()
    };
    let env = Env::start(
        &inv_sql,
        EnvOpts {
            via_proxy: true,
            extra_targets: target_toml("pgbench", "postgres", "pgbench", PW_ENV),
            ..Default::default()
        },
    );
    let mut results = vec![];
    if want("pgbench") {
        env.pg.psql("postgres", "CREATE DATABASE pgbench");
        sh(
            &env,
            &format!(
                "pgbench {} -i -q -s {} pgbench 2>/dev/null",
                conn(&env),
                a.scale
            ),
        );
        let size = env.pg.psql(
            "pgbench",
            "SELECT pg_size_pretty(pg_database_size('pgbench'))",
        );
        eprintln!("   pgbench database: {size}");
        let rows = 100_000 * u64::from(a.scale);
        results.push((
            format!("pgbench scale {} ({size})", a.scale),
            bench_dataset(&env, "pgbench", "pgbench", "pgbench_accounts", "aid", rows),
        ));
    }
    if want("invoices") {
        let size = env.pg.psql(
            "invoices",
            "SELECT pg_size_pretty(pg_database_size('invoices'))",
        );
        eprintln!("   invoices database: {size}");
        results.push((
            format!("invoices {} rows ({size})", a.invoice_rows),
            bench_dataset(
                &env,
                "main",
                "invoices",
                "invoices",
                "id",
                u64::from(a.invoice_rows),
            ),
        ));
    }
    for (db, rows) in &results {
        print(db, rows);
    }
}
