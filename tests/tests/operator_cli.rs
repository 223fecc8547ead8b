//! The operator's daily CLI: a job's full detail, a snapshot named by a prefix of its
//! id, a pipe closed early, the host's health, and `--tls-name` on the controller's
//! own host.

use std::process::{Command, Stdio};

use nex_backup_tests::env::{Env, EnvOpts, SITE};
use nex_backup_tests::procs::{Controller, bin, cli_bare};
use nex_backup_tests::sample::invoices_sql;

#[test]
fn jobs_show_prefixes_pipes_and_health() {
    let env = Env::start(&invoices_sql(500), EnvOpts::default());
    // A failed backup: `jobs show` has the whole error, the list points to it.
    env.pg
        .psql("postgres", "ALTER USER postgres PASSWORD 'other'");
    let failed = env.backup("main").json_failed();
    let job = failed["job_id"].as_str().expect("job id").to_string();
    let shown = env.cli(&["jobs", "show", &job]);
    assert!(shown.ok, "{}", shown.stderr);
    assert!(
        shown
            .stdout
            .contains("password authentication failed for user \"postgres\""),
        "{}",
        shown.stdout
    );
    assert!(
        shown
            .stdout
            .contains(&format!("backup of {SITE}/main (manual)")),
        "{}",
        shown.stdout
    );
    let missing = env.cli(&["jobs", "show", "job-nope"]);
    assert!(
        !missing.ok && missing.stderr.contains("no job job-nope"),
        "{}",
        missing.stderr
    );
    let psql = format!(
        "ALTER USER postgres PASSWORD '{}'",
        nex_backup_tests::pg::PASSWORD
    );
    env.pg.psql("postgres", &psql);

    // Restore by a unique prefix of the snapshot id.
    let snap = env.backup_ok("main")["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    let prefix = &snap[..15];
    let r = env
        .restore("main", "by_prefix", &["--snapshot", prefix])
        .json();
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["snapshot_id"], snap.as_str());
    let short = env.restore("main", "too_short", &["--snapshot", "2026"]);
    assert!(!short.ok, "a 4-character prefix is refused");

    // `nex-backup jobs | head -0`: the reader is gone; the CLI stops quietly.
    let mut child = Command::new(bin("nex-backup"))
        .args(["jobs", "--controller", &env.url()])
        .env("NEX_CONFIG", env.controller.cli_config())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(141), "{stderr}");

    // The agent's host health is in `agents list`.
    let agents = nex_backup_tests::wait_for("host health in agents list", 30, || {
        let v = env.cli(&["agents", "list", "--json"]).json();
        (!v[0]["health"].is_null()).then_some(v)
    });
    let vols = agents[0]["health"]["volumes"].as_array().unwrap();
    assert!(
        vols.iter()
            .any(|v| v["role"] == "state_dir" && v["free_bytes"].as_u64().unwrap() > 0),
        "{agents}"
    );
    assert!(
        agents[0]["health"]["pg_versions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["version"].as_str().unwrap().starts_with("15")),
        "{agents}"
    );
    let table = env.cli(&["agents", "list"]).stdout;
    assert!(table.contains("HOST") && table.contains("disk"), "{table}");
}

#[test]
fn tls_name_keeps_the_loopback_names_for_the_cli_on_the_controllers_host() {
    let dir = tempfile::tempdir().unwrap();
    let key = nex_backup_tests::procs::recovery_key(&dir.path().join("r.key"));
    let c = Controller::start(
        &dir.path().join("data"),
        0,
        &dir.path().join("log"),
        &[
            "--tls-name".into(),
            "backup.example.net".into(),
            "--recovery-key".into(),
            key,
            "--no-scheduler".into(),
        ],
    );
    let cfg = c.cli_config();
    let out = cli_bare(&["status"], &[("NEX_CONFIG", cfg.to_str().unwrap())]);
    assert!(
        out.ok,
        "the CLI config written by serve works on this host: {}",
        out.stderr
    );
}

#[test]
fn check_config_finds_what_syntax_alone_does_not_and_online_reaches_the_servers() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "state_dir = \"/nonexistent/nexb-state\"\n\n[[targets]]\nname = \"main\"\nuser = \"postgres\"\ndbname = \"x\"\npassword_env = \"NEXB_SURELY_UNSET_PW\"\npg_bin_dir = \"/nonexistent\"\n",
    )
    .unwrap();
    let out = nex_backup_tests::procs::agent_cmd(
        &["check-config", "--config", bad.to_str().unwrap()],
        &[],
    );
    assert!(!out.ok, "{}", out.stdout);
    for want in [
        "error: controller: no controller URL",
        "error: line 7: targets[0] (main).password_env: the environment variable NEXB_SURELY_UNSET_PW is not set",
        "error: line 8: targets[0] (main).pg_bin_dir: /nonexistent holds no pg_dump",
        "warning: line 1: state_dir",
    ] {
        assert!(out.stdout.contains(want), "{want:?} in {}", out.stdout);
    }
    let none = dir.path().join("none.toml");
    std::fs::write(&none, "controller = \"https://127.0.0.1:1\"\nstate_dir = \"/tmp\"\n\n[[targets]]\nname = \"main\"\ndbname = \"x\"\n").unwrap();
    let out = nex_backup_tests::procs::agent_cmd(
        &["check-config", "--config", none.to_str().unwrap()],
        &[],
    );
    assert!(
        out.stderr
            .contains("targets.user (line 4): missing field `user`"),
        "{}",
        out.stderr
    );

    // The real agent's config: valid, and --online reaches the database and the controller.
    let env = Env::start(&invoices_sql(10), EnvOpts::default());
    let cfg = env.agent_config.to_str().unwrap().to_string();
    let out = nex_backup_tests::procs::agent_cmd(
        &["check-config", "--config", &cfg, "--online"],
        &env.agent_env(),
    );
    assert!(out.ok, "{} {}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("ok: targets[0] (main): PostgreSQL 15"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains(&format!("accepts agent acme-srv1 of site {SITE}")),
        "{}",
        out.stdout
    );
}
