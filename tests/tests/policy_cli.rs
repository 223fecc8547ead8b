//! The operator's policy and prune commands against real processes.

use nex_backup_tests::env::{Env, EnvOpts, SITE};

#[test]
fn policies_are_validated_whole_and_prune_shows_its_plan() {
    let env = Env::start(
        "CREATE TABLE t (x int); INSERT INTO t VALUES (1)",
        EnvOpts::default(),
    );
    let set = |extra: &[&str]| {
        let mut args = vec!["policy", "set", "--site", SITE, "--target", "main"];
        args.extend(extra);
        env.cli(&args)
    };
    for (args, field) in [
        (&["--schedule", "61 * * * *"][..], "policy schedule"),
        (&["--timezone", "Mars/Olympus"], "policy timezone"),
        (
            &[
                "--keep-daily",
                "0",
                "--keep-weekly",
                "0",
                "--keep-last",
                "0",
            ],
            "policy retention",
        ),
        (&["--schedule", "0 */6 * * *", "--rpo", "1h"], "policy rpo"),
    ] {
        let out = set(args);
        assert!(!out.ok, "{args:?} accepted");
        assert!(out.stderr.contains(field), "{args:?}: {}", out.stderr);
    }
    let shown = env
        .cli(&[
            "policy", "show", "--site", SITE, "--target", "main", "--json",
        ])
        .json();
    assert_eq!(
        shown[0]["is_default"], true,
        "nothing was half-applied: {shown}"
    );
    assert_eq!(shown[0]["schedule"], "0 1 * * *");

    let forced = set(&[
        "--schedule",
        "0 */6 * * *",
        "--rpo",
        "1h",
        "--force",
        "--json",
    ]);
    assert!(forced.ok, "{}", forced.stderr);
    let ok = set(&[
        "--schedule",
        "30 2 * * *",
        "--timezone",
        "Europe/Bratislava",
        "--rpo",
        "26h",
        "--keep-last",
        "1",
        "--keep-daily",
        "0",
        "--keep-weekly",
        "0",
        "--json",
    ])
    .json();
    assert_eq!(ok[0]["timezone"], "Europe/Bratislava");
    assert_eq!(ok[0]["rpo_secs"], 26 * 3600);
    assert_eq!(ok[0]["is_default"], false);
    let list = env.cli(&["policy", "list"]);
    assert!(
        list.ok && list.stdout.contains("30 2 * * * Europe/Bratislava"),
        "{}",
        list.stdout
    );

    let first = env.backup_ok("main");
    let second = env.backup_ok("main");
    // Both are younger than the site's retention lock (7 days): nothing is deleted.
    let locked = env.cli(&["prune", "--dry-run"]);
    assert!(
        locked.stdout.contains("keep (retention lock)") && locked.stdout.contains("0 snapshot(s)"),
        "{}",
        locked.stdout
    );
    // An operator lifts the lock; that is audited.
    let lift = env.cli(&["policy", "set", "--site", SITE, "--retention-lock", "0"]);
    assert!(lift.ok, "{}", lift.stderr);
    let audit = env.cli(&["audit", "--site", SITE]);
    assert!(
        audit.stdout.contains("retention lock shortened") && audit.stdout.contains("7d -> 0s"),
        "{}",
        audit.stdout
    );
    let plan = env.cli(&["prune", "--dry-run"]);
    assert!(plan.ok, "{}", plan.stderr);
    let first_id = first["snapshot_id"].as_str().unwrap();
    let second_id = second["snapshot_id"].as_str().unwrap();
    assert!(
        plan.stdout.contains(&format!("{first_id}  would delete"))
            && plan.stdout.contains(&format!("{second_id}  keep"))
            && plan.stdout.contains("would free"),
        "{}",
        plan.stdout
    );
    assert_eq!(env.snapshots("main").len(), 2, "a dry run deletes nothing");
    let done = env.cli(&["prune", "--json"]).json();
    assert_eq!(done["deleted_snapshots"], 1);
    let left = env.snapshots("main");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["snapshot_id"], second_id, "the newest stays");
    let r = env.restore("main", "after_prune", &[]).json();
    assert_eq!(r["ok"], true, "{r}");

    // The history: two backups and a restore, newest first, with bytes and outcome.
    let failed = env.backup("nosuchtarget");
    assert!(!failed.ok);
    let jobs = env.cli(&["jobs", "--site", SITE, "--json"]).json();
    let jobs = jobs.as_array().unwrap();
    assert_eq!(jobs.len(), 3, "{jobs:?}");
    assert_eq!(jobs[0]["kind"], "restore");
    assert_eq!(jobs[0]["state"], "succeeded");
    assert_eq!(jobs[2]["snapshot_id"], first_id);
    assert!(jobs[2]["logical_bytes"].as_u64().unwrap() > 0);
    assert!(jobs[2]["new_bytes"].as_u64().unwrap() > 0);
    assert!(jobs[2]["ended_unix_ms"].as_u64() >= jobs[2]["started_unix_ms"].as_u64());
    let table = env.cli(&["jobs"]);
    assert!(
        table.stdout.contains("backup (manual)") && table.stdout.contains("succeeded"),
        "{}",
        table.stdout
    );
    let none_failed = env.cli(&["jobs", "--failed", "--json"]).json();
    assert_eq!(none_failed.as_array().unwrap().len(), 0, "{none_failed}");

    // A drill restores into a scratch database, verifies, drops it, reports the RTO.
    let drill = env.cli(&["drill", "--site", SITE, "--target", "main"]);
    assert!(drill.ok, "{}\n{}", drill.stdout, drill.stderr);
    assert!(
        drill.stdout.contains("into a scratch database ok")
            && drill.stdout.contains("measured RTO")
            && drill.stdout.contains("within the RTO"),
        "{}",
        drill.stdout
    );
    let left = env.pg.psql(
        "postgres",
        "SELECT count(*) FROM pg_database WHERE datname LIKE 'nexb_drill_%'",
    );
    assert_eq!(left, "0", "the scratch database is dropped");
    let jobs = env.cli(&["jobs", "--json"]).json();
    assert_eq!(jobs[0]["trigger"], "drill");
    assert_eq!(jobs[0]["state"], "succeeded");
}
