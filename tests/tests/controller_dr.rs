//! Controller disaster recovery with real processes: the controller writes sealed copies
//! of its state into the store; it is SIGKILLed and its data dir deleted, all but a copy
//! of the store; `nex-backup restore-controller` builds a new one from the store and the
//! recovery key; the running agent reconnects with its old certificate, backs up again,
//! and a snapshot taken before the disaster restores.

use nex_backup_tests::env::{Env, EnvOpts, SITE};
use nex_backup_tests::procs::{Controller, cli_bare};
use nex_backup_tests::sample::invoices_sql;
use nex_backup_tests::wait_for;

fn state_copies(env: &Env) -> usize {
    std::fs::read_dir(env.controller.data_dir.join("blobs/controller/state"))
        .map(|rd| rd.count())
        .unwrap_or(0)
}

#[test]
fn a_lost_controller_is_rebuilt_from_its_store_and_its_agents_reconnect() {
    let mut env = Env::start(
        &invoices_sql(3_000),
        EnvOpts {
            controller_args: ["--state-copy-every", "1s"].map(String::from).to_vec(),
            ..Default::default()
        },
    );
    env.set_target_policy("main", &["--rpo", "36h", "--keep-daily", "9"]);
    let s1 = env.backup_ok("main")["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    let before = state_copies(&env);
    wait_for("a state copy after the backup", 30, || {
        (state_copies(&env) > before).then_some(())
    });
    env.pg
        .psql("invoices", "DELETE FROM invoices WHERE id <= 10");
    let s2 = env.backup_ok("main")["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();

    // The disaster: SIGKILL, and the data dir is gone but for the store.
    let port = env.controller.port();
    env.controller.kill();
    let old_dir = env.controller.data_dir.clone();
    let store = env.dir.path().join("surviving-store");
    std::fs::rename(old_dir.join("blobs"), &store).unwrap();
    std::fs::remove_dir_all(&old_dir).unwrap();

    let new_dir = env.dir.path().join("controller-rebuilt");
    let key = env.recovery_key.display().to_string();
    let rebuild = || {
        cli_bare(
            &[
                "restore-controller",
                "--store",
                &store.display().to_string(),
                "--recovery-key",
                &key,
                "--data-dir",
                &new_dir.display().to_string(),
            ],
            &[],
        )
    };
    let out = rebuild();
    assert!(out.ok, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("1 site(s), 2 snapshot(s)") && out.stdout.contains("NOT recovered"),
        "{}",
        out.stdout
    );
    // It never builds over an existing data dir.
    let again = rebuild();
    assert!(
        !again.ok && again.stderr.contains("not empty"),
        "{}",
        again.stderr
    );

    env.controller = Controller::start(
        &new_dir,
        port,
        &env.dir.path().join("controller.log"),
        &[
            "--recovery-key".to_string(),
            env.recovery_public.clone(),
            "--no-scheduler".to_string(),
        ],
    );
    // The agent never stopped: it reconnects with the certificate it had.
    env.wait_online(true);
    let listed: Vec<String> = env
        .snapshots("main")
        .iter()
        .map(|s| s["snapshot_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, vec![s1.clone(), s2.clone()]);
    let list = env.cli(&["policy", "list"]);
    assert!(
        list.stdout.contains("1d12h") && list.stdout.contains("d9 w4"),
        "the policy survived: {}",
        list.stdout
    );
    // RPO counts the rebuilt snapshots as backups.
    let rpo = env.cli(&["rpo", "--site", SITE]);
    let row = rpo.stdout.lines().nth(1).unwrap_or_default();
    assert!(row.starts_with("acme  main    OK"), "{}", rpo.stdout);

    // Work goes on: a new backup, and a restore of a snapshot from before the disaster.
    let s3 = env.backup_ok("main");
    assert_eq!(s3["ok"], true);
    let r = env
        .restore("main", "before_disaster", &["--snapshot", &s1])
        .json();
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(
        env.pg
            .psql("before_disaster", "SELECT count(*) FROM invoices"),
        "3000"
    );
}
