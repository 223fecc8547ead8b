//! File and environment sets with real files and processes: a tree with nested
//! directories, a symlink, a 200 MiB file, 20,000 small files, non-ASCII names, modes and
//! a `.env` file is backed up, changed a little and backed up again (only the change is
//! sent), restored into an empty directory and compared byte for byte with modes, mtimes
//! and links; one file is restored alone; nothing is overwritten without --overwrite;
//! `ls` lists and `diff` shows the changed `.env` key, never a value.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nex_backup_tests::env::{Env, EnvOpts, SITE};
use nex_backup_tests::procs::CliOut;
use nex_backup_tests::sample::invoices_sql;

const SECRET_OLD: &str = "hunter2-old-secret";
const SECRET_NEW: &str = "s3cret-new-value";

/// Deterministic, poorly compressible bytes.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn build_tree(src: &Path) {
    let nested = src.join("conf/a/b/c");
    std::fs::create_dir_all(&nested).unwrap();
    std::fs::write(nested.join("deep.yaml"), "deep: true\n").unwrap();
    std::os::unix::fs::symlink("a/b/c/deep.yaml", src.join("conf/link.yaml")).unwrap();
    std::fs::write(src.join("big.bin"), noise(200 << 20, 7)).unwrap();
    for d in 0..20 {
        let dir = src.join(format!("many/{d:02}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..1000 {
            std::fs::write(dir.join(format!("{f:04}.txt")), format!("file {d}/{f}\n")).unwrap();
        }
    }
    let uni = src.join("čeština/ľúbezný");
    std::fs::create_dir_all(&uni).unwrap();
    std::fs::write(uni.join("žltý kôň.yaml"), "farba: žltá\n").unwrap();
    std::fs::write(src.join("conf/secret.yaml"), "token: x\n").unwrap();
    std::fs::set_permissions(
        src.join("conf/secret.yaml"),
        PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    std::fs::write(src.join("conf/run.sh"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(src.join("conf/run.sh"), PermissionsExt::from_mode(0o750)).unwrap();
    std::fs::write(
        src.join(".env"),
        format!("DB_HOST=db1\nDB_PASSWORD={SECRET_OLD}\nGONE=1\n"),
    )
    .unwrap();
}

/// Every path under `root`, relative, sorted.
fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "tmp") {
                continue; // excluded from the set
            }
            out.push(p.strip_prefix(root).unwrap().to_path_buf());
            if std::fs::symlink_metadata(&p).unwrap().is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Byte for byte, with modes, mtimes and link targets.
fn assert_same_tree(a: &Path, b: &Path) {
    let (ta, tb) = (walk(a), walk(b));
    assert_eq!(ta.len(), tb.len(), "entry counts differ");
    assert_eq!(ta, tb, "entries differ");
    for rel in &ta {
        let (pa, pb) = (a.join(rel), b.join(rel));
        let (ma, mb) = (
            std::fs::symlink_metadata(&pa).unwrap(),
            std::fs::symlink_metadata(&pb).unwrap(),
        );
        assert_eq!(
            ma.file_type().is_symlink(),
            mb.file_type().is_symlink(),
            "{rel:?}"
        );
        if ma.file_type().is_symlink() {
            assert_eq!(
                std::fs::read_link(&pa).unwrap(),
                std::fs::read_link(&pb).unwrap()
            );
            continue;
        }
        assert_eq!(ma.mode() & 0o7777, mb.mode() & 0o7777, "mode of {rel:?}");
        assert_eq!(
            (ma.mtime(), ma.mtime_nsec()),
            (mb.mtime(), mb.mtime_nsec()),
            "mtime of {rel:?}"
        );
        if ma.is_file() {
            assert!(
                std::fs::read(&pa).unwrap() == std::fs::read(&pb).unwrap(),
                "content of {rel:?}"
            );
        }
    }
}

/// `nex-backup restore` of set `conf` into `dir`, with `extra` options.
fn restore_conf(env: &Env, snapshot: &str, dir: &str, extra: &[&str]) -> CliOut {
    let mut args = vec![
        "restore",
        "--site",
        SITE,
        "--target",
        "conf",
        "--snapshot",
        snapshot,
        "--to-dir",
        dir,
    ];
    args.extend(extra);
    env.cli(&args)
}

fn snapshot(v: &serde_json::Value) -> String {
    v["snapshot_id"].as_str().unwrap().to_string()
}

#[test]
fn a_file_set_backs_up_only_changes_and_restores_byte_for_byte() {
    let root = tempfile::Builder::new().prefix("nexfs").tempdir().unwrap();
    let src = root.path().join("srv");
    build_tree(&src);
    let set = format!(
        "\n[[file_sets]]\nname = \"conf\"\npaths = [\"{}\"]\nexcludes = [\"**/*.tmp\"]\n\n\
         [[env_sets]]\nname = \"appenv\"\nvariables = [\"NEXT_APP_*\"]\nenv_files = [\"{}\"]\n",
        src.display(),
        src.join(".env").display()
    );
    std::fs::write(src.join("conf/skip.tmp"), "excluded").unwrap();
    let env = Env::start(
        &invoices_sql(10),
        EnvOpts {
            extra_targets: set,
            agent_env: vec![("NEXT_APP_MODE".into(), "production".into())],
            ..Default::default()
        },
    );
    let first = env.backup_ok("conf");
    let s1 = snapshot(&first);
    assert!(
        first["logical_bytes"].as_u64().unwrap() > 200 << 20,
        "{first}"
    );

    // A few changes: one file edited, one added, one removed, a .env value changed.
    std::fs::write(src.join("many/03/0500.txt"), "changed\n").unwrap();
    std::fs::write(src.join("conf/new.yaml"), "new: 1\n").unwrap();
    std::fs::remove_file(src.join("many/19/0999.txt")).unwrap();
    std::fs::write(
        src.join(".env"),
        format!("DB_HOST=db1\nDB_PASSWORD={SECRET_NEW}\nADDED=1\n"),
    )
    .unwrap();
    let second = env.backup_ok("conf");
    let s2 = snapshot(&second);
    let new_bytes = second["new_bytes"].as_u64().unwrap();
    eprintln!(
        "file set: first backup {} logical, {} new; after 4 changes {} new",
        first["logical_bytes"], first["new_bytes"], new_bytes
    );
    assert!(new_bytes < 8 << 20, "only the changes are sent: {second}");

    // Restore into an empty directory: the same tree, byte for byte.
    let dst = root.path().join("restored");
    let d = dst.display().to_string();
    let out = restore_conf(&env, &s2, &d, &[]);
    assert!(out.ok, "{}\n{}", out.stdout, out.stderr);
    assert!(
        !dst.join(src.strip_prefix("/").unwrap())
            .join("conf/skip.tmp")
            .exists(),
        "excluded"
    );
    let restored_src = dst.join(src.strip_prefix("/").unwrap());
    assert_same_tree(&src, &restored_src);

    // Nothing is overwritten without --overwrite.
    std::fs::write(restored_src.join("conf/new.yaml"), "local edit\n").unwrap();
    let new_yaml = format!("{}/conf/new.yaml", src.strip_prefix("/").unwrap().display());
    let out = restore_conf(&env, &s2, &d, &["--path", &new_yaml]);
    assert!(!out.ok && out.stdout.contains("exists"), "{}", out.stdout);
    assert_eq!(
        std::fs::read_to_string(restored_src.join("conf/new.yaml")).unwrap(),
        "local edit\n"
    );
    let out = restore_conf(&env, &s2, &d, &["--path", &new_yaml, "--overwrite"]);
    assert!(out.ok, "{}", out.stdout);
    assert_eq!(
        std::fs::read_to_string(restored_src.join("conf/new.yaml")).unwrap(),
        "new: 1\n"
    );

    // One file alone, from the first snapshot.
    let one = root.path().join("one");
    let archive_path = format!(
        "{}/many/03/0500.txt",
        src.strip_prefix("/").unwrap().display()
    );
    let out = restore_conf(
        &env,
        &s1,
        &one.display().to_string(),
        &["--path", &archive_path],
    );
    assert!(out.ok, "{}\n{}", out.stdout, out.stderr);
    let files: Vec<_> = walk(&one)
        .into_iter()
        .filter(|p| one.join(p).is_file())
        .collect();
    assert_eq!(files, vec![PathBuf::from(&archive_path)]);
    assert_eq!(
        std::fs::read_to_string(one.join(&archive_path)).unwrap(),
        "file 3/500\n"
    );

    // ls from the manifest; diff names the changed .env key, never a value.
    let ls = env.cli(&["ls", "--site", SITE, "--target", "conf", "--snapshot", &s2]);
    assert!(ls.ok, "{}", ls.stderr);
    assert!(ls.stdout.contains("žltý kôň.yaml") && ls.stdout.contains("-> a/b/c/deep.yaml"));
    assert!(ls.stdout.lines().count() > 20_000, "every entry is listed");
    let diff = env.cli(&["diff", "--site", SITE, "--target", "conf", &s1, &s2]);
    assert!(diff.ok, "{}", diff.stderr);
    let text = &diff.stdout;
    assert!(
        text.contains("key DB_PASSWORD: changed") && text.contains("key ADDED: added"),
        "{text}"
    );
    assert!(
        text.contains("key GONE: removed") && text.contains("+ ") && text.contains("- "),
        "{text}"
    );
    assert!(
        !text.contains(SECRET_OLD) && !text.contains(SECRET_NEW),
        "{text}"
    );
    for log in ["agent.log", "controller.log"] {
        let l = std::fs::read_to_string(env.dir.path().join(log)).unwrap();
        assert!(
            !l.contains(SECRET_OLD) && !l.contains(SECRET_NEW),
            "a value leaked into {log}"
        );
    }

    // The environment set stores the named variables and the .env file.
    let e = env.backup_ok("appenv");
    let ls = env.cli(&[
        "ls",
        "--site",
        SITE,
        "--target",
        "appenv",
        "--snapshot",
        &snapshot(&e),
    ]);
    assert!(
        ls.stdout.contains("environment.env") && ls.stdout.contains("/.env"),
        "{}",
        ls.stdout
    );
    let status = env.status();
    assert!(
        status.to_string().contains("appenv"),
        "sets are targets: {status}"
    );
}
