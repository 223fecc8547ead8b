//! Faults of the blob store, caused for real: an S3 server stopped in the middle of an
//! upload, a share of requests failing (the fault-injection layer), and orphaned objects
//! left behind by a crash, which the sweeper removes once they are older than the grace.

use std::time::Duration;

use nex_backup_tests::env::{Env, EnvOpts, SITE};
use nex_backup_tests::s3::S3Server;
use nex_backup_tests::sample::invoices_sql;

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn a_backup_completes_when_s3_comes_back_mid_upload() {
    let mut s3 = S3Server::start();
    let url = s3.url_with_file("nex");
    let env = Env::start(
        &invoices_sql(400_000),
        EnvOpts {
            controller_args: args(&["--store", &url, "--store-timeout", "3s"]),
            ..Default::default()
        },
    );
    let restored = std::thread::scope(|scope| {
        let backup = scope.spawn(|| env.backup("main"));
        // Stop S3 while the job runs: once the controller has written some chunks.
        let bucket = s3.client();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let stored = || {
            rt.block_on(async {
                use futures::TryStreamExt;
                use object_store::ObjectStore;
                let p = object_store::path::Path::from("nex/chunks");
                bucket
                    .list(Some(&p))
                    .try_collect::<Vec<_>>()
                    .await
                    .map(|v| v.len())
                    .unwrap_or(0)
            })
        };
        nex_backup_tests::wait_for("the first chunks in the bucket", 120, || {
            (stored() > 3).then_some(())
        });
        s3.stop();
        std::thread::sleep(Duration::from_secs(6));
        assert!(
            env.snapshots("main").is_empty(),
            "nothing is visible while the store is down"
        );
        s3.restart();
        let out = backup.join().unwrap();
        let v = out.json();
        assert_eq!(
            v["ok"],
            true,
            "backup after S3 came back: {v}\n{}",
            env.logs()
        );
        v
    });
    let snaps = env.snapshots("main");
    assert_eq!(snaps.len(), 1, "exactly one snapshot: {snaps:?}");
    assert_eq!(snaps[0]["snapshot_id"], restored["snapshot_id"]);
    let r = env.restore("main", "after_outage", &[]).json();
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(
        env.pg.psql("after_outage", "SELECT count(*) FROM invoices"),
        "400000"
    );
    let log = std::fs::read_to_string(env.dir.path().join("controller.log")).unwrap();
    assert!(log.contains("retrying"), "the store layer retried");
}

#[test]
fn backups_and_restores_complete_while_a_share_of_store_requests_fail() {
    let env = Env::start(
        &invoices_sql(20_000),
        EnvOpts {
            controller_args: args(&["--inject-store-faults", "0.25"]),
            ..Default::default()
        },
    );
    for round in 0..2 {
        if round == 1 {
            env.pg.psql(
                "invoices",
                "UPDATE invoices SET total = total + 1 WHERE id % 7 = 0",
            );
        }
        env.backup_ok("main");
    }
    let r = env.restore("main", "through_faults", &[]).json();
    assert_eq!(r["ok"], true, "{r}\n{}", env.logs());
    assert_eq!(
        env.pg
            .psql("through_faults", "SELECT count(*) FROM invoices"),
        "20000"
    );
    let v = env.cli(&["verify", "--json"]).json();
    assert_eq!(v["complete"], true, "{v}");
    assert_eq!(v["findings"].as_array().map(Vec::len), Some(0), "{v}");
    let log = std::fs::read_to_string(env.dir.path().join("controller.log")).unwrap();
    assert!(log.contains("injected fault"), "faults were injected");
}

/// A file that looks `secs` old.
fn age(path: &std::path::Path, secs: i64) {
    let t = filetime::FileTime::from_unix_time(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
            - secs,
        0,
    );
    filetime::set_file_mtime(path, t).unwrap();
}

#[test]
fn the_sweeper_removes_old_orphans_and_nothing_else() {
    let env = Env::start(
        &invoices_sql(3_000),
        EnvOpts {
            controller_args: args(&["--gc-grace", "3s"]),
            ..Default::default()
        },
    );
    env.backup_ok("main");
    let blobs = env.controller.data_dir.join("blobs");
    let live: Vec<_> = nex_backup_tests::store_files::chunk_files(&env.controller.data_dir, SITE)
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    assert!(!live.is_empty());
    // What a crash between a PUT and its record leaves: a chunk and a manifest copy
    // nobody references; one young orphan; and an object of a site the catalog has no
    // snapshot of, which is not this catalog's to judge.
    let plant = |rel: &str, secs: i64| {
        let p = blobs.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, vec![1u8; 4096]).unwrap();
        age(&p, secs);
        p
    };
    let hex = |b: u8| hex_id(b);
    let old_chunk = plant(&format!("chunks/{SITE}/ab/{}", hex(0xab)), 3600);
    let old_manifest = plant(&format!("manifests/{SITE}/0123456789abcdef"), 3600);
    let other_site = plant(&format!("chunks/othersite/ef/{}", hex(0xef)), 3600);
    for f in &live {
        age(f, 3600); // the real chunks are old too: only records keep them
    }
    std::thread::sleep(Duration::from_secs(4)); // past the grace after start
    let young = plant(&format!("chunks/{SITE}/cd/{}", hex(0xcd)), 0);
    let dry = env
        .cli(&["prune", "--site", SITE, "--dry-run", "--json"])
        .json();
    assert_eq!(dry["orphans_deleted"], 2, "{dry}");
    assert!(old_chunk.exists(), "a dry run deletes nothing");
    let r = env.cli(&["prune", "--site", SITE, "--json"]).json();
    assert_eq!(r["orphans_deleted"], 2, "{r}");
    assert_eq!(r["orphan_bytes"], 8192, "{r}");
    assert!(!old_chunk.exists() && !old_manifest.exists());
    assert!(young.exists(), "younger than the grace: kept");
    assert!(other_site.exists(), "a site without snapshots here: kept");
    assert!(live.iter().all(|f| f.exists()), "recorded chunks are kept");
    let out = env.restore("main", "after_sweep", &[]).json();
    assert_eq!(out["ok"], true, "{out}");
}

fn hex_id(b: u8) -> String {
    let mut s = format!("{b:02x}");
    s.push_str(&"0".repeat(62));
    s
}
