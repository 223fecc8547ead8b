//! Streaming content-defined chunking (FastCDC 2020) over any `AsyncRead`.
//!
//! Memory is one buffer of `max` bytes. The whole-stream SHA-256 is computed as chunks are
//! emitted. A read that produces no bytes within the stall limit fails with
//! [`ChunkerError::Stalled`], so a hung `pg_dump` cannot hang a job forever.

use std::time::Duration;

use fastcdc::v2020::{MASKS, logarithm2};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Chunk size bounds. Defaults: min 64 KiB, average 256 KiB, max 1 MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkerConfig {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

impl Default for ChunkerConfig {
    fn default() -> Self {
        ChunkerConfig {
            min: 64 * 1024,
            avg: 256 * 1024,
            max: 1024 * 1024,
        }
    }
}

/// The smallest minimum chunk size a configuration may set: no chunk but a stream's
/// last is ever shorter.
pub const SMALLEST_MIN: u32 = 64;

/// Chunk size bounds that FastCDC or the chunk decoder would not accept.
#[derive(Debug, thiserror::Error)]
#[error(
    "chunk sizes min={} avg={} max={} must satisfy 64 <= min <= avg <= max <= 8 MiB, 256 B <= avg <= 4 MiB",
    .0.min, .0.avg, .0.max
)]
pub struct BadChunkSizes(pub ChunkerConfig);

impl ChunkerConfig {
    /// Check the bounds against what FastCDC and the chunk decoder accept.
    pub fn validate(&self) -> Result<(), BadChunkSizes> {
        let ok = self.min >= SMALLEST_MIN
            && self.min <= self.avg
            && self.avg <= self.max
            && (256..=4 * 1024 * 1024).contains(&self.avg)
            && self.max as usize <= crate::chunk::MAX_CHUNK_LEN;
        if ok {
            Ok(())
        } else {
            Err(BadChunkSizes(*self))
        }
    }
}

/// Errors while chunking a stream.
#[derive(Debug, thiserror::Error)]
pub enum ChunkerError {
    #[error("read {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} produced no data for {secs} s (stalled)")]
    Stalled { what: String, secs: u64 },
}

/// Length and SHA-256 of a whole chunked stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSummary {
    pub length: u64,
    pub sha256: [u8; 32],
}

/// Cuts an async byte stream into content-defined chunks.
pub struct StreamChunker<R> {
    what: String,
    reader: R,
    cfg: ChunkerConfig,
    masks: (u64, u64),
    buf: Vec<u8>,
    start: usize,
    len: usize,
    eof: bool,
    stall: Option<Duration>,
    /// None: the caller hashes the stream elsewhere (see [`StreamChunker::without_hash`]).
    hasher: Option<Sha256>,
    total: u64,
}

impl<R: AsyncRead + Unpin> StreamChunker<R> {
    /// `what` names the stream in errors (e.g. "pg_dump of target main").
    pub fn new(
        what: impl Into<String>,
        reader: R,
        cfg: ChunkerConfig,
        stall: Option<Duration>,
    ) -> Self {
        let bits = logarithm2(cfg.avg) as usize;
        StreamChunker {
            what: what.into(),
            reader,
            cfg,
            masks: (MASKS[bits + 1], MASKS[bits - 1]),
            // Room for several maximal chunks, so the unconsumed tail is moved to the
            // front only once every few chunks.
            buf: vec![0; 4 * cfg.max as usize],
            start: 0,
            len: 0,
            eof: false,
            stall,
            hasher: Some(Sha256::new()),
            total: 0,
        }
    }

    /// Do not hash the stream: the caller hashes it on a thread of its own (so that the
    /// chunk stage, which is serial, does not). [`StreamChunker::finish`] then reports
    /// a zero digest.
    pub fn without_hash(mut self) -> Self {
        self.hasher = None;
        self
    }

    async fn fill(&mut self) -> Result<(), ChunkerError> {
        while !self.eof && self.len - self.start < self.cfg.max as usize {
            if self.len == self.buf.len() {
                self.buf.copy_within(self.start..self.len, 0);
                self.len -= self.start;
                self.start = 0;
            }
            let read = self.reader.read(&mut self.buf[self.len..]);
            let n =
                match self.stall {
                    Some(limit) => tokio::time::timeout(limit, read).await.map_err(|_| {
                        ChunkerError::Stalled {
                            what: self.what.clone(),
                            secs: limit.as_secs(),
                        }
                    })?,
                    None => read.await,
                }
                .map_err(|source| ChunkerError::Io {
                    what: self.what.clone(),
                    source,
                })?;
            if n == 0 {
                self.eof = true;
            }
            self.len += n;
        }
        Ok(())
    }

    /// The next chunk, or `None` at the end of the stream.
    pub async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, ChunkerError> {
        self.fill().await?;
        if self.len == self.start {
            return Ok(None);
        }
        let (mask_s, mask_l) = self.masks;
        let (_, count) = fastcdc::v2020::cut(
            &self.buf[self.start..self.len],
            self.cfg.min as usize,
            self.cfg.avg as usize,
            self.cfg.max as usize,
            mask_s,
            mask_l,
            mask_s << 1,
            mask_l << 1,
        );
        let count = if count == 0 {
            self.len - self.start
        } else {
            count
        };
        let chunk = self.buf[self.start..self.start + count].to_vec();
        self.start += count;
        if let Some(h) = &mut self.hasher {
            h.update(&chunk);
        }
        self.total += count as u64;
        Ok(Some(chunk))
    }

    /// Bytes emitted so far.
    pub fn bytes_done(&self) -> u64 {
        self.total
    }

    /// Length and hash of everything emitted (a zero hash [`without_hash`]). Call after
    /// `next_chunk` returned `None`.
    ///
    /// [`without_hash`]: StreamChunker::without_hash
    pub fn finish(self) -> StreamSummary {
        StreamSummary {
            length: self.total,
            sha256: self.hasher.map_or([0; 32], |h| h.finalize().into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn small() -> ChunkerConfig {
        ChunkerConfig {
            min: 256,
            avg: 1024,
            max: 4096,
        }
    }

    async fn chunks_of(data: &[u8], cfg: ChunkerConfig) -> (Vec<Vec<u8>>, StreamSummary) {
        let mut c = StreamChunker::new("test", data, cfg, None);
        let mut out = vec![];
        while let Some(ch) = c.next_chunk().await.unwrap() {
            out.push(ch);
        }
        (out, c.finish())
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn chunks_concatenate_to_input_within_bounds(data in proptest::collection::vec(any::<u8>(), 0..40_000)) {
            let (chunks, sum) = rt().block_on(chunks_of(&data, small()));
            prop_assert_eq!(chunks.concat(), data.clone());
            prop_assert_eq!(sum.length, data.len() as u64);
            prop_assert_eq!(sum.sha256, <[u8; 32]>::from(Sha256::digest(&data)));
            for (i, c) in chunks.iter().enumerate() {
                prop_assert!(c.len() <= 4096);
                if i + 1 < chunks.len() { prop_assert!(c.len() >= 256); }
            }
        }
    }

    #[test]
    fn local_edit_keeps_most_chunks() {
        let mut data: Vec<u8> = (0..400_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let (a, _) = rt().block_on(chunks_of(&data, small()));
        data[200_000] ^= 0xff;
        data.splice(100_000..100_000, b"inserted".iter().copied());
        let (b, _) = rt().block_on(chunks_of(&data, small()));
        let set: std::collections::HashSet<_> = a.iter().collect();
        let shared = b.iter().filter(|c| set.contains(c)).count();
        assert!(
            shared + 6 >= b.len(),
            "only {shared} of {} chunks shared",
            b.len()
        );
    }

    #[test]
    fn stalled_reader_fails_with_named_stream() {
        rt().block_on(async {
            let (_w, r) = tokio::io::duplex(64);
            let mut c = StreamChunker::new(
                "pg_dump of target main",
                r,
                small(),
                Some(Duration::from_millis(50)),
            );
            let err = c.next_chunk().await.unwrap_err().to_string();
            assert!(
                err.contains("pg_dump of target main") && err.contains("stalled"),
                "{err}"
            );
        });
    }
}
