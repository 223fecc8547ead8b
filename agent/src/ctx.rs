//! The agent's shared context: config, identity, keys, the controller channel, and the
//! outbox of job events. Jobs report through it whether or not a session is currently up; final
//! results stay in the outbox until the controller acknowledges them.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nex_backup_shared::chunk::ChunkCodec;
use nex_backup_shared::pb::{
    self, agent_message::Msg, agent_service_client::AgentServiceClient, job_event::Event,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Code, Status};

use nex_backup_shared::keyring::KeyRing;

use crate::config::AgentConfig;
use crate::enrollment::{Enrollment, load_keyring};
use crate::error::AgentError;

/// See module docs.
pub struct Ctx {
    pub cfg: AgentConfig,
    pub site: String,
    pub agent_id: String,
    channel: Mutex<Channel>,
    pub enrollment: Mutex<Enrollment>,
    /// Whether the current key epoch is known to be sealed to the recovery keys.
    pub keys_sealed: AtomicBool,
    pub shutdown: CancellationToken,
    events: Mutex<Option<mpsc::Sender<pb::AgentMessage>>>,
    outbox: Mutex<BTreeMap<String, pb::JobResult>>,
    /// Running jobs, with the handle that stops each (once its task is spawned).
    running: Mutex<HashMap<String, Option<tokio::task::AbortHandle>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether a gRPC failure is worth retrying (network trouble, controller restarting).
pub fn transient(s: &Status) -> bool {
    matches!(
        s.code(),
        Code::Unavailable
            | Code::Unknown
            | Code::Cancelled
            | Code::DeadlineExceeded
            | Code::Aborted
            | Code::Internal
    )
}

impl Ctx {
    pub fn new(
        cfg: AgentConfig,
        enrollment: Enrollment,
        channel: Channel,
        shutdown: CancellationToken,
    ) -> Self {
        Ctx {
            cfg,
            site: enrollment.site.clone(),
            agent_id: enrollment.agent_id.clone(),
            enrollment: Mutex::new(enrollment),
            channel: Mutex::new(channel),
            keys_sealed: AtomicBool::new(false),
            shutdown,
            events: Mutex::new(None),
            outbox: Mutex::new(BTreeMap::new()),
            running: Mutex::new(HashMap::new()),
        }
    }

    pub fn site(&self) -> &str {
        &self.site
    }

    /// Use a new channel (after certificate renewal) for every later call.
    pub fn set_channel(&self, ch: Channel) {
        *lock(&self.channel) = ch;
    }

    /// The site key ring, read fresh so that `recover` and `rotate-key` take effect at once.
    pub fn keyring(&self) -> Result<KeyRing, AgentError> {
        load_keyring(&self.cfg.state_dir, &self.site)
            .map_err(|e| AgentError::from(format!("{e:#}")))
    }

    /// The codec of the current key epoch, for a new snapshot.
    pub fn backup_codec(&self) -> Result<ChunkCodec, AgentError> {
        let ring = self.keyring()?;
        let (epoch, key) = ring
            .current()
            .ok_or_else(|| format!("the key ring of site {} is empty", self.site))?;
        if !self.keys_sealed.load(Ordering::Acquire) {
            return Err(format!(
                "key epoch {epoch} of site {} is not yet sealed to a recovery key; refusing to \
                 make a backup that only this host could decrypt",
                self.site
            )
            .into());
        }
        Ok(ChunkCodec::new(key.derive(), self.cfg.zstd_level))
    }

    /// The codec for objects sealed under `key_id`.
    pub fn codec_for(&self, key_id: [u8; 8]) -> Result<ChunkCodec, AgentError> {
        let ring = self.keyring()?;
        let key = ring.by_key_id(key_id).ok_or_else(|| {
            format!(
                "sealed with key {} which this agent does not hold (held: {}); run \
                 `nex-backup-agent recover --recovery-key FILE`",
                hex::encode(key_id),
                ring.epochs()
                    .map(|(e, k)| format!("epoch {e} = {}", k.derive().key_id_hex()))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
        Ok(ChunkCodec::new(key.derive(), self.cfg.zstd_level))
    }

    pub fn client(&self) -> AgentServiceClient<Channel> {
        AgentServiceClient::new(lock(&self.channel).clone())
            .max_decoding_message_size(nex_backup_shared::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(nex_backup_shared::MAX_MESSAGE_BYTES)
    }

    /// Attach a new session's sender and re-send every unacknowledged result on it.
    pub fn attach(&self, tx: mpsc::Sender<pb::AgentMessage>) {
        for (job_id, result) in lock(&self.outbox).iter() {
            let _ = tx.try_send(result_msg(job_id, result.clone()));
        }
        *lock(&self.events) = Some(tx);
    }

    pub fn detach(&self) {
        *lock(&self.events) = None;
    }

    /// Best-effort progress report.
    pub fn progress(
        &self,
        job_id: &str,
        phase: &str,
        bytes_done: u64,
        chunks_done: u64,
        detail: String,
    ) {
        let ev = pb::JobEvent {
            job_id: job_id.into(),
            event: Some(Event::Progress(pb::JobProgress {
                phase: phase.into(),
                bytes_done,
                chunks_done,
                detail,
            })),
        };
        if let Some(tx) = lock(&self.events).as_ref() {
            let _ = tx.try_send(pb::AgentMessage {
                msg: Some(Msg::JobEvent(ev)),
            });
        }
    }

    /// Record a job's final result; it is sent now and after every reconnect until acked.
    /// A job that is no longer running (cancelled meanwhile) reports nothing more.
    pub fn finish(&self, job_id: &str, result: pb::JobResult) {
        if lock(&self.running).remove(job_id).is_none() {
            return;
        }
        self.report(job_id, result);
    }

    /// Keep a final result until acknowledged, and send it now if connected.
    fn report(&self, job_id: &str, result: pb::JobResult) {
        lock(&self.outbox).insert(job_id.into(), result.clone());
        if let Some(tx) = lock(&self.events).as_ref() {
            let _ = tx.try_send(result_msg(job_id, result));
        }
    }

    /// Jobs running or awaiting acknowledgement (sent in every hello).
    pub fn known_jobs(&self) -> Vec<String> {
        let mut v: Vec<String> = lock(&self.running).keys().cloned().collect();
        v.extend(lock(&self.outbox).keys().cloned());
        v
    }

    pub fn ack(&self, job_id: &str) {
        lock(&self.outbox).remove(job_id);
    }

    /// Mark a job as running; false if it already is (a re-sent command).
    pub fn start_job(&self, job_id: &str) -> bool {
        if lock(&self.outbox).contains_key(job_id) {
            return false;
        }
        let mut running = lock(&self.running);
        if running.contains_key(job_id) {
            return false;
        }
        running.insert(job_id.into(), None);
        true
    }

    /// Remember how to stop a running job.
    pub fn set_abort(&self, job_id: &str, handle: tokio::task::AbortHandle) {
        if let Some(slot) = lock(&self.running).get_mut(job_id) {
            *slot = Some(handle);
        }
    }

    /// Stop a running job (dropping its work kills pg_dump/pg_restore) and report it
    /// failed with `reason`. Unknown or finished jobs are left alone.
    pub fn cancel(&self, job_id: &str, reason: &str) -> bool {
        let Some(handle) = lock(&self.running).remove(job_id) else {
            return false;
        };
        if let Some(h) = handle {
            h.abort();
        }
        let result = pb::JobResult {
            error: format!("cancelled by the controller: {reason}"),
            ..Default::default()
        };
        self.report(job_id, result);
        true
    }

    /// Run `f` until it succeeds, retrying transient failures with jittered backoff
    /// within the configured budget. `what` names the operation in the error.
    pub async fn retry<T, F, Fut>(&self, what: &str, mut f: F) -> Result<T, AgentError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let deadline = Instant::now() + Duration::from_secs(self.cfg.retry_budget_secs);
        let mut delays =
            nex_backup_shared::retry::delays(Duration::from_millis(200), Duration::from_secs(10));
        loop {
            let res = tokio::select! {
                r = f() => r,
                _ = self.shutdown.cancelled() => return Err(AgentError::ShuttingDown { what: what.into() }),
            };
            match res {
                Ok(v) => return Ok(v),
                Err(s) if transient(&s) && Instant::now() < deadline => {
                    tracing::warn!(what, code = ?s.code(), error = %s.message(), "transient failure, retrying");
                    let wait = delays.next().unwrap_or(Duration::from_secs(10));
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {},
                        _ = self.shutdown.cancelled() => return Err(AgentError::ShuttingDown { what: what.into() }),
                    }
                }
                Err(s) => return Err(AgentError::controller(what, &s)),
            }
        }
    }
}

fn result_msg(job_id: &str, result: pb::JobResult) -> pb::AgentMessage {
    pb::AgentMessage {
        msg: Some(Msg::JobEvent(pb::JobEvent {
            job_id: job_id.into(),
            event: Some(Event::Result(result)),
        })),
    }
}
