//! Restore without the controller: the controller is killed and its data dir deleted;
//! only a copy of its blob store and the offline recovery key remain. `nex-backup-agent
//! snapshots` lists what the copy holds, and `nex-backup-agent restore --store` restores
//! into a database (verified) and into pg_dump files a DBA can use by hand, on a host
//! that never enrolled.

use std::path::{Path, PathBuf};
use std::process::Command;

use nex_backup_tests::env::{Env, EnvOpts, SITE};
use nex_backup_tests::offline::Offline;
use nex_backup_tests::procs::recovery_key;
use nex_backup_tests::sample::invoices_sql;
use nex_backup_tests::store_files::flip_byte;

fn copy_tree(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .expect("cp");
    assert!(st.success(), "cp -a {} {}", from.display(), to.display());
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn snapshots_restore_from_a_store_copy_with_the_controller_gone() {
    let conf = tempfile::Builder::new()
        .prefix("nexconf")
        .tempdir()
        .unwrap();
    std::fs::create_dir_all(conf.path().join("app")).unwrap();
    std::fs::write(conf.path().join("app/config.yaml"), "port: 8080\n").unwrap();
    std::fs::write(conf.path().join("app/.env"), "KEY=value\n").unwrap();
    // One configured path is missing: the backup is partial, and says which.
    let set = format!(
        "\n[[file_sets]]\nname = \"conf\"\npaths = [\"{}\", \"/nonexistent/app.ini\"]\n",
        conf.path().display()
    );
    let mut env = Env::start(
        &invoices_sql(5_000),
        EnvOpts {
            extra_targets: set,
            ..Default::default()
        },
    );
    let partial = env.backup_ok("conf");
    assert!(
        partial["note"]
            .as_str()
            .unwrap()
            .contains("partial: 1 file(s) could not be read")
            && partial["note"]
                .as_str()
                .unwrap()
                .contains("nonexistent/app.ini: no such file"),
        "{partial}"
    );
    let wrong = env.cli(&[
        "restore",
        "--site",
        SITE,
        "--target",
        "conf",
        "--to-database",
        "x",
    ]);
    assert!(
        !wrong.ok && wrong.stdout.contains("restore it with --to-dir"),
        "{}",
        wrong.stdout
    );
    let jobs = env.cli(&["jobs", "--site", SITE, "--json"]).json();
    assert!(
        jobs.to_string()
            .contains("partial: 1 file(s) could not be read"),
        "the job list shows the partial backup: {jobs}"
    );
    let s1 = env.backup_ok("main")["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    env.pg
        .psql("invoices", "DELETE FROM invoices WHERE id <= 100");
    let s2 = env.backup_ok("main")["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();

    // The disaster: the controller dies and its data dir is lost; a copy of the store
    // survives (an off-site sync of the blobs directory).
    env.agent.as_mut().unwrap().kill();
    env.controller.kill();
    let copy = env.dir.path().join("store-copy");
    copy_tree(&env.controller.data_dir.join("blobs"), &copy);
    std::fs::remove_dir_all(&env.controller.data_dir).unwrap();
    assert_eq!(
        files_under(&copy.join("keys").join(SITE)).len(),
        1,
        "the sealed site key is in the store"
    );
    let off = Offline {
        env: &env,
        store: copy.display().to_string(),
        key: env.recovery_key.display().to_string(),
    };

    let out = off.run(&["snapshots"]);
    assert!(out.ok, "{}", out.stderr);
    for s in [&s1, &s2] {
        let line = out.stdout.lines().find(|l| l.contains(s.as_str()));
        let line = line.unwrap_or_else(|| panic!("{s} not listed:\n{}", out.stdout));
        assert!(line.contains(SITE) && line.contains("main"), "{line}");
        assert!(line.contains("database.dump"), "{line}");
    }
    assert!(out.stdout.contains("3 snapshot(s)"), "{}", out.stdout);

    // A file set, into a directory on a host that never enrolled.
    let into = env.dir.path().join("conf-restored");
    let i = into.display().to_string();
    let out = off.run(&[
        "restore",
        "--site",
        SITE,
        "--target",
        "conf",
        "--snapshot",
        "latest",
        "--to-dir",
        &i,
    ]);
    assert!(out.ok, "{}\n{}", out.stdout, out.stderr);
    let rel = conf.path().strip_prefix("/").unwrap();
    assert_eq!(
        std::fs::read_to_string(into.join(rel).join("app/config.yaml")).unwrap(),
        "port: 8080\n"
    );
    assert!(into.join(rel).join("app/.env").exists());

    // `latest` is the newest snapshot of the target, restored and verified.
    let out = off.restore("latest", &["--to-database", "offline_latest"]);
    assert!(out.ok, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains(&s2) && out.stdout.contains("verified"),
        "{}",
        out.stdout
    );
    assert_eq!(
        env.pg
            .psql("offline_latest", "SELECT count(*) FROM invoices"),
        "4900"
    );
    // An existing database is not overwritten without --clean.
    let out = off.restore(&s1, &["--to-database", "offline_latest"]);
    assert!(!out.ok);
    assert!(out.stderr.contains("already exists"), "{}", out.stderr);
    assert_eq!(
        env.pg
            .psql("offline_latest", "SELECT count(*) FROM invoices"),
        "4900"
    );

    // The older snapshot as files, then restored by hand with pg_restore.
    let file = env.dir.path().join("s1.dump");
    let f = file.display().to_string();
    let out = off.restore(&s1, &["--to-file", &f]);
    assert!(out.ok, "{}", out.stderr);
    let globals = std::fs::read_to_string(env.dir.path().join("s1.dump.globals.sql")).unwrap();
    assert!(globals.contains("CREATE ROLE"), "{globals}");
    env.pg.psql("postgres", "CREATE DATABASE by_hand");
    let st = Command::new(env.pg.bin.join("pg_restore"))
        .arg("-h")
        .arg(env.pg.socket_dir())
        .args(["-p", &env.pg.port.to_string(), "-U", "postgres"])
        .args(["-d", "by_hand", &f])
        .status()
        .unwrap();
    assert!(st.success(), "pg_restore of the offline dump file");
    assert_eq!(
        env.pg.psql("by_hand", "SELECT count(*) FROM invoices"),
        "5000"
    );
    let out = off.restore(&s1, &["--to-file", &f]);
    assert!(
        !out.ok && out.stderr.contains("already exists"),
        "{}",
        out.stderr
    );

    // A recovery key the site's keys are not sealed to opens nothing.
    let wrong = env.dir.path().join("wrong.key");
    recovery_key(&wrong);
    let bad = Offline {
        env: &env,
        store: off.store.clone(),
        key: wrong.display().to_string(),
    };
    let out = bad.run(&["snapshots"]);
    assert!(!out.ok);
    assert!(
        out.stderr.contains("does not open any key of site acme"),
        "{}",
        out.stderr
    );

    // A damaged copy: the restore names the chunk and leaves no database behind.
    for chunk in files_under(&copy.join("chunks")) {
        flip_byte(&chunk);
    }
    let out = off.restore("latest", &["--to-database", "offline_damaged"]);
    assert!(!out.ok);
    assert!(
        out.stderr.contains("chunk") && out.stderr.contains("authentication"),
        "{}",
        out.stderr
    );
    assert_eq!(
        env.pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'offline_damaged%'"
        ),
        "0"
    );
}
