//! The scheduler with a real controller, agent and PostgreSQL: a schedule every few
//! seconds produces backups; an offline agent catches up with exactly one job.

use std::time::{Duration, Instant};

use nex_backup_tests::env::{Env, EnvOpts, SITE};
use nex_backup_tests::wait_for;
use serde_json::Value;

fn scheduled_jobs(env: &Env) -> Vec<Value> {
    let v = env.cli(&["jobs", "--site", SITE, "--json"]).json();
    v.as_array()
        .unwrap()
        .iter()
        .filter(|j| j["trigger"] == "schedule")
        .cloned()
        .collect()
}

/// Every drill job, whatever started it.
fn drill_jobs(env: &Env) -> Vec<Value> {
    let v = env.cli(&["jobs", "--json"]).json();
    v.as_array()
        .unwrap()
        .iter()
        .filter(|j| j["trigger"] == "drill")
        .cloned()
        .collect()
}

#[test]
fn schedules_fire_and_an_offline_agent_catches_up_once() {
    let mut env = Env::start(
        "CREATE TABLE t (x int); INSERT INTO t SELECT generate_series(1, 1000);",
        EnvOpts::scheduled(),
    );
    // Rotation of seconds-old snapshots: only with the retention lock lifted (audited).
    // Drills may start only in the site's drill hours: closed for now.
    let closed = nex_backup_tests::utc_window(120, 180);
    let lift = env.cli(&[
        "policy",
        "set",
        "--site",
        SITE,
        "--retention-lock",
        "0",
        "--timezone",
        "UTC",
        "--drill-hours",
        &closed,
    ]);
    assert!(lift.ok, "{}", lift.stderr);
    env.set_target_policy(
        "main",
        &[
            "--schedule",
            "*/6 * * * * *",
            "--rpo",
            "15s",
            "--keep-last",
            "2",
            "--keep-verified",
            "0",
            "--keep-daily",
            "0",
            "--keep-weekly",
            "0",
        ],
    );
    wait_for("two scheduled backups", 60, || {
        let ok = scheduled_jobs(&env)
            .iter()
            .filter(|j| j["state"] == "succeeded")
            .count();
        (ok >= 2).then_some(())
    });
    // Rotation after each backup: keep-last 2, the newest always among them.
    wait_for("rotation", 30, || {
        let jobs = scheduled_jobs(&env);
        let snaps = env.snapshots("main");
        let newest_job_snap = jobs
            .iter()
            .find(|j| j["state"] == "succeeded")
            .map(|j| j["snapshot_id"].clone());
        (snaps.len() == 2 && newest_job_snap == Some(snaps[1]["snapshot_id"].clone())).then_some(())
    });

    wait_for("more backups, still two snapshots", 60, || {
        let n = scheduled_jobs(&env).len();
        (n >= 4 && env.snapshots("main").len() == 2).then_some(())
    });
    wait_for("RPO OK", 30, || (rpo_state(&env) == "OK").then_some(()));
    // Never drilled, but outside the drill hours: no drill yet. In them (here: at any
    // time), the scheduler rehearses a restore of the newest snapshot and the measured
    // duration becomes the target's RTO.
    assert!(
        drill_jobs(&env).is_empty(),
        "no drill outside the drill hours"
    );
    let hours = env.cli(&["policy", "set", "--site", SITE, "--drill-hours", "any"]);
    assert!(hours.ok, "{}", hours.stderr);
    wait_for("a passed drill", 60, || {
        let r = env.cli(&["rpo", "--json"]).json();
        let t = &r["targets"][0];
        (t["drilled"] == true && t["last_drill_ok"] == true).then_some(())
    });
    let r = env.cli(&["rpo", "--json"]).json();
    assert!(
        r["targets"][0]["measured_rto_ms"].as_u64().unwrap() > 0,
        "{r}"
    );
    let drills = drill_jobs(&env);
    assert_eq!(
        drills.len(),
        1,
        "once per cadence (7 days by default): {drills:?}"
    );
    let left = env.pg.psql(
        "postgres",
        "SELECT count(*) FROM pg_database WHERE datname LIKE 'nexb_drill_%'",
    );
    assert_eq!(left, "0", "the drill's scratch database is dropped");

    // The agent goes away for three slots: AGENT OFFLINE, then VIOLATED past the RPO ...
    env.agent.as_mut().unwrap().kill();
    env.wait_online(false);
    let before = scheduled_jobs(&env).len();
    wait_for("AGENT OFFLINE", 10, || {
        (rpo_state(&env) == "AGENT OFFLINE").then_some(())
    });
    wait_for("VIOLATED", 30, || {
        (rpo_state(&env) == "VIOLATED").then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        scheduled_jobs(&env).len(),
        before,
        "nothing starts while it is away"
    );
    // ... and gets one job for all of them when it returns.
    env.start_agent();
    let back = Instant::now();
    wait_for("the catch-up job", 30, || {
        (scheduled_jobs(&env).len() > before).then_some(())
    });
    let caught_up = scheduled_jobs(&env).len() - before;
    assert!(back.elapsed() < Duration::from_secs(5), "caught up at once");
    assert_eq!(caught_up, 1, "one job for three missed slots");
    wait_for("the catch-up job succeeds", 60, || {
        (scheduled_jobs(&env)[0]["state"] == "succeeded").then_some(())
    });
    wait_for("back to OK", 30, || (rpo_state(&env) == "OK").then_some(()));
    let report = env.cli(&["rpo", "--days", "1", "--json"]).json();
    let t = &report["targets"][0];
    let pct = t["compliance_pct"].as_f64().unwrap();
    assert!(pct > 0.0 && pct < 100.0, "{report}");
    // Two periods out of compliance: never backed up (before the first backup), and
    // the outage, now closed.
    let v = t["violations"].as_array().unwrap();
    assert_eq!(v.len(), 2, "{report}");
    let outage = &v[1];
    assert!(
        outage["to_unix_ms"].as_u64().unwrap() > outage["from_unix_ms"].as_u64().unwrap(),
        "{report}"
    );
    assert_eq!(report["sites"][0]["violations"], 2);
    // A controller restart (SIGKILL) loses no schedule and runs nothing twice.
    let done_before = scheduled_jobs(&env).len();
    env.restart_controller(false);
    env.wait_online(true);
    wait_for("scheduled backups after the restart", 60, || {
        let ok = scheduled_jobs(&env)
            .iter()
            .take(2)
            .filter(|j| j["state"] == "succeeded")
            .count();
        (scheduled_jobs(&env).len() >= done_before + 2 && ok == 2).then_some(())
    });
    // Every scheduled job belongs to its own slot (slots are every 6 s on the second;
    // ticks fall just after a second, so a job starts within its slot's 6 s).
    let mut slots: Vec<u64> = scheduled_jobs(&env)
        .iter()
        .map(|j| j["started_unix_ms"].as_u64().unwrap() / 6000)
        .collect();
    let n = slots.len();
    slots.sort_unstable();
    slots.dedup();
    assert_eq!(
        slots.len(),
        n,
        "two jobs for one slot\n{}\n{}",
        env.cli(&["jobs", "--json"]).stdout,
        env.logs()
    );
    let table = env.cli(&["rpo"]);
    eprintln!("{}", table.stdout);
    eprintln!("{}", env.cli(&["jobs", "--limit", "12"]).stdout);
    assert!(
        table.stdout.contains("OK") && table.stdout.contains("per site"),
        "{}{}",
        table.stdout,
        table.stderr
    );
}

fn rpo_state(env: &Env) -> String {
    let v = env.cli(&["rpo", "--json"]).json();
    v["targets"][0]["state"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// A scheduled backup that stops making progress is failed by the controller with the
/// reason and cancelled on the agent (its pg_dump killed, so the next run is never a
/// second backup beside it); once the database is free again a run succeeds.
#[test]
fn a_stalled_scheduled_job_is_failed_and_cancelled_on_the_agent() {
    let env = Env::start(
        "CREATE TABLE busy (x int); INSERT INTO busy SELECT generate_series(1, 1000);",
        EnvOpts {
            scheduler: true,
            controller_args: ["--stall-limit", "3s"].map(String::from).to_vec(),
            ..Default::default()
        },
    );
    let mut locker = env.pg.hold_exclusive_lock("invoices", "busy");
    // Every second: while a job runs no other starts; each stalled one is followed by
    // a new one at once, which stalls too until the lock is gone.
    env.set_target_policy(
        "main",
        &[
            "--schedule",
            "* * * * * *",
            "--rpo",
            "2h",
            "--drill-every",
            "0",
        ],
    );
    let failed = wait_for("a stalled job", 60, || {
        let v = env.cli(&["jobs", "--failed", "--json"]).json();
        v.as_array()?
            .iter()
            .find(|j| j["error"].as_str().unwrap_or("").contains("stalled"))
            .cloned()
    });
    let err = failed["error"].as_str().unwrap();
    assert!(
        err.contains("no progress for") && err.contains("(limit 3s)"),
        "{err}"
    );
    wait_for("the agent cancelled it", 30, || {
        let log = std::fs::read_to_string(env.dir.path().join("agent.log")).ok()?;
        log.contains("job cancelled by the controller")
            .then_some(())
    });
    // Never two backups at once: one pg_dump at most while the lock holds.
    let pattern = format!("pg_dump -h 127.0.0.1 -p {} ", env.pg.port);
    for _ in 0..10 {
        let out = std::process::Command::new("pgrep")
            .args(["-f", &pattern])
            .output()
            .unwrap();
        let n = String::from_utf8_lossy(&out.stdout).lines().count();
        assert!(n <= 1, "{n} pg_dumps at once");
        std::thread::sleep(Duration::from_millis(300));
    }
    let _ = locker.kill();
    let _ = locker.wait();
    wait_for("a scheduled backup after the stall", 60, || {
        scheduled_jobs(&env)
            .iter()
            .any(|j| j["state"] == "succeeded")
            .then_some(())
    });
}
