//! Wrappers around any [`BlobStore`], one concern each, stacked by [`stack`]:
//! [`Retrying`] (timeouts and backoff on transient faults) over [`Metered`] (requests,
//! errors and bytes, which feed `/metrics`) over [`Faulty`] (fault injection, tests
//! only) over the backend. Metering sits under the retries, so every attempt counts.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use backon::Retryable;
use bytes::Bytes;
use futures::StreamExt;

use super::{BlobStore, BlobStream, Result, StoreError};

/// How the stack is built.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// One attempt of one request may take this long.
    pub timeout: Duration,
    /// Attempts of a request whose failure is transient, the first included.
    pub attempts: usize,
    /// The first wait before a retry; waits double from it up to 5 s.
    pub first_delay: Duration,
    /// Test only: the share of requests that fail on purpose (0 = none).
    pub fault_rate: f64,
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            timeout: Duration::from_secs(60),
            attempts: 6,
            first_delay: Duration::from_millis(100),
            fault_rate: 0.0,
        }
    }
}

/// Wrap `backend` in the layers, returning the store and its meter.
pub fn stack(backend: Arc<dyn BlobStore>, opts: &StackOptions) -> (Arc<dyn BlobStore>, Arc<Meter>) {
    let inner: Arc<dyn BlobStore> = if opts.fault_rate > 0.0 {
        tracing::warn!(
            rate = opts.fault_rate,
            "blob store fault injection is on (tests only)"
        );
        Arc::new(Faulty::new(backend, opts.fault_rate))
    } else {
        backend
    };
    let meter = Arc::new(Meter::default());
    let metered = Arc::new(Metered {
        inner,
        meter: meter.clone(),
    });
    let store = Arc::new(Retrying {
        inner: metered,
        timeout: opts.timeout,
        attempts: opts.attempts.max(1),
        first_delay: opts.first_delay,
    });
    (store, meter)
}

/// The operations a meter counts, in the order of [`Meter::snapshot`].
pub const OPS: [&str; 5] = ["put", "get", "exists", "delete", "list"];

/// Request, error and byte counters of a store since the controller started.
#[derive(Debug, Default)]
pub struct Meter {
    requests: [AtomicU64; 5],
    errors: [AtomicU64; 5],
    bytes_written: AtomicU64,
    bytes_read: AtomicU64,
}

/// A reading of a [`Meter`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeterReading {
    /// (operation, requests, errors), in [`OPS`] order.
    pub ops: Vec<(&'static str, u64, u64)>,
    pub bytes_written: u64,
    pub bytes_read: u64,
}

impl Meter {
    fn count<T>(&self, op: usize, r: &Result<T>) {
        self.requests[op].fetch_add(1, Ordering::Relaxed);
        if r.is_err() {
            self.errors[op].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn snapshot(&self) -> MeterReading {
        MeterReading {
            ops: OPS
                .iter()
                .enumerate()
                .map(|(i, op)| {
                    (
                        *op,
                        self.requests[i].load(Ordering::Relaxed),
                        self.errors[i].load(Ordering::Relaxed),
                    )
                })
                .collect(),
            bytes_written: self.bytes_written.load(Ordering::Relaxed),
            bytes_read: self.bytes_read.load(Ordering::Relaxed),
        }
    }
}

/// Counts every request of the store below it.
pub struct Metered {
    inner: Arc<dyn BlobStore>,
    meter: Arc<Meter>,
}

#[async_trait]
impl BlobStore for Metered {
    async fn put(&self, key: &str, data: Bytes) -> Result<bool> {
        let len = data.len() as u64;
        let r = self.inner.put(key, data).await;
        self.meter.count(0, &r);
        if let Ok(true) = r {
            self.meter.bytes_written.fetch_add(len, Ordering::Relaxed);
        }
        r
    }

    async fn put_many(&self, items: Vec<(String, Bytes)>) -> Result<Vec<bool>> {
        let lens: Vec<u64> = items.iter().map(|(_, d)| d.len() as u64).collect();
        let r = self.inner.put_many(items).await;
        let n = lens.len() as u64;
        self.meter.requests[0].fetch_add(n, Ordering::Relaxed);
        match &r {
            Ok(wrote) => {
                let written = lens.iter().zip(wrote).filter(|(_, w)| **w).map(|(l, _)| l);
                (self.meter.bytes_written).fetch_add(written.sum(), Ordering::Relaxed);
            }
            Err(_) => {
                self.meter.errors[0].fetch_add(n, Ordering::Relaxed);
            }
        }
        r
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        let r = self.inner.get(key).await;
        self.meter.count(1, &r);
        if let Ok(Some(b)) = &r {
            self.meter
                .bytes_read
                .fetch_add(b.len() as u64, Ordering::Relaxed);
        }
        r
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        let r = self.inner.exists(key).await;
        self.meter.count(2, &r);
        r
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let r = self.inner.delete(key).await;
        self.meter.count(3, &r);
        r
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BlobStream<'a> {
        let meter = self.meter.clone();
        meter.requests[4].fetch_add(1, Ordering::Relaxed);
        self.inner
            .list(prefix)
            .inspect(move |r| {
                if r.is_err() {
                    meter.errors[4].fetch_add(1, Ordering::Relaxed);
                }
            })
            .boxed()
    }

    fn location(&self) -> String {
        self.inner.location()
    }

    async fn free_bytes(&self) -> Result<Option<u64>> {
        self.inner.free_bytes().await
    }
}

/// Bounds each attempt by a timeout and retries transient failures with backoff.
/// Retrying a put is safe: puts are write-once, so an attempt whose answer was lost
/// finds the object stored and says it did not write (the caller then reads it back).
/// A listing is not retried here; the S3 client retries each page request itself.
pub struct Retrying {
    inner: Arc<dyn BlobStore>,
    timeout: Duration,
    attempts: usize,
    first_delay: Duration,
}

impl Retrying {
    async fn run<T, F, Fut>(&self, key: &str, op: &'static str, f: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let timeout = self.timeout;
        let mut f = f;
        let attempt = || {
            let fut = f();
            async move {
                tokio::time::timeout(timeout, fut)
                    .await
                    .unwrap_or_else(|_| {
                        Err(StoreError::Timeout {
                            key: key.into(),
                            secs: timeout.as_secs(),
                        })
                    })
            }
        };
        let policy = nex_backup_shared::retry::policy(self.first_delay, Duration::from_secs(5))
            .with_max_times(self.attempts - 1);
        attempt
            .retry(policy)
            .when(StoreError::is_transient)
            .notify(|e, wait| {
                tracing::warn!(op, error = %e, ?wait, "blob store request failed; retrying");
            })
            .await
    }
}

#[async_trait]
impl BlobStore for Retrying {
    async fn put(&self, key: &str, data: Bytes) -> Result<bool> {
        self.run(key, "put", || self.inner.put(key, data.clone()))
            .await
    }

    async fn put_many(&self, items: Vec<(String, Bytes)>) -> Result<Vec<bool>> {
        let first = items.first().map_or("", |(k, _)| k.as_str());
        self.run(first, "put", || self.inner.put_many(items.clone()))
            .await
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        self.run(key, "get", || self.inner.get(key)).await
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        self.run(key, "exists", || self.inner.exists(key)).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.run(key, "delete", || self.inner.delete(key)).await
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BlobStream<'a> {
        self.inner.list(prefix)
    }

    fn location(&self) -> String {
        self.inner.location()
    }

    async fn free_bytes(&self) -> Result<Option<u64>> {
        self.inner.free_bytes().await
    }
}

/// Fails a share of requests on purpose, for tests: before the request, or (for a put,
/// half the time) after it wrote, as when a response is lost on the way back.
pub struct Faulty {
    inner: Arc<dyn BlobStore>,
    /// Out of 2^32.
    threshold: u64,
    state: AtomicU64,
}

impl Faulty {
    pub fn new(inner: Arc<dyn BlobStore>, rate: f64) -> Self {
        Faulty {
            inner,
            threshold: (rate.clamp(0.0, 1.0) * f64::from(u32::MAX)) as u64,
            state: AtomicU64::new(0x9E37_79B9_7F4A_7C15),
        }
    }

    /// The next pseudo-random draw (splitmix64) in 0..2^32.
    fn draw(&self) -> u64 {
        let mut z = self
            .state
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) >> 32
    }

    fn fault(&self, key: &str) -> Result<()> {
        if self.draw() < self.threshold {
            return Err(StoreError::Io {
                key: key.into(),
                source: std::io::Error::new(std::io::ErrorKind::ConnectionReset, "injected fault"),
            });
        }
        Ok(())
    }
}

#[async_trait]
impl BlobStore for Faulty {
    async fn put(&self, key: &str, data: Bytes) -> Result<bool> {
        self.fault(key)?;
        let wrote = self.inner.put(key, data).await?;
        if self.draw().is_multiple_of(2) {
            self.fault(key)?;
        }
        Ok(wrote)
    }

    async fn put_many(&self, items: Vec<(String, Bytes)>) -> Result<Vec<bool>> {
        let first = items.first().map_or(String::new(), |(k, _)| k.clone());
        self.fault(&first)?;
        let wrote = self.inner.put_many(items).await?;
        if self.draw().is_multiple_of(2) {
            self.fault(&first)?;
        }
        Ok(wrote)
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        self.fault(key)?;
        self.inner.get(key).await
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        self.fault(key)?;
        self.inner.exists(key).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.fault(key)?;
        self.inner.delete(key).await
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BlobStream<'a> {
        match self.fault(prefix) {
            Ok(()) => self.inner.list(prefix),
            Err(e) => futures::stream::once(async { Err(e) }).boxed(),
        }
    }

    fn location(&self) -> String {
        self.inner.location()
    }

    async fn free_bytes(&self) -> Result<Option<u64>> {
        self.inner.free_bytes().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::object::ObjectBlobStore;

    fn opts(rate: f64) -> StackOptions {
        StackOptions {
            timeout: Duration::from_secs(5),
            attempts: 12,
            first_delay: Duration::from_millis(1),
            fault_rate: rate,
        }
    }

    #[tokio::test]
    async fn the_stack_passes_conformance() {
        let (s, meter) = stack(Arc::new(ObjectBlobStore::memory()), &opts(0.0));
        crate::store::conformance::run_all(&*s).await;
        let r = meter.snapshot();
        assert!(r.ops.iter().all(|(_, n, _)| *n > 0), "{r:?}");
        assert!(
            r.bytes_written >= 100_000 && r.bytes_read >= 100_000,
            "{r:?}"
        );
    }

    #[tokio::test]
    async fn retries_hide_a_share_of_failing_requests() {
        let (s, meter) = stack(Arc::new(ObjectBlobStore::memory()), &opts(0.3));
        for i in 0..200u32 {
            let key = format!("chunks/s/{i:04}");
            let data = Bytes::from(i.to_be_bytes().to_vec());
            // A put whose answer was lost is retried and reports "already there".
            s.put(&key, data.clone()).await.unwrap();
            assert_eq!(s.get(&key).await.unwrap(), Some(data));
        }
        let r = meter.snapshot();
        let errors: u64 = r.ops.iter().map(|(_, _, e)| e).sum();
        assert!(errors > 50, "faults were injected and retried: {r:?}");
    }

    #[tokio::test]
    async fn a_refused_key_is_not_retried() {
        let (s, meter) = stack(Arc::new(ObjectBlobStore::memory()), &opts(0.0));
        assert!(matches!(
            s.put("../x", Bytes::new()).await,
            Err(StoreError::BadKey { .. })
        ));
        assert_eq!(meter.snapshot().ops[0], ("put", 1, 1));
    }
}
