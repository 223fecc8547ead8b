//! Rotation and garbage collection against an in-process controller over mTLS: the plan,
//! the space freed, and uploads in flight that never lose a chunk they were told exists.

use std::sync::Arc;
use std::time::Duration;

use nex_backup_shared::chunk::{ChunkCodec, SealedChunk};
use nex_backup_shared::keys::MasterKey;
use nex_backup_shared::pb::{self, agent_service_client::AgentServiceClient};
use nex_backup_tests::fake_agent::{Dispatched, FakeAgent, commit_request, dispatch_backup};
use nex_backup_tests::inproc::{self, Identity, InProc};
use tonic::transport::Channel;

struct Site {
    s: InProc,
    agent: tokio::sync::Mutex<FakeAgent>,
    client: AgentServiceClient<Channel>,
    codec: ChunkCodec,
    keys: nex_backup_shared::keys::SiteKeys,
    id: Identity,
}

/// Site acme with keep-last `keep_last` on a controller whose GC grace is `grace`.
async fn site(keep_last: u32, grace: Duration) -> Site {
    let s = inproc::start_with(|c| c.gc_grace = grace).await;
    let id = s.enroll("acme", "a1").await;
    let key = MasterKey::generate();
    s.register_key(&id, 1, &key).await;
    let mut policy = pb::PolicyMsg::from(&nex_backup::policy::Policy::default());
    policy.keep_daily = 0;
    policy.keep_weekly = 0;
    policy.keep_last = keep_last;
    s.admin()
        .set_policy(s.admin_request(pb::SetPolicyRequest {
            site: "acme".into(),
            target: "main".into(),
            policy: Some(policy),
            force: false,
            create: true,
        }))
        .await
        .unwrap();
    // These tests are about rotation and GC: no retention lock.
    s.admin()
        .set_site_policy(s.admin_request(pb::SetSitePolicyRequest {
            site: "acme".into(),
            policy: Some(pb::SitePolicyMsg {
                timezone: "UTC".into(),
                retention_lock_secs: Some(0),
                ..Default::default()
            }),
            create: true,
        }))
        .await
        .unwrap();
    let agent = tokio::sync::Mutex::new(FakeAgent::connect(&s, &id, &["main"], "test").await);
    // GC waits one grace period after start (pins are in memory).
    tokio::time::sleep(grace + Duration::from_millis(100)).await;
    Site {
        agent,
        client: s.agent(&id),
        codec: ChunkCodec::new(key.derive(), 1),
        keys: key.derive(),
        s,
        id,
    }
}

impl Site {
    /// Upload `chunks`; a chunk whose old copy GC is deleting at that moment is refused
    /// as unavailable ("send it again"), and sent again, as an agent does.
    async fn put(&self, chunks: &[&SealedChunk]) {
        for attempt in 0.. {
            match self.s.put(&self.id, "acme", chunks).await {
                Ok(_) => return,
                Err(e) if e.code() == tonic::Code::Unavailable && attempt < 20 => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("upload: {e:?}"),
            }
        }
    }

    /// Commit `chunks` as the result of a backup job the controller dispatched.
    async fn commit(&self, chunks: &[&SealedChunk]) -> Result<String, tonic::Status> {
        let d = self.dispatch().await;
        self.commit_as(&d, chunks).await
    }

    /// A backup job the controller dispatched (running until committed).
    async fn dispatch(&self) -> Dispatched {
        dispatch_backup(&self.s, &mut *self.agent.lock().await, "main").await
    }

    /// Commit `chunks` as the result of the dispatched job `d`.
    async fn commit_as(
        &self,
        d: &Dispatched,
        chunks: &[&SealedChunk],
    ) -> Result<String, tonic::Status> {
        let m = nex_backup_tests::sample::empty_manifest(&d.snapshot_id);
        let logical = chunks.iter().map(|c| c.blob.len() as u64).sum();
        self.client
            .clone()
            .commit_snapshot(commit_request(
                "acme",
                d,
                m.seal(&self.keys),
                chunks,
                logical,
            ))
            .await
            .map(|_| d.snapshot_id.clone())
    }

    /// The chunks of `chunks` the controller says it lacks.
    async fn missing<'a>(&self, chunks: &[&'a SealedChunk]) -> Vec<&'a SealedChunk> {
        let missing = self
            .client
            .clone()
            .find_missing(pb::FindMissingRequest {
                site: "acme".into(),
                ids: chunks.iter().map(|c| c.id.0.to_vec()).collect(),
            })
            .await
            .unwrap()
            .into_inner()
            .missing;
        chunks
            .iter()
            .copied()
            .filter(|c| missing.contains(&c.id.0.to_vec()))
            .collect()
    }

    async fn find_missing(&self, chunks: &[&SealedChunk]) -> usize {
        self.missing(chunks).await.len()
    }

    async fn prune(&self, dry_run: bool) -> pb::PruneResponse {
        self.s
            .admin()
            .prune(self.s.admin_request(pb::PruneRequest {
                site: String::new(),
                target: String::new(),
                dry_run,
            }))
            .await
            .unwrap()
            .into_inner()
    }
}

#[tokio::test]
async fn prune_plans_frees_and_spares_chunks_an_upload_was_told_exist() {
    let grace = Duration::from_millis(1500);
    let st = site(1, grace).await;
    let c = |s: &str| st.codec.encode(s.as_bytes());
    let (a, b, cc, d) = (c("chunk a"), c("chunk b"), c("chunk c"), c("chunk d"));
    st.put(&[&a, &b]).await;
    let s1 = st.commit(&[&a, &b]).await.unwrap();
    st.put(&[&cc]).await;
    let s2 = st.commit(&[&cc]).await.unwrap();
    // Just-uploaded chunks are pinned for the grace period.
    assert_eq!(
        st.prune(true).await.deleted_chunks,
        0,
        "nothing is collectable while it is pinned"
    );
    tokio::time::sleep(grace + Duration::from_millis(100)).await;

    let dry = st.prune(true).await;
    assert!(dry.dry_run);
    assert_eq!(dry.targets[0].keep, vec![s2.clone()]);
    assert_eq!(dry.targets[0].delete, vec![s1.clone()]);
    assert_eq!(dry.deleted_chunks, 2, "a and b would go");
    assert_eq!(dry.freed_bytes, (a.blob.len() + b.blob.len()) as u64);
    let b_blob =
        st.s.data_dir()
            .join("blobs/chunks/acme")
            .join(&b.id.to_hex()[..2])
            .join(b.id.to_hex());
    assert!(b_blob.exists(), "a dry run changes nothing");

    // A new backup is told that a exists (and pins it) ...
    assert_eq!(st.find_missing(&[&a, &d]).await, 1);
    let done = st.prune(false).await;
    assert_eq!(done.deleted_snapshots, 1);
    assert_eq!(done.deleted_chunks, 1, "only b");
    assert_eq!(done.freed_bytes, b.blob.len() as u64);
    assert_eq!(done.pinned_chunks, 1, "a is kept for the upload");
    // ... and can still commit a snapshot that uses it.
    st.put(&[&d]).await;
    let s3 = st.commit(&[&a, &d]).await.unwrap();
    assert_eq!(st.find_missing(&[&b]).await, 1, "b is gone");
    assert!(!b_blob.exists(), "b's blob is deleted too");
    let m = st.s.data_dir().join("blobs/manifests/acme").join(&s1);
    assert!(!m.exists(), "s1's manifest copy is deleted");
    let after = st.prune(false).await;
    assert_eq!(after.targets[0].keep, vec![s3]);
    st.s.shutdown().await;
}

#[tokio::test]
async fn garbage_collection_concurrent_with_uploads_loses_nothing() {
    let st = Arc::new(site(2, Duration::from_millis(1000)).await);
    let pool: Vec<SealedChunk> = (0..24)
        .map(|i| st.codec.encode(format!("shared chunk {i}").as_bytes()))
        .collect();
    let pool = Arc::new(pool);
    let pruner = {
        let st = st.clone();
        tokio::spawn(async move {
            let mut freed = 0;
            for _ in 0..60 {
                freed += st.prune(false).await.deleted_chunks;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            freed
        })
    };
    let mut committed = vec![];
    for n in 0..40u64 {
        // Each snapshot: 6 chunks from a sliding window, so old ones become garbage.
        let picked: Vec<&SealedChunk> = (0..6)
            .map(|k| &pool[((n as usize) * 2 + k) % pool.len()])
            .collect();
        // Exactly what an agent does: ask, send only what is missing, commit.
        let to_send = st.missing(&picked).await;
        st.put(&to_send).await;
        tokio::time::sleep(Duration::from_millis(40)).await;
        let id = st
            .commit(&picked)
            .await
            .unwrap_or_else(|e| panic!("commit {n} lost a chunk it was told exists: {e:?}"));
        committed.push((id, picked.iter().map(|c| c.id).collect::<Vec<_>>()));
    }
    let freed = pruner.await.unwrap();
    assert!(freed > 0, "garbage collection really ran alongside");
    // Every snapshot still listed has every chunk, in the catalog and the store.
    let plan = st.prune(true).await;
    let listed = &plan.targets[0].keep;
    assert_eq!(listed.len(), 2, "keep-last 2");
    assert!(plan.targets[0].delete.is_empty());
    for snap in listed {
        let (_, ids) = committed
            .iter()
            .find(|(id, _)| id == snap)
            .expect("a committed snapshot");
        let mut stream = st
            .client
            .clone()
            .get_chunks(pb::GetChunksRequest {
                site: "acme".into(),
                ids: ids.iter().map(|i| i.0.to_vec()).collect(),
            })
            .await
            .unwrap()
            .into_inner();
        let mut n = 0;
        while let Some(b) = stream.message().await.unwrap() {
            assert!(!b.blob.is_empty());
            n += 1;
        }
        assert_eq!(n, ids.len(), "snapshot {snap} is whole");
    }
    Arc::try_unwrap(st).ok().unwrap().s.shutdown().await;
}

/// A backup running on any replica is in the catalog: while one of the site runs, GC of
/// the site waits (that backup may rely on chunks it was told exist), and says so.
#[tokio::test]
async fn garbage_collection_waits_while_a_backup_of_the_site_runs() {
    let grace = Duration::from_millis(300);
    let st = site(1, grace).await;
    let orphan = st.codec.encode(b"uploaded, never committed");
    let kept = st.codec.encode(b"committed");
    st.put(&[&orphan, &kept]).await;
    tokio::time::sleep(grace + Duration::from_millis(100)).await; // the upload's pins lapse
    let running = st.dispatch().await;
    let waiting = st.prune(false).await;
    assert_eq!(waiting.deleted_chunks, 0, "{waiting:?}");
    assert!(
        waiting.gc_note.contains("waits for its running backup")
            && waiting.gc_note.contains(&running.job_id),
        "{waiting:?}"
    );
    st.commit_as(&running, &[&kept]).await.unwrap();
    let done = st.prune(false).await;
    assert_eq!(
        done.deleted_chunks, 1,
        "the orphan goes once no backup runs: {done:?}"
    );
    assert_eq!(st.find_missing(&[&orphan, &kept]).await, 1);
}
