//! Faults: a cut network, a killed controller, failing dumps, corrupted blobs, a wrong key.
//! Each must end in a clear error or a completed job, never a partial or damaged snapshot.

use nex_backup_tests::env::{Env, EnvOpts, target_toml};
use nex_backup_tests::sample::invoices_sql;
use nex_backup_tests::wait_for;

#[test]
fn network_cut_mid_upload_resumes_without_resending() {
    let env = Env::start(
        &invoices_sql(120_000),
        EnvOpts {
            via_proxy: true,
            ..Default::default()
        },
    );
    let proxy = env.proxy.as_ref().unwrap();
    let before = proxy.upstream_bytes();
    proxy.cut_after_upstream_bytes(before + 3_000_000);
    let b = env.backup_ok("main");
    assert_eq!(proxy.cuts(), 1, "the network was cut during the upload");
    let log = std::fs::read_to_string(env.dir.path().join("agent.log")).unwrap();
    assert!(
        log.contains("retrying"),
        "the agent felt the cut and retried:\n{}",
        env.logs()
    );
    let st = env.status();
    assert_eq!(
        st["duplicate_chunks_received"], 0,
        "no stored chunk was sent again: {st}"
    );
    assert!(st["chunks_received"].as_u64().unwrap() > 20);
    let snaps = env.snapshots("main");
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0]["snapshot_id"], b["snapshot_id"]);
    let r = env.restore("main", "after_cut", &[]).json();
    assert_eq!(r["ok"], true, "{r}");
}

#[test]
fn controller_killed_mid_upload_leaves_no_partial_snapshot() {
    let mut env = Env::start(
        &invoices_sql(120_000),
        EnvOpts {
            via_proxy: true,
            ..Default::default()
        },
    );
    let first = env.backup_ok("main");
    env.pg.psql(
        "invoices",
        "UPDATE invoices SET note = md5(note) WHERE id % 3 = 0",
    );

    let running = env.backup_in_background("main");
    let proxy = env.proxy.as_ref().unwrap();
    let start = proxy.upstream_bytes();
    wait_for("upload in progress", 120, || {
        (proxy.upstream_bytes() > start + 3_000_000).then_some(())
    });
    env.restart_controller(true);
    let out = running.join().unwrap();
    assert!(!out.ok, "the CLI reports the lost job: {}", out.stdout);

    let snaps = env.snapshots("main");
    assert_eq!(
        snaps.len(),
        1,
        "only the earlier snapshot is visible: {snaps:?}"
    );
    assert_eq!(snaps[0]["snapshot_id"], first["snapshot_id"]);
    // The proxy still points at the restarted controller (same port).
    env.start_agent();
    let r = env.restore("main", "earlier_intact", &[]).json();
    assert_eq!(r["ok"], true, "{r}");
    let next = env.backup_ok("main");
    assert_ne!(next["snapshot_id"], first["snapshot_id"]);
    assert_eq!(env.snapshots("main").len(), 2);
}

/// The controller dies while a backup runs and the agent lives on: the agent finishes
/// the job once the controller is back (uploads resume) and its outcome is recorded
/// under the same job.
#[test]
fn a_controller_restart_forgets_no_running_job() {
    let mut env = Env::start(&invoices_sql(60_000), EnvOpts::default());
    // Slow enough to be caught running.
    let out = env.cli(&["policy", "set", "--site", "acme", "--bandwidth", "512KiB"]);
    assert!(out.ok, "{}", out.stderr);
    let running = env.backup_in_background("main");
    let job = wait_for("a running backup job", 60, || {
        let v = env.cli(&["jobs", "--json"]).json();
        let j = v.as_array()?.first()?.clone();
        (j["state"] == "running").then_some(j["job_id"].as_str()?.to_string())
    });
    std::thread::sleep(std::time::Duration::from_secs(2));
    env.restart_controller(false);
    let out = running.join().unwrap();
    assert!(!out.ok, "the CLI lost its controller: {}", out.stdout);
    let done = wait_for("the job's outcome after the restart", 180, || {
        let v = env.cli(&["jobs", "--json"]).json();
        let j = v
            .as_array()?
            .iter()
            .find(|j| j["job_id"] == job.as_str())?
            .clone();
        (j["state"] != "running").then_some(j)
    });
    assert_eq!(done["state"], "succeeded", "{done}\n{}", env.logs());
    let snaps = env.snapshots("main");
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    assert_eq!(snaps[0]["snapshot_id"], done["snapshot_id"]);
    let jobs = env.cli(&["jobs", "--json"]).json();
    assert_eq!(jobs.as_array().unwrap().len(), 1, "no second job: {jobs}");
    let r = env.restore("main", "after_controller_restart", &[]).json();
    assert_eq!(r["ok"], true, "{r}");
}

#[test]
fn failing_dumps_name_target_and_commit_nothing() {
    let extra = [
        target_toml("badpw", "postgres", "invoices", "NEXT_BAD_PW"),
        target_toml("ghost", "postgres", "nope", "NEXT_PG_PASSWORD"),
        target_toml("limited", "nexb_limited", "invoices", "NEXT_LIMITED_PW"),
    ]
    .concat();
    let env = Env::start(
        "CREATE TABLE open_data (x int); INSERT INTO open_data SELECT generate_series(1, 100);
         CREATE TABLE secret (x int); CREATE ROLE nexb_limited LOGIN PASSWORD 'limited-pw';
         GRANT SELECT ON open_data TO nexb_limited;",
        EnvOpts {
            extra_targets: extra,
            agent_env: vec![
                ("NEXT_BAD_PW".into(), "wrong-password".into()),
                ("NEXT_LIMITED_PW".into(), "limited-pw".into()),
            ],
            ..Default::default()
        },
    );
    let good = env.backup_ok("main");

    let bad = env.backup("badpw").json_failed();
    assert_eq!(bad["ok"], false);
    let err = bad["error"].as_str().unwrap();
    assert!(
        err.contains("target badpw") && err.contains("password authentication failed"),
        "{err}"
    );
    assert!(
        !err.contains("wrong-password"),
        "the password must not leak: {err}"
    );

    let ghost = env.backup("ghost").json_failed();
    let err = ghost["error"].as_str().unwrap();
    assert!(
        err.contains("target ghost") && err.contains("database \"nope\" does not exist"),
        "{err}"
    );

    let limited = env.backup("limited").json_failed();
    let err = limited["error"].as_str().unwrap();
    assert!(
        err.contains("target limited")
            && err.contains("pg_dump")
            && err.contains("permission denied for table secret"),
        "{err}"
    );

    for t in ["badpw", "ghost", "limited"] {
        assert!(env.snapshots(t).is_empty(), "nothing committed for {t}");
    }
    // The history keeps each failure with its error; --failed shows only those.
    let failed = env.cli(&["jobs", "--failed", "--json"]).json();
    let failed = failed.as_array().unwrap();
    assert_eq!(failed.len(), 3, "{failed:?}");
    for (j, t) in failed.iter().zip(["limited", "ghost", "badpw"]) {
        assert_eq!(j["target"], t);
        assert_eq!(j["state"], "failed");
        assert!(
            j["error"]
                .as_str()
                .unwrap()
                .contains(&format!("target {t}")),
            "{j}"
        );
    }
    let snaps = env.snapshots("main");
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0]["snapshot_id"], good["snapshot_id"]);
    let r = env.restore("main", "still_good", &[]).json();
    assert_eq!(r["ok"], true, "{r}");
    let log = std::fs::read_to_string(env.dir.path().join("agent.log")).unwrap();
    assert!(
        !log.contains("wrong-password")
            && !log.contains("limited-pw")
            && !log.contains("nexb-test-pw"),
        "passwords in the agent log"
    );
}

#[test]
fn corrupted_blob_and_wrong_key_fail_restore_clearly() {
    let mut env = Env::start(&invoices_sql(30_000), EnvOpts::default());
    let b = env.backup_ok("main");
    let snap = b["snapshot_id"].as_str().unwrap().to_string();

    let blobs = env.controller.data_dir.join("blobs/chunks/acme");
    let mut files = nex_backup_tests::files_below(&blobs);
    files.sort_by_key(|p| std::fs::metadata(p).unwrap().len());
    let victim = files.last().unwrap().clone();
    let mut bytes = std::fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&victim, bytes).unwrap();
    let short = &victim.file_name().unwrap().to_string_lossy()[..12];

    let r = env.restore("main", "from_corrupt", &[]).json_failed();
    assert_eq!(r["ok"], false);
    let err = r["error"].as_str().unwrap();
    assert!(
        err.contains(&snap) && err.contains(short) && err.contains("modified or corrupted"),
        "{err}"
    );
    assert!(err.contains("the new database was dropped"), "{err}");
    let left = env.pg.psql(
        "postgres",
        "SELECT count(*) FROM pg_database WHERE datname = 'from_corrupt'",
    );
    assert_eq!(left, "0", "no half-restored database is left behind");

    // A different key on the agent: the manifest names the key it needs.
    env.agent.as_mut().unwrap().kill();
    let mut ring = nex_backup_shared::keyring::KeyRing::new("acme");
    ring.insert(1, nex_backup_shared::keys::MasterKey::from_bytes([9u8; 32]));
    ring.save(&env.agent_state_dir().join("keyring")).unwrap();
    env.start_agent();
    let r = env.restore("main", "wrong_key", &[]).json_failed();
    assert_eq!(r["ok"], false);
    let err = r["error"].as_str().unwrap();
    assert!(
        err.contains(&snap) && err.contains("which this agent does not hold"),
        "{err}"
    );
}

#[test]
fn stalled_pg_dump_is_killed_and_nothing_committed() {
    let env = Env::start(
        "CREATE TABLE busy (x int); INSERT INTO busy SELECT generate_series(1, 1000);",
        EnvOpts {
            stall_timeout_secs: Some(3),
            ..Default::default()
        },
    );
    // A session holding an exclusive lock: pg_dump waits for it and produces nothing.
    let mut locker = env.pg.hold_exclusive_lock("invoices", "busy");
    let out = env.backup("main").json_failed();
    let err = out["error"].as_str().unwrap();
    assert!(
        err.contains("pg_dump of target main") && err.contains("stalled"),
        "{err}"
    );
    let pattern = format!("pg_dump -h 127.0.0.1 -p {} ", env.pg.port);
    let dumps = std::process::Command::new("pgrep")
        .args(["-f", &pattern])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&dumps.stdout).trim().is_empty(),
        "the stalled pg_dump was killed"
    );
    assert!(env.snapshots("main").is_empty());
    let _ = locker.kill();
    let _ = locker.wait();
    env.backup_ok("main");
}
