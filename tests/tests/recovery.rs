//! End to end with real processes: the customer's server is lost and its backups are
//! restored by a new agent holding only the offline recovery key; key rotation keeps old
//! snapshots restorable; revocation cuts an agent off; and no secret used along the way
//! shows up in a log, the catalog or CLI output.

use std::path::Path;

use nex_backup_tests::env::{Env, EnvOpts, SITE};
use nex_backup_tests::pg::PASSWORD;
use nex_backup_tests::procs::{agent_cmd, recovery_key};
use nex_backup_tests::sample::invoices_sql;
use serde_json::Value;

fn agent(args: &[&str], config: &Path) -> nex_backup_tests::procs::CliOut {
    let config = config.display().to_string();
    let mut all = args.to_vec();
    all.extend(["--config", &config]);
    agent_cmd(&all, &[])
}

fn assert_restored(r: &Value) {
    assert_eq!(r["ok"], true, "restore failed: {r}");
    let tables = r["tables"].as_array().expect("tables");
    assert!(!tables.is_empty());
    assert!(tables.iter().all(|t| t["ok"] == true), "{r}");
}

/// The key id in the clear header of a snapshot's stored manifest.
fn manifest_key_id(env: &Env, snapshot: &str) -> Vec<u8> {
    let p = env
        .controller
        .data_dir
        .join("blobs/manifests")
        .join(SITE)
        .join(snapshot);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))[8..16].to_vec()
}

#[test]
fn lost_server_is_restored_with_the_offline_recovery_key() {
    let mut env = Env::start(&invoices_sql(20_000), EnvOpts::default());
    let first = env.backup_ok("main");
    let snap1 = first["snapshot_id"].as_str().unwrap().to_string();

    // The customer's server burns down: the agent and its whole state dir are gone.
    env.agent.as_mut().unwrap().kill();
    std::fs::remove_dir_all(env.agent_state_dir()).unwrap();

    let b = env.second_agent_config("acme-srv2");
    let out = env.enroll(&b, SITE);
    assert!(out.ok, "{}", out.stderr);
    assert!(out.stdout.contains("already has keys"), "{}", out.stdout);

    let wrong = env.dir.path().join("wrong-recovery.key");
    let wrong_public = recovery_key(&wrong);
    let wrong_fp = nex_backup_shared::recovery::RecoveryPublicKey::parse(&wrong_public)
        .unwrap()
        .fingerprint();
    let out = agent(
        &["recover", "--recovery-key", &wrong.display().to_string()],
        &b,
    );
    assert!(!out.ok);
    assert!(
        out.stderr.contains("does not open any key of site acme") && out.stderr.contains(&wrong_fp),
        "{}",
        out.stderr
    );

    let out = agent(
        &[
            "recover",
            "--recovery-key",
            &env.recovery_key.display().to_string(),
        ],
        &b,
    );
    assert!(out.ok, "{}", out.stderr);
    assert!(
        out.stdout.contains("recovered key epochs [1]"),
        "{}",
        out.stdout
    );
    env.start_agent_with(&b);

    let listed: Vec<String> = env
        .snapshots("main")
        .iter()
        .map(|s| s["snapshot_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, vec![snap1.clone()]);
    let r = env
        .restore("main", "after_disaster", &["--snapshot", &snap1])
        .json();
    assert_restored(&r);

    // Rotation: new snapshots use epoch 2, the old one stays restorable.
    let out = agent(&["rotate-key"], &b);
    assert!(out.ok, "{}", out.stderr);
    assert!(out.stdout.contains("key epoch 2"), "{}", out.stdout);
    let second = env.backup_ok("main");
    let snap2 = second["snapshot_id"].as_str().unwrap().to_string();
    assert_ne!(
        manifest_key_id(&env, &snap1),
        manifest_key_id(&env, &snap2),
        "the new snapshot is sealed with the new epoch"
    );
    assert_restored(
        &env.restore("main", "new_epoch", &["--snapshot", &snap2])
            .json(),
    );
    assert_restored(
        &env.restore("main", "old_epoch", &["--snapshot", &snap1])
            .json(),
    );

    // The new epoch is sealed to the recovery key too: a third host recovers both.
    let c = env.second_agent_config("acme-srv3");
    assert!(env.enroll(&c, SITE).ok);
    let out = agent(
        &[
            "recover",
            "--recovery-key",
            &env.recovery_key.display().to_string(),
        ],
        &c,
    );
    assert!(
        out.stdout.contains("recovered key epochs [1, 2]"),
        "{}",
        out.stderr
    );

    // Revocation cuts the live agent off.
    let out = env.cli(&["agents", "revoke", "acme-srv2"]);
    assert!(out.ok, "{}", out.stderr);
    env.wait_online(false);
    let agents = env.cli(&["agents", "list", "--json"]).json();
    let b_rec = agents
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["agent_id"] == "acme-srv2")
        .unwrap()
        .clone();
    assert_eq!(b_rec["revoked"], true);
    let out = env.backup("main");
    assert!(!out.ok, "a revoked agent runs no job");
    nex_backup_tests::wait_for("agent logs the refusal", 30, || {
        let log = std::fs::read_to_string(env.dir.path().join("agent.log")).unwrap();
        log.contains("revoked or superseded").then_some(())
    });
}

/// Every base64/PEM body line of a PEM file.
fn pem_bodies(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 20)
        .map(str::to_string)
        .collect()
}

fn files_under(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[test]
fn no_secret_appears_in_logs_catalog_or_output() {
    let env = Env::start(&invoices_sql(5_000), EnvOpts::default());
    let mut outputs = vec![];
    let backup = env.backup("main");
    let restore = env.restore("main", "scan_restore", &[]);
    assert!(
        backup.ok && restore.ok,
        "{}{}",
        backup.stderr,
        restore.stderr
    );
    for args in [
        &["status"][..],
        &["snapshots"],
        &["agents", "list"],
        &["agents", "list", "--json"],
    ] {
        outputs.push(env.cli(args));
    }
    outputs.extend([backup, restore]);

    let data = &env.controller.data_dir;
    let state = env.agent_state_dir();
    let mut secrets: Vec<(String, String)> = vec![
        ("postgres password".into(), PASSWORD.into()),
        (
            "admin credential".into(),
            std::fs::read_to_string(data.join("admin.token"))
                .unwrap()
                .trim()
                .into(),
        ),
    ];
    for t in env.issued_tokens.lock().unwrap().iter() {
        secrets.push(("enrollment token".into(), t.clone()));
    }
    let ring = std::fs::read_to_string(state.join("keyring")).unwrap();
    for line in ring.lines().filter(|l| l.starts_with("epoch ")) {
        let key = line.split_whitespace().nth(3).unwrap();
        secrets.push(("site master key".into(), key.to_string()));
    }
    let recovery = std::fs::read_to_string(&env.recovery_key).unwrap();
    let private = recovery
        .lines()
        .find(|l| l.starts_with("private"))
        .unwrap()
        .split('"')
        .nth(1)
        .unwrap()
        .to_string();
    secrets.push(("recovery private key".into(), private));
    for (what, path) in [
        ("agent private key", state.join("identity.pem")),
        ("CA private key", data.join("pki/ca.key")),
        ("server private key", data.join("pki/server.key")),
    ] {
        let body = pem_bodies(&path);
        // identity.pem holds the key first; its first body line is key material.
        secrets.push((what.into(), body[0].clone()));
    }

    let mut haystacks: Vec<(String, Vec<u8>)> = vec![];
    for name in ["controller.log", "agent.log"] {
        haystacks.push((
            name.into(),
            std::fs::read(env.dir.path().join(name)).unwrap(),
        ));
    }
    for (i, o) in outputs.iter().enumerate() {
        haystacks.push((
            format!("CLI output {i}"),
            format!("{}{}", o.stdout, o.stderr).into_bytes(),
        ));
    }
    let mut catalog = vec![];
    files_under(&data.join("catalog"), &mut catalog);
    files_under(&data.join("blobs"), &mut catalog);
    assert!(catalog.len() > 3, "catalog and blobs scanned");
    for f in catalog {
        haystacks.push((f.display().to_string(), std::fs::read(&f).unwrap()));
    }
    let master_raw: Vec<Vec<u8>> = ring
        .lines()
        .filter(|l| l.starts_with("epoch "))
        .map(|l| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(l.split_whitespace().nth(3).unwrap())
                .unwrap()
        })
        .collect();
    for (where_, hay) in &haystacks {
        for (what, secret) in &secrets {
            assert!(
                !hay.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{what} found in {where_}"
            );
        }
        for raw in &master_raw {
            assert!(
                !hay.windows(raw.len()).any(|w| w == raw.as_slice()),
                "raw site master key found in {where_}"
            );
        }
    }
}

#[test]
fn the_agent_renews_its_certificate_before_it_expires() {
    let env = Env::start(
        "CREATE TABLE t (x int); INSERT INTO t VALUES (1), (2);",
        EnvOpts {
            controller_args: vec!["--agent-cert-lifetime".into(), "12s".into()],
            ..Default::default()
        },
    );
    let serial = |env: &Env| {
        let v = env.cli(&["agents", "list", "--json"]).json();
        v[0]["cert_serial"].as_str().unwrap().to_string()
    };
    let first = serial(&env);
    // Renewed at two thirds of 12 s, checked every 5 s; twice means the renewed
    // certificate itself was used and renewed again.
    let mut seen = vec![first];
    nex_backup_tests::wait_for("two renewals", 60, || {
        let s = serial(&env);
        if seen.last() != Some(&s) {
            seen.push(s);
        }
        (seen.len() >= 3).then_some(())
    });
    env.wait_online(true);
    let b = env.backup_ok("main");
    assert_eq!(b["ok"], true);
    let log = std::fs::read_to_string(env.dir.path().join("agent.log")).unwrap();
    assert!(log.contains("agent certificate renewed"), "{log}");
}
