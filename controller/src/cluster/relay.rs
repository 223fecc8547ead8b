//! Sessions, commands, progress and outcomes shared between replicas (see [`super`]).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use futures::StreamExt;
use nex_backup_shared::clock::now_ms;
use nex_backup_shared::pb;
use prost::Message;
use tracing::{debug, warn};

use crate::catalog::Result;
use crate::catalog::pg::{PgCatalog, pg_err};
use crate::hub::{Forwarder, RemoteView, SendError};
use crate::state::State;

/// How often a replica publishes its sessions and progress and reads the others'.
pub const REFRESH: Duration = Duration::from_secs(2);
/// A session row not refreshed for this long belongs to a replica that is gone.
const STALE_MS: u64 = 8_000;
/// The channel replicas are woken on when a command waits for them.
const CHANNEL: &str = "nexb_relay";
/// Relayed commands, outcomes and progress older than this are dropped.
const KEEP_MS: u64 = 24 * 3600 * 1000;

/// The [`Forwarder`] of a replica on a shared catalog.
pub struct PgRelay {
    pg: PgCatalog,
    replica: String,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

#[tonic::async_trait]
impl Forwarder for PgRelay {
    async fn forward(
        &self,
        site: &str,
        agent_id: &str,
        msg: pb::ControllerMessage,
    ) -> std::result::Result<(), SendError> {
        self.queue(site, agent_id, msg.encode_to_vec())
            .await
            .map_err(|e| SendError::Relay {
                site: site.into(),
                agent_id: agent_id.into(),
                reason: e.to_string(),
            })
            .and_then(|queued| {
                queued
                    .then_some(())
                    .ok_or_else(|| SendError::offline(site, agent_id))
            })
    }

    async fn take_queued(&self, site: &str, agent_id: &str) -> Vec<pb::ControllerMessage> {
        let rows = match self.pg.client().await {
            Ok(c) => c
                .query(
                    "DELETE FROM relay_commands WHERE site = $1 AND agent_id = $2
                     RETURNING id, payload",
                    &[&site, &agent_id],
                )
                .await
                .map_err(pg_err),
            Err(e) => Err(e),
        };
        let mut rows = match rows {
            Ok(r) => r,
            Err(e) => {
                warn!(%site, agent = %agent_id, error = %e, "take commands queued for the agent");
                return vec![];
            }
        };
        rows.sort_by_key(|r| r.get::<_, i64>(0));
        rows.iter()
            .filter_map(
                |r| match pb::ControllerMessage::decode(r.get::<_, &[u8]>(1)) {
                    Ok(m) => Some(m),
                    Err(e) => {
                        warn!(%site, agent = %agent_id, id = r.get::<_, i64>(0), error = %e,
                        "a queued command does not decode; dropped");
                        None
                    }
                },
            )
            .collect()
    }

    async fn share_outcome(&self, update: &pb::JobUpdate) {
        let rec = serde_json::json!({
            "at": now_ms(),
            "update": b64().encode(update.encode_to_vec()),
        });
        if let Err(e) = self.pg.put_doc("outcome", &update.job_id, None, &rec).await {
            warn!(job = %update.job_id, error = %e, "share job outcome with other replicas");
        }
    }

    async fn fetch_outcome(&self, job_id: &str) -> Option<pb::JobUpdate> {
        let rec: serde_json::Value = match self.pg.get_doc("outcome", job_id).await {
            Ok(rec) => rec?,
            Err(e) => {
                // Asked again on the next poll; say why it is not answered now.
                warn!(job = %job_id, error = %e, "read a job outcome another replica shared");
                return None;
            }
        };
        let decoded = rec["update"]
            .as_str()
            .and_then(|u| b64().decode(u).ok())
            .and_then(|b| pb::JobUpdate::decode(b.as_slice()).ok());
        if decoded.is_none() {
            warn!(job = %job_id, "a shared job outcome does not decode; ignored");
        }
        decoded
    }
}

impl PgRelay {
    /// Queue a command for the replica holding the agent's session; false when no live
    /// replica holds one.
    async fn queue(&self, site: &str, agent_id: &str, payload: Vec<u8>) -> Result<bool> {
        let mut c = self.pg.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        let fresh = now_ms().saturating_sub(STALE_MS) as i64;
        let row = tx
            .query_opt(
                "INSERT INTO relay_commands (dest, site, agent_id, payload, created)
                 SELECT replica, $1, $2, $3, $4 FROM sessions
                 WHERE site = $1 AND agent_id = $2 AND replica <> $5 AND seen > $6
                 RETURNING dest",
                &[
                    &site,
                    &agent_id,
                    &payload,
                    &(now_ms() as i64),
                    &self.replica,
                    &fresh,
                ],
            )
            .await
            .map_err(pg_err)?;
        let Some(row) = row else {
            return Ok(false);
        };
        let dest: String = row.get(0);
        tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &dest])
            .await
            .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
        Ok(true)
    }

    /// Publish this replica's sessions and job progress; read the other replicas'.
    async fn refresh(&self, state: &State) -> Result<()> {
        let now = now_ms() as i64;
        let mine = state.hub.local_sessions();
        let c = self.pg.client().await?;
        // One statement per thousand sessions, not one per session.
        let rows: Vec<_> = mine.iter().collect();
        for part in rows.chunks(1000) {
            let sites: Vec<&str> = part.iter().map(|((s, _), _)| s.as_str()).collect();
            let agents: Vec<&str> = part.iter().map(|((_, a), _)| a.as_str()).collect();
            let conns: Vec<i64> = part.iter().map(|(_, l)| l.conn as i64).collect();
            let targets: Vec<serde_json::Value> = part
                .iter()
                .map(|(_, l)| serde_json::to_value(&l.targets).unwrap_or_default())
                .collect();
            c.execute(
                "INSERT INTO sessions (site, agent_id, replica, conn, targets, seen)
                 SELECT s, a, $3, n, t, $6
                 FROM unnest($1::text[], $2::text[], $4::bigint[], $5::jsonb[]) AS u(s, a, n, t)
                 ON CONFLICT (site, agent_id) DO UPDATE SET replica = EXCLUDED.replica,
                   conn = EXCLUDED.conn, targets = EXCLUDED.targets, seen = EXCLUDED.seen",
                &[&sites, &agents, &self.replica, &conns, &targets, &now],
            )
            .await
            .map_err(pg_err)?;
        }
        // Rows of this replica for sessions that ended here.
        let keep: Vec<String> = mine.iter().map(|((s, a), _)| format!("{s}/{a}")).collect();
        c.execute(
            "DELETE FROM sessions WHERE replica = $1 AND NOT (site || '/' || agent_id = ANY($2))",
            &[&self.replica, &keep],
        )
        .await
        .map_err(pg_err)?;
        let (jobs, recs): (Vec<String>, Vec<serde_json::Value>) = state
            .hub
            .local_progress()
            .into_iter()
            .map(|(job, n)| {
                let rec = serde_json::json!({"n": n, "replica": self.replica, "at": now});
                (job, rec)
            })
            .unzip();
        if !jobs.is_empty() {
            c.execute(
                "INSERT INTO docs (kind, k, site, rec)
                 SELECT 'progress', k, NULL, r FROM unnest($1::text[], $2::jsonb[]) AS u(k, r)
                 ON CONFLICT (kind, k) DO UPDATE SET rec = EXCLUDED.rec",
                &[&jobs, &recs],
            )
            .await
            .map_err(pg_err)?;
        }
        let mut view = RemoteView::default();
        let local: HashSet<(String, String)> = mine.into_iter().map(|(k, _)| k).collect();
        for r in c
            .query(
                "SELECT site, agent_id, targets FROM sessions WHERE replica <> $1 AND seen > $2",
                &[&self.replica, &(now - STALE_MS as i64)],
            )
            .await
            .map_err(pg_err)?
        {
            let key: (String, String) = (r.get(0), r.get(1));
            if local.contains(&key) {
                continue;
            }
            let targets: Vec<(String, String)> =
                serde_json::from_value(r.get(2)).unwrap_or_default();
            view.sessions.insert(key, targets);
        }
        for r in c
            .query(
                "SELECT k, rec FROM docs WHERE kind = 'progress' AND rec->>'replica' <> $1",
                &[&self.replica],
            )
            .await
            .map_err(pg_err)?
        {
            let rec: serde_json::Value = r.get(1);
            view.progress
                .insert(r.get(0), rec["n"].as_u64().unwrap_or_default());
        }
        state.hub.set_remote(view);
        Ok(())
    }

    /// Drop relayed records nobody needs any more.
    async fn expire(&self) -> Result<()> {
        let c = self.pg.client().await?;
        let old = now_ms().saturating_sub(KEEP_MS) as i64;
        c.execute("DELETE FROM relay_commands WHERE created < $1", &[&old])
            .await
            .map_err(pg_err)?;
        c.execute(
            "DELETE FROM docs WHERE kind IN ('outcome', 'progress') AND (rec->>'at')::bigint < $1",
            &[&old],
        )
        .await
        .map_err(pg_err)?;
        Ok(())
    }

    /// Deliver the commands queued for this replica to its local sessions.
    async fn drain(&self, state: &State) -> Result<()> {
        let c = self.pg.client().await?;
        let rows = c
            .query(
                "DELETE FROM relay_commands WHERE dest = $1 RETURNING site, agent_id, payload",
                &[&self.replica],
            )
            .await
            .map_err(pg_err)?;
        for r in rows {
            let (site, agent): (String, String) = (r.get(0), r.get(1));
            let Ok(msg) = pb::ControllerMessage::decode(r.get::<_, &[u8]>(2)) else {
                warn!(%site, %agent, "undecodable relayed command dropped");
                continue;
            };
            match state.hub.session(&site, &agent) {
                Some(_) => {
                    if let Err(e) = state.hub.send(&site, &agent, msg).await {
                        warn!(%site, %agent, error = %e, "relayed command not delivered");
                    }
                }
                // The agent moved on: pass it to the replica that holds it now.
                None => match self
                    .queue(&site, &agent, r.get::<_, &[u8]>(2).to_vec())
                    .await
                {
                    Ok(true) => debug!(%site, %agent, "relayed command passed on"),
                    Ok(false) => {
                        warn!(%site, %agent, "relayed command for an agent online nowhere dropped")
                    }
                    Err(e) => warn!(%site, %agent, error = %e, "pass a relayed command on"),
                },
            }
        }
        Ok(())
    }
}

/// Start the relay workers: `relay` (sessions and progress) and `relay-commands`.
pub fn spawn(state: &Arc<State>, pg: PgCatalog, url: &str, replica: &str) {
    let relay = Arc::new(PgRelay {
        pg,
        replica: replica.to_string(),
    });
    state.hub.set_forwarder(relay.clone());
    let (st, r) = (state.clone(), relay.clone());
    state.workers.spawn("relay", move |ctx| async move {
        let mut n = 0u64;
        loop {
            ctx.begin();
            let mut res = r.refresh(&st).await;
            if res.is_ok() && n.is_multiple_of(300) {
                res = r.expire().await;
            }
            ctx.end(res);
            n += 1;
            tokio::select! {
                _ = ctx.stop.cancelled() => return,
                _ = tokio::time::sleep(REFRESH) => {}
            }
        }
    });
    let (st, url) = (state.clone(), url.to_string());
    state
        .workers
        .spawn("relay-commands", move |ctx| async move {
            loop {
                let r = tokio::select! {
                    _ = ctx.stop.cancelled() => return,
                    r = listen(&st, &relay, &url) => r,
                };
                if let Err(e) = r {
                    warn!(error = %e, "relay listener failed; reconnecting");
                }
                tokio::select! {
                    _ = ctx.stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        });
}

/// LISTEN for commands addressed to this replica; drain on each notice and every second
/// (a notice can be missed while reconnecting, a queued row cannot).
async fn listen(state: &State, relay: &PgRelay, url: &str) -> anyhow::Result<()> {
    let (cfg, tls) = crate::catalog::pg::tls::parse(url)?;
    let (client, mut conn) = cfg.connect(tls).await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(16);
    let driver = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(m) = messages.next().await {
            match m {
                Ok(tokio_postgres::AsyncMessage::Notification(_)) => {
                    let _ = tx.try_send(());
                }
                Ok(_) => {}
                Err(e) => return Err::<(), _>(e),
            }
        }
        Ok(())
    });
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    let r: anyhow::Result<()> = async {
        loop {
            relay.drain(state).await.map_err(|e| anyhow::anyhow!(e))?;
            tokio::select! {
                got = rx.recv() => if got.is_none() {
                    anyhow::bail!("the listening connection closed");
                },
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            debug!("relay drained");
        }
    }
    .await;
    driver.abort();
    r
}
