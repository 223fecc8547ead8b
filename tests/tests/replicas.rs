//! Two controller replicas on one PostgreSQL catalog and one S3 bucket: they share the
//! CA, one leads, an agent enrolled through A and connected to B is reached from a CLI
//! on A, a replica killed with SIGKILL loses its agent to the other, and when the leader
//! dies the other replica takes over.

use nex_backup_tests::env::{Env, EnvOpts};
use nex_backup_tests::pg::PgCluster;
use nex_backup_tests::procs::Controller;
use nex_backup_tests::s3::S3Server;
use nex_backup_tests::sample::invoices_sql;
use nex_backup_tests::wait_for;

/// A verified restore of `main` into `db` through the CLI of replica `c`.
fn restore_via(c: &Controller, db: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "restore",
        "--site",
        "acme",
        "--target",
        "main",
        "--to-database",
        db,
        "--json",
    ];
    args.extend(extra);
    c.cli(&args).json()
}

fn log_has(path: &std::path::Path, text: &str) -> bool {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .contains(text)
}

#[test]
fn two_replicas_share_the_fleet_and_survive_a_killed_one() {
    let catalog = PgCluster::start();
    let cat_url = catalog.create_catalog("nexcat");
    let s3 = S3Server::start();
    let shared = vec![
        "--catalog".to_string(),
        cat_url.clone(),
        "--store".into(),
        s3.url_with_file("fleet"),
    ];
    let mut env = Env::start(
        &invoices_sql(4_000),
        EnvOpts {
            controller_args: shared.clone(),
            ..Default::default()
        },
    );
    let a_log = env.controller.log.clone();
    wait_for("replica A to lead", 30, || {
        log_has(&a_log, "this replica now leads").then_some(())
    });

    // Replica B: its own data dir and port, the CA imported from the catalog.
    let b_dir = env.dir.path().join("replica-b");
    let b_log = env.dir.path().join("replica-b.log");
    let mut b_args = vec!["--recovery-key".to_string(), env.recovery_public.clone()];
    b_args.extend(shared.clone());
    let mut b = Controller::start(&b_dir, 0, &b_log, &b_args);
    assert_eq!(b.fingerprint, env.controller.fingerprint, "one CA for both");
    assert!(log_has(&b_log, "imported the controller CA"));
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(
        !log_has(&b_log, "this replica now leads"),
        "A leads, B follows"
    );

    // The agent lists B first: its session lives on B.
    env.agent.as_mut().unwrap().kill();
    let config = std::fs::read_to_string(&env.agent_config).unwrap();
    let a_url = env.controller.url();
    let both = format!("controller = \"{}, {}\"", b.url(), a_url);
    std::fs::write(
        &env.agent_config,
        config.replace(&format!("controller = \"{a_url}\""), &both),
    )
    .unwrap();
    env.start_agent();
    wait_for("the agent's session on B", 30, || {
        (catalog.psql("nexcat", "SELECT count(*) FROM sessions") == "1").then_some(())
    });

    // A CLI on A backs up through B; a CLI on B restores; A sees the snapshot.
    let first = env.backup_ok("main");
    let sid = first["snapshot_id"].as_str().unwrap().to_string();
    let r = restore_via(&b, "via_b", &["--snapshot", &sid]);
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(
        env.pg.psql("via_b", "SELECT count(*) FROM invoices"),
        "4000"
    );
    assert_eq!(env.snapshots("main").len(), 1);

    // B dies: the agent fails over to A, which serves it on its own.
    b.kill();
    wait_for("the agent back on A", 60, || {
        let out = env.cli(&["status", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
        let log = std::fs::read_to_string(&a_log).unwrap_or_default();
        let on_a = log
            .matches("agent connected site=acme agent=acme-srv1")
            .count()
            >= 2;
        (v["sites"][0]["online"] == true && on_a).then_some(())
    });
    env.pg.psql(
        "invoices",
        "UPDATE invoices SET total = total + 2 WHERE id < 50",
    );
    env.backup_ok("main");
    assert_eq!(env.snapshots("main").len(), 2, "no duplicate snapshot");

    // B comes back as a follower; A, the leader, dies: B takes over within seconds.
    let mut b = Controller::start(&b_dir, b.port(), &b_log, &b_args);
    std::thread::sleep(std::time::Duration::from_secs(2));
    env.controller.kill();
    wait_for("B to lead after A died", 30, || {
        log_has(&b_log, "this replica now leads").then_some(())
    });
    wait_for("the agent back on B", 60, || {
        let log = std::fs::read_to_string(&b_log).unwrap_or_default();
        (log.matches("agent connected site=acme agent=acme-srv1")
            .count()
            >= 2)
            .then_some(())
    });
    let pruned = b.cli(&["prune", "--site", "acme", "--json"]).json();
    assert_eq!(pruned["deleted_snapshots"], 0, "{pruned}");
    let r = restore_via(&b, "after_failover", &[]);
    assert_eq!(r["ok"], true, "{r}");
    b.kill();
}

/// An admin credential created through one replica works on the other within seconds,
/// and once revoked through one, the other refuses it within seconds too.
#[test]
fn admin_credentials_created_or_revoked_through_one_replica_count_on_the_other() {
    let catalog = PgCluster::start();
    let cat_url = catalog.create_catalog("nexadmins");
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}", dir.path().join("blobs").display());
    let mut args = nex_backup_tests::fleet::replica_args(dir.path(), &cat_url, &store);
    args.push("--no-scheduler".into());
    let a = Controller::start(&dir.path().join("a"), 0, &dir.path().join("a.log"), &args);
    let b = Controller::start(&dir.path().join("b"), 0, &dir.path().join("b.log"), &args);
    let alice = dir.path().join("alice.token");
    let out = a.cli(&["admin", "create", "alice", "--out", alice.to_str().unwrap()]);
    assert!(out.ok, "{}", out.stderr);
    let as_alice = |c: &Controller| {
        nex_backup_tests::procs::cli_bare(
            &[
                "status",
                "--controller",
                &c.url(),
                "--ca-fingerprint",
                &c.fingerprint,
                "--admin-token-file",
                alice.to_str().unwrap(),
            ],
            &[],
        )
    };
    wait_for("alice admitted by replica B", 15, || {
        as_alice(&b).ok.then_some(())
    });
    let out = b.cli(&["admin", "revoke", "alice"]);
    assert!(out.ok, "{}", out.stderr);
    wait_for("alice refused by replica A", 15, || {
        (!as_alice(&a).ok).then_some(())
    });
    let refused = as_alice(&a);
    assert!(
        refused.stderr.to_lowercase().contains("unauthenticated")
            || refused.stderr.contains("credential"),
        "{}",
        refused.stderr
    );
}
