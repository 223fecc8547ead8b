//! The upload pipeline for one byte stream:
//!
//! ```text
//! reader -> [A: CDC chunker] -> batch -> [B: ids, find-missing, seal missing]
//!        -> sealed batch -> [C: upload, retrying; re-asks what is missing after a failure]
//! ```
//! Stages run concurrently; hashing and sealing use blocking worker threads. Every queue
//! holds one or two batches (at most `BATCH_BYTES` each) and the reader keeps at most
//! `READ_AHEAD`, so memory is bounded whatever the stream size.
//!
//! A customer's controller is often tens of milliseconds away: find-missing asks about
//! up to [`FIND_IN_FLIGHT`] batches at once (a window of 24 MiB that covers 50 ms and a
//! batch's own processing at about 400 MiB/s). A batch keeps its place in the window until
//! it is uploaded, so the window also bounds what waits for sealing or for the uplink:
//! memory stays bounded whichever is slower; while batches with chunks to send are on
//! their way the window counts them and is [`WINDOW_WITH_DATA`]. Uploads overlap too.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use futures::StreamExt;
use nex_backup_shared::chunk::ChunkCodec;
use nex_backup_shared::chunk::SealedChunk;
use nex_backup_shared::chunker::StreamChunker;
use nex_backup_shared::ids::ChunkId;
use nex_backup_shared::manifest::StreamEntry;
use nex_backup_shared::pb;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;

use crate::ctx::Ctx;
use crate::error::AgentError;

const BATCH_BYTES: usize = 2 * 1024 * 1024;
const BATCH_CHUNKS: usize = 64;
const READ_AHEAD: usize = 2 * 1024 * 1024;
/// Batches being sealed at once.
const SEAL_IN_FLIGHT: usize = 2;
/// Batches being uploaded at once.
const UPLOAD_IN_FLIGHT: usize = 4;
/// Batches whose find-missing answer may be awaited at once. Measured with
/// `bench.sh --only rtt` (no change, pgbench, 50 ms RTT, pg_dump at ~370 MB/s): 8 held
/// the backup to 1.28× loopback, 16 gave 1.08–1.11× but 64–67 MiB agent peak RSS, 12
/// gives 1.10× at 62 MiB. What the window holds is what arrives during one round trip,
/// so a slower dump or a nearer controller fills less of it.
const FIND_IN_FLIGHT: usize = 12;
/// The window while batches with chunks to send are on their way (sealing, uploading):
/// counted with them. When the uplink is the limit, asking ahead gains nothing and a
/// batch answered but not yet sealed only holds its 2 MiB (with 12, a full backup at
/// 50 ms RTT and 100 Mbit/s peaked at 66.9 MiB on the invoice set).
const WINDOW_WITH_DATA: usize = 8;

/// Identifies the job a stream belongs to.
#[derive(Debug, Clone)]
pub struct JobRef {
    pub job_id: String,
    pub snapshot_id: String,
    /// The key epoch this snapshot is sealed with, fixed for the whole job.
    pub codec: ChunkCodec,
    /// Upload bandwidth limit, if the controller set one.
    pub throttle: Option<Arc<super::throttle::Throttle>>,
}

type Batch = Arc<Vec<Vec<u8>>>;

/// Where a copy of a stream's bytes goes as they are read (see [`upload_stream_tapped`]).
pub type Tap = mpsc::Sender<bytes::Bytes>;

/// A stage's downstream ended: the stage that failed reports the real error.
fn closed<T>(_: mpsc::error::SendError<T>) -> AgentError {
    AgentError::from("pipeline closed")
}

struct SealedBatch {
    refs: Vec<(ChunkId, u32)>,
    sealed: Vec<SealedChunk>,
    /// Its place in the find-missing window, given back once it is uploaded.
    slot: Slot,
}

/// A batch's place in the window, from its question until it is uploaded.
struct Slot {
    _window: tokio::sync::OwnedSemaphorePermit,
    /// Set while the batch has chunks to send: it counts in [`Sending`].
    _sending: Option<SendingGuard>,
}

/// Batches with chunks to send, planned and not yet uploaded.
#[derive(Clone, Default)]
struct Sending(Arc<SendingState>);

#[derive(Default)]
struct SendingState {
    count: std::sync::atomic::AtomicUsize,
    /// Notified as each is uploaded (or dropped).
    done: tokio::sync::Notify,
}

impl Sending {
    fn count(&self) -> usize {
        self.0.count.load(Ordering::Acquire)
    }

    fn guard(&self) -> SendingGuard {
        self.0.count.fetch_add(1, Ordering::AcqRel);
        SendingGuard(self.clone())
    }

    /// Until a batch being sent is done; at once if one was since the last wait (a
    /// stored wake-up), so none is missed between checking [`Sending::admits`] and here.
    async fn one_done(&self) {
        self.0.done.notified().await;
    }

    /// Whether another batch may be asked about, with `asking` batches awaiting answers.
    fn admits(&self, asking: usize) -> bool {
        let sending = self.count();
        let limit = if sending == 0 {
            FIND_IN_FLIGHT
        } else {
            WINDOW_WITH_DATA
        };
        asking + sending < limit
    }
}

struct SendingGuard(Sending);

impl Drop for SendingGuard {
    fn drop(&mut self) {
        let state = &(self.0).0;
        state.count.fetch_sub(1, Ordering::AcqRel);
        state.done.notify_one();
    }
}

/// Blocks of the stream as read: each goes to the chunker and to any tap. Large enough
/// that handing one over (a thread woken on each side) costs little next to hashing it:
/// with 64 KiB blocks a quarter of a no-change backup's agent CPU was spent switching
/// threads.
const BLOCK: usize = 256 * 1024;
/// How long a block that is not full waits for more bytes.
const HOLD: std::time::Duration = std::time::Duration::from_millis(50);

/// Read `r` on its own task into a bounded queue of blocks (at most `READ_AHEAD` bytes).
/// A pipe holds only 64 KiB: without this, the producer (pg_dump, and the server behind
/// it) would stop every time the chunker is busy hashing a chunk.
/// Each block also goes to `tap`, if any, until the tap's reader hangs up, and is
/// counted in `read` (checked against what the chunker cut). A block is sent once it is
/// full or the stream ends.
fn decouple<R: AsyncRead + Unpin + Send + 'static>(
    mut r: R,
    read: Arc<AtomicU64>,
    mut tap: Option<Tap>,
) -> impl AsyncRead + Unpin {
    let (tx, rx) = mpsc::channel::<std::io::Result<bytes::Bytes>>(READ_AHEAD / BLOCK);
    tokio::spawn(async move {
        loop {
            let (block, end) = read_block(&mut r).await;
            if !block.is_empty() {
                read.fetch_add(block.len() as u64, Ordering::Relaxed);
                if let Some(t) = &tap
                    && t.send(block.clone()).await.is_err()
                {
                    tap = None; // the tap's reader gave up: the stream goes on
                }
                if tx.send(Ok(block)).await.is_err() {
                    break; // the pipeline ended; dropping `r` closes the pipe
                }
            }
            match end {
                None => {}
                Some(Ok(())) => break,
                Some(Err(e)) => {
                    let _ = tx.send(Err(e)).await;
                    break;
                }
            }
        }
    });
    tokio_util::io::StreamReader::new(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// Read up to a [`BLOCK`], for at most [`HOLD`] once its first bytes came (a slow
/// producer's bytes still flow, and the stall timeout sees them); with how the stream
/// ended, if it did (the bytes read before an error come first).
async fn read_block<R: AsyncRead + Unpin>(
    r: &mut R,
) -> (bytes::Bytes, Option<std::io::Result<()>>) {
    let mut buf = bytes::BytesMut::with_capacity(BLOCK);
    let mut until = None;
    while buf.len() < BLOCK {
        let read = r.read_buf(&mut buf);
        let got = match until {
            None => read.await,
            // A pending read holds no bytes: dropping it loses nothing.
            Some(t) => match tokio::time::timeout_at(t, read).await {
                Ok(got) => got,
                Err(_) => break,
            },
        };
        match got {
            Ok(0) => return (buf.freeze(), Some(Ok(()))),
            Ok(_) => {
                until.get_or_insert_with(|| tokio::time::Instant::now() + HOLD);
            }
            Err(e) => return (buf.freeze(), Some(Err(e))),
        }
    }
    (buf.freeze(), None)
}

/// Run `f(i)` for i in 0..n on blocking threads, in `workers` contiguous slices, in order.
async fn par_map<R, F>(n: usize, workers: usize, f: F) -> Result<Vec<R>, AgentError>
where
    R: Send + 'static,
    F: Fn(usize) -> R + Send + Sync + 'static,
{
    let f = Arc::new(f);
    let per = n.div_ceil(workers.max(1)).max(1);
    let handles: Vec<_> = (0..n)
        .step_by(per)
        .map(|start| {
            let f = f.clone();
            tokio::task::spawn_blocking(move || {
                (start..(start + per).min(n))
                    .map(|i| f(i))
                    .collect::<Vec<R>>()
            })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for h in handles {
        out.extend(
            h.await
                .map_err(|e| AgentError::from(format!("worker thread: {e}")))?,
        );
    }
    Ok(out)
}

fn workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Chunk, dedupe, seal and upload `reader` as stream `name`; returns its manifest entry.
pub async fn upload_stream<R: AsyncRead + Unpin + Send + 'static>(
    ctx: &Arc<Ctx>,
    job: &JobRef,
    name: &str,
    what: String,
    reader: R,
) -> Result<StreamEntry, AgentError> {
    upload_stream_tapped(ctx, job, name, what, reader, None).await
}

/// [`upload_stream`], with a copy of every block read sent to `tap` (for readers of
/// the stream's content, such as the row counter).
pub async fn upload_stream_tapped<R: AsyncRead + Unpin + Send + 'static>(
    ctx: &Arc<Ctx>,
    job: &JobRef,
    name: &str,
    what: String,
    reader: R,
    tap: Option<Tap>,
) -> Result<StreamEntry, AgentError> {
    let read = Arc::new(AtomicU64::new(0));
    let reader = decouple(reader, read.clone(), tap);
    let (batch_tx, batch_rx) = mpsc::channel::<Batch>(1);
    let (sealed_tx, sealed_rx) = mpsc::channel::<SealedBatch>(1);
    let chunk_stage = async {
        let mut chunker = StreamChunker::new(
            what.clone(),
            reader,
            ctx.cfg.chunker(),
            Some(ctx.cfg.stall_timeout()),
        )
        .without_hash();
        let mut batch = vec![];
        let mut size = 0;
        while let Some(chunk) = chunker.next_chunk().await.map_err(|e| e.to_string())? {
            size += chunk.len();
            batch.push(chunk);
            if size >= BATCH_BYTES || batch.len() >= BATCH_CHUNKS {
                batch_tx
                    .send(Arc::new(std::mem::take(&mut batch)))
                    .await
                    .map_err(closed)?;
                size = 0;
            }
        }
        if !batch.is_empty() {
            batch_tx.send(Arc::new(batch)).await.map_err(closed)?;
        }
        drop(batch_tx);
        Ok::<_, AgentError>(chunker.finish())
    };
    let (summary, (), chunks) = tokio::try_join!(
        chunk_stage,
        seal_stage(ctx.clone(), job.codec.clone(), batch_rx, sealed_tx),
        upload_stage(ctx.clone(), job.clone(), name, sealed_rx)
    )?;
    let read = read.load(Ordering::Relaxed);
    let chunked: u64 = chunks.iter().map(|(_, len)| u64::from(*len)).sum();
    if read != summary.length || chunked != read {
        return Err(format!(
            "{what}: {read} bytes read but {} chunked and {chunked} uploaded; not committed",
            summary.length
        )
        .into());
    }
    // Each chunk's id is checked when it is opened, so a digest of the chunk list pins
    // every byte without hashing the stream a second time (docs/format.md).
    Ok(StreamEntry::from_chunks(name.into(), chunks, read))
}

/// Run `read` on a thread of its own over the blocks sent to the returned tap; its
/// result comes once the tap is closed (the stream ended) or `read` gave up (then the
/// tap's sends fail).
pub fn spawn_tap<T: Send + 'static>(
    read: impl FnOnce(mpsc::Receiver<bytes::Bytes>) -> T + Send + 'static,
) -> (Tap, std::thread::JoinHandle<T>) {
    let (tx, rx) = mpsc::channel(READ_AHEAD / BLOCK);
    (tx, std::thread::spawn(move || read(rx)))
}

/// A batch, its chunks' ids, and those of them the controller lacks.
type Answer = (
    Batch,
    Vec<ChunkId>,
    std::collections::HashSet<ChunkId>,
    tokio::sync::OwnedSemaphorePermit,
);

/// A batch whose ids are known and whose missing chunks are chosen.
struct Planned {
    batch: Batch,
    ids: Vec<ChunkId>,
    todo: Vec<usize>,
    /// Its place in the window, kept until it is uploaded.
    slot: Slot,
}

/// Ids and find-missing run batch by batch in order (they decide what is sent); sealing,
/// the costly part, runs for several batches at once so compression never waits for a
/// round trip.
async fn seal_stage(
    ctx: Arc<Ctx>,
    job_codec: ChunkCodec,
    mut rx: mpsc::Receiver<Batch>,
    tx: mpsc::Sender<SealedBatch>,
) -> Result<(), AgentError> {
    let (plan_tx, plan_rx) = mpsc::channel::<Planned>(1);
    let plan = async {
        // Ids already queued for upload in this stream: a chunk repeated in a later batch
        // may not be recorded by the controller yet, but must not be sent twice.
        let mut queued = std::collections::HashSet::new();
        let ask = |batch: Batch, slot| {
            let (ctx, codec) = (ctx.clone(), job_codec.clone());
            async move {
                let b = batch.clone();
                let ids = par_map(batch.len(), workers(), move |i| codec.id(&b[i])).await?;
                let wanted: std::collections::HashSet<ChunkId> =
                    find_missing(&ctx, &ids).await?.into_iter().collect();
                Ok::<_, AgentError>((batch, ids, wanted, slot))
            }
        };
        // The window: a batch holds a slot from its question until it is uploaded, so
        // at most FIND_IN_FLIGHT batches wait on the network, sealing or the uplink.
        // Batches with chunks to send shrink it to WINDOW_WITH_DATA.
        let window = Arc::new(tokio::sync::Semaphore::new(FIND_IN_FLIGHT));
        let sending = Sending::default();
        let mut asking = futures::stream::FuturesOrdered::new();
        let mut input_done = false;
        loop {
            let admit = sending.admits(asking.len());
            tokio::select! {
                biased;
                Some(answer) = asking.next(), if !asking.is_empty() => {
                    let (batch, ids, wanted, permit): Answer = answer?;
                    let todo: Vec<usize> = (0..ids.len())
                        .filter(|&i| wanted.contains(&ids[i]) && queued.insert(ids[i]))
                        .collect();
                    let slot = Slot {
                        _window: permit,
                        _sending: (!todo.is_empty()).then(|| sending.guard()),
                    };
                    plan_tx
                        .send(Planned { batch, ids, todo, slot })
                        .await
                        .map_err(closed)?;
                }
                // Cancel-safe: a slot taken but no batch received yet is given back.
                next = async {
                    let slot = window.clone().acquire_owned().await;
                    (slot, rx.recv().await)
                }, if !input_done && admit => match next {
                    (Ok(slot), Some(batch)) => asking.push_back(ask(batch, slot)),
                    (_, None) => input_done = true,
                    (Err(_), Some(_)) => return Err("the upload window was closed".into()),
                },
                // Full with batches being sent: wait until one is uploaded.
                () = sending.one_done(), if !input_done && !admit => {}
                else => break,
            }
        }
        drop(plan_tx);
        Ok::<_, AgentError>(())
    };
    let seal = async {
        let mut sealed = tokio_stream::wrappers::ReceiverStream::new(plan_rx)
            .map(|p| seal_batch(job_codec.clone(), p))
            .buffered(SEAL_IN_FLIGHT);
        while let Some(b) = sealed.next().await {
            tx.send(b?).await.map_err(closed)?;
        }
        Ok::<_, AgentError>(())
    };
    tokio::try_join!(plan, seal)?;
    Ok(())
}

async fn seal_batch(codec: ChunkCodec, p: Planned) -> Result<SealedBatch, AgentError> {
    let (b, ids, todo) = (p.batch.clone(), Arc::new(p.ids), Arc::new(p.todo));
    let (ids_c, todo_c) = (ids.clone(), todo.clone());
    let sealed = par_map(todo.len(), workers(), move |k| {
        codec.seal(ids_c[todo_c[k]], &b[todo_c[k]])
    })
    .await?;
    let refs = ids
        .iter()
        .copied()
        .zip(p.batch.iter().map(|c| c.len() as u32))
        .collect();
    Ok(SealedBatch {
        refs,
        sealed,
        slot: p.slot,
    })
}

async fn upload_stage(
    ctx: Arc<Ctx>,
    job: JobRef,
    name: &str,
    rx: mpsc::Receiver<SealedBatch>,
) -> Result<Vec<(ChunkId, u32)>, AgentError> {
    let mut refs = vec![];
    let (mut bytes, mut sent, mut last) = (0u64, 0u64, Instant::now());
    // Several uploads in flight: the controller makes each chunk durable (fsync) before
    // it answers, and batches of large, well-compressed chunks hold only a few chunks.
    let mut uploads = tokio_stream::wrappers::ReceiverStream::new(rx)
        .map(|b| {
            let (ctx, job) = (ctx.clone(), job.clone());
            async move {
                if let Some(t) = &job.throttle {
                    t.take(b.sealed.iter().map(|c| c.blob.len() as u64).sum())
                        .await;
                }
                let done = put_chunks(&ctx, &job, Arc::new(b.sealed))
                    .await
                    .map(|n| (b.refs, n));
                drop(b.slot); // uploaded: its place in the window is free
                done
            }
        })
        .buffered(UPLOAD_IN_FLIGHT);
    while let Some(done) = uploads.next().await {
        let (batch_refs, n) = done?;
        sent += n;
        bytes += batch_refs.iter().map(|(_, l)| u64::from(*l)).sum::<u64>();
        refs.extend(batch_refs);
        if last.elapsed().as_millis() >= 500 {
            ctx.progress(
                &job.job_id,
                &format!("backup {name}"),
                bytes,
                refs.len() as u64,
                format!("{} KiB new sent", sent / 1024),
            );
            last = Instant::now();
        }
    }
    Ok(refs)
}

fn missing_request(ctx: &Ctx, ids: &[ChunkId]) -> pb::FindMissingRequest {
    pb::FindMissingRequest {
        site: ctx.site().into(),
        ids: ids.iter().map(|i| i.0.to_vec()).collect(),
    }
}

/// Which of `ids` the controller lacks.
pub async fn find_missing(ctx: &Ctx, ids: &[ChunkId]) -> Result<Vec<ChunkId>, AgentError> {
    let req = missing_request(ctx, ids);
    let resp = ctx
        .retry("find missing chunks", || {
            let (mut c, r) = (ctx.client(), req.clone());
            async move { c.find_missing(r).await }
        })
        .await?;
    resp.into_inner()
        .missing
        .iter()
        .map(|b| ChunkId::try_from(b.as_slice()).map_err(|e| AgentError::from(e.to_string())))
        .collect()
}

/// Upload sealed chunks. After a failed attempt, asks again which are missing and sends
/// only those, so nothing the controller stored is ever sent twice.
async fn put_chunks(
    ctx: &Ctx,
    job: &JobRef,
    sealed: Arc<Vec<SealedChunk>>,
) -> Result<u64, AgentError> {
    if sealed.is_empty() {
        return Ok(0);
    }
    let first = Arc::new(AtomicBool::new(true));
    ctx.retry("upload chunks", || {
        let (sealed, first, job) = (sealed.clone(), first.clone(), job.clone());
        let mut client = ctx.client();
        async move {
            let todo: Vec<SealedChunk> = if first.swap(false, Ordering::SeqCst) {
                sealed.to_vec()
            } else {
                let ids: Vec<ChunkId> = sealed.iter().map(|s| s.id).collect();
                let req = missing_request(ctx, &ids);
                let missing: std::collections::HashSet<Vec<u8>> = client
                    .find_missing(req)
                    .await?
                    .into_inner()
                    .missing
                    .into_iter()
                    .collect();
                sealed
                    .iter()
                    .filter(|s| missing.contains(s.id.0.as_slice()))
                    .cloned()
                    .collect()
            };
            let bytes: u64 = todo.iter().map(|s| s.blob.len() as u64).sum();
            let site = ctx.site().to_string();
            let reqs = todo.into_iter().map(move |s| pb::PutChunkRequest {
                site: site.clone(),
                snapshot_id: job.snapshot_id.clone(),
                id: s.id.0.to_vec(),
                blob: s.blob,
            });
            client.put_chunks(tokio_stream::iter(reqs)).await?;
            Ok(bytes)
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_fast_stream_goes_in_full_blocks_and_a_slow_one_still_flows() {
        let (mut w, mut r) = tokio::io::duplex(64 * 1024);
        let writer = tokio::spawn(async move {
            w.write_all(&vec![7u8; BLOCK + 1000]).await.unwrap();
            w.flush().await.unwrap();
            tokio::time::sleep(HOLD * 10).await;
            w.write_all(b"late").await.unwrap();
            // Dropped: the stream ends.
        });
        let (first, end) = read_block(&mut r).await;
        assert_eq!((first.len(), end.is_none()), (BLOCK, true));
        let started = tokio::time::Instant::now();
        let (second, end) = read_block(&mut r).await;
        assert_eq!((second.len(), end.is_none()), (1000, true));
        assert!(started.elapsed() < HOLD * 5, "held too long");
        let (third, end) = read_block(&mut r).await;
        assert_eq!(&third[..], b"late");
        assert!(matches!(end, Some(Ok(()))));
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn bytes_read_before_an_error_come_first() {
        struct Broken;
        impl AsyncRead for Broken {
            fn poll_read(
                self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
                _: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::task::Poll::Ready(Err(std::io::Error::other("pipe broke")))
            }
        }
        let mut r = (&b"abc"[..]).chain(Broken);
        let (got, end) = read_block(&mut r).await;
        assert_eq!(&got[..], b"abc");
        assert!(matches!(end, Some(Err(e)) if e.to_string() == "pipe broke"));
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_dump_tools_pipes_are_widened() {
        let mut child = tokio::process::Command::new("cat")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        super::super::dump::widen_pipes(&child);
        let max: usize = std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let size = rustix::pipe::fcntl_getpipe_size(&out).unwrap();
        assert!(
            size == 1 << 20 || (max < 1 << 20 && size == 64 * 1024),
            "pipe of {size} bytes (fs.pipe-max-size {max})"
        );
    }

    /// The window is FIND_IN_FLIGHT while nothing is being sent; batches with chunks to
    /// send count in it and shrink it to WINDOW_WITH_DATA; each one uploaded wakes the
    /// planner.
    #[tokio::test]
    async fn batches_being_sent_shrink_the_window() {
        let s = Sending::default();
        assert!(s.admits(FIND_IN_FLIGHT - 1) && !s.admits(FIND_IN_FLIGHT));
        let guards: Vec<_> = (0..3).map(|_| s.guard()).collect();
        assert!(s.admits(WINDOW_WITH_DATA - 4) && !s.admits(WINDOW_WITH_DATA - 3));
        drop(guards);
        assert_eq!(s.count(), 0);
        assert!(s.admits(FIND_IN_FLIGHT - 1));
        // The drops left a wake-up: a planner that waits after them does not hang.
        tokio::time::timeout(std::time::Duration::from_secs(1), s.one_done())
            .await
            .expect("woken");
    }
}
