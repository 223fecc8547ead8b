//! Off-site copies: the `offsite` worker copies each site's sealed objects to a second
//! store with its own retention; `status` shows the lag; the copy restores with a
//! recovery key and no controller, from a directory or straight from an S3 bucket.

use nex_backup_tests::env::{Env, EnvOpts, SITE};
use nex_backup_tests::offline::Offline;
use nex_backup_tests::s3::S3Server;
use nex_backup_tests::sample::invoices_sql;
use nex_backup_tests::wait_for;

/// `nex-backup-agent restore --store STORE` of the newest snapshot of `main` into `db`
/// on the environment's cluster, with its recovery key and no controller.
fn offline_restore(env: &Env, store: &str, db: &str) -> nex_backup_tests::procs::CliOut {
    Offline::new(env, store).restore("latest", &["--to-database", db])
}

#[test]
fn an_offsite_copy_keeps_its_own_retention_and_restores_without_the_controller() {
    let copy_dir = tempfile::Builder::new()
        .prefix("nexcopy")
        .tempdir()
        .unwrap();
    let copy = copy_dir.path().join("copy");
    let url = format!("file://{}", copy.display());
    let mut env = Env::start(
        &invoices_sql(4_000),
        EnvOpts {
            controller_args: [
                "--copy-to",
                &url,
                "--copy-every",
                "1s",
                "--copy-keep-last",
                "1",
                "--copy-keep-monthly",
                "1",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            ..Default::default()
        },
    );
    let copied = |id: &str| copy.join("manifests").join(SITE).join(id).exists();
    let first = env.backup_ok("main")["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_for("the first snapshot in the copy", 60, || {
        copied(&first).then_some(())
    });
    env.pg.psql(
        "invoices",
        "UPDATE invoices SET total = total + 3 WHERE id < 300",
    );
    let second = env.backup_ok("main")["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_for("the copy to follow its retention", 60, || {
        (copied(&second) && !copied(&first)).then_some(())
    });
    assert_eq!(env.snapshots("main").len(), 2, "the primary keeps both");
    assert!(
        copy.join("keys").join(SITE).is_dir(),
        "the sealed keys travel"
    );
    let status = env.cli(&["status", "--json"]).json();
    let lag = &status["copies"][0];
    assert_eq!(lag["site"], SITE, "{status}");
    assert_eq!(lag["lag_secs"], 0, "{status}");
    assert!(lag["copy"].as_str().unwrap().contains("copy"), "{status}");

    // The controller is gone: the copy alone and a recovery key restore the newest.
    env.agent.as_mut().unwrap().kill();
    env.controller.kill();
    let out = offline_restore(&env, &copy.display().to_string(), "from_offsite");
    assert!(out.ok, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        env.pg.psql(
            "from_offsite",
            "SELECT count(*) FROM invoices WHERE total >= 3"
        ),
        env.pg
            .psql("invoices", "SELECT count(*) FROM invoices WHERE total >= 3"),
    );
}

/// An off-site copy in object storage restores straight from the bucket: no controller,
/// no download first, only the bucket's URL, its credentials and a recovery key.
#[test]
fn an_offsite_copy_in_s3_restores_straight_from_the_bucket() {
    let s3 = S3Server::start();
    let url = s3.url_with_file("offsite");
    let mut env = Env::start(
        &invoices_sql(3_000),
        EnvOpts {
            controller_args: ["--copy-to", &url, "--copy-every", "1s"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            ..Default::default()
        },
    );
    let snap = env.backup_ok("main")["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_for("the copy to catch up", 60, || {
        let status = env.cli(&["status", "--json"]).json();
        (status["copies"][0]["lag_secs"] == 0).then_some(())
    });
    env.agent.as_mut().unwrap().kill();
    env.controller.kill();
    let listed = Offline::new(&env, &url).run(&["snapshots"]);
    assert!(listed.ok, "{}{}", listed.stdout, listed.stderr);
    assert!(listed.stdout.contains(&snap), "{}", listed.stdout);
    assert!(listed.stdout.contains("s3://"), "{}", listed.stdout);

    let out = offline_restore(&env, &url, "from_bucket");
    assert!(out.ok, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        env.pg
            .psql("from_bucket", "SELECT count(*), sum(total) FROM invoices"),
        env.pg
            .psql("invoices", "SELECT count(*), sum(total) FROM invoices"),
    );
    // A wrong prefix says so, and names no credential.
    let wrong = s3.url_with_file("no-such-copy");
    let out = offline_restore(&env, &wrong, "never");
    assert!(!out.ok);
    assert!(
        out.stderr.contains("holds no NEX snapshots"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains(nex_backup_tests::s3::SECRET_KEY),
        "{}",
        out.stderr
    );
}
