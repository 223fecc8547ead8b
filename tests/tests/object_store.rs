//! The blob store on a real S3 server (SeaweedFS with a configured identity, so request
//! signing is checked): the same conformance suite as the file store, then a controller
//! with `--store s3://…` backs up and restores a real database, its blobs in the bucket.

use std::sync::Arc;

use nex_backup::store::object::ObjectBlobStore;
use nex_backup_tests::env::{Env, EnvOpts, SITE};
use nex_backup_tests::procs::Controller;
use nex_backup_tests::s3::S3Server;
use nex_backup_tests::sample::invoices_sql;

#[test]
fn the_s3_store_passes_the_conformance_suite() {
    let s3 = S3Server::start();
    let store = ObjectBlobStore::new(Arc::new(s3.client()), "s3://backups".into());
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(nex_backup::store::conformance::run_all(&store));
}

#[test]
fn a_controller_on_s3_backs_up_and_restores() {
    let s3 = S3Server::start();
    let mut env = Env::start(&invoices_sql(3_000), EnvOpts::default());
    // The same controller, moved onto the bucket (a fresh data dir: nothing local).
    let port = env.controller.port();
    env.agent.as_mut().unwrap().kill();
    env.controller.kill();
    let dir = env.dir.path().join("controller-s3");
    std::fs::rename(&env.controller.data_dir, &dir).unwrap();
    std::fs::remove_dir_all(dir.join("blobs")).unwrap();
    std::fs::remove_dir_all(dir.join("catalog")).unwrap();
    let args = vec![
        "--recovery-key".to_string(),
        env.recovery_public.clone(),
        "--no-scheduler".to_string(),
        "--store".to_string(),
        s3.url("nex"),
    ];
    let log = env.dir.path().join("controller.log");
    env.controller = Controller::start_env(&dir, port, &log, &args, &s3.env());
    // The catalog is new: enroll the agent again.
    std::fs::remove_dir_all(env.agent_state_dir()).unwrap();
    let out = env.enroll(&env.agent_config.clone(), SITE);
    assert!(out.ok, "{}", out.stderr);
    env.start_agent();

    let b = env.backup_ok("main");
    let r = env
        .restore(
            "main",
            "from_s3",
            &["--snapshot", b["snapshot_id"].as_str().unwrap()],
        )
        .json();
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(
        env.pg.psql("from_s3", "SELECT count(*) FROM invoices"),
        "3000"
    );
    assert!(!dir.join("blobs").exists(), "nothing stored locally");

    // The objects are in the bucket, under the prefix.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = ObjectBlobStore::new(Arc::new(s3.client()), "s3://backups".into());
    let keys = rt
        .block_on(nex_backup::store::list_keys(&store, "nex/"))
        .unwrap();
    assert!(
        keys.iter().any(|k| k.starts_with("nex/chunks/acme/")),
        "{keys:?}"
    );
    assert!(
        keys.iter().any(|k| k.starts_with("nex/manifests/acme/")),
        "{keys:?}"
    );
    assert!(
        keys.iter().any(|k| k.starts_with("nex/keys/acme/")),
        "{keys:?}"
    );

    // A wrong secret: the controller refuses to start, naming the store; the secret
    // never shows.
    env.agent.as_mut().unwrap().kill();
    env.controller.kill();
    let out = std::process::Command::new(nex_backup_tests::procs::bin("nex-backup"))
        .arg("serve")
        .arg("--data-dir")
        .arg(&dir)
        .args(["--listen", "127.0.0.1:0"])
        .args(&args)
        .env("AWS_ACCESS_KEY_ID", nex_backup_tests::s3::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", "not-the-secret")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        text.contains("SignatureDoesNotMatch") && text.contains("nex/keys/acme"),
        "{text}"
    );
    assert!(
        !text.contains("not-the-secret"),
        "the secret never shows: {text}"
    );
}
