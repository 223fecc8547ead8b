//! Leader election on a PostgreSQL session advisory lock (see [`super`]).

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use crate::state::State;

/// How often a follower tries the lock, and the leader checks its connection.
pub const POLL: Duration = Duration::from_secs(1);
/// The advisory lock key of the leader ("nexblead").
const LEADER_LOCK: i64 = 0x6e65_7862_6c65_6164;

/// Start the `leader` worker: every replica runs it.
pub fn spawn(state: &Arc<State>, url: &str, replica: &str) {
    let (st, url, replica) = (state.clone(), url.to_string(), replica.to_string());
    state.workers.spawn("leader", move |ctx| async move {
        loop {
            let r = tokio::select! {
                _ = ctx.stop.cancelled() => break,
                r = hold(&st, &url, &replica) => r,
            };
            if st.workers.leadership().set(false) {
                warn!(%replica, "leadership lost");
            }
            if let Err(e) = r {
                warn!(error = %e, "leader election connection failed; retrying");
            }
            tokio::select! {
                _ = ctx.stop.cancelled() => break,
                _ = tokio::time::sleep(POLL) => {}
            }
        }
        st.workers.leadership().set(false);
    });
}

/// Connect, then try the lock until it is ours, and keep checking the connection while
/// it is. Returns (with an error) when the connection fails.
async fn hold(state: &State, url: &str, replica: &str) -> anyhow::Result<()> {
    let (cfg, tls) = crate::catalog::pg::tls::parse(url)?;
    let (client, conn) = cfg.connect(tls).await?;
    let driver = tokio::spawn(conn);
    let r: anyhow::Result<()> = async {
        loop {
            if state.workers.leadership().is_leader() {
                // A connection that does not answer is as good as lost: stop leading.
                tokio::time::timeout(POLL * 3, client.simple_query("SELECT 1"))
                    .await
                    .map_err(|_| anyhow::anyhow!("the lock connection stopped answering"))??;
            } else {
                let row = client
                    .query_one("SELECT pg_try_advisory_lock($1)", &[&LEADER_LOCK])
                    .await?;
                if row.get::<_, bool>(0) {
                    state.workers.leadership().set(true);
                    info!(%replica, "this replica now leads: scheduler, RPO, GC, alerting and verification run here");
                }
            }
            tokio::time::sleep(POLL).await;
        }
    }
    .await;
    driver.abort();
    r
}
