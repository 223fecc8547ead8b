//! Alerts end to end, with a real SMTP server (aiosmtpd), a webhook receiver, real
//! controller and agent processes and a real PostgreSQL: each scenario asserts the
//! exact notices received.

use std::time::Duration;

use hmac::{Hmac, Mac};
use nex_backup_tests::env::{Env, EnvOpts, SITE};
use nex_backup_tests::sample::invoices_sql;
use nex_backup_tests::smtp::SmtpSink;
use nex_backup_tests::wait_for;
use nex_backup_tests::webhook::WebhookSink;
use serde_json::Value;
use sha2::Sha256;

const RULES: [&str; 12] = [
    "backup-failed",
    "rpo-at-risk",
    "rpo-violated",
    "agent-offline",
    "drill-failed",
    "drill-over-rto",
    "job-stalled",
    "agent-low-disk",
    "store-low-disk",
    "cert-expiring",
    "key-unsealed",
    "store-damaged",
];

/// A controller that evaluates its rules every second and retries deliveries quickly.
fn alert_env(rows: u32) -> Env {
    Env::start(
        &invoices_sql(rows),
        EnvOpts {
            controller_args: ["--alert-interval", "1s", "--notify-retry-max", "1s"]
                .map(String::from)
                .to_vec(),
            ..Default::default()
        },
    )
}

/// Only `on` rules stay enabled (with no hold time), so the notices are exactly theirs.
fn only_rules(env: &Env, on: &[&str]) {
    for r in RULES {
        let enabled = if on.contains(&r) { "true" } else { "false" };
        let out = env.cli(&["notify", "rule", r, "--enabled", enabled, "--hold", "0s"]);
        assert!(out.ok, "notify rule {r}: {}", out.stderr);
    }
}

/// `notify add-email NAME` to plain SMTP on this machine at `port`, with `extra` flags.
fn add_email_at(
    env: &Env,
    name: &str,
    port: u16,
    extra: &[&str],
) -> nex_backup_tests::procs::CliOut {
    let port = port.to_string();
    let mut args = vec![
        "notify",
        "add-email",
        name,
        "--smtp-host",
        "127.0.0.1",
        "--smtp-port",
        &port,
        "--smtp-tls",
        "none",
        "--from",
        "NEX Backup <nex@backup.test>",
        "--to",
        "oncall@it.test,boss@it.test",
    ];
    args.extend_from_slice(extra);
    env.cli(&args)
}

fn add_email(env: &Env, name: &str, sink: &SmtpSink) {
    let out = add_email_at(env, name, sink.port, &[]);
    assert!(out.ok, "add-email: {}", out.stderr);
}

fn break_password(env: &Env) {
    env.pg
        .psql("postgres", "ALTER USER postgres PASSWORD 'not-the-agents'");
}

fn fix_password(env: &Env) {
    let sql = format!(
        "ALTER USER postgres PASSWORD '{}'",
        nex_backup_tests::pg::PASSWORD
    );
    env.pg.psql("postgres", &sql);
}

fn incidents(env: &Env) -> Vec<Value> {
    env.cli(&["incidents", "--json"])
        .json()
        .as_array()
        .unwrap()
        .clone()
}

/// Incidents of one rule (rules turned off by the test close quietly but stay listed).
fn incidents_of(env: &Env, rule: &str) -> Vec<Value> {
    incidents(env)
        .into_iter()
        .filter(|i| i["rule"] == rule)
        .collect()
}

fn hooks_with(hook: &WebhookSink, needle: &str) -> Vec<nex_backup_tests::webhook::Hook> {
    hook.requests()
        .into_iter()
        .filter(|h| h.body.contains(needle))
        .collect()
}

#[test]
fn a_failed_backup_sends_one_notice_per_channel_and_one_resolved_after_the_fix() {
    let env = alert_env(500);
    let sink = SmtpSink::start();
    let hook = WebhookSink::start();
    let secret_file = env.dir.path().join("hook.secret");
    std::fs::write(&secret_file, "s3cret-hook-key\n").unwrap();
    only_rules(&env, &["backup-failed"]);
    add_email(&env, "oncall", &sink);
    let out = env.cli(&[
        "notify",
        "add-webhook",
        "chat",
        "--url",
        &hook.url(),
        "--secret-file",
        secret_file.to_str().unwrap(),
    ]);
    assert!(out.ok, "add-webhook: {}", out.stderr);
    assert!(
        !out.stdout.contains("not-for-logs"),
        "the URL's query is not shown: {}",
        out.stdout
    );

    break_password(&env);
    let failed = env.backup("main");
    assert!(!failed.ok, "the backup must fail: {}", failed.stdout);
    wait_for("the failure notices", 30, || {
        (sink.with_subject("OPEN: backup failed").len() == 1
            && hooks_with(&hook, "\"opened\"").len() == 1)
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    let mails = sink.messages();
    assert_eq!(mails.len(), 1, "one notice, no storm: {mails:#?}");
    let m = &mails[0];
    assert_eq!(
        m.subject,
        format!("[NEX Backup] OPEN: backup failed — {SITE}/main")
    );
    assert_eq!(m.multipart, "multipart/alternative");
    assert!(
        m.to.contains("oncall@it.test") && m.to.contains("boss@it.test"),
        "{}",
        m.to
    );
    assert!(
        m.text.contains("password authentication failed"),
        "the error is in the mail: {}",
        m.text
    );
    assert!(m.text.contains("nex-backup incidents ack"), "{}", m.text);
    assert!(
        m.html.starts_with("<!DOCTYPE html>") && m.html.trim_end().ends_with("</html>"),
        "{}",
        m.html
    );
    assert!(m.html.contains("OPEN: backup failed"), "{}", m.html);
    let hooks = hook.requests();
    assert_eq!(hooks.len(), 1, "{hooks:#?}");
    let h = &hooks[0];
    let body: Value = serde_json::from_str(&h.body).unwrap();
    assert_eq!(body["event"], "opened");
    assert_eq!(body["incident"]["rule"], "backup-failed");
    assert!(
        body["text"].as_str().unwrap().contains("backup failed"),
        "{body}"
    );
    assert_eq!(h.headers["idempotency-key"], body["id"].as_str().unwrap());
    let ts = &h.headers["x-nex-timestamp"];
    let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret-hook-key").unwrap();
    mac.update(format!("{ts}.{}", h.body).as_bytes());
    assert_eq!(
        h.headers["x-nex-signature"],
        format!("sha256={}", hex::encode(mac.finalize().into_bytes())),
        "the webhook is signed with the channel's secret"
    );

    fix_password(&env);
    env.backup_ok("main");
    wait_for("the resolved notices", 30, || {
        (sink.with_subject("RESOLVED: backup failed").len() == 1
            && hooks_with(&hook, "\"resolved\"").len() == 1)
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(sink.messages().len(), 2, "{:#?}", sink.messages());
    assert_eq!(hook.requests().len(), 2);
    let inc = incidents_of(&env, "backup-failed");
    assert_eq!(inc.len(), 1, "{inc:?}");
    assert_eq!(inc[0]["rule"], "backup-failed");
    assert!(inc[0]["resolved_unix_ms"].is_u64(), "{inc:?}");

    // Channel changes are audited, and no secret is anywhere in the audit trail.
    let audit = env.cli(&["audit", "--json"]).stdout;
    assert!(audit.contains("notification channel set"), "{audit}");
    assert!(
        !audit.contains("s3cret-hook-key") && !audit.contains("not-for-logs"),
        "{audit}"
    );
    assert!(
        !env.logs().contains("s3cret-hook-key"),
        "no secret in the logs"
    );
    // The workers that did this are shown by status.
    let status = env.status();
    for w in ["alerts", "notifier", "rpo", "gc"] {
        let row = status["workers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == w);
        assert!(
            row.is_some_and(|r| r["runs"].as_u64().unwrap() > 0 || w == "gc"),
            "worker {w}: {status}"
        );
    }
}

#[test]
fn an_offline_agent_gets_one_notice_one_reminder_and_one_resolved() {
    let mut env = alert_env(200);
    let sink = SmtpSink::start();
    only_rules(&env, &["agent-offline"]);
    add_email(&env, "oncall", &sink);
    let out = env.cli(&[
        "notify",
        "rule",
        "agent-offline",
        "--threshold",
        "2",
        "--remind",
        "5s",
    ]);
    assert!(out.ok, "{}", out.stderr);
    env.agent.as_mut().unwrap().kill();
    wait_for("the offline notice", 40, || {
        (sink.with_subject("] OPEN: agent offline").len() == 1).then_some(())
    });
    wait_for("the reminder", 20, || {
        (sink.with_subject("STILL OPEN: agent offline").len() == 1).then_some(())
    });
    env.start_agent();
    env.wait_online(true);
    wait_for("the resolved notice", 20, || {
        (sink.with_subject("RESOLVED: agent offline").len() == 1).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    let subjects: Vec<String> = sink.messages().into_iter().map(|m| m.subject).collect();
    assert_eq!(
        subjects,
        [
            format!("[NEX Backup] OPEN: agent offline — {SITE}/acme-srv1"),
            format!("[NEX Backup] STILL OPEN: agent offline — {SITE}/acme-srv1"),
            format!("[NEX Backup] RESOLVED: agent offline — {SITE}/acme-srv1"),
        ]
    );
}

#[test]
fn rpo_violation_and_low_disk_each_open_one_incident_and_ack_stops_reminders() {
    let env = alert_env(200);
    only_rules(&env, &["rpo-violated", "agent-low-disk", "cert-expiring"]);
    // Never backed up: the RPO is violated from the start.
    let open = wait_for("the RPO incident", 30, || {
        incidents(&env)
            .into_iter()
            .find(|i| i["rule"] == "rpo-violated")
    });
    assert_eq!(open["subject"], "main");
    assert!(
        open["summary"]
            .as_str()
            .unwrap()
            .contains("NEVER BACKED UP"),
        "{open}"
    );
    // Low disk, simulated by a threshold above the free space of every volume.
    let out = env.cli(&[
        "notify",
        "rule",
        "agent-low-disk",
        "--threshold",
        "100000000",
    ]);
    assert!(out.ok, "{}", out.stderr);
    let disk = wait_for("the low-disk incident", 40, || {
        incidents(&env)
            .into_iter()
            .find(|i| i["rule"] == "agent-low-disk")
    });
    assert_eq!(disk["subject"], "acme-srv1");
    assert!(
        disk["summary"].as_str().unwrap().contains("MiB free"),
        "{disk}"
    );
    let id = disk["id"].as_u64().unwrap().to_string();
    let ack = env.cli(&["incidents", "ack", &id]);
    assert!(
        ack.ok && ack.stdout.contains("acknowledged"),
        "{} {}",
        ack.stdout,
        ack.stderr
    );
    // A backup clears the RPO violation; a sane threshold clears the disk.
    env.backup_ok("main");
    let out = env.cli(&["notify", "rule", "agent-low-disk", "--threshold", "1"]);
    assert!(out.ok, "{}", out.stderr);
    wait_for("both incidents to resolve", 30, || {
        let all = incidents(&env);
        (all.len() == 2 && all.iter().all(|i| i["resolved_unix_ms"].is_u64())).then_some(())
    });
    // A certificate within the warning period (here: ten years) opens its incident, which
    // says how to re-enroll.
    let out = env.cli(&["notify", "rule", "cert-expiring", "--threshold", "3650"]);
    assert!(out.ok, "{}", out.stderr);
    let cert = wait_for("the certificate incident", 30, || {
        incidents_of(&env, "cert-expiring").into_iter().next()
    });
    assert_eq!(cert["subject"], "acme-srv1");
    let summary = cert["summary"].as_str().unwrap();
    assert!(
        summary.contains("expires in") && summary.contains("--replace-agent acme-srv1"),
        "{summary}"
    );
    let open_now = env.cli(&["incidents", "--open", "--json"]).json();
    assert_eq!(
        open_now.as_array().unwrap().len(),
        1,
        "only the certificate's: {open_now}"
    );
}

#[test]
fn a_notice_queued_while_smtp_is_down_arrives_once_even_across_a_controller_kill() {
    let mut env = alert_env(200);
    let mut sink = SmtpSink::start();
    only_rules(&env, &["backup-failed"]);
    add_email(&env, "oncall", &sink);
    sink.stop();
    break_password(&env);
    assert!(!env.backup("main").ok);
    // Queued, with the failure named by channel.
    let queued = wait_for("the notice to wait in the outbox", 30, || {
        let list = env.cli(&["notify", "list", "--json"]).json();
        let ch = list.as_array().unwrap()[0].clone();
        (ch["queued"] == 1 && !ch["last_error"].as_str().unwrap().is_empty()).then_some(ch)
    });
    let err = queued["last_error"].as_str().unwrap();
    assert!(
        err.contains("channel oncall") && err.contains(&format!("127.0.0.1:{}", sink.port)),
        "{err}"
    );
    let before = incidents_of(&env, "backup-failed");
    assert_eq!(before.len(), 1, "{before:?}");
    // SIGKILL with the notice still queued; the SMTP server comes back after the restart.
    env.restart_controller(false);
    sink.resume();
    let mail = wait_for("the queued notice after the restart", 30, || {
        sink.with_subject("OPEN: backup failed").into_iter().next()
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        sink.messages().len(),
        1,
        "delivered once: {:#?}",
        sink.messages()
    );
    let id = before[0]["id"].as_u64().unwrap();
    assert!(
        mail.message_id.starts_with(&format!("<nexb.{id}.opened.")),
        "the Message-ID names the incident it was made for: {}",
        mail.message_id
    );
    let after = incidents_of(&env, "backup-failed");
    assert_eq!(
        after.len(),
        1,
        "no second incident after the restart: {after:?}"
    );
    assert_eq!(after[0]["id"], before[0]["id"]);
}

#[test]
fn notify_test_says_what_the_server_answered_or_why_it_failed_naming_the_channel() {
    let env = alert_env(100);
    let sink = SmtpSink::start_with_auth("alerts", "right-password");
    let pw = env.dir.path().join("smtp.pw");
    let add = |name: &str, pw_file: &str| {
        let extra = ["--smtp-user", "alerts", "--password-file", pw_file];
        let out = add_email_at(&env, name, sink.port, &extra);
        assert!(out.ok, "{}", out.stderr);
    };
    std::fs::write(&pw, "wrong-password\n").unwrap();
    add("badpw", pw.to_str().unwrap());
    let out = env.cli(&["notify", "test", "--channel", "badpw"]);
    assert!(!out.ok);
    assert!(
        out.stderr.contains("channel badpw") && out.stderr.contains("535"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("wrong-password"),
        "no secret in errors: {}",
        out.stderr
    );
    std::fs::write(&pw, "right-password\n").unwrap();
    let out = env.cli(&["notify", "test", "--channel", "badpw"]);
    assert!(
        out.ok && out.stdout.contains("250"),
        "{} {}",
        out.stdout,
        out.stderr
    );
    assert_eq!(sink.with_subject("test message for channel badpw").len(), 1);

    let closed = nex_backup_tests::free_port();
    let out = add_email_at(&env, "badhost", closed, &[]);
    assert!(out.ok, "{}", out.stderr);
    let out = env.cli(&["notify", "test", "--channel", "badhost"]);
    assert!(!out.ok);
    assert!(
        out.stderr.contains("channel badhost")
            && out.stderr.contains(&format!("127.0.0.1:{closed}")),
        "{}",
        out.stderr
    );
    // Plain SMTP to another host is refused when the channel is set.
    let out = env.cli(&[
        "notify",
        "add-email",
        "far",
        "--smtp-host",
        "mail.example.net",
        "--smtp-tls",
        "none",
        "--from",
        "nex@backup.test",
        "--to",
        "ops@it.test",
    ]);
    assert!(
        !out.ok && out.stderr.contains("only to this machine"),
        "{}",
        out.stderr
    );
    // A secret named by an unset variable: the error names the variable.
    let out = env.cli(&[
        "notify",
        "add-webhook",
        "hook",
        "--url",
        "http://127.0.0.1:9/x",
        "--secret-env",
        "NEXB_UNSET_HOOK_SECRET",
    ]);
    assert!(out.ok, "{}", out.stderr);
    let out = env.cli(&["notify", "test", "--channel", "hook"]);
    assert!(
        !out.ok
            && out.stderr.contains("NEXB_UNSET_HOOK_SECRET")
            && out.stderr.contains("channel hook"),
        "{}",
        out.stderr
    );
}

/// Every opened element is closed, in order (void elements aside).
fn assert_well_formed(html: &str) {
    let mut stack: Vec<String> = vec![];
    let mut rest = html;
    while let Some(i) = rest.find('<') {
        rest = &rest[i + 1..];
        let end = rest.find('>').expect("unclosed tag");
        let tag = &rest[..end];
        rest = &rest[end + 1..];
        if tag.starts_with('!') {
            continue;
        }
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        if ["meta", "br", "hr", "img"].contains(&name.as_str()) {
            continue;
        }
        if tag.starts_with('/') {
            assert_eq!(
                stack.pop().as_deref(),
                Some(name.as_str()),
                "closing </{name}> in {html}"
            );
        } else {
            stack.push(name);
        }
    }
    assert!(stack.is_empty(), "unclosed {stack:?}");
}

#[test]
fn the_daily_summary_puts_the_site_in_trouble_first_with_the_right_figures() {
    let env = alert_env(2_000);
    let sink = SmtpSink::start();
    add_email(&env, "oncall", &sink);
    // Three sites on the same server: acme and beta back up, gamma's password is wrong.
    let mut agents = vec![];
    for (site, pw) in [("beta", nex_backup_tests::pg::PASSWORD), ("gamma", "wrong")] {
        let cfg = env.second_agent_config(&format!("{site}-srv1"));
        let out = env.enroll(&cfg, site);
        assert!(out.ok, "enroll {site}: {}", out.stderr);
        let log = env.dir.path().join(format!("{site}.log"));
        agents.push(nex_backup_tests::procs::Agent::start(
            &cfg,
            &[(nex_backup_tests::env::PW_ENV, pw)],
            &log,
        ));
        wait_for(&format!("{site} online"), 30, || {
            env.status()["sites"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["site"] == site && s["online"] == true)
                .then_some(())
        });
    }
    let acme = env.backup_ok("main");
    let beta = env
        .cli(&["backup", "--site", "beta", "--target", "main", "--json"])
        .json();
    assert_eq!(beta["ok"], true, "{beta}");
    let gamma = env.cli(&["backup", "--site", "gamma", "--target", "main", "--json"]);
    assert!(!gamma.ok);
    let out = env.cli(&["notify", "summary", "--send-now"]);
    assert!(
        out.ok && out.stdout.contains("1 e-mail channel"),
        "{} {}",
        out.stdout,
        out.stderr
    );
    let mail = wait_for("the summary", 30, || {
        sink.with_subject("Daily summary").into_iter().next()
    });
    assert_eq!(
        mail.subject,
        "[NEX Backup] Daily summary: 1 of 3 site(s) need attention"
    );
    let sites: Vec<&str> = mail.text.lines().filter(|l| l.starts_with("== ")).collect();
    assert_eq!(
        sites,
        ["== gamma — NEEDS ATTENTION", "== acme", "== beta"],
        "{}",
        mail.text
    );
    let logical = acme["logical_bytes"].as_u64().expect("logical bytes");
    let acme_line = format!(
        "backups: 1 ok, 0 failed; {} read",
        nex_backup::policy::human_bytes(logical)
    );
    assert!(
        mail.text.contains(&acme_line),
        "{acme_line} in {}",
        mail.text
    );
    assert!(
        mail.text.contains("backups: 0 ok, 1 failed"),
        "{}",
        mail.text
    );
    assert!(
        mail.text.contains("password authentication failed"),
        "{}",
        mail.text
    );
    assert!(
        mail.text.contains("RPO compliance: 0.0%"),
        "never backed up all day: {}",
        mail.text
    );
    assert!(mail.text.contains("NEVER BACKED UP"), "{}", mail.text);
    assert_well_formed(&mail.html);
    assert!(
        mail.html.contains("<h2>gamma — NEEDS ATTENTION</h2>"),
        "{}",
        mail.html
    );
    assert!(mail.html.find("<h2>gamma").unwrap() < mail.html.find("<h2>acme").unwrap());
    assert!(
        mail.html.contains(&acme_line.replace("backups: ", "")),
        "the HTML holds the same figures: {}",
        mail.html
    );
    // The schedule: shown, set, and refused when wrong.
    let out = env.cli(&[
        "notify",
        "summary",
        "--at",
        "06:30",
        "--timezone",
        "Europe/Bratislava",
        "--weekly",
        "mon",
    ]);
    assert!(
        out.ok
            && out
                .stdout
                .contains("06:30 (Europe/Bratislava); weekly report: mon"),
        "{} {}",
        out.stdout,
        out.stderr
    );
    let out = env.cli(&["notify", "summary", "--at", "25:00"]);
    assert!(
        !out.ok && out.stderr.contains("--at \"25:00\""),
        "{}",
        out.stderr
    );
    drop(agents);
}

#[test]
fn a_drill_over_its_rto_opens_one_incident_and_one_notice() {
    // The smallest RTO is 1 s: the data must take clearly longer to restore. 60,000 rows
    // once did, until the restore got faster (989 ms in one CI run).
    let env = alert_env(250_000);
    let sink = SmtpSink::start();
    only_rules(&env, &["drill-over-rto", "drill-failed"]);
    add_email(&env, "oncall", &sink);
    env.backup_ok("main");
    env.set_target_policy("main", &["--rto", "1s"]);
    let d = env.cli(&["drill", "--site", SITE, "--target", "main", "--json"]);
    let v: Value = serde_json::from_str(&d.stdout).expect("drill JSON");
    assert_eq!(v["ok"], true, "the drill restores and verifies: {v}");
    assert!(!d.ok, "but the CLI says the RTO was missed (exit status)");
    let took = v["duration_ms"].as_u64().unwrap_or(0);
    assert!(
        took > 1000,
        "a 250,000-row restore takes longer than 1 s: {took} ms"
    );
    let inc = wait_for("the drill incident", 30, || {
        incidents_of(&env, "drill-over-rto").into_iter().next()
    });
    assert!(
        inc["summary"]
            .as_str()
            .unwrap()
            .contains("over its RTO of 1s"),
        "{inc}"
    );
    wait_for("its notice", 30, || {
        (sink.with_subject("OPEN: restore drill over its RTO").len() == 1).then_some(())
    });
    assert!(incidents_of(&env, "drill-failed").is_empty());
}

#[test]
fn sigterm_while_a_notice_hangs_on_a_dead_smtp_server_exits_in_bounds_and_keeps_the_notice() {
    let mut env = alert_env(200);
    // A server that accepts and never answers: the notifier waits inside a send.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = std::thread::spawn(move || {
        let mut conns = vec![];
        for c in silent.incoming().take(4) {
            conns.push(c);
        }
        std::thread::sleep(Duration::from_secs(60));
        drop(conns);
    });
    only_rules(&env, &["backup-failed"]);
    let out = add_email_at(&env, "oncall", port, &[]);
    assert!(out.ok, "{}", out.stderr);
    break_password(&env);
    assert!(!env.backup("main").ok);
    wait_for("the notifier to be inside a send", 30, || {
        let s = env.status();
        let busy = s["workers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["name"] == "notifier" && w["state"] == "busy");
        busy.then_some(())
    });
    let pid = env.controller.pid();
    let t = std::time::Instant::now();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    wait_for("the controller to exit after SIGTERM", 15, || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        (stat.is_empty() || stat.contains(") Z ")).then_some(())
    });
    assert!(
        t.elapsed() < Duration::from_secs(12),
        "exited in {:?}",
        t.elapsed()
    );
    let log = std::fs::read_to_string(&env.controller.log).unwrap();
    assert!(log.contains("controller stopped"), "a clean stop: {log}");
    assert!(
        !log.contains("workers still running after the shutdown grace"),
        "{log}"
    );
    // Nothing half-written: the notice waits in the outbox, with its incident, and goes
    // out once a working server is configured.
    env.controller.restart();
    let sink = SmtpSink::start();
    add_email(&env, "oncall", &sink);
    let list = env.cli(&["notify", "list", "--json"]).json();
    assert_eq!(list[0]["queued"], 1, "{list}");
    wait_for("the notice after the restart", 30, || {
        (sink.with_subject("OPEN: backup failed").len() == 1).then_some(())
    });
    assert_eq!(incidents_of(&env, "backup-failed").len(), 1);
    drop(held);
}
