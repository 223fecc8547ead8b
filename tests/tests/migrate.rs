//! `nex-backup migrate`: an embedded controller holding snapshots, policies, jobs,
//! incidents and an agent moves onto PostgreSQL and S3; afterwards everything is there,
//! every old snapshot restores, and the next backup deduplicates against the moved chunks.

use nex_backup_tests::env::{Env, EnvOpts};
use nex_backup_tests::pg::{PASSWORD, PgCluster};
use nex_backup_tests::procs::{Controller, bin};
use nex_backup_tests::s3::S3Server;
use nex_backup_tests::sample::invoices_sql;

#[test]
fn an_embedded_controller_moves_to_postgres_and_s3_and_everything_restores() {
    let mut env = Env::start(&invoices_sql(5_000), EnvOpts::default());
    env.set_target_policy("main", &["--rpo", "30h"]);
    let first = env.backup_ok("main");
    env.pg.psql(
        "invoices",
        "UPDATE invoices SET total = total + 1 WHERE id < 500",
    );
    let second = env.backup_ok("main");
    let incidents_before = env.cli(&["incidents", "--json"]).json();
    let jobs_before = env.cli(&["jobs", "--json"]).json();

    let catalog = PgCluster::start();
    let cat_url = catalog.create_catalog("nexcat");
    let s3 = S3Server::start();
    let store = s3.url_with_file("moved");

    // A running controller holds its catalog: migrate refuses and says why.
    let dir = env.controller.data_dir.clone();
    let migrate = || {
        std::process::Command::new(bin("nex-backup"))
            .args(["migrate", "--data-dir"])
            .arg(&dir)
            .args(["--to-catalog", &cat_url, "--to-store", &store])
            .output()
            .unwrap()
    };
    let busy = migrate();
    assert!(!busy.status.success());
    let text = String::from_utf8_lossy(&busy.stderr);
    assert!(text.contains("stop the controller first"), "{text}");
    assert!(!text.contains(PASSWORD), "{text}");

    env.agent.as_mut().unwrap().kill();
    env.controller.kill();
    let out = migrate();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("2 snapshot(s)"), "{text}");
    // Run again: the catalog is no longer empty, and nothing is changed.
    let again = migrate();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds snapshots"));
    assert!(
        dir.join("catalog").exists() && dir.join("blobs").exists(),
        "old data kept"
    );

    let args: Vec<String> = [
        "--recovery-key",
        &env.recovery_public,
        "--no-scheduler",
        "--catalog",
        &cat_url,
        "--store",
        &store,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let port = env.controller.port();
    let log = env.dir.path().join("controller.log");
    env.controller = Controller::start_env(&dir, port, &log, &args, &[]);
    env.start_agent();

    let snaps = env.snapshots("main");
    assert_eq!(snaps.len(), 2, "{snaps:?}");
    // The same incidents (one may have been resolved since it was listed).
    let key = |v: &serde_json::Value| -> Vec<(serde_json::Value, serde_json::Value)> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|i| (i["id"].clone(), i["opened_unix_ms"].clone()))
            .collect()
    };
    let incidents_after = env.cli(&["incidents", "--json"]).json();
    assert!(!key(&incidents_before).is_empty());
    assert_eq!(key(&incidents_after), key(&incidents_before));
    let jobs_after = env.cli(&["jobs", "--json"]).json();
    assert_eq!(
        jobs_after.as_array().map(Vec::len),
        jobs_before.as_array().map(Vec::len)
    );
    let policy = env.cli(&["policy", "show", "--site", "acme", "--target", "main"]);
    assert!(
        policy.stdout.contains("1d6h") && policy.stdout.contains("own"),
        "{}",
        policy.stdout
    );
    for (snap, db, rows) in [
        (&first, "moved_first", "5000"),
        (&second, "moved_second", "5000"),
    ] {
        let r = env
            .restore(
                "main",
                db,
                &["--snapshot", snap["snapshot_id"].as_str().unwrap()],
            )
            .json();
        assert_eq!(r["ok"], true, "{r}");
        assert_eq!(env.pg.psql(db, "SELECT count(*) FROM invoices"), rows);
    }
    let third = env.backup_ok("main");
    let new = third["new_bytes"].as_u64().unwrap();
    let logical = third["logical_bytes"].as_u64().unwrap();
    assert!(new * 4 < logical, "the moved chunks deduplicate: {third}");
}
