//! Ordinary operator actions that must never lose data, against real processes and a
//! real PostgreSQL: a second backup on one day, `restore --clean` from a damaged
//! snapshot, a typo in `policy set`, a dry run after a restart, a failed drill, a stop
//! with SIGTERM during a backup, and a full store.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use nex_backup_tests::env::{Env, EnvOpts, SITE};
use nex_backup_tests::sample::invoices_sql;

/// Flip a byte in the largest chunk blob; returns its path and original bytes.
fn damage_largest_chunk(env: &Env) -> (PathBuf, Vec<u8>) {
    let mut files =
        nex_backup_tests::files_below(&env.controller.data_dir.join("blobs/chunks/acme"));
    files.sort_by_key(|p| std::fs::metadata(p).unwrap().len());
    let victim = files.last().unwrap().clone();
    let original = std::fs::read(&victim).unwrap();
    let mut bytes = original.clone();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&victim, bytes).unwrap();
    (victim, original)
}

fn count(env: &Env, db: &str, sql: &str) -> String {
    env.pg.psql(db, sql)
}

#[test]
fn a_second_backup_keeps_the_first_and_clean_restores_swap_only_verified_copies() {
    let env = Env::start(&invoices_sql(20_000), EnvOpts::default());
    // Two backups on one day under the default policy: both stay.
    env.backup_ok("main");
    let second = env.cli(&["backup", "--site", SITE, "--target", "main"]);
    assert!(second.ok, "{}", second.stderr);
    assert!(
        second
            .stdout
            .contains("retention: this backup makes no snapshot due for deletion"),
        "the backup says what it costs: {}",
        second.stdout
    );
    let pruned = env.cli(&["prune", "--json"]).json();
    assert_eq!(pruned["deleted_snapshots"], 0, "{pruned}");
    assert_eq!(env.snapshots("main").len(), 2, "the earlier backup is kept");

    // Production exists, with something the snapshot does not have.
    let r = env.restore("main", "prod", &[]).json();
    assert_eq!(r["ok"], true, "{r}");
    env.pg.psql(
        "prod",
        "CREATE TABLE marker (x int); INSERT INTO marker VALUES (42)",
    );
    let invoices = count(&env, "prod", "SELECT count(*) FROM invoices");

    // A --clean restore from a damaged snapshot leaves production untouched.
    let (victim, original) = damage_largest_chunk(&env);
    let failed = env.restore("main", "prod", &["--clean"]).json_failed();
    let err = failed["error"].as_str().unwrap();
    assert!(
        err.contains("modified or corrupted") && err.contains("prod is untouched"),
        "{err}"
    );
    assert_eq!(count(&env, "prod", "SELECT x FROM marker"), "42");
    assert_eq!(
        count(&env, "prod", "SELECT count(*) FROM invoices"),
        invoices
    );
    assert_eq!(
        count(
            &env,
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'prod_nexb_new_%'"
        ),
        "0",
        "no staging copy is left behind"
    );
    std::fs::write(&victim, original).unwrap();

    // A verified --clean restore swaps in, keeping the old database under a dated name.
    let ok = env.restore("main", "prod", &["--clean"]).json();
    assert_eq!(ok["ok"], true, "{ok}");
    let note = ok["note"].as_str().unwrap();
    assert!(note.contains("kept as prod_old_"), "{note}");
    let old = note
        .split_whitespace()
        .find(|w| w.starts_with("prod_old_"))
        .unwrap();
    assert_eq!(
        count(&env, old, "SELECT x FROM marker"),
        "42",
        "old data kept"
    );
    assert_eq!(
        count(
            &env,
            "prod",
            "SELECT count(*) FROM pg_tables WHERE tablename = 'marker'"
        ),
        "0",
        "prod is the restored snapshot"
    );
    // --drop-old drops the replaced database after the verified swap.
    let ok = env
        .restore("main", "prod", &["--clean", "--drop-old"])
        .json();
    assert_eq!(ok["ok"], true, "{ok}");
    assert_eq!(
        count(
            &env,
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'prod_old_%'"
        ),
        "1",
        "the swap before kept its old copy; this one dropped its own"
    );
    // The 3 a.m. case: replace the very database the agent backs up (and connects to).
    env.pg
        .psql("invoices", "DELETE FROM invoices WHERE id % 2 = 0");
    let ok = env.restore("main", "invoices", &["--clean"]).json();
    assert_eq!(ok["ok"], true, "{ok}");
    assert!(
        ok["note"]
            .as_str()
            .unwrap()
            .contains("kept as invoices_old_"),
        "{ok}"
    );
    assert_eq!(
        count(&env, "invoices", "SELECT count(*) FROM invoices"),
        invoices,
        "every invoice is back"
    );
}

#[test]
fn typos_dry_runs_and_failed_drills_tell_the_truth() {
    let mut env = Env::start(&invoices_sql(5_000), EnvOpts::default());
    // A typo in a target or site name creates nothing.
    let typo = env.cli(&[
        "policy", "set", "--site", SITE, "--target", "invoice", "--rpo", "2d",
    ]);
    assert!(!typo.ok);
    assert!(
        typo.stderr.contains("declares target invoice") && typo.stderr.contains("known: main"),
        "{}",
        typo.stderr
    );
    let show = env.cli(&["policy", "show", "--site", SITE, "--target", "invoice"]);
    assert!(!show.ok, "policy show of an unknown target fails");
    let site_typo = env.cli(&[
        "policy",
        "set",
        "--site",
        "acmee",
        "--window",
        "22:00-06:00",
    ]);
    assert!(
        !site_typo.ok
            && site_typo
                .stderr
                .contains("no agent is enrolled for site acmee")
    );
    let rpo = env.cli(&["rpo", "--json"]).json();
    assert!(
        !rpo.to_string().contains("invoice\""),
        "no phantom target: {rpo}"
    );
    let created = env.cli(&[
        "policy", "set", "--site", SITE, "--target", "reports", "--create",
    ]);
    assert!(
        created.ok,
        "--create sets a target up ahead of its agent: {}",
        created.stderr
    );
    assert!(env.cli(&["rpo"]).stdout.contains("reports"));
    let deleted = env.cli(&["policy", "delete", "--site", SITE, "--target", "reports"]);
    assert!(
        deleted.ok && deleted.stdout.contains("own settings deleted"),
        "{}",
        deleted.stdout
    );
    assert!(
        !env.cli(&["rpo"]).stdout.contains("reports"),
        "a deleted phantom target is gone"
    );

    // After a restart GC waits out its grace: the dry run says so and matches the run.
    env.backup_ok("main");
    env.restart_controller(false);
    env.wait_online(true);
    let dry = env.cli(&["prune", "--dry-run", "--json"]).json();
    let real = env.cli(&["prune", "--json"]).json();
    assert!(
        dry["gc_note"]
            .as_str()
            .unwrap()
            .contains("garbage collection waits until"),
        "{dry}"
    );
    for k in ["deleted_snapshots", "deleted_chunks", "freed_bytes"] {
        assert_eq!(dry[k], real[k], "{k}: dry {dry} vs real {real}");
    }

    // A failed drill reports no RTO, and rpo agrees with status about the snapshot.
    damage_largest_chunk(&env);
    let drill = env.cli(&["drill", "--site", SITE, "--target", "main"]);
    assert!(!drill.ok);
    assert!(
        drill.stdout.contains("no RTO measured") && !drill.stdout.contains("within the RTO"),
        "{}",
        drill.stdout
    );
    let rpo = env.cli(&["rpo", "--site", SITE]);
    assert!(
        rpo.stdout.contains("acme/main: VIOLATED: no good snapshot")
            && rpo.stdout.contains("suspect: its restore drill failed")
            && rpo.stdout.contains("drill FAILED / 1h"),
        "{}",
        rpo.stdout
    );
    // status agrees: the newest snapshot is there, and it is suspect.
    let status = env.status();
    let main = &status["sites"][0]["targets"][0];
    assert_eq!(main["newest_standing"], "suspect", "{status}");
    assert_eq!(main["last_job_state"], "succeeded", "{status}");
}

#[test]
fn sigterm_stops_the_controller_within_seconds_during_a_backup() {
    let mut env = Env::start(&invoices_sql(2_000), EnvOpts::default());
    let lock = env.pg.hold_exclusive_lock("invoices", "invoices");
    let running = env.backup_in_background("main");
    nex_backup_tests::wait_for("the backup to start", 30, || {
        let jobs = env.cli(&["jobs", "--json"]).json();
        (jobs[0]["state"] == "running").then_some(())
    });
    let pid = env.controller.pid();
    let t = Instant::now();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    nex_backup_tests::wait_for("the controller to exit after SIGTERM", 10, || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        (stat.is_empty() || stat.contains(") Z ")).then_some(())
    });
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let cli = running.join().unwrap();
    assert!(
        cli.stderr.contains("the controller stopped before job"),
        "the operator following the backup is told: {}",
        cli.stderr
    );
    eprintln!("SIGTERM during a backup: exited after {:?}", t.elapsed());
    drop(lock);
    // The catalog lock was released: the controller starts again on the same data.
    env.controller.restart();
    env.wait_online(true);
    let log = std::fs::read_to_string(&env.controller.log).unwrap();
    assert!(
        log.contains("shutting down: stopping workers, ending agent sessions"),
        "{log}"
    );
}

#[test]
fn a_full_store_fails_the_backup_at_once_naming_the_controllers_store() {
    let env = Env::start(
        &invoices_sql(2_000),
        EnvOpts {
            controller_args: vec!["--store-reserve".into(), "1000000GiB".into()],
            ..Default::default()
        },
    );
    let t = Instant::now();
    let out = env.backup("main").json_failed();
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    let err = out["error"].as_str().unwrap();
    assert!(
        err.contains("controller's blob store") && err.contains("is full"),
        "{err}"
    );
    nex_backup_tests::wait_for("the agent to close its database session", 10, || {
        let n = env.pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE datname = 'invoices' AND state LIKE 'idle in transaction%'",
        );
        (n == "0").then_some(())
    });
    assert!(env.snapshots("main").is_empty());
    // status shows the failure, not just "never backed up".
    let table = env.cli(&["status"]);
    assert!(
        table.stdout.contains("never backed up")
            && table.stdout.contains("failed ")
            && table
                .stdout
                .contains("ago: upload chunks: the controller's blob store"),
        "{}",
        table.stdout
    );
}

/// Ransomware-like change: the text that made up most of the database is overwritten
/// with random characters. The next backup no longer compresses, the target goes on
/// hold, and nothing earlier can be deleted until an operator releases it.
#[test]
fn random_overwrites_put_the_target_on_hold_and_earlier_backups_survive() {
    let sql = "CREATE TABLE docs (id int PRIMARY KEY, body text NOT NULL);
         INSERT INTO docs SELECT g, repeat('invoice line for customer ' || (g % 50) || ' paid in full. ', 40)
             FROM generate_series(1, 3000) g;";
    let env = Env::start(sql, EnvOpts::default());
    let lift = env.cli(&["policy", "set", "--site", SITE, "--retention-lock", "0"]);
    assert!(lift.ok, "{}", lift.stderr);
    env.set_target_policy(
        "main",
        &[
            "--keep-last",
            "1",
            "--keep-daily",
            "0",
            "--keep-weekly",
            "0",
        ],
    );
    let mut good = vec![];
    for _ in 0..3 {
        good.push(
            env.backup_ok("main")["snapshot_id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    env.pg.psql(
        "invoices",
        "UPDATE docs SET body = (SELECT string_agg(md5(random()::text || id::text || s::text), '') FROM generate_series(1, 30) s)",
    );
    let hit = env.cli(&["backup", "--site", SITE, "--target", "main"]);
    assert!(hit.ok, "{}", hit.stderr);
    assert!(hit.stdout.contains("ANOMALY HOLD"), "{}", hit.stdout);
    let holds = env.cli(&["hold", "list", "--json"]).json();
    assert_eq!(holds["holds"].as_array().unwrap().len(), 1, "{holds}");
    let reason = holds["holds"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("compresses"), "{reason}");
    eprintln!("anomaly hold: {reason}");
    // keep-last 1 and no lock would delete the three earlier ones; the hold keeps them.
    let pruned = env.cli(&["prune", "--json"]).json();
    assert_eq!(pruned["deleted_snapshots"], 0, "{pruned}");
    assert_eq!(env.snapshots("main").len(), 4);
    let rpo = env.cli(&["rpo", "--site", SITE]);
    assert!(rpo.stdout.contains("ANOMALY HOLD"), "{}", rpo.stdout);
    // `restore latest` takes the newest good snapshot, not the suspicious one.
    let r = env.restore("main", "before_attack", &[]).json();
    assert_eq!(r["snapshot_id"], good[2].as_str(), "{r}");
    // The operator releases the hold (audited); rotation resumes.
    let rel = env.cli(&["hold", "release", "--site", SITE, "--target", "main"]);
    assert!(rel.ok, "{}", rel.stderr);
    let audit = env.cli(&["audit"]);
    assert!(
        audit.stdout.contains("anomaly hold released"),
        "{}",
        audit.stdout
    );
    let pruned = env.cli(&["prune", "--json"]).json();
    assert_eq!(pruned["deleted_snapshots"], 3, "{pruned}");
}

/// The controller's disk really fills (a 8 MiB tmpfs, no reserve): the backup fails
/// within seconds with an error naming the controller's store, the agent does not keep
/// a transaction open on the customer's database, and the chunks it sent are collected.
#[test]
fn a_really_full_disk_fails_fast_and_leaves_collectable_orphans() {
    let sql = "CREATE TABLE r (id int PRIMARY KEY, t text NOT NULL);
        INSERT INTO r SELECT g, (SELECT string_agg(md5(random()::text || g || s), '') FROM generate_series(1, 16) s)
            FROM generate_series(1, 60000) g;";
    let env = Env::start(
        sql,
        EnvOpts {
            controller_args: vec![
                "--store-reserve".into(),
                "0".into(),
                "--gc-grace".into(),
                "2s".into(),
            ],
            data_dir_mib: Some(8),
            ..Default::default()
        },
    );
    let t = Instant::now();
    let out = env.backup("main").json_failed();
    let took = t.elapsed();
    let err = out["error"].as_str().unwrap();
    assert!(
        err.contains("controller's") && err.contains("full"),
        "{err}\n{}",
        env.logs()
    );
    assert!(took < Duration::from_secs(30), "failed after {took:?}");
    eprintln!("full disk: failed after {took:?}: {err}");
    nex_backup_tests::wait_for("the agent to close its database session", 10, || {
        let n = env.pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE datname = 'invoices' AND state LIKE 'idle in transaction%'",
        );
        (n == "0").then_some(())
    });
    assert!(
        env.snapshots("main").is_empty(),
        "nothing partial is visible"
    );
    std::thread::sleep(Duration::from_millis(2500)); // past the GC grace after start
    let pruned = env.cli(&["prune", "--json"]);
    assert!(
        pruned.ok,
        "prune on a full disk: {}\n{}",
        pruned.stderr,
        env.logs()
    );
    let pruned = pruned.json();
    assert!(
        pruned["deleted_chunks"].as_u64().unwrap() > 0
            && pruned["freed_bytes"].as_u64().unwrap() > 0,
        "the chunks sent before the disk filled are collected: {pruned}"
    );
}

/// An agent whose certificate expired while it was stopped says so, when, and how to
/// re-enroll, instead of an endless "transport error".
#[test]
fn an_agent_with_an_expired_certificate_says_how_to_re_enroll() {
    let mut env = Env::start(
        "CREATE TABLE t (x int)",
        EnvOpts {
            controller_args: vec!["--agent-cert-lifetime".into(), "6s".into()],
            ..Default::default()
        },
    );
    env.agent.as_mut().unwrap().kill();
    std::thread::sleep(Duration::from_secs(7));
    let config = env.agent_config.clone();
    env.spawn_agent(&config);
    let log = env.dir.path().join("agent.log");
    nex_backup_tests::wait_for("the agent to explain its expired certificate", 30, || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        (text.contains("certificate expired at")
            && text.contains("--replace-agent acme-srv1")
            && text.contains("nex-backup-agent enroll"))
        .then_some(())
    });
}

/// An operator cancels a backup that hangs: the job fails at once (audited), whoever
/// follows it is told, the agent stops it, nothing is committed, and the next backup runs.
#[test]
fn an_operator_cancels_a_hanging_backup() {
    let env = Env::start(&invoices_sql(2_000), EnvOpts::default());
    let lock = env.pg.hold_exclusive_lock("invoices", "invoices");
    let running = env.backup_in_background("main");
    let job = nex_backup_tests::wait_for("the backup to start", 30, || {
        let jobs = env.cli(&["jobs", "--json"]).json();
        (jobs[0]["state"] == "running").then(|| jobs[0]["job_id"].as_str().unwrap().to_string())
    });
    let out = env.cli(&[
        "jobs",
        "cancel",
        &job,
        "--reason",
        "pg_dump hangs on a lock",
    ]);
    assert!(
        out.ok && out.stdout.contains("cancelled"),
        "{}\n{}",
        out.stdout,
        out.stderr
    );
    let followed = running.join().unwrap().json_failed();
    assert!(
        followed["error"]
            .as_str()
            .unwrap()
            .contains("cancelled by an operator: pg_dump hangs on a lock"),
        "{followed}"
    );
    let again = env.cli(&["jobs", "cancel", &job]);
    assert!(
        !again.ok && again.stderr.contains("is not running"),
        "{}",
        again.stderr
    );
    nex_backup_tests::wait_for("the agent to stop the job", 15, || {
        let log = std::fs::read_to_string(env.dir.path().join("agent.log")).unwrap_or_default();
        log.contains("cancel").then_some(())
    });
    drop(lock);
    assert!(
        env.snapshots("main").is_empty(),
        "the cancelled job committed nothing"
    );
    env.backup_ok("main");
    let audit = env.cli(&["audit"]);
    assert!(audit.stdout.contains("job cancelled"), "{}", audit.stdout);
}
