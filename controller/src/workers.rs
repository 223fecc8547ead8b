//! Background workers: every activity the controller runs on its own (scheduler, RPO
//! watch, garbage collection, alert rules, the notifier, the health watch) is a named
//! worker with its state, runs, last error and error count, all under one shutdown
//! tree: [`Workers::shutdown`] cancels every worker and joins them within a bound.
//! `nex-backup status` shows the table.
//!
//! Periodic workers run only while this controller leads ([`Leadership`]): always on
//! a single controller; with replicas, on the one holding the leader lock.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info_span, warn};

/// What a worker is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    /// Waiting for its next run.
    Idle,
    /// In a run.
    Busy,
    /// Ended (at shutdown, or by itself).
    Stopped,
}

impl WorkerState {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Idle => "idle",
            WorkerState::Busy => "busy",
            WorkerState::Stopped => "stopped",
        }
    }
}

/// One row of the worker table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerStatus {
    pub name: String,
    pub state: WorkerState,
    pub runs: u64,
    pub errors: u64,
    pub last_error: Option<String>,
    pub last_error_unix_ms: u64,
    pub last_run_unix_ms: u64,
}

#[derive(Default)]
struct Inner {
    tracker: TaskTracker,
    stop: CancellationToken,
    table: Mutex<BTreeMap<String, WorkerStatus>>,
    leadership: Leadership,
}

/// Whether this controller runs the fleet-wide work (scheduler, RPO, GC, alerting,
/// verification). A single controller always does; of several replicas, only the one
/// elected (see `crate::cluster`).
#[derive(Debug)]
pub struct Leadership {
    leader: std::sync::atomic::AtomicBool,
}

impl Default for Leadership {
    fn default() -> Self {
        Leadership {
            leader: std::sync::atomic::AtomicBool::new(true),
        }
    }
}

impl Leadership {
    pub fn is_leader(&self) -> bool {
        self.leader.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Set by the election; returns the previous value.
    pub fn set(&self, leader: bool) -> bool {
        self.leader
            .swap(leader, std::sync::atomic::Ordering::SeqCst)
    }
}

/// See module docs. Cloning gives another handle on the same tree.
#[derive(Clone, Default)]
pub struct Workers {
    inner: Arc<Inner>,
}

/// What a worker gets: its stop token and a handle to report its runs.
#[derive(Clone)]
pub struct WorkerCtx {
    pub name: String,
    pub stop: CancellationToken,
    workers: Workers,
}

impl WorkerCtx {
    fn set(&self, f: impl FnOnce(&mut WorkerStatus)) {
        let mut t = self.workers.table();
        if let Some(s) = t.get_mut(&self.name) {
            f(s)
        }
    }

    /// A run starts.
    pub fn begin(&self) {
        self.set(|s| s.state = WorkerState::Busy);
    }

    /// A run ended; an error is counted, logged and kept as the last error.
    pub fn end<E: Display>(&self, r: Result<(), E>) {
        let now = nex_backup_shared::clock::now_ms();
        if let Err(e) = &r {
            warn!(worker = %self.name, error = %e, "worker run failed");
        }
        self.set(|s| {
            s.state = WorkerState::Idle;
            s.runs += 1;
            s.last_run_unix_ms = now;
            if let Err(e) = r {
                s.errors += 1;
                s.last_error = Some(e.to_string());
                s.last_error_unix_ms = now;
            }
        });
    }
}

impl Workers {
    fn table(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, WorkerStatus>> {
        self.inner.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether this controller leads (see [`Leadership`]).
    pub fn leadership(&self) -> &Leadership {
        &self.inner.leadership
    }

    /// The token every worker stops on.
    pub fn stop_token(&self) -> CancellationToken {
        self.inner.stop.clone()
    }

    /// Start a worker; it runs until it returns or its stop token is cancelled.
    pub fn spawn<F, Fut>(&self, name: &str, f: F)
    where
        F: FnOnce(WorkerCtx) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.table().insert(
            name.to_string(),
            WorkerStatus {
                name: name.to_string(),
                state: WorkerState::Idle,
                runs: 0,
                errors: 0,
                last_error: None,
                last_error_unix_ms: 0,
                last_run_unix_ms: 0,
            },
        );
        let ctx = WorkerCtx {
            name: name.to_string(),
            stop: self.inner.stop.child_token(),
            workers: self.clone(),
        };
        let fut = f(ctx.clone());
        let span = info_span!("worker", worker = %name);
        self.inner.tracker.spawn(
            async move {
                fut.await;
                ctx.set(|s| s.state = WorkerState::Stopped);
            }
            .instrument(span),
        );
    }

    /// A worker that runs `run` every `every` (and at once when `wake` is notified),
    /// until stopped. A run in progress at shutdown is cancelled at its next await.
    pub fn periodic<F, Fut, E>(
        &self,
        name: &str,
        every: Duration,
        wake: Option<Arc<Notify>>,
        run: F,
    ) where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Display + 'static,
    {
        self.spawn(name, move |ctx| periodic_loop(ctx, every, wake, run));
    }

    /// The worker table, by name.
    pub fn statuses(&self) -> Vec<WorkerStatus> {
        self.table().values().cloned().collect()
    }

    /// Cancel every worker and wait for all of them, at most `bound`. True when all ended.
    pub async fn shutdown(&self, bound: Duration) -> bool {
        self.inner.stop.cancel();
        self.inner.tracker.close();
        tokio::time::timeout(bound, self.inner.tracker.wait())
            .await
            .is_ok()
    }
}

/// The pause before a periodic worker's next pass: its period, or three times its last
/// pass if that is longer, so that a worker whose pass grew with the fleet (a whole-fleet
/// evaluation takes seconds at hundreds of sites) works at most a quarter of the time
/// and leaves the cores to the requests.
pub fn paced(every: Duration, last_run: Duration) -> Duration {
    every.max(last_run.saturating_mul(3))
}

async fn periodic_loop<F, Fut, E>(
    ctx: WorkerCtx,
    every: Duration,
    wake: Option<Arc<Notify>>,
    mut run: F,
) where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Display + 'static,
{
    let woken = async |w: &Option<Arc<Notify>>| match w {
        Some(n) => n.notified().await,
        None => std::future::pending().await,
    };
    let mut last_run = Duration::ZERO;
    loop {
        tokio::select! {
            _ = ctx.stop.cancelled() => return,
            _ = tokio::time::sleep(paced(every, last_run)) => {}
            _ = woken(&wake) => {}
        }
        if !ctx.workers.leadership().is_leader() {
            continue; // another replica does this work
        }
        ctx.begin();
        let began = std::time::Instant::now();
        let r = tokio::select! {
            _ = ctx.stop.cancelled() => return,
            r = run() => r,
        };
        last_run = began.elapsed();
        ctx.end(r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_pass_spaces_the_next_one() {
        let s = Duration::from_secs;
        assert_eq!(paced(s(1), Duration::from_millis(10)), s(1));
        assert_eq!(paced(s(1), s(2)), s(6));
    }

    #[tokio::test]
    async fn runs_counts_errors_and_joins_on_shutdown() {
        let w = Workers::default();
        let n = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let n2 = n.clone();
        w.periodic("flaky", Duration::from_millis(10), None, move || {
            let k = n2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move {
                if k.is_multiple_of(2) {
                    Err(format!("attempt {k} failed"))
                } else {
                    Ok(())
                }
            }
        });
        w.spawn("forever", |ctx| async move { ctx.stop.cancelled().await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let s = w.statuses();
        let flaky = s.iter().find(|s| s.name == "flaky").unwrap();
        assert!(flaky.runs >= 4, "{flaky:?}");
        assert!(flaky.errors >= 2 && flaky.errors < flaky.runs, "{flaky:?}");
        assert!(flaky.last_error.as_deref().unwrap().contains("failed"));
        assert!(
            w.shutdown(Duration::from_secs(2)).await,
            "all workers joined"
        );
        assert!(w.statuses().iter().all(|s| s.state == WorkerState::Stopped));
    }
}
