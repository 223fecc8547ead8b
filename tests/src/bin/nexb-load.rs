//! Load generator (a benchmark command, not a test): N simulated agents, each enrolled
//! over the real enrollment RPC with its own key and certificate, each holding a mutual
//! TLS session with heartbeats carrying host health, spread over two controller replicas
//! that share a PostgreSQL catalog and a store. While they run it measures the latency
//! of admin queries (`status`, `snapshots`, `rpo`, `jobs`) against both replicas, and
//! each controller's RSS and CPU.
//!
//! `cargo run --release -p nex-backup-tests --bin nexb-load -- [AGENTS] [SECONDS]`
//! (default 1000 agents, 60 s). Prints a markdown table for `docs/benchmarks.md`.

use std::time::{Duration, Instant};

use nex_backup_shared::pb::{
    self, admin_service_client::AdminServiceClient, agent_service_client::AgentServiceClient,
    enroll_service_client::EnrollServiceClient,
};
use nex_backup_shared::tls::{channel, client_config, parse_fingerprint};
use nex_backup_tests::fleet::{real_agent, replica_args};
use nex_backup_tests::pg::PgCluster;
use nex_backup_tests::procs::{Agent, Controller};
use nex_backup_tests::sample::invoices_sql;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tonic::transport::Channel;

/// One replica as a client sees it.
struct Replica {
    url: String,
    fingerprint: String,
    token: String,
    pid: u32,
}

impl Replica {
    fn of(c: &Controller) -> Replica {
        Replica {
            url: c.url(),
            fingerprint: c.fingerprint.clone(),
            token: std::fs::read_to_string(c.data_dir.join("admin.token"))
                .unwrap()
                .trim()
                .to_string(),
            pid: c.pid(),
        }
    }

    fn channel(
        &self,
        id: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    ) -> Channel {
        let tls = client_config(parse_fingerprint(&self.fingerprint).unwrap(), id).unwrap();
        channel(&self.url, tls).unwrap()
    }

    fn req<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", self.token).parse().unwrap(),
        );
        r
    }
}

/// Enroll agent `n` through `r` with a token made by `admin` (replica A); its TLS identity.
async fn enroll(
    r: &Replica,
    a: &Replica,
    admin: &mut AdminServiceClient<Channel>,
    site: &str,
    n: usize,
) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let token = admin
        .create_token(a.req(pb::CreateTokenRequest {
            site: site.into(),
            ttl_secs: 3600,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .token;
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap();
    let resp = EnrollServiceClient::new(r.channel(None))
        .enroll(pb::EnrollRequest {
            token,
            csr_der: csr.der().to_vec(),
            agent_id: format!("load-{n:05}"),
            version: "load".into(),
        })
        .await
        .unwrap()
        .into_inner();
    (
        resp.chain_der
            .into_iter()
            .map(CertificateDer::from)
            .collect(),
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
}

fn health() -> pb::HostHealth {
    pb::HostHealth {
        cpu_load_1m: 0.4,
        cpus: 4,
        mem_total_bytes: 8 << 30,
        mem_used_bytes: 3 << 30,
        os: "Windows Server 2022 (simulated)".into(),
        agent_unix_ms: nex_backup_shared::clock::now_ms(),
        ..Default::default()
    }
}

/// Hold a session with heartbeats every `every` until `stop`.
async fn agent_session(
    r: &Replica,
    id: (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
    site: String,
    n: usize,
    every: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    // The controller admits a few pending handshakes per source address (all of these
    // come from 127.0.0.1): a refused one is tried again, as a real agent does.
    let mut attempt = 0u32;
    let (tx, resp) = loop {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let hello = pb::AgentMessage {
            msg: Some(pb::agent_message::Msg::Hello(pb::Hello {
                site: site.clone(),
                agent_id: format!("load-{n:05}"),
                version: "load".into(),
                targets: vec![pb::TargetInfo {
                    name: "erp".into(),
                    kind: "postgres".into(),
                }],
                known_jobs: vec![],
            })),
        };
        tx.send(hello).await.unwrap();
        let (chain, key) = &id;
        let mut client = AgentServiceClient::new(r.channel(Some((chain.clone(), key.clone_key()))));
        match client
            .session(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
        {
            Ok(resp) => break (tx, resp),
            Err(e) if attempt < 30 => {
                attempt += 1;
                let wait = 100 + (n as u64 * 37 + u64::from(attempt) * 91) % 400;
                tokio::time::sleep(Duration::from_millis(wait)).await;
                let _ = e;
            }
            Err(e) => {
                eprintln!("agent {n}: session refused: {}", e.message());
                return;
            }
        }
    };
    let mut inbound = resp.into_inner();
    tokio::spawn(async move { while let Ok(Some(_)) = inbound.message().await {} });
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let hb = pb::AgentMessage {
            msg: Some(pb::agent_message::Msg::Heartbeat(pb::Heartbeat {
                unix_ms: nex_backup_shared::clock::now_ms(),
                health: Some(health()),
            })),
        };
        if tx.send(hb).await.is_err() {
            return;
        }
    }
}

/// RSS (KiB) and CPU ticks of a process.
fn proc_stats(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = fields
        .get(11)
        .and_then(|u| u.parse::<u64>().ok())
        .unwrap_or(0)
        + fields
            .get(12)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0);
    (rss, ticks)
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Real `nex-backup-agent` processes (sites `bk-N`, target `erp`: a 20,000-row
/// database on their own cluster), each configured with both replicas, enrolled
/// through replica A.
fn real_agents(
    n: usize,
    a: &Controller,
    b: &Controller,
    pg: &PgCluster,
    dir: &std::path::Path,
) -> Vec<Agent> {
    pg.psql("postgres", "CREATE DATABASE invoices");
    pg.psql("invoices", &invoices_sql(20_000));
    (0..n)
        .map(|i| {
            let (first, second) = if i % 2 == 0 { (a, b) } else { (b, a) };
            let urls = format!("{}, {}", first.url(), second.url());
            real_agent(a, &urls, &format!("bk-{i}"), pg, "invoices", dir)
        })
        .collect()
}

/// `nex-backup backup` of the real agents in turn, every `every`, alternating
/// replicas, until `until`: (succeeded, failed, durations in s).
async fn backup_loop(
    clis: [(std::path::PathBuf, String); 2],
    agents: usize,
    every: Duration,
    until: Instant,
) -> (usize, usize, Vec<f64>) {
    let (mut ok, mut failed, mut took) = (0, 0, vec![]);
    let mut i = 0usize;
    while Instant::now() + every < until {
        tokio::time::sleep(every).await;
        let (config, url) = clis[i % 2].clone();
        let site = format!("bk-{}", i % agents);
        let t = Instant::now();
        let out = tokio::task::spawn_blocking(move || {
            nex_backup_tests::procs::cli(
                &config,
                &url,
                &["backup", "--site", &site, "--target", "erp", "--json"],
            )
        })
        .await
        .unwrap();
        if out.ok {
            ok += 1;
            took.push(t.elapsed().as_secs_f64());
        } else {
            failed += 1;
            eprintln!("backup {i} failed: {}", out.stderr.trim());
        }
        i += 1;
    }
    (ok, failed, took)
}

/// Admin queries in a loop against both replicas; latencies in ms per query kind.
/// A failed query is counted, not timed.
async fn query_loop(rs: &[Replica], until: Instant) -> Vec<(&'static str, Vec<f64>, usize)> {
    let mut out: Vec<(&'static str, Vec<f64>, usize)> = ["status", "snapshots", "rpo", "jobs"]
        .iter()
        .map(|k| (*k, vec![], 0))
        .collect();
    let mut i = 0usize;
    while Instant::now() < until {
        let r = &rs[i % rs.len()];
        let mut admin = AdminServiceClient::new(r.channel(None));
        let kind = i % 4;
        let t = Instant::now();
        let ok = match kind {
            0 => admin.status(r.req(pb::StatusRequest {})).await.is_ok(),
            1 => admin
                .list_snapshots(r.req(pb::ListSnapshotsRequest {
                    site: "load-0".into(),
                    ..Default::default()
                }))
                .await
                .is_ok(),
            2 => admin
                .rpo(r.req(pb::RpoRequest {
                    site: "load-0".into(),
                    ..Default::default()
                }))
                .await
                .is_ok(),
            _ => admin
                .list_jobs(r.req(pb::ListJobsRequest {
                    site: "load-0".into(),
                    ..Default::default()
                }))
                .await
                .is_ok(),
        };
        if ok {
            out[kind].1.push(t.elapsed().as_secs_f64() * 1000.0);
        } else {
            out[kind].2 += 1;
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    out
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let agents: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let secs: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(60);
    let pg = PgCluster::start();
    let catalog = pg.create_catalog("nexload");
    let dir = tempfile::Builder::new()
        .prefix("nexload")
        .tempdir()
        .unwrap();
    let store = format!("file://{}", dir.path().join("blobs").display());
    let serve_args = replica_args(dir.path(), &catalog, &store);
    let a = Controller::start(
        &dir.path().join("a"),
        0,
        &dir.path().join("a.log"),
        &serve_args,
    );
    let b = Controller::start(
        &dir.path().join("b"),
        0,
        &dir.path().join("b.log"),
        &serve_args,
    );
    let rs = [Replica::of(&a), Replica::of(&b)];
    let before = [proc_stats(rs[0].pid), proc_stats(rs[1].pid)];
    eprintln!("enrolling {agents} agents over 100 sites");
    let t = Instant::now();
    let mut ids = Vec::with_capacity(agents);
    let mut admin = AdminServiceClient::new(rs[0].channel(None));
    for n in 0..agents {
        let site = format!("load-{}", n % 100);
        ids.push((
            site.clone(),
            enroll(&rs[n % 2], &rs[0], &mut admin, &site, n).await,
        ));
    }
    let enroll_s = t.elapsed().as_secs_f64();
    // The real agents enroll before 1,000 sessions crowd the handshakes from 127.0.0.1.
    let data_pg = PgCluster::start();
    let real = real_agents(4, &a, &b, &data_pg, dir.path());
    let stop = tokio_util::sync::CancellationToken::new();
    let every = Duration::from_secs(10);
    for (n, (site, id)) in ids.into_iter().enumerate() {
        let r = Replica {
            url: rs[n % 2].url.clone(),
            fingerprint: rs[n % 2].fingerprint.clone(),
            token: String::new(),
            pid: 0,
        };
        let stop = stop.clone();
        tokio::spawn(async move { agent_session(&r, id, site, n, every, stop).await });
    }
    tokio::time::sleep(Duration::from_secs(15)).await; // sessions open, first heartbeats
    let online = |st: pb::StatusResponse| {
        st.sites
            .iter()
            .filter(|s| s.online && s.agent_id.starts_with("load-"))
            .count()
    };
    let seen: Vec<usize> = futures::future::join_all(rs.iter().map(|r| async {
        let mut admin = AdminServiceClient::new(r.channel(None));
        online(
            admin
                .status(r.req(pb::StatusRequest {}))
                .await
                .unwrap()
                .into_inner(),
        )
    }))
    .await;
    let t0 = [proc_stats(rs[0].pid), proc_stats(rs[1].pid)];
    let w = Instant::now();
    let until = Instant::now() + Duration::from_secs(secs);
    let clis = [(a.cli_config(), a.url()), (b.cli_config(), b.url())];
    let (mut lat, (bk_ok, bk_failed, mut bk_took)) = tokio::join!(
        query_loop(&rs, until),
        backup_loop(clis, real.len(), Duration::from_secs(5), until)
    );
    let wall = w.elapsed().as_secs_f64();
    let t1 = [proc_stats(rs[0].pid), proc_stats(rs[1].pid)];
    stop.cancel();
    let hz = 100.0;
    println!(
        "| {agents} agents, 2 replicas, heartbeat every {}s, {secs} s | p50 ms | p99 ms | n | failed |",
        every.as_secs()
    );
    println!("|---|---|---|---|---|");
    for (k, v, failed) in lat.iter_mut() {
        if v.is_empty() {
            println!("| {k} | - | - | 0 | {failed} |");
            continue;
        }
        let n = v.len();
        println!(
            "| {k} | {:.1} | {:.1} | {n} | {failed} |",
            pct(v, 0.5),
            pct(v, 0.99)
        );
    }
    for (i, name) in ["A", "B"].iter().enumerate() {
        let cpu = (t1[i].1 - t0[i].1) as f64 / hz / wall;
        println!(
            "| replica {name}: RSS {:.0} MiB (idle before agents: {:.0} MiB), CPU {:.2} cores while loaded | | | | |",
            t1[i].0 as f64 / 1024.0,
            before[i].0 as f64 / 1024.0,
            cpu
        );
    }
    println!("| enrollment of {agents} agents: {enroll_s:.1} s | | | | |");
    println!(
        "| sessions online when the run started, as replica A / B report: {} / {} of {agents} | | | | |",
        seen[0], seen[1]
    );
    let bk_median = if bk_took.is_empty() {
        0.0
    } else {
        pct(&mut bk_took, 0.5)
    };
    println!(
        "| deduplicated backups by 4 real agents during the run: {bk_ok} ok, {bk_failed} failed, median {bk_median:.1} s | | | | |"
    );
    drop(real);
}
