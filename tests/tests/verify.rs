//! Store verification with real processes: `nex-backup verify` re-reads the stored chunks
//! against the checksums recorded when they were stored (no keys), names every damaged or
//! missing object with the snapshots that need it, marks those snapshots damaged (RPO and
//! `restore latest` stop counting them), repairs manifest copies from the catalog, and a
//! fresh backup heals what it can. `--deep` has the agent decrypt a snapshot and finds a
//! chunk re-sealed under its id, which no checksum can see. The scheduled verification
//! finds damage on its own and opens an incident.

use std::path::{Path, PathBuf};
use std::process::Command;

use nex_backup_tests::env::{Env, EnvOpts, SITE};
use nex_backup_tests::procs::bin;
use nex_backup_tests::sample::invoices_sql;
use nex_backup_tests::store_files::{chunk_files, flip_byte, varies_per_dump};
use nex_backup_tests::wait_for;
use serde_json::Value;

fn chunk_id(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

/// A verify report (printed whether or not it found damage).
fn report(out: &nex_backup_tests::procs::CliOut) -> Value {
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("verify report: {e}: {}\n{}", out.stdout, out.stderr))
}

fn chunks(env: &Env) -> Vec<(PathBuf, std::time::SystemTime)> {
    chunk_files(&env.controller.data_dir, SITE)
}

fn snapshot_id(v: &Value) -> String {
    v["snapshot_id"].as_str().unwrap().to_string()
}

fn finding<'a>(report: &'a Value, chunk: &str) -> &'a Value {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["chunk"] == chunk)
        .unwrap_or_else(|| panic!("chunk {chunk} not named: {report}"))
}

fn damaged(env: &Env) -> Vec<Value> {
    env.cli(&["verify", "--damaged", "--json"])
        .json()
        .as_array()
        .unwrap()
        .clone()
}

fn standing(env: &Env, snap: &str) -> String {
    env.snapshots("main")
        .iter()
        .find(|s| s["snapshot_id"] == snap)
        .map(|s| s["standing"].as_str().unwrap_or("").to_string())
        .unwrap_or_default()
}

#[test]
fn verify_names_bad_chunks_marks_their_snapshots_and_a_fresh_backup_heals() {
    let env = Env::start(&invoices_sql(5_000), EnvOpts::default());
    let s1 = snapshot_id(&env.backup_ok("main"));
    let after_s1 = chunks(&env);
    env.pg.psql(
        "invoices",
        "UPDATE invoices SET note = 'changed' WHERE id % 2 = 0",
    );
    let s2 = snapshot_id(&env.backup_ok("main"));
    let clean = env.cli(&["verify", "--json"]);
    assert!(clean.ok, "a clean store verifies: {}", clean.stdout);
    let v = clean.json();
    assert!(
        v["objects"].as_u64().unwrap() >= after_s1.len() as u64,
        "{v}"
    );
    assert!(v["findings"].as_array().unwrap().is_empty(), "{v}");

    // One chunk only the second snapshot has gets a flipped byte; one the first has is
    // deleted; the first snapshot's manifest copy in the store is deleted too.
    let old: Vec<PathBuf> = after_s1.iter().map(|(p, _)| p.clone()).collect();
    // A data chunk: not the one with the dump's header (pg_dump's timestamp), nor the
    // globals (pg_dumpall writes a random \restrict key), which no later dump repeats; a
    // later backup of the same data stores every data chunk again.
    let new_only = chunks(&env)
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| !old.contains(p))
        .find(|p| !varies_per_dump(&env.agent_state_dir().join("keyring"), p))
        .expect("the second backup stored new data chunks");
    flip_byte(&new_only);
    std::fs::remove_file(&old[0]).unwrap();
    let manifest = env
        .controller
        .data_dir
        .join("blobs/manifests")
        .join(SITE)
        .join(&s1);
    std::fs::remove_file(&manifest).unwrap();

    let out = env.cli(&["verify", "--site", SITE, "--json"]);
    assert!(!out.ok, "damage makes verify fail: {}", out.stdout);
    let r = report(&out);
    let flipped = finding(&r, &chunk_id(&new_only));
    assert!(
        flipped["problem"]
            .as_str()
            .unwrap()
            .contains("checksum mismatch"),
        "{flipped}"
    );
    let needs: Vec<&str> = flipped["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(needs, vec![format!("main/{s2}")], "{r}");
    let missing = finding(&r, &chunk_id(&old[0]));
    assert!(
        missing["problem"].as_str().unwrap().contains("missing"),
        "{missing}"
    );
    assert!(
        missing["snapshots"]
            .to_string()
            .contains(&format!("main/{s1}")),
        "{missing}"
    );
    let repaired = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["repaired"] == true)
        .expect("the manifest copy is reported");
    assert!(
        repaired["key"].as_str().unwrap().ends_with(&s1),
        "{repaired}"
    );
    assert!(
        manifest.exists(),
        "the manifest copy is restored from the catalog"
    );
    let marked = r["marked"].to_string();
    assert!(
        marked.contains(&s1) && marked.contains(&s2),
        "both snapshots are marked: {r}"
    );

    // Damaged snapshots no longer count: standing, `restore latest`, RPO.
    assert_eq!(standing(&env, &s2), "damaged");
    assert_eq!(damaged(&env).len(), 2);
    let out = env.restore("main", "from_latest", &[]);
    assert!(
        !out.ok && out.stderr.contains("none is good"),
        "{}",
        out.stderr
    );
    let rpo = env.cli(&["rpo", "--site", SITE]);
    assert!(
        rpo.stdout.contains("no good snapshot") && rpo.stdout.contains("damaged"),
        "{}",
        rpo.stdout
    );

    // The bad chunks were set aside: a fresh backup stores them again and the second
    // snapshot (whose chunks the current data still has) heals at the next verify.
    let s3 = snapshot_id(&env.backup_ok("main"));
    let out = env.cli(&["verify", "--site", SITE, "--json"]);
    let r = report(&out);
    assert!(
        r["healed"].to_string().contains(&s2),
        "the second snapshot is whole again: {r}"
    );
    assert_ne!(standing(&env, &s2), "damaged");
    let r = env
        .restore("main", "after_heal", &["--snapshot", &s2])
        .json();
    assert_eq!(r["ok"], true, "the healed snapshot restores: {r}");
    assert_eq!(standing(&env, &s3), "good", "the fresh backup counts");
}

#[test]
fn deep_verify_finds_a_chunk_resealed_under_its_own_id() {
    let mut env = Env::start(&invoices_sql(3_000), EnvOpts::default());
    let s1 = snapshot_id(&env.backup_ok("main"));
    let (victim, _) = chunks(&env).pop().unwrap();
    env.controller.kill();
    let keyring = env.agent_state_dir().join("keyring");
    let out = Command::new(bin("nexb-reseal"))
        .arg("--data-dir")
        .arg(&env.controller.data_dir)
        .arg("--keyring")
        .arg(&keyring)
        .args(["--site", SITE, "--chunk", &chunk_id(&victim)])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "reseal: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.controller.restart();
    env.wait_online(true);

    // The checksum matches what was "stored": the controller cannot see it.
    let out = env.cli(&["verify", "--json"]);
    assert!(out.ok, "checksums match: {}", out.stdout);
    assert!(damaged(&env).is_empty());

    let out = env.cli(&[
        "verify",
        "--deep",
        "--site",
        SITE,
        "--target",
        "main",
        "--snapshot",
        &s1,
    ]);
    assert!(!out.ok, "{}", out.stdout);
    assert!(
        out.stdout.contains("FAILED") && out.stdout.contains(&chunk_id(&victim)[..12]),
        "the failing chunk is named: {}\n{}",
        out.stdout,
        out.stderr
    );
    let d = damaged(&env);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0]["snapshot_id"], s1.as_str());
    assert_eq!(d[0]["source"], "deep");
    assert_eq!(standing(&env, &s1), "damaged");

    // A snapshot whose chunks are whole passes the deep check.
    env.pg.psql("invoices", "DELETE FROM invoices");
    let s2 = snapshot_id(&env.backup_ok("main"));
    let out = env.cli(&[
        "verify",
        "--deep",
        "--site",
        SITE,
        "--target",
        "main",
        "--snapshot",
        &s2,
    ]);
    assert!(out.ok && out.stdout.contains("ok"), "{}", out.stdout);
}

#[test]
fn the_scheduled_verification_finds_damage_and_opens_an_incident() {
    let env = Env::start(
        &invoices_sql(2_000),
        EnvOpts {
            controller_args: ["--verify-period", "3s", "--verify-every", "1s"]
                .map(String::from)
                .to_vec(),
            ..Default::default()
        },
    );
    let s1 = snapshot_id(&env.backup_ok("main"));
    let (victim, _) = chunks(&env).remove(0);
    flip_byte(&victim);
    let d = wait_for("the scheduled verification marks the snapshot", 30, || {
        let d = damaged(&env);
        (!d.is_empty()).then_some(d)
    });
    assert_eq!(d[0]["snapshot_id"], s1.as_str());
    assert!(
        d[0]["objects"].to_string().contains(&chunk_id(&victim)),
        "{d:?}"
    );
    let incident = wait_for("a store-damaged incident", 30, || {
        let v = env.cli(&["incidents", "--open", "--json"]).json();
        v.as_array()?
            .iter()
            .find(|i| i["rule"] == "store-damaged")
            .cloned()
    });
    assert!(incident.to_string().contains("acme/main"), "{incident}");
    let status = env.status();
    assert!(
        status["workers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["name"] == "verify" && w["runs"].as_u64().unwrap_or(0) > 0),
        "{status}"
    );
}
