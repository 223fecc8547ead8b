//! The controller's gRPC edge, in process on port 0: malformed or hostile requests get a
//! clear status, never a panic, and nothing is stored.

use nex_backup_shared::chunk::ChunkCodec;
use nex_backup_shared::keys::MasterKey;
use nex_backup_shared::pb::{self, agent_service_client::AgentServiceClient};
use nex_backup_tests::fake_agent::{FakeAgent, commit_request, dispatch_backup};
use nex_backup_tests::inproc::InProc;
use tonic::Code;
use tonic::transport::Channel;

struct Server {
    client: AgentServiceClient<Channel>,
    inproc: InProc,
    id: nex_backup_tests::inproc::Identity,
}

/// A controller with agent `srv1` of site `acme`, whose keys `[5; 32]` (epoch 1) and
/// `[6; 32]` (epoch 2) are registered.
async fn start() -> Server {
    let inproc = nex_backup_tests::inproc::start().await;
    let id = inproc.enroll("acme", "srv1").await;
    inproc
        .register_key(&id, 1, &MasterKey::from_bytes([5; 32]))
        .await;
    inproc
        .register_key(&id, 2, &MasterKey::from_bytes([6; 32]))
        .await;
    Server {
        client: inproc.agent(&id),
        inproc,
        id,
    }
}

impl Server {
    async fn shutdown(self) {
        self.inproc.shutdown().await;
    }
}

fn put(site: &str, snapshot: &str, id: Vec<u8>, blob: Vec<u8>) -> pb::PutChunkRequest {
    pb::PutChunkRequest {
        site: site.into(),
        snapshot_id: snapshot.into(),
        id,
        blob,
    }
}

#[tokio::test]
async fn malformed_requests_get_clear_statuses() {
    let mut s = start().await;
    let codec = ChunkCodec::new(MasterKey::from_bytes([5; 32]).derive(), 3);
    let good = codec.encode(b"some chunk content");

    let e = s
        .client
        .find_missing(pb::FindMissingRequest {
            site: "acme".into(),
            ids: vec![vec![1, 2, 3]],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("chunk id"), "{}", e.message());

    let e = s
        .client
        .find_missing(pb::FindMissingRequest {
            site: "../etc".into(),
            ids: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("site"), "{}", e.message());

    let e = s
        .client
        .put_chunks(tokio_stream::iter(vec![put(
            "acme",
            "",
            good.id.0.to_vec(),
            b"garbage".to_vec(),
        )]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("bad magic"), "{}", e.message());

    let other = codec.encode(b"another chunk");
    let e = s
        .client
        .put_chunks(tokio_stream::iter(vec![put(
            "acme",
            "",
            good.id.0.to_vec(),
            other.blob.clone(),
        )]))
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        Code::InvalidArgument,
        "a blob stored under another chunk's name is refused"
    );

    let unregistered = ChunkCodec::new(MasterKey::from_bytes([7; 32]).derive(), 3);
    let foreign = unregistered.encode(b"sealed under a key acme never registered");
    let e = s
        .client
        .put_chunks(tokio_stream::iter(vec![put(
            "acme",
            "",
            foreign.id.0.to_vec(),
            foreign.blob.clone(),
        )]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("not a registered key of site acme"),
        "{}",
        e.message()
    );

    let huge = vec![0u8; nex_backup_shared::MAX_MESSAGE_BYTES + 1024];
    let e = s
        .client
        .put_chunks(tokio_stream::iter(vec![put(
            "acme",
            "",
            good.id.0.to_vec(),
            huge,
        )]))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e.code(),
            Code::OutOfRange | Code::ResourceExhausted | Code::InvalidArgument
        ),
        "{e:?}"
    );

    let missing = s
        .client
        .find_missing(pb::FindMissingRequest {
            site: "acme".into(),
            ids: vec![good.id.0.to_vec()],
        })
        .await
        .unwrap();
    assert_eq!(
        missing.into_inner().missing.len(),
        1,
        "nothing was stored by refused requests"
    );

    let r = s
        .client
        .put_chunks(tokio_stream::iter(vec![put(
            "acme",
            "",
            good.id.0.to_vec(),
            good.blob.clone(),
        )]))
        .await
        .unwrap();
    assert_eq!(r.into_inner().stored, 1);

    let e = s
        .client
        .get_manifest(pb::GetManifestRequest {
            site: "acme".into(),
            snapshot_id: "20250101T000000Z-0000abcd".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = s
        .client
        .get_manifest(pb::GetManifestRequest {
            site: "acme".into(),
            snapshot_id: "nonsense".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    let mut stream = s
        .client
        .get_chunks(pb::GetChunksRequest {
            site: "acme".into(),
            ids: vec![good.id.0.to_vec(), other.id.0.to_vec()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stream.message().await.unwrap().unwrap().blob, good.blob);
    let e = stream.message().await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains(&other.id.short()), "{}", e.message());

    let hb = pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::Heartbeat(pb::Heartbeat {
            unix_ms: 1,
            health: None,
        })),
    };
    let e = s
        .client
        .session(tokio_stream::iter(vec![hb]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("hello"), "{}", e.message());
    s.shutdown().await;
}

#[tokio::test]
async fn commit_is_refused_unless_every_chunk_is_stored() {
    let mut s = start().await;
    let keys = MasterKey::from_bytes([6; 32]).derive();
    let codec = ChunkCodec::new(keys.clone(), 3);
    let a = codec.encode(b"chunk a");
    let b = codec.encode(b"chunk b");
    let mut agent = FakeAgent::connect(&s.inproc, &s.id, &["main"], "test").await;
    let d = dispatch_backup(&s.inproc, &mut agent, "main").await;
    let snapshot_id = d.snapshot_id.clone();
    let manifest = nex_backup_tests::sample::empty_manifest(&snapshot_id);
    s.client
        .put_chunks(tokio_stream::iter(vec![put(
            "acme",
            &snapshot_id,
            a.id.0.to_vec(),
            a.blob.clone(),
        )]))
        .await
        .unwrap();
    let commit = commit_request("acme", &d, manifest.seal(&keys), &[&a, &b], 100);
    let e = s.client.commit_snapshot(commit.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(
        e.message().contains(&snapshot_id) && e.message().contains("not stored"),
        "{}",
        e.message()
    );
    let e = s
        .client
        .get_manifest(pb::GetManifestRequest {
            site: "acme".into(),
            snapshot_id: snapshot_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "a refused commit is invisible");
    let manifests = s.inproc.data_dir().join("blobs/manifests");
    assert!(
        !manifests.exists() || std::fs::read_dir(&manifests).unwrap().next().is_none(),
        "nor in the store"
    );

    let mut wrong_site = commit.clone();
    wrong_site.site = "other".into();
    let e = s
        .client
        .commit_snapshot(wrong_site.clone())
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        Code::PermissionDenied,
        "a commit for another site is refused"
    );
    let other_agent = s.inproc.enroll("other", "srv9").await;
    s.inproc
        .register_key(&other_agent, 1, &MasterKey::from_bytes([6; 32]))
        .await;
    let e = s
        .inproc
        .agent(&other_agent)
        .commit_snapshot(wrong_site)
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        Code::InvalidArgument,
        "a manifest sealed for another site is refused: {e:?}"
    );

    s.client
        .put_chunks(tokio_stream::iter(vec![put(
            "acme",
            &snapshot_id,
            b.id.0.to_vec(),
            b.blob.clone(),
        )]))
        .await
        .unwrap();
    let ok = s
        .client
        .commit_snapshot(commit.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        ok.new_bytes,
        (a.blob.len() + b.blob.len()) as u64,
        "new bytes counted by the controller"
    );
    let again = s.client.commit_snapshot(commit).await.unwrap().into_inner();
    assert_eq!(
        again.stored_bytes, ok.stored_bytes,
        "a retried commit is a no-op"
    );
    let m = s
        .client
        .get_manifest(pb::GetManifestRequest {
            site: "acme".into(),
            snapshot_id: snapshot_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let opened =
        nex_backup_shared::manifest::Manifest::open(&keys, "acme", &snapshot_id, &m.manifest)
            .unwrap();
    assert_eq!(opened, manifest);
    s.shutdown().await;
}
