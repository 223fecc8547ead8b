//! A site's own settings against real processes: the backup window (scheduled and manual
//! backups start only inside it, and the agent is told when it closes), the upload
//! bandwidth limit, and a designated drill agent.

use std::time::Duration;

use nex_backup_tests::env::{AGENT_ID, Env, EnvOpts, SITE};
use nex_backup_tests::procs::{Agent, agent_cmd};
use nex_backup_tests::sample::invoices_sql;
use nex_backup_tests::wait_for;
use serde_json::Value;

fn set_site(env: &Env, extra: &[&str]) -> nex_backup_tests::procs::CliOut {
    let mut args = vec!["policy", "set", "--site", SITE];
    args.extend(extra);
    args.push("--json");
    env.cli(&args)
}

fn jobs(env: &Env) -> Vec<Value> {
    env.cli(&["jobs", "--json"])
        .json()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn backups_start_only_inside_the_site_window() {
    let env = Env::start(&invoices_sql(2_000), EnvOpts::scheduled());
    env.set_target_policy(
        "main",
        &[
            "--schedule",
            "*/2 * * * * *",
            "--rpo",
            "1h",
            "--drill-every",
            "0",
        ],
    );
    // Closed now: opens in two hours.
    let closed = nex_backup_tests::utc_window(120, 180);
    let out = set_site(&env, &["--window", &closed, "--timezone", "UTC"]);
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(out.json()[0]["window"], closed.as_str());
    assert_eq!(out.json()[0]["window_open"], false);

    // Site and target settings are not mixed up.
    let out = env.cli(&["policy", "set", "--site", SITE, "--rpo", "2h"]);
    assert!(
        !out.ok && out.stderr.contains("--rpo") && out.stderr.contains("--target"),
        "{}",
        out.stderr
    );
    let out = env.cli(&[
        "policy", "set", "--site", SITE, "--target", "main", "--window", &closed,
    ]);
    assert!(!out.ok && out.stderr.contains("--window"), "{}", out.stderr);
    let out = set_site(&env, &["--window", "25:00-01:00"]);
    assert!(
        !out.ok && out.stderr.contains("policy window"),
        "{}",
        out.stderr
    );

    // A manual backup is refused outside the window, unless the operator insists.
    let out = env.backup("main");
    assert!(!out.ok, "backup outside the window was accepted");
    assert!(
        out.stderr.contains("backup window") && out.stderr.contains("--outside-window"),
        "{}",
        out.stderr
    );
    let out = env.cli(&[
        "backup",
        "--site",
        SITE,
        "--target",
        "main",
        "--outside-window",
        "--json",
    ]);
    assert!(out.ok, "{}", out.stderr);

    // Three scheduled slots pass while the window is closed: nothing starts.
    std::thread::sleep(Duration::from_secs(7));
    let triggers: Vec<Value> = jobs(&env).iter().map(|j| j["trigger"].clone()).collect();
    assert_eq!(triggers, ["manual"], "only the manual backup ran");
    // The next run waits two hours for the window, past the 1 h RPO: AT RISK already.
    let rpo = env.cli(&["rpo", "--json"]).json();
    assert_eq!(rpo["targets"][0]["state"], "AT RISK", "{rpo}");
    assert!(
        rpo["targets"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("cannot finish inside the RPO"),
        "{rpo}"
    );

    // Open it: the pending slot runs, and the agent is told when the window closes.
    let open = nex_backup_tests::utc_window(-10, 20);
    let out = set_site(&env, &["--window", &open]);
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(out.json()[0]["window_open"], true);
    wait_for("a scheduled backup inside the window", 60, || {
        jobs(&env)
            .iter()
            .any(|j| j["trigger"] == "schedule" && j["state"] == "succeeded")
            .then_some(())
    });
    let log = std::fs::read_to_string(env.dir.path().join("agent.log")).unwrap();
    assert!(log.contains("backup window closes in"), "{log}");
    eprintln!("{}", env.cli(&["policy", "list"]).stdout);
    let shown = env.cli(&["policy", "show", "--site", SITE]);
    assert!(
        shown.ok && shown.stdout.contains(&format!("{open} UTC (open, closes")),
        "{}",
        shown.stdout
    );
}

#[test]
fn the_agent_holds_the_site_upload_bandwidth_limit() {
    let env = Env::start(&invoices_sql(20_000), EnvOpts::default());
    let rate: u64 = 256 * 1024;
    let out = set_site(&env, &["--bandwidth", "256KiB"]);
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(out.json()[0]["bandwidth_bytes_per_sec"], rate);
    let b = env.backup_ok("main");
    let sent = b["new_bytes"].as_u64().unwrap();
    let took_ms = b["duration_ms"].as_u64().unwrap();
    assert!(sent > 3 * rate, "enough to measure: {sent}");
    // One second of burst, then the rate: a lower bound, safe on any machine.
    let floor_ms = (sent - rate) * 1000 / rate;
    assert!(
        took_ms >= floor_ms * 95 / 100,
        "{sent} bytes in {took_ms} ms, limit {rate} B/s (floor {floor_ms} ms)"
    );
    let log = std::fs::read_to_string(env.dir.path().join("agent.log")).unwrap();
    assert!(log.contains("upload bandwidth limited"), "{log}");
    let r = env.restore("main", "after_throttle", &[]).json();
    assert_eq!(r["ok"], true, "{r}");
}

/// A second host of the site that backs up nothing and rehearses restores on its own
/// PostgreSQL server (here the same test cluster).
fn drill_agent_config(env: &Env, agent_id: &str) -> std::path::PathBuf {
    let path = env.second_agent_config(agent_id);
    let text = std::fs::read_to_string(&path).unwrap();
    let head = text.split("[[targets]]").next().unwrap();
    let drill = format!(
        "[drill]\nhost = \"127.0.0.1\"\nport = {}\nuser = \"postgres\"\npassword_env = \"{}\"\npg_bin_dir = \"{}\"\n",
        env.pg.port,
        nex_backup_tests::env::PW_ENV,
        env.pg.bin.display()
    );
    std::fs::write(&path, format!("{head}\n{drill}")).unwrap();
    path
}

#[test]
fn a_designated_drill_agent_runs_the_site_drills() {
    let env = Env::start(&invoices_sql(2_000), EnvOpts::default());
    env.backup_ok("main");
    let drill_id = "acme-drill";
    let cfg = drill_agent_config(&env, drill_id);
    let out = env.enroll(&cfg, SITE);
    assert!(out.ok, "{}", out.stderr);
    let c = cfg.display().to_string();
    let key = env.recovery_key.display().to_string();
    let out = agent_cmd(&["recover", "--recovery-key", &key, "--config", &c], &[]);
    assert!(out.ok, "{}", out.stderr);
    let log = env.dir.path().join("drill-agent.log");
    let mut drill_agent = Agent::start(&cfg, &env.agent_env(), &log);
    env.wait_agent_online(drill_id);

    let out = set_site(&env, &["--drill-agent", "nobody"]);
    assert!(
        !out.ok && out.stderr.contains("no enrolled agent nobody"),
        "{}",
        out.stderr
    );
    let out = set_site(&env, &["--drill-agent", drill_id]);
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(out.json()[0]["drill_agent"], drill_id);

    let out = env.cli(&["drill", "--site", SITE, "--target", "main"]);
    assert!(out.ok, "{}\n{}", out.stdout, out.stderr);
    let j = &jobs(&env)[0];
    assert_eq!(
        (&j["trigger"], &j["state"], &j["agent_id"]),
        (&"drill".into(), &"succeeded".into(), &drill_id.into()),
        "{j}"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("drill database dropped"), "{text}");

    // Backups still go to the target's own agent.
    env.backup_ok("main");
    assert_eq!(jobs(&env)[0]["agent_id"], AGENT_ID);

    // With the drill agent away, a drill waits for it rather than run on production.
    drill_agent.kill();
    wait_for("drill agent offline", 60, || {
        let out = env.cli(&["drill", "--site", SITE, "--target", "main"]);
        (!out.ok
            && out
                .stderr
                .contains("drill agent acme-drill of site acme is offline"))
        .then_some(())
    });
    let out = set_site(&env, &["--drill-agent", "none"]);
    assert!(out.ok, "{}", out.stderr);
    let out = env.cli(&["drill", "--site", SITE, "--target", "main"]);
    assert!(out.ok, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(jobs(&env)[0]["agent_id"], AGENT_ID);
}
