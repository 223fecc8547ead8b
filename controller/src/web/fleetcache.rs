//! The fleet's figures for the dashboard, computed once for everyone and kept fresh in
//! the background while anyone looks: a page then filters and sorts what is here
//! (O(targets)) instead of reading the catalog whole on every request. The figures are
//! at most [`REFRESH`] plus one computation old; nothing in them is per viewer (scope is
//! applied when a page reads them).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::catalog::JobState;
use crate::fleet::compliance::TargetStatus;
use crate::state::State;
use nex_backup_shared::clock::now_ms;

/// How often the figures are recomputed while the dashboard is in use (less often when
/// a computation takes long, see `workers::paced`)...
pub const REFRESH: Duration = Duration::from_secs(2);
/// ...that is, while a page asked for them within this long.
const IN_USE_MS: u64 = 60_000;

/// One site's figures.
#[derive(Debug, Clone, Default)]
pub struct SiteFigures {
    pub backups_24h_ok: usize,
    pub backups_24h_failed: usize,
    /// Logical bytes of the snapshots held.
    pub logical_bytes: u64,
    /// Sealed bytes those snapshots added to the store.
    pub new_bytes: u64,
}

/// The fleet at one moment.
pub struct Base {
    pub at_ms: u64,
    pub statuses: Vec<TargetStatus>,
    pub sites: HashMap<String, SiteFigures>,
    /// Sealed bytes in the whole store.
    pub stored_total: u64,
}

#[derive(Default)]
pub struct FleetCache {
    base: std::sync::RwLock<Option<Arc<Base>>>,
    asked_ms: AtomicU64,
    computing: tokio::sync::Mutex<()>,
}

async fn compute(st: &Arc<State>) -> anyhow::Result<Base> {
    let now = now_ms();
    let view = st.views.get(st, REFRESH).await?;
    let statuses = crate::fleet::compliance::evaluate_all(st, &view, now);
    let mut sites: HashMap<String, SiteFigures> = HashMap::new();
    let day_ago = now.saturating_sub(24 * 3600 * 1000);
    for j in view
        .jobs
        .iter()
        .filter(|j| j.kind == crate::job::JobKind::Backup && j.started_unix_ms >= day_ago)
    {
        let f = sites.entry(j.site.clone()).or_default();
        match j.state {
            JobState::Succeeded => f.backups_24h_ok += 1,
            JobState::Failed => f.backups_24h_failed += 1,
            JobState::Running => {}
        }
    }
    for s in &view.snapshots {
        let f = sites.entry(s.site.clone()).or_default();
        f.logical_bytes += s.logical_bytes;
        f.new_bytes += s.new_bytes;
    }
    Ok(Base {
        at_ms: now,
        statuses,
        sites,
        stored_total: st.catalog.chunk_totals().await?.1,
    })
}

impl FleetCache {
    /// The newest figures (computed now if there are none yet).
    pub async fn get(&self, st: &Arc<State>) -> anyhow::Result<Arc<Base>> {
        self.asked_ms.store(now_ms(), Ordering::Relaxed);
        if let Some(b) = self.base.read().unwrap_or_else(|p| p.into_inner()).clone() {
            return Ok(b);
        }
        self.refresh(st).await
    }

    /// Compute the figures again (one computation at a time), on a blocking thread: it
    /// is CPU work that must not hold up the threads answering requests.
    pub async fn refresh(&self, st: &Arc<State>) -> anyhow::Result<Arc<Base>> {
        let _one = self.computing.lock().await;
        let (st2, rt) = (st.clone(), tokio::runtime::Handle::current());
        let b = tokio::task::spawn_blocking(move || rt.block_on(compute(&st2))).await??;
        let b = Arc::new(b);
        *self.base.write().unwrap_or_else(|p| p.into_inner()) = Some(b.clone());
        Ok(b)
    }

    /// Keep the figures fresh while the dashboard is in use (a worker on every replica).
    pub fn spawn_refresher(self: &Arc<Self>, state: &Arc<State>) {
        let (me, st) = (self.clone(), state.clone());
        state
            .workers
            .spawn("dashboard-figures", move |ctx| async move {
                let mut last = Duration::ZERO;
                loop {
                    tokio::select! {
                        _ = ctx.stop.cancelled() => return,
                        _ = tokio::time::sleep(crate::workers::paced(REFRESH, last)) => {}
                    }
                    let asked = me.asked_ms.load(Ordering::Relaxed);
                    if asked == 0 || now_ms().saturating_sub(asked) > IN_USE_MS {
                        continue;
                    }
                    let began = std::time::Instant::now();
                    if let Err(e) = me.refresh(&st).await {
                        tracing::warn!(error = %e, "dashboard figures not refreshed");
                    }
                    last = began.elapsed();
                }
            });
    }
}
