//! Live state shared by the gRPC services: which agents are connected (one session per
//! agent; a site may have several), who is watching which job, and bytes uploaded per
//! snapshot in flight.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use nex_backup_shared::ids::ChunkId;
use nex_backup_shared::pb;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tonic::Status;

/// Most snapshots whose uploaded bytes are counted at once.
pub const MAX_UPLOADS_IN_FLIGHT: usize = 4096;

/// Outbound half of an agent session.
pub type SessionTx = mpsc::Sender<Result<pb::ControllerMessage, Status>>;

/// A connected agent.
#[derive(Clone)]
pub struct LiveSession {
    pub conn: u64,
    pub agent_id: String,
    pub version: String,
    pub targets: Vec<(String, String)>,
    tx: SessionTx,
    /// Cancelled to cut this session: by revocation of its agent, by a newer session of
    /// the same agent, or at shutdown.
    pub cut: CancellationToken,
}

#[derive(Default)]
struct Inner {
    /// (site, agent id) -> that agent's newest session.
    sessions: HashMap<(String, String), LiveSession>,
    watchers: HashMap<String, broadcast::Sender<pb::JobUpdate>>,
    upload_bytes: HashMap<(String, String), u64>,
    /// One token per (site, agent), shared by all of that agent's sessions.
    agent_cuts: HashMap<(String, String), CancellationToken>,
    /// Progress events seen per running job (for stall detection).
    progress: HashMap<String, u64>,
    /// Chunks an agent was told exist (FindMissing) or just uploaded, with the time until
    /// which garbage collection must leave them alone.
    pins: HashMap<(String, ChunkId), u64>,
    /// Chunks whose blob garbage collection or the orphan sweeper is deleting right now:
    /// an upload of one waits until the deletion is over (see [`Hub::pin_upload`]).
    deleting: std::collections::HashSet<(String, ChunkId)>,
}

/// Counters reported by `nex-backup status --json`.
#[derive(Default)]
pub struct Stats {
    pub chunks_received: AtomicU64,
    pub duplicate_chunks_received: AtomicU64,
}

/// Why a message did not reach an agent.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SendError {
    #[error("agent {agent_id} of site {site} is offline")]
    Offline { site: String, agent_id: String },
    #[error("agent {agent_id} of site {site} disconnected")]
    Disconnected { site: String, agent_id: String },
    #[error("relay to agent {agent_id} of site {site}: {reason}")]
    Relay {
        site: String,
        agent_id: String,
        reason: String,
    },
}

impl SendError {
    pub fn offline(site: &str, agent_id: &str) -> Self {
        SendError::Offline {
            site: site.into(),
            agent_id: agent_id.into(),
        }
    }
}

/// Delivers a command to an agent whose session another controller replica holds.
#[tonic::async_trait]
pub trait Forwarder: Send + Sync + 'static {
    async fn forward(
        &self,
        site: &str,
        agent_id: &str,
        msg: pb::ControllerMessage,
    ) -> Result<(), SendError>;
    /// Commands other replicas queued for this agent and nobody delivered (its replica
    /// died, or it moved): taken, to be sent down its new session here.
    async fn take_queued(&self, site: &str, agent_id: &str) -> Vec<pb::ControllerMessage>;
    /// Keep a job's final update where every replica can read it.
    async fn share_outcome(&self, update: &pb::JobUpdate);
    /// The final update of a job another replica recorded, once there is one.
    async fn fetch_outcome(&self, job_id: &str) -> Option<pb::JobUpdate>;
}

/// What this replica knows of the sessions and job progress other replicas hold
/// (refreshed from the shared catalog; empty on a single controller).
#[derive(Default)]
pub struct RemoteView {
    /// (site, agent) -> the agent's targets.
    pub sessions: HashMap<(String, String), Vec<(String, String)>>,
    /// Progress events of jobs running through other replicas.
    pub progress: HashMap<String, u64>,
}

/// See module docs.
#[derive(Default)]
pub struct Hub {
    inner: Mutex<Inner>,
    next_conn: AtomicU64,
    pub stats: Stats,
    remote: Mutex<RemoteView>,
    forwarder: std::sync::OnceLock<std::sync::Arc<dyn Forwarder>>,
}

impl Hub {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn remote(&self) -> std::sync::MutexGuard<'_, RemoteView> {
        self.remote.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Route commands for agents of other replicas through `f` (set once, at start).
    pub fn set_forwarder(&self, f: std::sync::Arc<dyn Forwarder>) {
        let _ = self.forwarder.set(f);
    }

    /// Commands queued for this agent at other replicas and never delivered (none on a
    /// single controller).
    pub async fn take_relayed(&self, site: &str, agent_id: &str) -> Vec<pb::ControllerMessage> {
        match self.forwarder.get() {
            Some(f) => f.take_queued(site, agent_id).await,
            None => vec![],
        }
    }

    /// Share a job's final update with the other replicas (nothing on a single one).
    pub async fn share_outcome(&self, update: &pb::JobUpdate) {
        if let Some(f) = self.forwarder.get() {
            f.share_outcome(update).await;
        }
    }

    /// The route to other replicas, if this controller has any.
    pub fn forwarder(&self) -> Option<std::sync::Arc<dyn Forwarder>> {
        self.forwarder.get().cloned()
    }

    /// Whether someone here waits for a job's updates.
    pub fn watched(&self, job_id: &str) -> bool {
        self.lock().watchers.contains_key(job_id)
    }

    /// Replace what is known of other replicas' sessions and progress.
    pub fn set_remote(&self, view: RemoteView) {
        *self.remote() = view;
    }

    /// Whether the agent holds a session here or at another replica.
    pub fn online(&self, site: &str, agent_id: &str) -> bool {
        self.session(site, agent_id).is_some()
            || self
                .remote()
                .sessions
                .contains_key(&(site.to_string(), agent_id.to_string()))
    }

    /// The agent that backs up `target` at `site`, online here (preferred) or at
    /// another replica.
    pub fn agent_id_for(&self, site: &str, target: &str) -> Option<String> {
        if let Some(s) = self.agent_for(site, target) {
            return Some(s.agent_id);
        }
        self.remote()
            .sessions
            .iter()
            .filter(|((s, _), targets)| s == site && targets.iter().any(|(t, _)| t == target))
            .map(|((_, a), _)| a.clone())
            .min()
    }

    /// Register a session of `agent_id` at `site`, replacing (and cutting) that agent's
    /// older one, so one agent never holds more than one live session. Returns its
    /// connection id and the token that cuts it.
    pub fn register(
        &self,
        site: &str,
        agent_id: &str,
        version: &str,
        targets: Vec<(String, String)>,
        tx: SessionTx,
    ) -> (u64, CancellationToken) {
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed) + 1;
        let s = LiveSession {
            conn,
            agent_id: agent_id.into(),
            version: version.into(),
            targets,
            tx,
            cut: CancellationToken::new(),
        };
        let mut g = self.lock();
        let cut = g
            .agent_cuts
            .entry((site.into(), agent_id.into()))
            .or_default()
            .child_token();
        let old = g.sessions.insert(
            (site.into(), agent_id.into()),
            LiveSession {
                cut: cut.clone(),
                ..s
            },
        );
        if let Some(old) = old {
            old.cut.cancel();
        }
        drop(g);
        // Here now, whatever another replica last said.
        self.remote()
            .sessions
            .remove(&(site.to_string(), agent_id.to_string()));
        (conn, cut)
    }

    /// Cut every open session of `agent_id` at `site`. Returns whether it had one.
    pub fn cut(&self, site: &str, agent_id: &str) -> bool {
        let key = (site.to_string(), agent_id.to_string());
        let mut g = self.lock();
        if let Some(token) = g.agent_cuts.remove(&key) {
            token.cancel();
        }
        g.sessions.remove(&key).is_some()
    }

    /// Drop the session of `agent_id` at `site` if it is still connection `conn`. True
    /// when the agent is now offline (not when a newer session replaced this one).
    pub fn unregister(&self, site: &str, agent_id: &str, conn: u64) -> bool {
        let key = (site.to_string(), agent_id.to_string());
        let mut g = self.lock();
        if g.sessions.get(&key).is_some_and(|s| s.conn == conn) {
            g.sessions.remove(&key);
            return true;
        }
        false
    }

    /// The live session of one agent.
    pub fn session(&self, site: &str, agent_id: &str) -> Option<LiveSession> {
        let key = (site.to_string(), agent_id.to_string());
        self.lock().sessions.get(&key).cloned()
    }

    /// The online agent that backs up `target` at `site` (the newest connection if
    /// several declare it).
    pub fn agent_for(&self, site: &str, target: &str) -> Option<LiveSession> {
        self.lock()
            .sessions
            .iter()
            .filter(|((s, _), live)| s == site && live.targets.iter().any(|(t, _)| t == target))
            .map(|(_, live)| live)
            .max_by_key(|live| live.conn)
            .cloned()
    }

    /// Send a message down the session of `agent_id` at `site`.
    pub async fn send(
        &self,
        site: &str,
        agent_id: &str,
        msg: pb::ControllerMessage,
    ) -> Result<(), SendError> {
        let Some(tx) = self.session(site, agent_id).map(|s| s.tx) else {
            let remote = self
                .remote()
                .sessions
                .contains_key(&(site.to_string(), agent_id.to_string()));
            return match (remote, self.forwarder.get()) {
                (true, Some(f)) => f.forward(site, agent_id, msg).await,
                _ => Err(SendError::offline(site, agent_id)),
            };
        };
        tx.send(Ok(msg)).await.map_err(|_| SendError::Disconnected {
            site: site.into(),
            agent_id: agent_id.into(),
        })
    }

    /// Subscribe to a job's updates. Call before dispatching the job.
    pub fn watch(&self, job_id: &str) -> broadcast::Receiver<pb::JobUpdate> {
        let mut g = self.lock();
        g.watchers
            .entry(job_id.into())
            .or_insert_with(|| broadcast::channel(64).0)
            .subscribe()
    }

    /// Forget a job's watch channel if nobody listens any more (a watcher that found the
    /// job already finished: no outcome will come to remove it).
    pub fn unwatch_if_idle(&self, job_id: &str) {
        let mut g = self.lock();
        if g.watchers
            .get(job_id)
            .is_some_and(|tx| tx.receiver_count() == 0)
        {
            g.watchers.remove(job_id);
        }
    }

    /// Publish an update to the job's watchers, if any.
    pub fn publish(&self, update: pb::JobUpdate) {
        let final_update = matches!(update.update, Some(pb::job_update::Update::Outcome(_)));
        let mut g = self.lock();
        if final_update {
            g.progress.remove(&update.job_id);
        } else {
            *g.progress.entry(update.job_id.clone()).or_default() += 1;
        }
        if let Some(tx) = g.watchers.get(&update.job_id) {
            let _ = tx.send(update.clone());
        }
        if final_update {
            g.watchers.remove(&update.job_id);
        }
    }

    /// Count `n` uploaded bytes toward a snapshot in flight. The snapshot id comes from
    /// the agent, so the table is bounded: past [`MAX_UPLOADS_IN_FLIGHT`] snapshots, new
    /// ones are not counted (their new-bytes figure reads 0).
    pub fn add_upload_bytes(&self, site: &str, snapshot_id: &str, n: u64) {
        let mut g = self.lock();
        let key = (site.to_string(), snapshot_id.to_string());
        if let Some(v) = g.upload_bytes.get_mut(&key) {
            *v += n;
        } else if g.upload_bytes.len() < MAX_UPLOADS_IN_FLIGHT {
            g.upload_bytes.insert(key, n);
        }
    }

    /// End every session and every job watch: each agent is told why, then its stream
    /// closes (shutdown).
    pub fn close_all(&self, why: &str) {
        let sessions: Vec<LiveSession> = {
            let mut g = self.lock();
            for token in g.agent_cuts.values() {
                token.cancel();
            }
            g.agent_cuts.clear();
            // Operators following a job see their stream end too.
            g.watchers.clear();
            g.sessions.drain().map(|(_, s)| s).collect()
        };
        for s in sessions {
            let _ = s.tx.try_send(Err(Status::unavailable(why.to_string())));
        }
    }

    /// Bytes uploaded so far for a snapshot in flight.
    pub fn upload_bytes(&self, site: &str, snapshot_id: &str) -> u64 {
        let key = (site.to_string(), snapshot_id.to_string());
        self.lock().upload_bytes.get(&key).copied().unwrap_or(0)
    }

    /// How many progress events a job has sent so far.
    pub fn progress_count(&self, job_id: &str) -> u64 {
        let here = self.lock().progress.get(job_id).copied().unwrap_or(0);
        here + self.remote().progress.get(job_id).copied().unwrap_or(0)
    }

    /// Progress events of every job running through this replica (to share them).
    pub fn local_progress(&self) -> Vec<(String, u64)> {
        let g = self.lock();
        g.progress.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// Every live session here, by (site, agent).
    pub fn local_sessions(&self) -> Vec<((String, String), LiveSession)> {
        let g = self.lock();
        g.sessions
            .iter()
            .map(|(k, l)| (k.clone(), l.clone()))
            .collect()
    }

    /// Protect `ids` of `site` from garbage collection until `until_ms`.
    pub fn pin(&self, site: &str, ids: impl IntoIterator<Item = ChunkId>, until_ms: u64) {
        let mut g = self.lock();
        for id in ids {
            let e = g.pins.entry((site.to_string(), id)).or_default();
            *e = (*e).max(until_ms);
        }
    }

    /// Pin a chunk an agent is uploading, unless its blob is being deleted right now
    /// (then false: the upload must be tried again once the deletion is over, or it
    /// could record a chunk whose blob is about to go).
    pub fn pin_upload(&self, site: &str, id: &ChunkId, until_ms: u64) -> bool {
        let mut g = self.lock();
        let key = (site.to_string(), *id);
        if g.deleting.contains(&key) {
            return false;
        }
        let e = g.pins.entry(key).or_default();
        *e = (*e).max(until_ms);
        true
    }

    /// Claim chunks for deletion: those neither pinned at `now_ms` nor already claimed.
    /// Under the same lock as [`Hub::pin_upload`], so no upload starts relying on a
    /// claimed chunk. Release them with [`Hub::release_delete`] when the blobs are gone.
    pub fn claim_delete(&self, site: &str, ids: &[ChunkId], now_ms: u64) -> Vec<ChunkId> {
        let mut g = self.lock();
        let mut claimed = Vec::with_capacity(ids.len());
        for id in ids {
            let key = (site.to_string(), *id);
            let pinned = g.pins.get(&key).is_some_and(|until| *until > now_ms);
            if !pinned && g.deleting.insert(key) {
                claimed.push(*id);
            }
        }
        claimed
    }

    /// End the claims of [`Hub::claim_delete`].
    pub fn release_delete(&self, site: &str, ids: &[ChunkId]) {
        let mut g = self.lock();
        for id in ids {
            g.deleting.remove(&(site.to_string(), *id));
        }
    }

    /// Whether a chunk is protected at `now_ms`; forgets expired pins of `site`.
    pub fn pinned(&self, site: &str, id: &ChunkId, now_ms: u64) -> bool {
        self.lock()
            .pins
            .get(&(site.to_string(), *id))
            .is_some_and(|until| *until > now_ms)
    }

    /// Drop expired pins.
    pub fn expire_pins(&self, now_ms: u64) {
        self.lock().pins.retain(|_, until| *until > now_ms);
    }

    /// Forget the counter of a committed snapshot.
    pub fn clear_upload_bytes(&self, site: &str, snapshot_id: &str) {
        self.lock()
            .upload_bytes
            .remove(&(site.to_string(), snapshot_id.to_string()));
    }
}
