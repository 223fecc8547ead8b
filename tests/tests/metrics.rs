//! Prometheus metrics: `/metrics` parsed directly, and scraped by a real Prometheus
//! server (Debian's `prometheus`, installed by tests/run.sh) asserted through its query
//! API.

use std::io::{Read, Write};
use std::process::{Command, Stdio};

use nex_backup_tests::env::{Env, EnvOpts, SITE};
use nex_backup_tests::sample::invoices_sql;
use nex_backup_tests::wait_for;

fn http_get(port: u16, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The value of the sample `name{labels}` in a text exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn metrics_describe_the_fleet_and_prometheus_scrapes_them() {
    let port = nex_backup_tests::free_port();
    let env = Env::start(
        &invoices_sql(1_000),
        EnvOpts {
            controller_args: vec!["--metrics-listen".into(), format!("127.0.0.1:{port}")],
            ..Default::default()
        },
    );
    env.backup_ok("main");
    let t = format!("site=\"{SITE}\",target=\"main\"");
    let text = wait_for("the metrics after the backup", 20, || {
        let r = http_get(port, "/metrics");
        r.contains("nexb_jobs_total{kind=\"backup\",outcome=\"succeeded\"} 1")
            .then_some(r)
    });
    assert!(
        text.contains("content-type: application/openmetrics-text"),
        "{text}"
    );
    assert_eq!(
        sample(&text, &format!("nexb_target_rpo_seconds{{{t}}}")),
        Some(86400.0),
        "{text}"
    );
    let age = sample(
        &text,
        &format!("nexb_target_newest_good_age_seconds{{{t}}}"),
    )
    .expect("age");
    assert!((0.0..120.0).contains(&age), "{age}");
    assert_eq!(
        sample(&text, &format!("nexb_target_rpo_state{{{t},state=\"ok\"}}")),
        Some(1.0),
        "{text}"
    );
    assert!(
        sample(
            &text,
            &format!("nexb_target_last_backup_logical_bytes{{{t}}}")
        )
        .unwrap()
            > 100_000.0
    );
    let agent = format!("site=\"{SITE}\",agent=\"acme-srv1\"");
    assert_eq!(
        sample(&text, &format!("nexb_agent_online{{{agent}}}")),
        Some(1.0),
        "{text}"
    );
    assert!(
        sample(
            &text,
            &format!("nexb_agent_cert_expiry_timestamp_seconds{{{agent}}}")
        )
        .unwrap()
            > 1.7e9
    );
    assert!(sample(&text, "nexb_store_chunks").unwrap() > 0.0, "{text}");
    assert!(
        sample(&text, "nexb_store_stored_bytes").unwrap() > 0.0,
        "{text}"
    );
    assert!(
        text.trim_end().ends_with("# EOF"),
        "OpenMetrics text ends with # EOF"
    );
    // Bounded labels: never a snapshot or job id.
    assert!(
        !text.contains("job-") && !text.contains("snapshot="),
        "{text}"
    );
    // Host health arrives with heartbeats: the agent's state dir volume.
    let health = wait_for("host health", 30, || {
        let r = http_get(port, "/metrics");
        sample(
            &r,
            &format!("nexb_agent_volume_free_bytes{{{agent},volume=\"state_dir\"}}"),
        )
    });
    assert!(health > 0.0);

    // A real Prometheus server scrapes it.
    let dir = tempfile::tempdir().unwrap();
    let prom_port = nex_backup_tests::free_port();
    let cfg = dir.path().join("prom.yml");
    std::fs::write(
        &cfg,
        format!("global: {{scrape_interval: 1s}}\nscrape_configs:\n  - job_name: nexb\n    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n"),
    )
    .unwrap();
    let mut prom = Command::new("prometheus")
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prometheus (Debian package prometheus; tests/run.sh installs it)");
    let q =
        "/api/v1/query?query=nexb_jobs_total%7Bkind%3D%22backup%22%2Coutcome%3D%22succeeded%22%7D";
    let answer = wait_for("Prometheus to scrape the controller", 60, || {
        std::net::TcpStream::connect(("127.0.0.1", prom_port)).ok()?;
        let r = http_get(prom_port, q);
        r.contains("\"value\"").then_some(r)
    });
    let _ = prom.kill();
    let _ = prom.wait();
    assert!(answer.contains("\"status\":\"success\""), "{answer}");
    assert!(answer.contains(",\"1\"]"), "one succeeded backup: {answer}");
    assert!(answer.contains("\"kind\":\"backup\""), "{answer}");
}
