//! The attacker holds one site's agent certificate and key (a compromised customer host)
//! and talks to the controller with a raw gRPC client. Whatever it sends, the site's real
//! backups survive: junk commits are refused, made-up job ids create nothing, free text
//! cannot forge log lines or grow records, handshake floods from one address do not
//! starve other agents, and a taken agent id cannot be enrolled over.

use std::time::Duration;

use nex_backup_shared::chunk::ChunkCodec;
use nex_backup_shared::keys::MasterKey;
use nex_backup_shared::pb::{self, job_event::Event};
use nex_backup_tests::fake_agent::{FakeAgent, commit_request, dispatch_backup};
use nex_backup_tests::inproc::{self, Identity, InProc};
use tonic::Code;

use nex_backup_tests::logcap::text as log_text;

/// Site acme with one real snapshot committed by a dispatched job.
struct Site {
    s: InProc,
    id: Identity,
    agent: FakeAgent,
    keys: nex_backup_shared::keys::SiteKeys,
    real: String,
}

async fn site() -> Site {
    nex_backup_tests::logcap::install();
    let s = inproc::start().await;
    let id = s.enroll("acme", "a1").await;
    let key = MasterKey::generate();
    s.register_key(&id, 1, &key).await;
    let keys = key.derive();
    let mut agent = FakeAgent::connect(&s, &id, &["main"], "1.0").await;
    let codec = ChunkCodec::new(keys.clone(), 3);
    let chunk = codec.encode(&vec![7u8; 4096]);
    s.put(&id, "acme", &[&chunk]).await.unwrap();
    let d = dispatch_backup(&s, &mut agent, "main").await;
    let m = nex_backup_tests::sample::empty_manifest(&d.snapshot_id);
    s.agent(&id)
        .commit_snapshot(commit_request("acme", &d, m.seal(&keys), &[&chunk], 4096))
        .await
        .unwrap();
    Site {
        s,
        id,
        agent,
        keys,
        real: d.snapshot_id,
    }
}

/// Whether `id` may still read snapshot `snap` of acme.
async fn reads(s: &InProc, id: &Identity, snap: &str) -> Result<(), tonic::Status> {
    s.agent(id)
        .get_manifest(pb::GetManifestRequest {
            site: "acme".into(),
            snapshot_id: snap.into(),
        })
        .await
        .map(|_| ())
}

async fn snapshots(s: &InProc) -> Vec<pb::SnapshotInfo> {
    s.admin()
        .list_snapshots(s.admin_request(pb::ListSnapshotsRequest {
            site: "acme".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .snapshots
}

/// The attack from the field: commit junk snapshots dated in the future with no job
/// behind them (sealed with the site's real key, over a chunk really stored). Every one is
/// refused, and rotation afterwards deletes nothing real.
#[tokio::test]
async fn junk_commits_without_a_dispatched_job_are_refused_and_rotation_keeps_the_real_backup() {
    let st = site().await;
    let mut client = st.s.agent(&st.id);
    // The attacker is on the agent's host: it has the site keys and can seal a perfect
    // manifest over chunks that really are stored. Only the job is missing.
    let codec = ChunkCodec::new(st.keys.clone(), 3);
    let stored = codec.encode(&vec![7u8; 4096]);
    for day in 0..14u64 {
        let t = 1_830_000_000_000 + day * 86_400_000; // 2028
        let snapshot_id = nex_backup_shared::ids::new_snapshot_id(t);
        let m = nex_backup_tests::sample::empty_manifest(&snapshot_id);
        let e = client
            .commit_snapshot(pb::CommitSnapshotRequest {
                site: "acme".into(),
                target: "main".into(),
                snapshot_id,
                job_id: format!("job-made-up-{day}"),
                manifest: m.seal(&st.keys),
                chunk_ids: vec![stored.id.0.to_vec()],
                logical_bytes: 4096,
                started_unix_ms: t,
                duration_ms: 1,
                chunk_refs: 1,
                streams: 1,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "day {day}: {e:?}");
        assert!(e.message().contains("no such job"), "{}", e.message());
    }
    // An empty chunk list is refused whatever the job.
    let m = nex_backup_tests::sample::empty_manifest(&st.real);
    let e = client
        .commit_snapshot(pb::CommitSnapshotRequest {
            site: "acme".into(),
            target: "main".into(),
            snapshot_id: st.real.clone(),
            job_id: "job-x".into(),
            manifest: m.seal(&st.keys),
            chunk_ids: vec![],
            logical_bytes: 1,
            started_unix_ms: 1,
            duration_ms: 1,
            chunk_refs: 0,
            streams: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    // With a real job id but its own snapshot id, or a second commit for a settled job:
    let codec = ChunkCodec::new(st.keys.clone(), 3);
    let chunk = codec.encode(&vec![9u8; 4096]);
    st.s.put(&st.id, "acme", &[&chunk]).await.unwrap();
    let mut agent = st.agent;
    let d = dispatch_backup(&st.s, &mut agent, "main").await;
    let mut other = d.clone();
    other.snapshot_id = nex_backup_shared::ids::new_snapshot_id(1_830_000_000_000);
    let m = nex_backup_tests::sample::empty_manifest(&other.snapshot_id);
    let e = client
        .commit_snapshot(commit_request(
            "acme",
            &other,
            m.seal(&st.keys),
            &[&chunk],
            4096,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(
        e.message().contains("another snapshot id"),
        "{}",
        e.message()
    );
    let m = nex_backup_tests::sample::empty_manifest(&d.snapshot_id);
    let ok = commit_request("acme", &d, m.seal(&st.keys), &[&chunk], 4096);
    client.commit_snapshot(ok.clone()).await.unwrap();
    client
        .commit_snapshot(ok)
        .await
        .expect("a retried commit is a no-op");
    let d2 = pb::CommitSnapshotRequest {
        snapshot_id: nex_backup_shared::ids::new_snapshot_id(1_830_000_000_000),
        ..commit_request("acme", &d, vec![], &[&chunk], 4096)
    };
    let e = client.commit_snapshot(d2).await.unwrap_err();
    assert!(
        matches!(e.code(), Code::InvalidArgument | Code::PermissionDenied),
        "{e:?}"
    );
    // Only the two real snapshots exist, dated by the controller (not in 2028).
    let snaps = snapshots(&st.s).await;
    assert_eq!(snaps.len(), 2, "{snaps:?}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    for s in &snaps {
        assert!(
            s.created_unix_ms <= now,
            "a snapshot from the future: {s:?}"
        );
    }
    // Rotation deletes nothing (and could not: the retention lock holds them anyway).
    let plan =
        st.s.admin()
            .prune(st.s.admin_request(pb::PruneRequest {
                dry_run: true,
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
    assert_eq!(plan.deleted_snapshots, 0);
    assert!(log_text().contains("commit refused: not a dispatched job"));
    assert!(
        log_text()
            .lines()
            .any(|l| l.contains("commit refused: not a dispatched job") && l.contains("agent=a1")),
        "the refusal names the agent"
    );
    st.s.shutdown().await;
}

/// Results and progress for job ids the controller never issued create nothing and
/// keep nothing; a huge error text or a version with a newline is capped and escaped.
#[tokio::test]
async fn made_up_jobs_and_hostile_texts_are_dropped_or_defused() {
    let st = site().await;
    let before = list_jobs(&st.s).await;
    for i in 0..2000 {
        st.agent
            .send_event(
                &format!("job-fake-{i}"),
                Event::Progress(pb::JobProgress {
                    phase: "x".repeat(1000),
                    ..Default::default()
                }),
            )
            .await;
    }
    for i in 0..10 {
        st.agent
            .send_event(
                &format!("job-fake-result-{i}"),
                Event::Result(pb::JobResult {
                    error: "E".repeat(2 * 1024 * 1024),
                    ..Default::default()
                }),
            )
            .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = list_jobs(&st.s).await;
    assert_eq!(
        before.len(),
        after.len(),
        "no job record appears for a made-up id"
    );
    assert!(log_text().contains("event for a job not sent to this agent dropped"));
    // Its own jobs' results: huge error texts are capped, so listings stay whole.
    let mut agent = st.agent;
    for _ in 0..3 {
        let d = dispatch_backup(&st.s, &mut agent, "main").await;
        agent
            .send_event(
                &d.job_id,
                Event::Result(pb::JobResult {
                    error: "E".repeat(2 * 1024 * 1024),
                    ..Default::default()
                }),
            )
            .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let jobs = list_jobs(&st.s).await;
    assert_eq!(jobs.len(), before.len() + 3);
    for j in jobs
        .iter()
        .filter(|j| j.state == pb::JobStatus::Failed as i32)
    {
        assert!(j.error.len() < 5000, "error text capped: {}", j.error.len());
    }
    // And they page: one at a time, every job once.
    let (mut seen, mut token) = (vec![], String::new());
    loop {
        let r =
            st.s.admin()
                .list_jobs(st.s.admin_request(pb::ListJobsRequest {
                    limit: 1,
                    page_token: token,
                    ..Default::default()
                }))
                .await
                .unwrap()
                .into_inner();
        seen.extend(r.jobs.into_iter().map(|j| j.job_id));
        if r.next_page_token.is_empty() {
            break;
        }
        token = r.next_page_token;
    }
    assert_eq!(
        seen,
        jobs.iter().map(|j| j.job_id.clone()).collect::<Vec<_>>()
    );
    // A version with a newline cannot forge a log line; a long one is cut.
    let forged = "2.0\nINFO nex_backup: FORGED all backups verified";
    let _keep = agent;
    let id2 = st.s.enroll("acme", "a2").await;
    let _a2 = FakeAgent::connect(&st.s, &id2, &["main"], forged).await;
    let huge = "v".repeat(100_000);
    let id3 = st.s.enroll("acme", "a3").await;
    let _a3 = FakeAgent::connect(&st.s, &id3, &["main"], &huge).await;
    let text = log_text();
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("INFO nex_backup: FORGED")),
        "a forged log line"
    );
    assert!(text.contains("2.0\\nINFO"), "the newline is escaped");
    assert!(!text.contains(&huge[..1000]), "the long version is cut");
    st.s.shutdown().await;
}

async fn list_jobs(s: &InProc) -> Vec<pb::JobInfo> {
    s.admin()
        .list_jobs(s.admin_request(pb::ListJobsRequest {
            limit: 10_000,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .jobs
}

/// 300 idle TCP connections from one address (127.0.0.2) that never send a ClientHello
/// do not keep a real agent (from 127.0.0.1) out.
#[tokio::test]
async fn a_handshake_flood_from_one_address_does_not_starve_others() {
    let st = site().await;
    let mut idle = vec![];
    for _ in 0..300 {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        if let Ok(c) = sock.connect(st.s.addr).await {
            idle.push(c);
        }
    }
    assert!(idle.len() >= 200, "the flood connected");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = tokio::time::timeout(Duration::from_secs(5), reads(&st.s, &st.id, &st.real))
        .await
        .expect("the real agent is served during the flood");
    assert!(got.is_ok(), "{got:?}");
    assert!(log_text().contains("too many TLS handshakes in progress from this address"));
    drop(idle);
    st.s.shutdown().await;
}

/// A second token of the site cannot take over an enrolled agent's id; an operator's
/// token made for it can.
#[tokio::test]
async fn an_enrolled_agent_id_cannot_be_taken_over_without_the_operator() {
    let st = site().await;
    let token = st.s.token("acme", 600).await;
    let e = st.s.enroll_with(&token, "a1").await.err().unwrap();
    assert_eq!(e.code(), Code::AlreadyExists);
    assert!(
        e.message().contains("--replace-agent a1"),
        "{}",
        e.message()
    );
    // The real agent still works.
    reads(&st.s, &st.id, &st.real).await.unwrap();
    let replace =
        st.s.admin()
            .create_token(st.s.admin_request(pb::CreateTokenRequest {
                site: "acme".into(),
                ttl_secs: 600,
                replace_agent: "a1".into(),
            }))
            .await
            .unwrap()
            .into_inner()
            .token;
    let (new_id, _) = st.s.enroll_with(&replace, "a1").await.unwrap();
    // The old certificate is superseded, the new one works.
    let e =
        st.s.agent(&st.id)
            .get_manifest(pb::GetManifestRequest {
                site: "acme".into(),
                snapshot_id: st.real.clone(),
            })
            .await
            .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    st.s.agent(&new_id)
        .get_manifest(pb::GetManifestRequest {
            site: "acme".into(),
            snapshot_id: st.real.clone(),
        })
        .await
        .unwrap();
    st.s.shutdown().await;
}

/// The same attack on a real deployment: the attacker copies the running agent's
/// `identity.pem` and key ring off the customer host and commits junk through its own
/// client. Afterwards the real snapshot still restores and verifies, RPO is unaffected,
/// and prune deletes nothing; the controller's log names the agent.
#[test]
fn with_a_real_agents_stolen_files_the_real_backup_survives() {
    use nex_backup_tests::env::{AGENT_ID, Env, EnvOpts, SITE};
    let env = Env::start(
        &nex_backup_tests::sample::invoices_sql(3_000),
        EnvOpts::default(),
    );
    let real = env.backup_ok("main")["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    let state = env.agent_state_dir();
    let pem = std::fs::read(state.join("identity.pem")).unwrap();
    let certs = nex_backup_shared::tls::certs_from_pem("identity.pem", &pem).unwrap();
    let key = nex_backup_shared::tls::key_from_pem("identity.pem", &pem).unwrap();
    let ring = nex_backup_shared::keyring::KeyRing::load(&state.join("keyring"))
        .unwrap()
        .unwrap();
    let keys = ring.current().unwrap().1.derive();
    let tls = nex_backup_shared::tls::client_config(
        nex_backup_shared::tls::parse_fingerprint(&env.controller.fingerprint).unwrap(),
        Some((certs, key)),
    )
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ch = nex_backup_shared::tls::channel(&env.url(), tls).unwrap();
        let mut client = nex_backup_shared::pb::agent_service_client::AgentServiceClient::new(ch);
        let codec = ChunkCodec::new(keys.clone(), 3);
        let junk = codec.encode(&vec![1u8; 8192]);
        client
            .put_chunks(tokio_stream::iter(vec![pb::PutChunkRequest {
                site: SITE.into(),
                snapshot_id: String::new(),
                id: junk.id.0.to_vec(),
                blob: junk.blob.clone(),
            }]))
            .await
            .unwrap();
        for day in 0..14u64 {
            let t = 1_830_000_000_000 + day * 86_400_000;
            let snapshot_id = nex_backup_shared::ids::new_snapshot_id(t);
            let mut m = nex_backup_tests::sample::empty_manifest(&snapshot_id);
            m.site = SITE.into();
            let e = client
                .commit_snapshot(pb::CommitSnapshotRequest {
                    site: SITE.into(),
                    target: "main".into(),
                    snapshot_id,
                    job_id: format!("job-{day}"),
                    manifest: m.seal(&keys),
                    chunk_ids: vec![junk.id.0.to_vec()],
                    logical_bytes: 8192,
                    started_unix_ms: t,
                    duration_ms: 1,
                    chunk_refs: 1,
                    streams: 1,
                })
                .await
                .unwrap_err();
            assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        }
    });
    let snaps = env.snapshots("main");
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    assert_eq!(snaps[0]["snapshot_id"], real.as_str());
    let plan = env.cli(&["prune", "--dry-run", "--json"]).json();
    assert_eq!(plan["deleted_snapshots"], 0, "{plan}");
    let rpo = env.cli(&["rpo", "--json"]).json();
    assert_eq!(rpo["targets"][0]["state"], "OK", "{rpo}");
    let r = env.restore("main", "after_attack", &[]).json();
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["snapshot_id"], real.as_str());
    let log = std::fs::read_to_string(&env.controller.log).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("commit refused: not a dispatched job") && l.contains(AGENT_ID)),
        "the refusal names the agent"
    );
}

/// A certificate minted with the controller's own CA key (a stolen disk or backup of the
/// data dir) for a real agent's serial, but with the attacker's key, is refused.
#[tokio::test]
async fn a_certificate_minted_with_the_ca_key_for_a_real_serial_is_refused() {
    let st = site().await;
    let pki = st.s.data_dir().join("pki");
    let ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(pki.join("ca.key")).unwrap()).unwrap();
    let ca_pem = std::fs::read_to_string(pki.join("ca.crt")).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
    let real =
        nex_backup_shared::identity::AgentIdentity::from_cert_der(&st.id.chain_der[0]).unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.subject_alt_names = vec![rcgen::SanType::URI(
        nex_backup_shared::identity::AgentIdentity::uri("acme", "a1")
            .try_into()
            .unwrap(),
    )];
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    p.serial_number = Some(rcgen::SerialNumber::from_slice(&hex_bytes(&real.serial)));
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &issuer).unwrap();
    let minted = Identity {
        site: "acme".into(),
        agent_id: "a1".into(),
        key_der: key.serialize_der(),
        chain_der: vec![cert.der().to_vec(), st.id.chain_der[1].clone()],
    };
    let as_minted =
        nex_backup_shared::identity::AgentIdentity::from_cert_der(&minted.chain_der[0]).unwrap();
    assert_eq!(as_minted.serial, real.serial, "the same serial");
    let e = reads(&st.s, &minted, &st.real).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("enrolled key"), "{}", e.message());
    assert!(log_text().contains("certificate key differs from the enrolled key"));
    reads(&st.s, &st.id, &st.real).await.unwrap();
    st.s.shutdown().await;
}

fn hex_bytes(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// A connection opened while the certificate was valid is refused once it expires.
#[tokio::test]
async fn an_expired_certificate_is_refused_on_an_open_connection() {
    nex_backup_tests::logcap::install();
    let s = inproc::start_with(|c| c.agent_cert_lifetime = Duration::from_secs(4)).await;
    let id = s.enroll("acme", "a1").await;
    let mut client = s.agent(&id);
    let ask = || pb::GetSealedKeysRequest {
        site: "acme".into(),
    };
    client.get_sealed_keys(ask()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let e = client.get_sealed_keys(ask()).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("has expired"), "{}", e.message());
    s.shutdown().await;
}

/// Key epochs grow one at a time: an agent cannot register epoch 4 000 000 000, nor a
/// thousand epochs, to bloat the key list every upload is checked against.
#[tokio::test]
async fn key_epochs_grow_one_at_a_time() {
    let st = site().await;
    let seal = |epoch| {
        nex_backup_shared::recovery::seal_master_key(
            "acme",
            epoch,
            &MasterKey::generate(),
            &st.s.recovery.public(),
        )
    };
    let e =
        st.s.agent(&st.id)
            .put_sealed_keys(pb::PutSealedKeysRequest {
                site: "acme".into(),
                sealed: vec![seal(4_000_000_000)],
            })
            .await
            .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("the next epoch of site acme is 2"),
        "{}",
        e.message()
    );
    let ok =
        st.s.agent(&st.id)
            .put_sealed_keys(pb::PutSealedKeysRequest {
                site: "acme".into(),
                sealed: vec![seal(2), seal(3)],
            })
            .await
            .unwrap()
            .into_inner();
    assert_eq!(ok.stored, 2, "a rotation (and the next) are accepted");
    st.s.shutdown().await;
}

/// One agent holds one live session: each new session cuts the one before, so opening
/// sessions in a loop grows nothing on the controller.
#[tokio::test]
async fn a_new_session_of_an_agent_cuts_its_older_one() {
    let st = site().await;
    let mut older = FakeAgent::connect(&st.s, &st.id, &["main"], "1.0").await;
    let mut sessions = vec![];
    for _ in 0..20 {
        sessions.push(FakeAgent::connect(&st.s, &st.id, &["main"], "1.0").await);
    }
    assert!(older.ended_within(5).await, "the older session was cut");
    // ... on the controller too: its session task ended, it does not linger.
    nex_backup_tests::wait_for("the replaced sessions' tasks to end", 5, || {
        let cut = log_text()
            .matches("session cut (agent revoked, replaced by a newer session")
            .count();
        (cut >= 20).then_some(())
    });
    for s in sessions.iter_mut().take(19) {
        assert!(s.ended_within(5).await, "every replaced session ended");
    }
    // The newest one works: it receives the next command.
    let newest = sessions.last_mut().unwrap();
    let d = dispatch_backup(&st.s, newest, "main").await;
    assert!(!d.job_id.is_empty());
    st.s.shutdown().await;
}
