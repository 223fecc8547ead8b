//! Every acknowledgement survives a crash. A copy of the catalog taken the moment a call
//! returns is what a SIGKILL would leave behind: it must hold what was acknowledged.
//! sled also writes back by itself every 500 ms, so each round copies at once and
//! several rounds run; without the flush before the answer, they all fail.

use std::path::Path;

use nex_backup::catalog::Catalog;
use nex_backup::catalog::sled_catalog::SledCatalog;
use nex_backup_shared::chunk::ChunkCodec;
use nex_backup_shared::keys::MasterKey;
use nex_backup_shared::pb;
use nex_backup_tests::fake_agent::{FakeAgent, commit_request, dispatch_backup};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// The catalog as a crash at this instant would leave it.
fn crash_copy(data: &Path) -> (tempfile::TempDir, SledCatalog) {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&data.join("catalog"), dir.path());
    let cat = SledCatalog::open(dir.path()).unwrap();
    (dir, cat)
}

#[tokio::test]
async fn acknowledged_chunks_and_commits_survive_a_crash() {
    let inproc = nex_backup_tests::inproc::start().await;
    let id = inproc.enroll("acme", "srv1").await;
    let master = MasterKey::from_bytes([7; 32]);
    inproc.register_key(&id, 1, &master).await;
    let keys = master.derive();
    let codec = ChunkCodec::new(keys.clone(), 3);
    let mut client = inproc.agent(&id);
    let mut agent = FakeAgent::connect(&inproc, &id, &["main"], "test").await;
    for round in 0..5u64 {
        let sealed = codec.encode(format!("chunk of round {round}").as_bytes());
        let d = dispatch_backup(&inproc, &mut agent, "main").await;
        let snapshot_id = d.snapshot_id.clone();
        client
            .put_chunks(tokio_stream::iter(vec![pb::PutChunkRequest {
                site: "acme".into(),
                snapshot_id: snapshot_id.clone(),
                id: sealed.id.0.to_vec(),
                blob: sealed.blob.clone(),
            }]))
            .await
            .unwrap();
        let (_keep, cat) = crash_copy(&inproc.data_dir());
        let missing = cat.missing_chunks("acme", &[sealed.id]).await.unwrap();
        assert!(
            missing.is_empty(),
            "round {round}: an acknowledged chunk was lost"
        );
        drop(cat);

        let manifest = nex_backup_tests::sample::empty_manifest(&snapshot_id);
        client
            .commit_snapshot(commit_request(
                "acme",
                &d,
                manifest.seal(&keys),
                &[&sealed],
                20,
            ))
            .await
            .unwrap();
        let (_keep, cat) = crash_copy(&inproc.data_dir());
        let snap = cat.snapshot("acme", &snapshot_id).await.unwrap();
        assert!(
            snap.is_some(),
            "round {round}: an acknowledged commit was lost"
        );
    }
    inproc.shutdown().await;
}
