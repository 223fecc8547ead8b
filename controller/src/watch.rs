//! Workers that watch the fleet's state change with time: the RPO watch (records every
//! change of a target's RPO state and publishes it), the daily rotation, and the
//! certificate watch (agents whose certificate nears its end).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use crate::catalog::CatalogError;
use crate::events::Event;
use crate::fleet::compliance;
use crate::prune::{PruneError, PruneScope, prune};
use crate::rpo::RpoState;
use crate::state::State;

/// How often the RPO watch re-evaluates every target.
pub const RPO_EVERY: Duration = Duration::from_secs(1);
/// How often the certificate watch looks.
pub const CERT_EVERY: Duration = Duration::from_secs(3600);
/// Certificates that end within this are announced.
pub const CERT_WARN_SECS: i64 = 14 * 86_400;

/// Start the watch workers.
pub fn spawn_all(state: &Arc<State>) {
    let rpo = Arc::new(RpoWatch {
        state: state.clone(),
        last: Default::default(),
    });
    state.workers.periodic("rpo", RPO_EVERY, None, move || {
        let w = rpo.clone();
        async move { w.tick().await }
    });
    let st = state.clone();
    let last_day = Arc::new(std::sync::atomic::AtomicU64::new(0));
    state
        .workers
        .periodic("gc", Duration::from_secs(60), None, move || {
            let (st, last_day) = (st.clone(), last_day.clone());
            async move { daily_rotation(&st, &last_day).await }
        });
    let st = state.clone();
    state
        .workers
        .periodic("certificates", CERT_EVERY, None, move || {
            let st = st.clone();
            async move { cert_watch(&st).await }
        });
}

/// Records RPO state changes; the last state per target is loaded from the catalog once.
struct RpoWatch {
    state: Arc<State>,
    last: tokio::sync::Mutex<Option<HashMap<(String, String), RpoState>>>,
}

impl RpoWatch {
    async fn tick(&self) -> Result<(), CatalogError> {
        let now = nex_backup_shared::clock::now_ms();
        let view = self.state.views.get(&self.state, RPO_EVERY).await?;
        let mut guard = self.last.lock().await;
        if guard.is_none() {
            let mut m = HashMap::new();
            for e in self.state.catalog.rpo_events(None).await? {
                m.insert((e.site, e.target), e.state);
            }
            *guard = Some(m);
        }
        let last = guard.as_mut().expect("loaded above");
        // Judging every target is CPU work that grows with the fleet: off the request
        // threads.
        let st = self.state.clone();
        let statuses =
            tokio::task::spawn_blocking(move || compliance::evaluate_all(&st, &view, now))
                .await
                .map_err(|e| CatalogError::Storage(format!("evaluating the fleet: {e}")))?;
        for t in statuses {
            let key = (t.site.clone(), t.target.clone());
            let before = last.get(&key).copied();
            if before == Some(t.state) {
                continue;
            }
            self.state.catalog.put_rpo_event(&t.event(now)).await?;
            if t.state.complies() {
                info!(site = %t.site, target = %t.target, state = t.state.label(), reason = %t.reason, "RPO state");
            } else {
                warn!(site = %t.site, target = %t.target, state = t.state.label(), reason = %t.reason, "RPO state");
            }
            self.state.events.publish(Event::RpoChanged {
                site: t.site.clone(),
                target: t.target.clone(),
                from: before,
                to: t.state,
                reason: t.reason.clone(),
            });
            last.insert(key, t.state);
        }
        Ok(())
    }
}

/// Once per UTC day, retention and garbage collection for everything (rotation after each
/// backup happens in the scheduler).
async fn daily_rotation(
    state: &State,
    last_day: &std::sync::atomic::AtomicU64,
) -> Result<(), PruneError> {
    let now = nex_backup_shared::clock::now_ms();
    let day = now / 86_400_000;
    let before = last_day.swap(day, std::sync::atomic::Ordering::Relaxed);
    if before == 0 || before == day {
        return Ok(());
    }
    let scope = PruneScope {
        site: None,
        target: None,
        dry_run: false,
        plan_only: false,
    };
    prune(state, &scope, now).await.map(|_| ())
}

/// Publish [`Event::CertExpiring`] for every agent certificate ending within
/// [`CERT_WARN_SECS`].
async fn cert_watch(state: &State) -> Result<(), CatalogError> {
    let now = nex_backup_shared::clock::unix_now();
    for id in state.catalog.identities().await? {
        let end = id.not_after_unix;
        if id.revoked_unix_ms.is_none() && end - now < CERT_WARN_SECS {
            state.events.publish(Event::CertExpiring {
                site: id.site.clone(),
                agent_id: id.agent_id.clone(),
                not_after_unix: end,
            });
        }
    }
    Ok(())
}
