//! Feeding a snapshot stream into a writer (pg_restore's stdin, a file): fetch sealed
//! chunks in order from a [`ChunkSource`] (the controller, or a copy of its store), verify
//! and decode each on worker threads, write, and check the stream digest. A network
//! failure resumes from the first chunk not yet received.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use nex_backup_shared::chunk::ChunkCodec;
use nex_backup_shared::error::FormatError;
use nex_backup_shared::ids::ChunkId;
use nex_backup_shared::manifest::{StreamDigest, StreamEntry, chunk_list_digest};
use nex_backup_shared::pb;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::ctx::{Ctx, transient};
use crate::error::AgentError;

const WINDOW: usize = 32;

/// Why feeding a stream failed.
#[derive(Debug)]
pub enum FeedError {
    /// The consumer (pg_restore) stopped reading.
    Write(std::io::Error),
    /// Fetching the data failed.
    Data(String),
    /// The data failed verification: a chunk did not decode or the stream digest differs.
    Damaged(String),
}

impl std::fmt::Display for FeedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FeedError::Write(e) => write!(f, "write: {e}"),
            FeedError::Data(e) | FeedError::Damaged(e) => f.write_str(e),
        }
    }
}

/// A chunk as fetched: id, plaintext length, sealed blob.
pub type Fetched = (ChunkId, u32, Vec<u8>);

/// Where a restore reads sealed chunks, and where its progress goes.
pub trait ChunkSource: Send + Sync + 'static {
    /// Send the sealed blobs of `chunks` into `tx`, in order; stop early (`Ok`) when the
    /// receiver is gone.
    fn fetch_all(
        self: Arc<Self>,
        chunks: Vec<(ChunkId, u32)>,
        tx: mpsc::Sender<Fetched>,
    ) -> impl std::future::Future<Output = Result<(), AgentError>> + Send;
    /// Best-effort progress of job `job_id`.
    fn progress(&self, job_id: &str, phase: &str, bytes: u64, chunks: u64, detail: String);
    /// How a database restore spreads its work.
    fn restore_tuning(&self) -> crate::config::RestoreTuning {
        crate::config::RestoreTuning::default()
    }
}

impl ChunkSource for Ctx {
    fn fetch_all(
        self: Arc<Self>,
        chunks: Vec<(ChunkId, u32)>,
        tx: mpsc::Sender<Fetched>,
    ) -> impl std::future::Future<Output = Result<(), AgentError>> + Send {
        fetch_remote(self, chunks, tx)
    }

    fn progress(&self, job_id: &str, phase: &str, bytes: u64, chunks: u64, detail: String) {
        Ctx::progress(self, job_id, phase, bytes, chunks, detail);
    }

    fn restore_tuning(&self) -> crate::config::RestoreTuning {
        self.cfg.restore_tuning()
    }
}

async fn fetch_remote(
    ctx: Arc<Ctx>,
    chunks: Vec<(ChunkId, u32)>,
    tx: mpsc::Sender<Fetched>,
) -> Result<(), AgentError> {
    let deadline = Instant::now() + Duration::from_secs(ctx.cfg.retry_budget_secs);
    let fresh =
        || nex_backup_shared::retry::delays(Duration::from_millis(200), Duration::from_secs(10));
    let mut delays = fresh();
    let mut pos = 0;
    while pos < chunks.len() {
        let window = &chunks[pos..(pos + WINDOW).min(chunks.len())];
        let req = pb::GetChunksRequest {
            site: ctx.site().into(),
            ids: window.iter().map(|(id, _)| id.0.to_vec()).collect(),
        };
        let result: Result<(), tonic::Status> = async {
            let mut stream = ctx.client().get_chunks(req).await?.into_inner();
            while let Some(msg) = stream.message().await? {
                let (id, len) = chunks[pos];
                if msg.id != id.0 {
                    return Err(tonic::Status::data_loss(format!(
                        "controller sent chunk out of order at position {pos}"
                    )));
                }
                if tx.send((id, len, msg.blob)).await.is_err() {
                    return Ok(()); // consumer gone; it reports why
                }
                pos += 1;
                delays = fresh();
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) => {}
            Err(s) if transient(&s) && Instant::now() < deadline => {
                tracing::warn!(error = %s.message(), pos, "fetch chunks failed, resuming");
                let wait = delays.next().unwrap_or(Duration::from_secs(10));
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {},
                    _ = ctx.shutdown.cancelled() => return Err("agent is shutting down".into()),
                }
            }
            Err(s) => {
                return Err(format!(
                    "fetch chunk {}: {}",
                    chunks[pos.min(chunks.len() - 1)].0.short(),
                    s.message()
                )
                .into());
            }
        }
        if tx.is_closed() {
            return Ok(());
        }
    }
    Ok(())
}

/// Write stream `s` of a snapshot into `w`, verifying everything. Progress goes to `job_id`.
pub async fn feed<S: ChunkSource, W: AsyncWrite + Unpin>(
    ctx: &Arc<S>,
    codec: &ChunkCodec,
    job_id: &str,
    s: &StreamEntry,
    mut w: W,
) -> Result<(), FeedError> {
    let (tx, rx) = mpsc::channel::<Fetched>(8);
    let fetcher = tokio::spawn(ctx.clone().fetch_all(s.chunks.clone(), tx));
    let codec = codec.clone();
    let mut decoded = ReceiverStream::new(rx)
        .map(|(id, len, blob)| {
            let codec = codec.clone();
            tokio::task::spawn_blocking(move || codec.decode(&id, &blob, len as usize))
        })
        .buffered(2);
    // A digest of the chunk list was checked when the manifest was read; each chunk's
    // id is checked as it is opened. Only an older manifest's plain SHA-256 needs every
    // byte hashed again.
    let mut hasher = (s.digest == StreamDigest::Plain).then(Sha256::new);
    let (mut done, mut n, mut last) = (0u64, 0u64, Instant::now());
    while let Some(res) = decoded.next().await {
        let plain = res
            .map_err(|e| FeedError::Data(format!("decode worker: {e}")))?
            .map_err(|e| FeedError::Damaged(e.to_string()))?;
        if let Some(h) = &mut hasher {
            h.update(&plain);
        }
        w.write_all(&plain).await.map_err(FeedError::Write)?;
        done += plain.len() as u64;
        n += 1;
        if last.elapsed().as_millis() >= 500 {
            ctx.progress(
                job_id,
                &format!("restore {}", s.name),
                done,
                n,
                format!("of {} KiB", s.length / 1024),
            );
            last = Instant::now();
        }
    }
    fetcher
        .await
        .map_err(|e| FeedError::Data(format!("fetch task: {e}")))?
        .map_err(|e| FeedError::Data(e.to_string()))?;
    w.shutdown().await.map_err(FeedError::Write)?;
    drop(w);
    let actual: [u8; 32] = match hasher {
        Some(h) => h.finalize().into(),
        None => chunk_list_digest(&s.chunks, done),
    };
    if n as usize != s.chunks.len() || done != s.length || actual != s.sha256 {
        return Err(FeedError::Damaged(
            FormatError::StreamHash {
                stream: s.name.clone(),
                expected: hex::encode(s.sha256),
                actual: hex::encode(actual),
            }
            .to_string(),
        ));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod testing {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Sealed chunks in memory, by id; counts the chunks asked for.
    pub struct Memory {
        pub blobs: HashMap<ChunkId, Vec<u8>>,
        pub asked: AtomicUsize,
    }

    impl ChunkSource for Memory {
        async fn fetch_all(
            self: Arc<Self>,
            chunks: Vec<(ChunkId, u32)>,
            tx: mpsc::Sender<Fetched>,
        ) -> Result<(), AgentError> {
            self.asked.fetch_add(chunks.len(), Ordering::Relaxed);
            for (id, len) in chunks {
                let blob = self.blobs.get(&id).cloned().unwrap_or_default();
                if tx.send((id, len, blob)).await.is_err() {
                    break;
                }
            }
            Ok(())
        }

        fn progress(&self, _: &str, _: &str, _: u64, _: u64, _: String) {}
    }

    /// `parts` sealed into a store, and the stream's chunk list.
    pub fn stored(codec: &ChunkCodec, parts: &[&[u8]]) -> (Memory, Vec<(ChunkId, u32)>) {
        let mut blobs = HashMap::new();
        let mut list = vec![];
        for p in parts {
            let s = codec.encode(p);
            list.push((s.id, p.len() as u32));
            blobs.insert(s.id, s.blob);
        }
        let asked = AtomicUsize::new(0);
        (Memory { blobs, asked }, list)
    }
}

#[cfg(test)]
mod tests {
    use nex_backup_shared::keys::MasterKey;
    use nex_backup_shared::manifest::StreamDigest;

    use super::testing::{Memory, stored};
    use super::*;

    async fn run(src: Memory, codec: &ChunkCodec, s: &StreamEntry) -> Result<Vec<u8>, FeedError> {
        let (w, mut r) = tokio::io::duplex(1 << 20);
        let reading = tokio::spawn(async move {
            let mut out = vec![];
            tokio::io::AsyncReadExt::read_to_end(&mut r, &mut out)
                .await
                .map(|_| out)
        });
        feed(&Arc::new(src), codec, "job", s, w).await?;
        Ok(reading.await.unwrap().unwrap())
    }

    #[tokio::test]
    async fn both_digest_kinds_restore_and_a_wrong_one_or_a_swapped_chunk_is_refused() {
        let codec = ChunkCodec::new(MasterKey::from_bytes([3; 32]).derive(), 1);
        let parts: [&[u8]; 3] = [b"first chunk ", b"second chunk ", b"third"];
        let whole = parts.concat();
        let (src, list) = stored(&codec, &parts);
        let len = whole.len() as u64;
        let listed = StreamEntry::from_chunks("database.dump".into(), list.clone(), len);
        assert_eq!(run(src, &codec, &listed).await.unwrap(), whole);

        // A manifest of format version 1: a plain SHA-256 of the stream, checked per byte.
        let plain = StreamEntry {
            sha256: Sha256::digest(&whole).into(),
            digest: StreamDigest::Plain,
            ..listed.clone()
        };
        let (src, _) = stored(&codec, &parts);
        assert_eq!(run(src, &codec, &plain).await.unwrap(), whole);
        let wrong = StreamEntry {
            sha256: [7; 32],
            ..plain
        };
        let (src, _) = stored(&codec, &parts);
        let e = run(src, &codec, &wrong).await.unwrap_err();
        assert!(matches!(e, FeedError::Damaged(_)), "{e}");

        // The store answers the first chunk's id with the second chunk's blob.
        let (mut src, _) = stored(&codec, &parts);
        let second = src.blobs[&list[1].0].clone();
        src.blobs.insert(list[0].0, second);
        let e = run(src, &codec, &listed).await.unwrap_err();
        assert!(matches!(e, FeedError::Damaged(_)), "{e}");
    }
}
