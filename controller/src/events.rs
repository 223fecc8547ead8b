//! Domain events and the bus they travel on. The code that causes an event publishes
//! it; alerts, metrics and (later) the dashboard subscribe. Nothing polls the catalog to
//! learn what happened.
//!
//! The bus is a bounded broadcast channel: a subscriber that falls behind loses the
//! oldest events and is told how many ([`tokio::sync::broadcast::error::RecvError::Lagged`]);
//! subscribers whose correctness depends on every event (the alert rules) re-read the
//! state they judge instead of counting events.

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::rpo::RpoState;

/// Events kept for a slow subscriber before it lags.
const BUS_CAPACITY: usize = 4096;

/// What a job was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobKind {
    Backup,
    Restore,
    Drill,
    Verify,
    Inspect,
}

impl JobKind {
    /// From a job record's kind and trigger (a drill is a restore started as a drill).
    pub fn of(kind: crate::job::JobKind, trigger: crate::job::Trigger) -> Self {
        match (kind, trigger) {
            (crate::job::JobKind::Backup, _) => JobKind::Backup,
            (crate::job::JobKind::Verify, _) => JobKind::Verify,
            (crate::job::JobKind::Inspect, _) => JobKind::Inspect,
            (_, crate::job::Trigger::Drill) => JobKind::Drill,
            _ => JobKind::Restore,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Backup => "backup",
            JobKind::Restore => "restore",
            JobKind::Drill => "drill",
            JobKind::Verify => "verify",
            JobKind::Inspect => "inspect",
        }
    }
}

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Succeeded,
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
        }
    }
}

/// A job's identity in events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRef {
    pub site: String,
    pub target: String,
    pub job_id: String,
    pub kind: JobKind,
}

/// Something that happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    JobStarted {
        job: JobRef,
        trigger: String,
    },
    JobFinished {
        job: JobRef,
        outcome: Outcome,
        /// First line of the error, for a failure.
        error: Option<String>,
        duration_ms: u64,
        logical_bytes: u64,
        new_bytes: u64,
    },
    SnapshotCommitted {
        site: String,
        target: String,
        snapshot_id: String,
        logical_bytes: u64,
        new_bytes: u64,
        duration_ms: u64,
    },
    RpoChanged {
        site: String,
        target: String,
        from: Option<RpoState>,
        to: RpoState,
        reason: String,
    },
    AgentOnline {
        site: String,
        agent_id: String,
    },
    AgentOffline {
        site: String,
        agent_id: String,
    },
    DrillFinished {
        site: String,
        target: String,
        ok: bool,
        rto_ms: u64,
    },
    HostHealth {
        site: String,
        agent_id: String,
    },
    CertExpiring {
        site: String,
        agent_id: String,
        not_after_unix: i64,
    },
    PruneDone {
        deleted_snapshots: u64,
        deleted_chunks: u64,
        freed_bytes: u64,
    },
    /// A store verification pass (or share of one) ended.
    StoreVerified {
        objects: u64,
        bytes: u64,
        /// Objects found missing or damaged.
        bad: u64,
        /// Snapshots marked damaged.
        damaged_snapshots: u64,
    },
    /// A notice left the outbox (`ok`) or a delivery attempt failed.
    NotificationSent {
        channel: String,
        ok: bool,
    },
}

/// See module docs. Cloning gives another handle on the same bus.
#[derive(Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Arc<Event>>,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus {
            tx: broadcast::channel(BUS_CAPACITY).0,
        }
    }
}

impl EventBus {
    /// Publish to whoever listens now (nobody listening is fine).
    pub fn publish(&self, e: Event) {
        tracing::trace!(event = ?e, "event");
        let _ = self.tx.send(Arc::new(e));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }
}
