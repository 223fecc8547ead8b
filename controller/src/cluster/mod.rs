//! Several `nex-backup serve` replicas on one PostgreSQL catalog and one object store.
//!
//! - [`leader`]: one replica leads, elected by a PostgreSQL session advisory lock held on
//!   a connection of its own. The leader runs the fleet-wide work (scheduler, RPO, GC,
//!   alerting, verification, state copies); the others serve agents and the CLI. When
//!   the leader dies, PostgreSQL ends its session and frees the lock, and another replica
//!   takes it within [`leader::POLL`]. A replica that loses its lock connection stops
//!   leading at once.
//! - [`relay`]: where each agent's session lives (the `sessions` table, refreshed every
//!   [`relay::REFRESH`]), commands for an agent connected to another replica (the
//!   `relay_commands` queue plus `NOTIFY`, drained by the replica holding the session),
//!   the progress of jobs (so the leader's stall check sees progress made elsewhere),
//!   and the outcome of jobs (so a CLI waiting through any replica gets it).
//!
//! - Admin credentials: every replica re-reads them from the catalog every
//!   [`ADMINS_EVERY`], so one created or revoked through another replica counts here
//!   within that bound (if the catalog cannot be read, the last list read stays).
//!
//! With the embedded catalog none of this runs: one controller leads alone.

pub mod ca;
pub mod leader;
pub mod relay;

use std::sync::Arc;
use std::time::Duration;

use crate::catalog::pg::PgCatalog;
use crate::state::State;

/// This replica's name in the shared tables: host name and a random suffix, new at
/// every start (so a restarted replica never inherits rows of its previous life).
pub fn replica_id() -> String {
    let host = gethostname::gethostname().to_string_lossy().to_string();
    let host: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(40)
        .collect();
    format!("{host}-{:08x}", rand::random::<u32>())
}

/// Start the election and the relay for `state` on the catalog at `url`.
pub fn spawn(state: &Arc<State>, pg: PgCatalog, url: &str) {
    let replica = replica_id();
    tracing::info!(%replica, "controller replica on a shared catalog");
    state.workers.leadership().set(false);
    leader::spawn(state, url, &replica);
    relay::spawn(state, pg, url, &replica);
    spawn_admins(state);
}

/// How often a replica re-reads the admin credentials from the shared catalog.
pub const ADMINS_EVERY: Duration = Duration::from_secs(2);

fn spawn_admins(state: &Arc<State>) {
    let st = state.clone();
    state.workers.spawn("admins", move |ctx| async move {
        loop {
            tokio::select! {
                _ = ctx.stop.cancelled() => return,
                _ = tokio::time::sleep(ADMINS_EVERY) => {}
            }
            match st.catalog.admins().await {
                Ok(records) => st.admins.load(&records),
                Err(e) => tracing::warn!(error = %e, "re-reading the admin credentials"),
            }
        }
    });
}
