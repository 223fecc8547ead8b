//! Attacks on the trust boundary, against an in-process controller over real mutual TLS.
//! Each is refused with a clear status, logged, and stores nothing.

use nex_backup_shared::chunk::ChunkCodec;
use nex_backup_shared::keys::MasterKey;
use nex_backup_shared::pb;
use nex_backup_shared::recovery::{RecoverySecret, seal_master_key};
use nex_backup_shared::tls::{channel, client_config};
use nex_backup_tests::fake_agent::{FakeAgent, commit_request, dispatch_backup};
use nex_backup_tests::inproc::{self, Identity, InProc};
use tonic::Code;

use nex_backup_tests::logcap::assert_logged;

async fn setup() -> (InProc, Identity, Identity) {
    nex_backup_tests::logcap::install();
    let s = inproc::start().await;
    let a = s.enroll("acme", "a1").await;
    let b = s.enroll("other", "b1").await;
    (s, a, b)
}

async fn agent_count(s: &InProc) -> usize {
    s.admin()
        .list_agents(s.admin_request(pb::ListAgentsRequest {}))
        .await
        .unwrap()
        .into_inner()
        .agents
        .len()
}

#[tokio::test]
async fn another_sites_data_is_denied_without_revealing_it() {
    let (s, a, b) = setup().await;
    let key = MasterKey::generate();
    s.register_key(&a, 1, &key).await;
    let codec = ChunkCodec::new(key.derive(), 3);
    let chunk = codec.encode(b"acme's private chunk");
    a_put(&s, &a, &chunk).await;
    let mut evil = s.agent(&b);
    for site in ["acme", "ghost"] {
        let e = evil
            .find_missing(pb::FindMissingRequest {
                site: site.into(),
                ids: vec![chunk.id.0.to_vec()],
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{site}");
        assert_eq!(
            e.message(),
            "not permitted: an agent may only use its own site"
        );
        let e = evil
            .get_chunks(pb::GetChunksRequest {
                site: site.into(),
                ids: vec![chunk.id.0.to_vec()],
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);
        let e = evil
            .get_manifest(pb::GetManifestRequest {
                site: site.into(),
                snapshot_id: "20250101T000000Z-0000abcd".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);
        let e = evil
            .get_sealed_keys(pb::GetSealedKeysRequest { site: site.into() })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);
    }
    let e = evil
        .put_chunks(tokio_stream::iter(vec![pb::PutChunkRequest {
            site: "acme".into(),
            snapshot_id: String::new(),
            id: chunk.id.0.to_vec(),
            blob: chunk.blob.clone(),
        }]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert_logged("agent asked about another site; refused");
    s.shutdown().await;
}

async fn a_put(s: &InProc, a: &Identity, chunk: &nex_backup_shared::chunk::SealedChunk) {
    s.agent(a)
        .put_chunks(tokio_stream::iter(vec![pb::PutChunkRequest {
            site: "acme".into(),
            snapshot_id: String::new(),
            id: chunk.id.0.to_vec(),
            blob: chunk.blob.clone(),
        }]))
        .await
        .unwrap();
}

#[tokio::test]
async fn commit_referencing_only_another_sites_chunks_is_refused() {
    let (s, a, b) = setup().await;
    let (key_a, key_b) = (MasterKey::generate(), MasterKey::generate());
    s.register_key(&a, 1, &key_a).await;
    s.register_key(&b, 1, &key_b).await;
    let codec = ChunkCodec::new(key_a.derive(), 3);
    let chunk = codec.encode(b"uploaded by acme only");
    a_put(&s, &a, &chunk).await;
    let keys = key_b.derive();
    // Even as the result of a real job of its own, site other cannot commit acme's chunks.
    let mut agent_b = FakeAgent::connect(&s, &b, &["main"], "test").await;
    let d = dispatch_backup(&s, &mut agent_b, "main").await;
    let snapshot_id = d.snapshot_id.clone();
    let manifest = nex_backup_shared::manifest::Manifest {
        site: "other".into(),
        target: "main".into(),
        snapshot_id: snapshot_id.clone(),
        created_unix_ms: 1,
        streams: vec![],
        row_counts: vec![],
        row_counts_from_dump: false,
        source: Default::default(),
        duration_ms: 1,
        files: vec![],
    };
    let commit = commit_request("other", &d, manifest.seal(&keys), &[&chunk], 100);
    let e = s
        .agent(&b)
        .commit_snapshot(commit.clone())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("not stored"), "{}", e.message());

    // A manifest sealed with acme's key, committed by site other: refused by key id.
    let e = s
        .agent(&b)
        .commit_snapshot(pb::CommitSnapshotRequest {
            manifest: manifest.seal(&key_a.derive()),
            ..commit
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("not a registered key of site other"),
        "{}",
        e.message()
    );
    assert_logged("object sealed with a key the site has not registered; refused");
    let e = s
        .agent(&b)
        .get_manifest(pb::GetManifestRequest {
            site: "other".into(),
            snapshot_id,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "nothing committed");
    s.shutdown().await;
}

#[tokio::test]
async fn replayed_expired_and_unknown_tokens_are_refused() {
    let (s, _, _) = setup().await;
    let before = agent_count(&s).await;
    let token = s.token("acme", 600).await;
    s.enroll_with(&token, "c1").await.unwrap();
    let e = s.enroll_with(&token, "c2").await.err().unwrap();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert_eq!(e.message(), "enrollment token was already used");
    assert_logged("replayed enrollment token");

    let short = s.token("acme", 1).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let e = s.enroll_with(&short, "c3").await.err().unwrap();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert_eq!(e.message(), "enrollment token has expired");
    assert_logged("expired enrollment token");

    let e = s
        .enroll_with("nexb-enroll-made-up", "c4")
        .await
        .err()
        .unwrap();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert_eq!(e.message(), "enrollment token is not valid");
    assert_logged("reason=\"unknown token\"");
    assert_eq!(agent_count(&s).await, before + 1, "only c1 enrolled");
    s.shutdown().await;
}

#[tokio::test]
async fn a_revoked_agent_is_cut_off_at_once() {
    let (s, a, _) = setup().await;
    let mut client = s.agent(&a);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::Hello(pb::Hello {
            site: "acme".into(),
            agent_id: "a1".into(),
            version: "t".into(),
            targets: vec![],
            known_jobs: vec![],
        })),
    })
    .await
    .unwrap();
    let mut session = client
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let welcome = session.message().await.unwrap().unwrap();
    assert!(matches!(
        welcome.msg,
        Some(pb::controller_message::Msg::Welcome(_))
    ));
    s.admin()
        .revoke_agent(s.admin_request(pb::RevokeAgentRequest {
            site: String::new(),
            agent_id: "a1".into(),
        }))
        .await
        .unwrap();
    let end = tokio::time::timeout(std::time::Duration::from_secs(10), session.message())
        .await
        .expect("session cut");
    assert!(!matches!(end, Ok(Some(_))), "session still delivering");
    let e = client
        .find_missing(pb::FindMissingRequest {
            site: "acme".into(),
            ids: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("revoked"), "{}", e.message());
    let e = client
        .renew_certificate(pb::RenewRequest { csr_der: vec![] })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert_logged("agent revoked");
    assert_logged("agent certificate revoked or superseded; call refused");
    drop(tx);
    s.shutdown().await;
}

/// A certificate for the same identity from a CA the controller never saw.
fn foreign_identity(like: &Identity) -> Identity {
    use rcgen::{CertificateParams, IsCa, Issuer, KeyPair, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    p.subject_alt_names = vec![SanType::URI(
        format!("urn:nexb:agent:{}:{}", like.site, like.agent_id)
            .try_into()
            .unwrap(),
    )];
    let cert = p.signed_by(&key, &issuer).unwrap();
    Identity {
        site: like.site.clone(),
        agent_id: like.agent_id.clone(),
        key_der: key.serialize_der(),
        chain_der: vec![cert.der().to_vec(), ca_cert.der().to_vec()],
    }
}

#[tokio::test]
async fn foreign_tampered_and_missing_client_certificates_are_refused() {
    let (s, a, _) = setup().await;
    let req = || pb::FindMissingRequest {
        site: "acme".into(),
        ids: vec![],
    };
    // TLS 1.3: the client learns of the rejection on its first read, as an alert.
    let refused = |e: &tonic::Status, alert: &str| {
        assert!(
            matches!(e.code(), Code::Unavailable | Code::Unknown),
            "{e:?}"
        );
        assert!(format!("{e:?}").contains(alert), "{e:?}");
    };
    let e = s
        .agent(&foreign_identity(&a))
        .find_missing(req())
        .await
        .unwrap_err();
    refused(&e, "UnknownCA");

    let mut tampered = Identity {
        chain_der: a.chain_der.clone(),
        key_der: a.key_der.clone(),
        site: "other".into(),
        agent_id: a.agent_id.clone(),
    };
    let leaf = &mut tampered.chain_der[0];
    let at = leaf
        .windows(20)
        .position(|w| w == b"urn:nexb:agent:acme:")
        .expect("identity URI in certificate");
    leaf[at + 15..at + 19].copy_from_slice(b"evil");
    let e = s.agent(&tampered).find_missing(req()).await.unwrap_err();
    refused(&e, "alert");
    assert_logged("TLS connection refused");

    let e = nex_backup_shared::pb::agent_service_client::AgentServiceClient::new(s.channel(None))
        .find_missing(req())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(
        e.message().contains("client certificate"),
        "{}",
        e.message()
    );

    let plain = tonic::transport::Channel::from_shared(format!("http://{}", s.addr))
        .unwrap()
        .connect_lazy();
    let e = nex_backup_shared::pb::agent_service_client::AgentServiceClient::new(plain)
        .find_missing(req())
        .await
        .unwrap_err();
    assert!(
        matches!(e.code(), Code::Unavailable | Code::Unknown | Code::Internal),
        "{e:?}"
    );

    let wrong_pin = client_config([7; 32], Some(a.tls_identity())).unwrap();
    let e = nex_backup_shared::pb::agent_service_client::AgentServiceClient::new(
        channel(&s.url(), wrong_pin).unwrap(),
    )
    .find_missing(req())
    .await
    .unwrap_err();
    assert_eq!(
        e.code(),
        Code::Unavailable,
        "a controller not matching the pin"
    );
    s.shutdown().await;
}

#[tokio::test]
async fn admin_calls_need_the_credential() {
    let (s, _, _) = setup().await;
    let e = s
        .admin()
        .list_agents(pb::ListAgentsRequest {})
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let mut r = tonic::Request::new(pb::CreateTokenRequest {
        site: "acme".into(),
        ttl_secs: 60,
        ..Default::default()
    });
    r.metadata_mut()
        .insert("authorization", "Bearer nexb-admin-guess".parse().unwrap());
    let e = s.admin().create_token(r).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert_eq!(e.message(), "admin credential rejected");
    assert_logged("admin call with a wrong or revoked credential refused");
    assert_logged("admin call without credential refused");
    s.shutdown().await;
}

#[derive(Clone, PartialEq, prost::Message)]
struct WrongWireType {
    /// Field 2 of FindMissingRequest is `repeated bytes`; send it as a varint.
    #[prost(uint64, tag = "2")]
    ids: u64,
}

#[tokio::test]
async fn malformed_protobuf_and_oversized_messages_are_refused() {
    let (s, a, _) = setup().await;
    let mut grpc = tonic::client::Grpc::new(s.channel(Some(&a)));
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<WrongWireType, pb::FindMissingResponse>::default();
    let e = grpc
        .unary(
            tonic::Request::new(WrongWireType { ids: 5 }),
            tonic::codegen::http::uri::PathAndQuery::from_static(
                "/nexbackup.v1.AgentService/FindMissing",
            ),
            codec,
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Internal, "{e:?}");
    assert!(e.message().contains("decode"), "{}", e.message());

    // Enrollment takes no client certificate, so its limit is small (1 MiB).
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap();
    let e = pb::enroll_service_client::EnrollServiceClient::new(s.channel(None))
        .enroll(pb::EnrollRequest {
            token: "x".into(),
            csr_der: [csr.der().to_vec(), vec![0; 2 << 20]].concat(),
            agent_id: "big".into(),
            version: "t".into(),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(e.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{e:?}"
    );
    s.shutdown().await;
}

#[tokio::test]
async fn sealed_keys_are_validated_and_append_only() {
    let (s, a, _) = setup().await;
    let mut client = s.agent(&a);
    let key = MasterKey::generate();
    let good = seal_master_key("acme", 1, &key, &s.recovery.public());
    let mut bad_header = good.clone();
    bad_header[0] ^= 1;
    let stranger = seal_master_key("acme", 1, &key, &RecoverySecret::generate().public());
    let other_key = seal_master_key("acme", 1, &MasterKey::generate(), &s.recovery.public());
    for (blob, code, what) in [
        (bad_header, Code::InvalidArgument, "bad magic"),
        (stranger, Code::InvalidArgument, "not a recovery key"),
        (vec![1, 2, 3], Code::InvalidArgument, "bytes, expected"),
    ] {
        let e = client
            .put_sealed_keys(pb::PutSealedKeysRequest {
                site: "acme".into(),
                sealed: vec![good.clone(), blob],
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), code);
        assert!(e.message().contains(what), "{}", e.message());
    }
    let sealed = |c: &mut pb::agent_service_client::AgentServiceClient<_>| {
        let mut c = c.clone();
        async move {
            c.get_sealed_keys(pb::GetSealedKeysRequest {
                site: "acme".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .sealed
        }
    };
    assert!(sealed(&mut client).await.is_empty(), "nothing half-stored");
    client
        .put_sealed_keys(pb::PutSealedKeysRequest {
            site: "acme".into(),
            sealed: vec![good.clone()],
        })
        .await
        .unwrap();
    let e = client
        .put_sealed_keys(pb::PutSealedKeysRequest {
            site: "acme".into(),
            sealed: vec![other_key],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "epoch 1 cannot be replaced");
    assert_logged("sealed key refused");
    assert_eq!(sealed(&mut client).await, vec![good]);
    s.shutdown().await;
}

#[tokio::test]
async fn certificates_renew_and_the_old_one_cannot_renew_again() {
    nex_backup_tests::logcap::install();
    let s =
        inproc::start_with(|c| c.agent_cert_lifetime = std::time::Duration::from_secs(600)).await;
    let a = s.enroll("acme", "a1").await;
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap()
        .der()
        .to_vec();
    let renewed = s
        .agent(&a)
        .renew_certificate(pb::RenewRequest {
            csr_der: csr.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let new_id = Identity {
        site: a.site.clone(),
        agent_id: a.agent_id.clone(),
        key_der: key.serialize_der(),
        chain_der: renewed.chain_der,
    };
    s.agent(&new_id)
        .find_missing(pb::FindMissingRequest {
            site: "acme".into(),
            ids: vec![],
        })
        .await
        .unwrap();
    let e = s
        .agent(&a)
        .renew_certificate(pb::RenewRequest { csr_der: csr })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert_logged("agent certificate renewed");
    s.shutdown().await;
}

#[tokio::test]
async fn operator_provided_server_certificates_work_and_are_pinned_by_their_root() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let dir = tempfile::tempdir().unwrap();
    let root_key = KeyPair::generate().unwrap();
    let mut root = CertificateParams::default();
    root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let root_cert = root.self_signed(&root_key).unwrap();
    let issuer = Issuer::new(root, root_key);
    let key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let (cert_file, key_file) = (dir.path().join("chain.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_file, format!("{}{}", server.pem(), root_cert.pem())).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    let (c, k) = (cert_file.clone(), key_file.clone());
    let s = inproc::start_with(move |cfg| {
        cfg.tls = nex_backup::pki::ServerCertSource {
            names: vec![],
            cert_file: Some(c),
            key_file: Some(k),
        };
    })
    .await;
    let root_fp = nex_backup_shared::tls::fingerprint(root_cert.der());
    assert_eq!(s.fingerprint, root_fp);
    let a = s.enroll("acme", "a1").await;
    s.agent(&a)
        .find_missing(pb::FindMissingRequest {
            site: "acme".into(),
            ids: vec![],
        })
        .await
        .unwrap();
    let shown = nex_backup::pki::Pki::show(
        &s.data_dir(),
        &nex_backup::pki::ServerCertSource {
            names: vec![],
            cert_file: Some(cert_file),
            key_file: None,
        },
    )
    .unwrap();
    assert_eq!(
        shown, root_fp,
        "`ca show --tls-cert` prints the pinned root"
    );
    s.shutdown().await;
}
