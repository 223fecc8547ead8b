//! The end-to-end benchmark: NEX Backup against plain pg_dump / zstd / pg_restore on the
//! same data, in one run, on real processes. See docs/benchmarks.md.
//!
//! `bash tests/bench.sh [--scale N] [--invoice-rows R] [--only pgbench|invoices|rss|rtt|load]`

use std::process::Command;
use std::time::Duration;

use nex_backup_tests::env::{Env, EnvOpts, PW_ENV, target_toml};
use nex_backup_tests::measure::{
    Sample, children, cpu_secs, measure, peak_rss, reset_peak_rss, settle, tree_cpu_secs,
};
use nex_backup_tests::pg::PASSWORD;
use nex_backup_tests::procs::Agent;
use nex_backup_tests::proxy::Shaping;
use nex_backup_tests::sample::invoices_sql;

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
    let (srv0, ctl0, kids) = (tree_cpu_secs(server), cpu_secs(&ctl), children(server));
    let (out, s) = measure(client, f);
    settle(server, &kids, Duration::from_secs(5));
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
            .env("RESTIC_PASSWORD", "nexb-bench")
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
    sh(
        env,
        &format!("pg_dump {c} -Fc -Z0 -f {} {db}", local.display()),
    );
    let dump_size = std::fs::metadata(&local).expect("dump").len();
    let mut rows = backup_rounds(env, target, db, dump_size);
    eprintln!("== {db}: NEX full backup of the main site");
    rows.push(nex_backup(
        env,
        target,
        "NEX full backup, main site (one run)",
    ));
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

/// One step of an alternating comparison: run round `r`, returning its cost, the bytes
/// it stored and the client's peak RSS.
type Step<'a> = (&'static str, Box<dyn FnMut(usize) -> (Cost, u64, u64) + 'a>);

/// Run `steps` in alternating rounds (A B C, A B C, ...); each row is the step's median
/// round, with its median and min–max ratio to the first step of the same round.
fn alternate(db: &str, what: &str, mut steps: Vec<Step>) -> Vec<Row> {
    let mut got: Vec<Vec<(Cost, u64, u64)>> = steps.iter().map(|_| vec![]).collect();
    for round in 0..ROUNDS {
        eprintln!("== {db}: {what}, round {}", round + 1);
        for (i, (_, f)) in steps.iter_mut().enumerate() {
            got[i].push(f(round));
        }
    }
    let base: Vec<f64> = got[0].iter().map(|g| g.0.s.wall.as_secs_f64()).collect();
    let mut rows = vec![];
    for ((name, _), got) in steps.into_iter().zip(got) {
        let mut ratios: Vec<f64> = got
            .iter()
            .zip(&base)
            .map(|(g, b)| g.0.s.wall.as_secs_f64() / b)
            .collect();
        ratios.sort_by(f64::total_cmp);
        let rss = got.iter().map(|g| g.2).max().unwrap_or(0);
        let mut by_wall = got;
        by_wall.sort_by_key(|g| g.0.s.wall);
        let mid = by_wall.len() / 2;
        let (c, stored, _) = by_wall.swap_remove(mid);
        rows.push(Row {
            stored,
            rss,
            range: Some((ratios[mid], ratios[0], ratios[ratios.len() - 1])),
            ..Row::new(name, c)
        });
    }
    rows
}

/// Bytes of the files under `p` (a file or a directory).
fn walkdir_size(p: &std::path::Path) -> u64 {
    match std::fs::metadata(p) {
        Ok(m) if m.is_file() => m.len(),
        Ok(m) if m.is_dir() => std::fs::read_dir(p)
            .map(|d| d.flatten().map(|e| walkdir_size(&e.path())).sum())
            .unwrap_or(0),
        _ => 0,
    }
}

/// Full backups side by side, in alternating rounds: raw pg_dump, pg_dump piped to
/// zstd -1, zstd -3 and gzip -6, restic 0.14 `backup --stdin` into a new repository, and
/// NEX's full backup by a new site's agent (its own key: nothing deduplicated).
fn backup_rounds(env: &Env, target: &str, db: &str, dump_size: u64) -> Vec<Row> {
    let c = conn(env);
    let dir = env.dir.path().to_path_buf();
    let piped = |tool: &'static str, ext: &'static str| {
        let (c, dir) = (c.clone(), dir.clone());
        Box::new(move |_round: usize| {
            let out = dir.join(format!("{db}.dump.{ext}"));
            let script = format!("pg_dump {c} -Fc -Z0 {db} | {tool} -c > {}", out.display());
            (sh(env, &script), walkdir_size(&out), 0u64)
        }) as Box<dyn FnMut(usize) -> (Cost, u64, u64)>
    };
    let steps: Vec<Step> = vec![
        (
            "raw pg_dump -Fc -Z0 > /dev/null",
            Box::new(|_| {
                let script = format!("pg_dump {c} -Fc -Z0 {db} > /dev/null");
                (sh(env, &script), dump_size, 0)
            }),
        ),
        ("pg_dump -Fc -Z0 | zstd -1", piped("zstd -1 -q", "zst1")),
        ("pg_dump -Fc -Z0 | zstd -3", piped("zstd -3 -q", "zst3")),
        ("pg_dump -Fc -Z0 | gzip -6", piped("gzip -6", "gz")),
        (
            "restic 0.14 backup --stdin (new repository)",
            Box::new(|round| {
                let repo = dir.join(format!("restic-{db}-{round}"));
                let init = format!("restic init -q -r {}", repo.display());
                sh(env, &init);
                let script = format!(
                    "pg_dump {c} -Fc -Z0 {db} | restic -q -r {} backup --stdin --stdin-filename {db}.dump",
                    repo.display()
                );
                let cost = sh(env, &script);
                let size = walkdir_size(&repo);
                let _ = std::fs::remove_dir_all(&repo);
                (cost, size, 0)
            }),
        ),
        (
            "NEX full backup (a new site each round)",
            Box::new(|round| nex_full_new_site(env, target, &format!("full{round}-{db}"))),
        ),
    ];
    alternate(db, "full backups", steps)
}

/// A full backup of `target` by a new agent enrolled into `site`.
fn nex_full_new_site(env: &Env, target: &str, site: &str) -> (Cost, u64, u64) {
    let mut agent = new_site_agent(env, site, false);
    let (out, c) = cost(env, &[agent.pid().to_string()], || {
        env.cli(&["backup", "--site", site, "--target", target, "--json"])
    });
    assert!(out.ok, "{site} backup: {}{}", out.stdout, out.stderr);
    let rss = peak_rss(agent.pid());
    agent.kill();
    eprintln!(
        "   NEX full ({site}): customer host CPU {:.2} s (agent and pg_dump {:.2} s), controller CPU {:.2} s",
        c.host, c.s.cpu, c.ctl
    );
    (c, out.json()["new_bytes"].as_u64().unwrap_or(0), rss)
}

/// A new agent enrolled into `site` (at `low_priority` if asked), online.
fn new_site_agent(env: &Env, site: &str, low_priority: bool) -> Agent {
    let head = if low_priority {
        "low_priority = true\n"
    } else {
        ""
    };
    env.site_agent(site, head).0
}

/// Seconds of each pgbench load run.
const LOAD_SECS: u64 = 20;

/// What backups take from a concurrent OLTP load, and what `low_priority` gives back:
/// `pgbench` (TPC-B, 2 clients) alone, with back-to-back backups of `target` by a normal
/// agent, and by a `low_priority` one (each run a new site: a full backup first, then
/// backups without change), in [`LOAD_ROUNDS`] alternating rounds. Prints one table of
/// medians (min–max).
fn load_table(env: &Env, target: &str) {
    let run_pgbench = || {
        Command::new(env.pg.bin.join("pgbench"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &env.pg.port.to_string(),
                "-U",
                "postgres",
            ])
            .args([
                "-n",
                "-c",
                "2",
                "-j",
                "2",
                "-T",
                &LOAD_SECS.to_string(),
                "pgbench",
            ])
            .env("PGPASSWORD", PASSWORD)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("pgbench")
    };
    let tps = |child: std::process::Child| -> f64 {
        let out = child.wait_with_output().expect("pgbench");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .find_map(|l| l.strip_prefix("tps = "))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no tps in pgbench's output: {text}"))
    };
    // Per configuration: (tps, full backup s, mean no-change backup s) of each round.
    let configs = [
        ("alone", None),
        ("normal", Some(false)),
        ("low_priority = true", Some(true)),
    ];
    let mut runs: Vec<Vec<(f64, f64, f64)>> = vec![vec![]; configs.len()];
    for round in 0..LOAD_ROUNDS {
        for (k, (name, agent)) in configs.iter().enumerate() {
            eprintln!("== round {round}: pgbench load {LOAD_SECS} s, {name}");
            let Some(low) = *agent else {
                runs[k].push((tps(run_pgbench()), 0.0, 0.0));
                continue;
            };
            let site = format!("load-{}-{round}", if low { "low" } else { "normal" });
            let mut agent = new_site_agent(env, &site, low);
            let child = run_pgbench();
            let end = std::time::Instant::now() + Duration::from_secs(LOAD_SECS);
            let mut walls = vec![];
            while std::time::Instant::now() < end {
                let t = std::time::Instant::now();
                let out = env.cli(&["backup", "--site", &site, "--target", target, "--json"]);
                assert!(out.ok, "{site} backup: {}{}", out.stdout, out.stderr);
                walls.push(t.elapsed().as_secs_f64());
            }
            let got = tps(child);
            agent.kill();
            let later = &walls[1..];
            let mean = later.iter().sum::<f64>() / later.len().max(1) as f64;
            runs[k].push((got, walls[0], mean));
        }
    }
    let alone = median(&runs[0].iter().map(|r| r.0).collect::<Vec<_>>());
    println!(
        "\n### Under load: pgbench TPC-B, 2 clients, {LOAD_SECS} s, backing up {target}; {LOAD_ROUNDS} alternating rounds, median (min–max)\n"
    );
    println!("| run | pgbench tps | × alone | first (full) backup s | then no-change backups s |");
    println!("|---|---|---|---|---|");
    for ((name, agent), r) in configs.iter().zip(&runs) {
        let col = |f: fn(&(f64, f64, f64)) -> f64| r.iter().map(f).collect::<Vec<f64>>();
        let (t, full, later) = (col(|r| r.0), col(|r| r.1), col(|r| r.2));
        let ratios: Vec<f64> = t.iter().map(|v| v / alone).collect();
        let backups = if agent.is_some() {
            format!("{} | {}", spread(&full, 2), spread(&later, 2))
        } else {
            "- | -".into()
        };
        println!(
            "| {name} | {} | {} | {backups} |",
            spread(&t, 0),
            spread(&ratios, 2)
        );
    }
}

/// Rounds of the load table.
const LOAD_ROUNDS: usize = 3;

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// "median (min–max)" with `digits` decimals.
fn spread(v: &[f64], digits: usize) -> String {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{:.digits$} ({min:.digits$}–{max:.digits$})", median(v))
}

/// `--only rss`: the agent's peak RSS through one full backup and one verified restore
/// of the pgbench database (the 10 GB point: `--scale 700 --only rss`).
fn rss_only(env: &Env, size: &str) {
    let agent = env.agent.as_ref().expect("agent").pid();
    reset_peak_rss(agent);
    let (b, backup) = cost(env, &[agent.to_string()], || env.backup_ok("pgbench"));
    let backup_rss = peak_rss(agent);
    reset_peak_rss(agent);
    let (r, restore) = cost(env, &[agent.to_string()], || {
        env.restore("pgbench", "pgbench_back", &[])
    });
    assert!(r.ok, "restore: {}\n{}", r.stdout, env.logs());
    let restore_rss = peak_rss(agent);
    println!("\n### Agent peak RSS, pgbench {size}\n");
    println!("| step | wall s | logical GiB | agent peak RSS MiB |");
    println!("|---|---|---|---|");
    let gib = b["logical_bytes"].as_u64().unwrap_or(0) as f64 / (1u64 << 30) as f64;
    println!(
        "| NEX full backup | {:.1} | {gib:.2} | {} |",
        backup.s.wall.as_secs_f64(),
        mib(backup_rss)
    );
    println!(
        "| NEX restore (verified) | {:.1} | {gib:.2} | {} |",
        restore.s.wall.as_secs_f64(),
        mib(restore_rss)
    );
}

/// `--only rtt`: after a first full backup of the pgbench database, backups with no
/// change in alternating rounds on loopback and through 50 ms of added round trip: the
/// upload window's target (≤ 1.10× loopback) and the agent's peak RSS with it.
fn rtt_only(env: &Env) {
    const RTT_ROUNDS: usize = 5;
    let proxy = env.proxy.as_ref().expect("proxy");
    env.backup_ok("pgbench");
    let (mut walls, mut ratios, mut rss) = ([vec![], vec![]], vec![], [0, 0]);
    for round in 0..RTT_ROUNDS {
        eprintln!(
            "== pgbench: no change, loopback then 50 ms RTT, round {}",
            round + 1
        );
        for (i, ms) in [0, 50].into_iter().enumerate() {
            proxy.shape(Shaping {
                rtt: Duration::from_millis(ms),
                upstream_rate: 0,
            });
            let row = nex_backup(env, "pgbench", "no change");
            walls[i].push(row.s.wall.as_secs_f64());
            rss[i] = rss[i].max(row.rss);
        }
        ratios.push(walls[1][round] / walls[0][round]);
    }
    proxy.shape(Shaping::default());
    println!("\n### No change at 50 ms RTT, pgbench, {RTT_ROUNDS} alternating rounds\n");
    println!("| step | wall s, median (min–max) | × loopback | agent peak RSS MiB |");
    println!("|---|---|---|---|");
    println!(
        "| NEX no change, loopback | {} | 1.00 | {} |",
        spread(&walls[0], 2),
        mib(rss[0])
    );
    println!(
        "| NEX no change, 50 ms RTT | {} | {} | {} |",
        spread(&walls[1], 2),
        spread(&ratios, 2),
        mib(rss[1])
    );
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
    let drop = |d: &str| env.pg.psql("postgres", &format!("DROP DATABASE {d}"));
    let steps: Vec<Step> = vec![
        (
            "pg_restore --single-transaction from local file",
            Box::new(|round| {
                let to = format!("{db}_pgr{round}");
                env.pg.psql(
                    "postgres",
                    &format!("CREATE DATABASE {to} TEMPLATE template0"),
                );
                let script = format!(
                    "pg_restore {c} --single-transaction -d {to} {}",
                    local.display()
                );
                let cost = sh(env, &script);
                drop(&to);
                (cost, 0, 0)
            }),
        ),
        (
            "NEX restore (verified)",
            Box::new(|round| {
                reset_peak_rss(agent);
                let to = format!("{db}_nex{round}");
                let (out, cost) = cost(env, &[agent.to_string()], || env.restore(target, &to, &[]));
                assert!(out.ok, "NEX restore failed: {}\n{}", out.stdout, env.logs());
                drop(&to);
                (cost, 0, peak_rss(agent))
            }),
        ),
        (
            "NEX restore (verified), restore_split_tables",
            Box::new(|round| {
                let pid = far.agent.pid();
                reset_peak_rss(pid);
                let to = format!("{db}_split{round}");
                let (out, cost) = cost(env, &[pid.to_string()], || {
                    let args = ["restore", "--site", &far.site, "--target", target];
                    env.cli(&[&args[..], &["--to-database", &to, "--json"]].concat())
                });
                assert!(
                    out.ok,
                    "NEX split restore failed: {}{}",
                    out.stdout, out.stderr
                );
                drop(&to);
                (cost, 0, peak_rss(pid))
            }),
        ),
    ];
    rows.extend(alternate(db, "restores", steps));
    far.agent.kill();
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
    proxy.shape(Shaping::default());
    let (agent, _) = env.site_agent(&site, "restore_split_tables = true\n");
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
    let zst_row = rows
        .iter()
        .find(|r| r.name.starts_with("pg_dump -Fc -Z0 | zstd -3"))
        .expect("the zstd -3 row");
    let (zst, zst_host) = (zst_row.stored as f64, zst_row.host.max(0.001));
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
            let unit = if r.name.contains("restore") {
                " × pg_restore"
            } else {
                ""
            };
            wall_ratio = format!("{mid:.2}{unit} ({lo:.2}–{hi:.2})");
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
    // `--only rss`: the pgbench dataset, one full backup and one restore, peak RSS.
    let want = |d: &str| {
        a.only
            .as_deref()
            .is_none_or(|o| o == d || (["rss", "rtt", "load"].contains(&o) && d == "pgbench"))
    };
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
        if a.only.as_deref() == Some("rss") {
            return rss_only(&env, &size);
        }
        if a.only.as_deref() == Some("rtt") {
            return rtt_only(&env);
        }
        if a.only.as_deref() == Some("load") {
            return load_table(&env, "pgbench");
        }
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
    if want("pgbench") {
        load_table(&env, "pgbench");
    }
}
