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

/// Change some invoices and back up: the new snapshot's id.
fn change_and_back_up(env: &Env) -> String {
    env.pg.psql(
        "invoices",
        "UPDATE invoices SET total = total + 3 WHERE id < 300",
    );
    env.backup_ok("main")["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The newest snapshot restored from the copy at `store` into `db` holds the same
/// invoices as the source.
fn restores_the_same(env: &Env, store: &str, db: &str) {
    let out = offline_restore(env, store, db);
    assert!(out.ok, "{}{}", out.stdout, out.stderr);
    let sums = "SELECT count(*), sum(total) FROM invoices";
    assert_eq!(env.pg.psql(db, sums), env.pg.psql("invoices", sums));
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
    let second = change_and_back_up(&env);
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

    restores_the_same(&env, &url, "from_bucket");
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

/// `--copy-lock`: the copy is written under S3 Object Lock. Whoever holds the bucket's
/// credentials can neither delete a locked version nor shorten its lock; a kept
/// snapshot's lock is extended while the copy's retention keeps it; a snapshot the
/// retention lets go stays in the copy until its lock runs out, and only then leaves.
/// A bucket without Object Lock, or a copy outside S3, is refused at start.
#[test]
fn an_object_locked_copy_cannot_be_deleted_before_its_time() {
    let s3 = S3Server::start();
    s3.create_locked_bucket("vault");
    let url = s3.bucket_url_with_file("vault", "copy");
    let lock_args = |url: &str| -> Vec<String> {
        [
            "--copy-to",
            url,
            "--copy-every",
            "1s",
            "--copy-keep-last",
            "1",
            "--copy-keep-monthly",
            "0",
            "--copy-lock",
            "20s",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let mut env = Env::start(
        &invoices_sql(3_000),
        EnvOpts {
            controller_args: lock_args(&url),
            ..Default::default()
        },
    );
    let lock = nex_backup::store::objectlock::ObjectLock::open(
        &url,
        nex_backup::store::objectlock::LockMode::Compliance,
        std::time::Duration::from_secs(20),
    )
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let until = |key: &str| rt.block_on(lock.retained_until(key)).unwrap();
    let now = nex_backup_shared::clock::now_ms;

    let first = env.backup_ok("main")["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    let manifest = format!("manifests/{SITE}/{first}");
    wait_for("the first snapshot in the locked copy", 60, || {
        (s3.versions("vault", &format!("copy/{manifest}")).len() == 1).then_some(())
    });
    let locked = until(&manifest).expect("the copied manifest is locked");
    assert!(locked > now() + 10_000, "locked ~25 s ahead: {locked}");
    // Its chunks and sealed keys are locked too.
    let chunk_keys = list(&s3, &format!("copy/chunks/{SITE}/"));
    assert!(!chunk_keys.is_empty());
    for k in chunk_keys
        .iter()
        .take(3)
        .chain(&list(&s3, &format!("copy/keys/{SITE}/")))
    {
        let k = k.strip_prefix("copy/").unwrap();
        assert!(until(k).is_some_and(|u| u > now()), "{k} is locked");
    }

    // Whoever holds the bucket's credentials cannot delete the locked version, nor
    // shorten its lock.
    let vid = s3.versions("vault", &format!("copy/{manifest}"))[0].clone();
    let (status, body) = s3.request(
        "vault",
        "DELETE",
        &format!("copy/{manifest}"),
        &[("versionId", &vid)],
        &[],
    );
    assert_eq!(status, 403, "a locked version cannot be deleted: {body}");
    let shorter = rt.block_on(lock.extend(&manifest, now() + 1_000));
    assert!(shorter.is_err(), "a lock cannot be shortened");

    // While the retention keeps it, the snapshot's lock is extended before it runs out.
    wait_for("the kept snapshot's lock to be extended", 60, || {
        until(&manifest).filter(|u| *u > locked).map(|_| ())
    });

    // A second snapshot: the retention (keep 1) lets the first go, but it stays in the
    // copy while locked, and leaves once its lock has run out.
    let second = change_and_back_up(&env);
    let in_copy = |id: &str| {
        list(&s3, &format!("copy/manifests/{SITE}/"))
            .iter()
            .any(|k| k.ends_with(id))
    };
    wait_for("the second snapshot in the copy", 60, || {
        in_copy(&second).then_some(())
    });
    let first_until = until(&manifest).unwrap();
    assert!(
        in_copy(&first) || now() > first_until,
        "the first snapshot stays in the copy while locked"
    );
    wait_for(
        "the first snapshot to leave once its lock ran out",
        90,
        || (!in_copy(&first)).then_some(()),
    );
    assert!(now() >= first_until, "it left only after its lock");
    assert_eq!(
        s3.versions("vault", &format!("copy/{manifest}")).len(),
        1,
        "the data itself stays as a noncurrent version until a lifecycle rule removes it"
    );

    // The locked copy restores without the controller.
    env.agent.as_mut().unwrap().kill();
    env.controller.kill();
    restores_the_same(&env, &url, "from_vault");

    // A bucket without Object Lock, or a copy outside S3: the controller refuses to
    // start, and says why.
    let plain = s3.url_with_file("plain");
    let dir = tempfile::tempdir().unwrap();
    let file = format!("file://{}", dir.path().join("c").display());
    for (copy, why) in [
        (plain.as_str(), "has no S3 Object Lock"),
        (file.as_str(), "is not in S3"),
    ] {
        let out = std::process::Command::new(nex_backup_tests::procs::bin("nex-backup"))
            .arg("serve")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen", "127.0.0.1:0"])
            .args(lock_args(copy))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text}");
        assert!(text.contains(why), "{text}");
        assert!(!text.contains(nex_backup_tests::s3::SECRET_KEY), "{text}");
    }
}

/// The keys under `prefix` in the `vault` bucket.
fn list(s3: &S3Server, prefix: &str) -> Vec<String> {
    let (status, body) = s3.request(
        "vault",
        "GET",
        "",
        &[("list-type", "2"), ("prefix", prefix)],
        &[],
    );
    assert!(status < 300, "{status} {body}");
    body.split("<Key>")
        .skip(1)
        .filter_map(|p| p.split("</Key>").next())
        .map(String::from)
        .collect()
}
