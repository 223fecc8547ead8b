//! Feeding a snapshot stream into a writer (pg_restore's stdin, a file): fetch sealed
//! chunks in order from a [`ChunkSource`] (the controller, or a copy of its store), verify
//! and decode each on worker threads, write, and check the stream SHA-256. A network
//! failure resumes from the first chunk not yet received.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use nex_backup_shared::chunk::ChunkCodec;
use nex_backup_shared::error::FormatError;
use nex_backup_shared::ids::ChunkId;
use nex_backup_shared::manifest::StreamEntry;
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
    /// The data failed verification: a chunk did not decode or the stream hash differs.
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
    let mut hasher = Sha256::new();
    let (mut done, mut n, mut last) = (0u64, 0u64, Instant::now());
    while let Some(res) = decoded.next().await {
        let plain = res
            .map_err(|e| FeedError::Data(format!("decode worker: {e}")))?
            .map_err(|e| FeedError::Damaged(e.to_string()))?;
        hasher.update(&plain);
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
    let actual: [u8; 32] = hasher.finalize().into();
    if n as usize != s.chunks.len() || actual != s.sha256 {
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
