//! Starting a job on a site's agent: recorded first (so a crash never loses it), watched,
//! then sent down the session. Used by operator calls (the gRPC edge) and by the
//! scheduler; it knows nothing of gRPC statuses ([`DispatchError`] is mapped at the edge).
//!
//! A backup goes to the online agent that declares the target; a drill goes to the site's
//! designated drill agent if it has one, else to the same agent. A backup command carries
//! the site's bandwidth limit and how long its backup window stays open.

use nex_backup_shared::clock::now_ms;
use nex_backup_shared::ids::new_snapshot_id;
use nex_backup_shared::pb::{self, command::Kind};
use tokio::sync::broadcast;
use tracing::{info, warn};

use crate::catalog::{CatalogError, JobKind, JobRecord, JobState, Trigger};
use crate::policy::site::SitePolicy;
use crate::state::State;
use crate::state::site_policy_of;

/// Why a job was not started.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// No agent that could run it is online (names the site, target or drill agent).
    #[error("{0}")]
    NoAgent(String),
    /// The agent's session closed between the choice and the send.
    #[error(transparent)]
    Undeliverable(#[from] crate::hub::SendError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

/// The online agent that should run a job of `target` at `site` (see module docs).
pub async fn pick_agent(
    state: &State,
    site: &str,
    target: &str,
    drill: bool,
) -> Result<String, DispatchError> {
    let sp = if drill {
        site_policy_of(state, site).await?
    } else {
        SitePolicy::default()
    };
    online_agent(&state.hub, &sp, site, target, drill)
}

/// [`pick_agent`] with the site's settings at hand.
pub fn online_agent(
    hub: &crate::hub::Hub,
    sp: &SitePolicy,
    site: &str,
    target: &str,
    drill: bool,
) -> Result<String, DispatchError> {
    if let (true, Some(agent)) = (drill, &sp.drill_agent) {
        return hub
            .online(site, agent)
            .then(|| agent.clone())
            .ok_or_else(|| {
                DispatchError::NoAgent(format!("drill agent {agent} of site {site} is offline"))
            });
    }
    hub.agent_id_for(site, target).ok_or_else(|| {
        DispatchError::NoAgent(format!(
            "no agent of site {site} that backs up target {target} is online"
        ))
    })
}

/// The backup window is closed; it opens at `opens_at_ms`.
#[derive(Debug, Clone)]
pub struct WindowClosed {
    pub window: String,
    pub timezone: String,
    pub opens_at_ms: u64,
}

impl std::fmt::Display for WindowClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let opens = chrono::DateTime::from_timestamp_millis(self.opens_at_ms as i64)
            .map(|t| t.format("%Y-%m-%d %H:%MZ").to_string())
            .unwrap_or_default();
        write!(
            f,
            "the backup window {} ({}) is closed; it opens at {opens}",
            self.window, self.timezone
        )
    }
}

/// A backup command for `target` under the site's settings at `now`: its bandwidth limit
/// and the time left in its window. Outside the window it is refused unless `anytime`
/// (then it runs without a deadline).
pub fn backup_command(
    sp: &SitePolicy,
    target: &str,
    now: u64,
    anytime: bool,
) -> Result<Kind, WindowClosed> {
    let remaining = match sp.window() {
        None => 0,
        Some(_) if anytime => 0,
        Some(w) => match w.open_until(now) {
            Some(close) => close - now,
            None => {
                return Err(WindowClosed {
                    window: sp.window.clone().unwrap_or_default(),
                    timezone: sp.timezone.clone(),
                    opens_at_ms: w.next_open(now),
                });
            }
        },
    };
    Ok(Kind::Backup(pb::BackupCommand {
        target: target.into(),
        snapshot_id: new_snapshot_id(now_ms()),
        upload_bytes_per_sec: sp.bandwidth_bytes_per_sec,
        window_remaining_ms: remaining,
    }))
}

/// The scratch database of a drill started at `now_ms` (agents accept only this prefix).
pub fn drill_database(now_ms: u64) -> String {
    format!(
        "nexb_drill_{}",
        new_snapshot_id(now_ms).to_lowercase().replace('-', "_")
    )
}

/// A new job id.
pub fn new_job_id() -> String {
    format!("job-{}", new_snapshot_id(now_ms()))
}

/// Record and dispatch a job; returns its id and a receiver of its updates (subscribed
/// before the command leaves, so no update is missed).
pub async fn start_job(
    state: &State,
    site: &str,
    target: &str,
    kind: Kind,
    trigger: Trigger,
) -> Result<(String, broadcast::Receiver<pb::JobUpdate>), DispatchError> {
    start_job_as(state, new_job_id(), site, target, kind, trigger).await
}

/// [`start_job`] under a job id the caller chose (and may have recorded already).
pub async fn start_job_as(
    state: &State,
    job_id: String,
    site: &str,
    target: &str,
    kind: Kind,
    trigger: Trigger,
) -> Result<(String, broadcast::Receiver<pb::JobUpdate>), DispatchError> {
    // The snapshot a job is about is fixed here, by the controller: a backup must commit
    // exactly this id, a restore (or drill) result counts for exactly this snapshot.
    let (kind_name, drill, expected_snapshot, restored) = match &kind {
        Kind::Backup(b) => (JobKind::Backup, false, Some(b.snapshot_id.clone()), None),
        Kind::Restore(r) if r.list_only || !r.diff_against.is_empty() => {
            (JobKind::Inspect, false, None, Some(r.snapshot_id.clone()))
        }
        Kind::Restore(r) if r.verify_only => {
            (JobKind::Verify, false, None, Some(r.snapshot_id.clone()))
        }
        Kind::Restore(r) => (JobKind::Restore, r.drill, None, Some(r.snapshot_id.clone())),
    };
    let agent = pick_agent(state, site, target, drill).await?;
    let job = JobRecord {
        v: 1,
        job_id: job_id.clone(),
        site: site.into(),
        target: target.into(),
        kind: kind_name,
        state: JobState::Running,
        started_unix_ms: now_ms(),
        ended_unix_ms: None,
        error: None,
        snapshot_id: restored,
        trigger,
        logical_bytes: 0,
        new_bytes: 0,
        agent_id: agent.clone(),
        expected_snapshot,
    };
    state.catalog.put_job(&job).await?;
    // Durable before the command leaves (with the schedule record naming it, if any).
    state.durable().await?;
    let updates = state.hub.watch(&job_id);
    let cmd = pb::ControllerMessage {
        msg: Some(pb::controller_message::Msg::Command(pb::Command {
            job_id: job_id.clone(),
            kind: Some(kind),
        })),
    };
    if let Err(e) = state.hub.send(site, &agent, cmd).await {
        let mut failed = job.clone();
        failed.state = JobState::Failed;
        failed.error = Some(e.to_string());
        failed.ended_unix_ms = Some(now_ms());
        if let Err(ce) = state.catalog.put_job(&failed).await {
            warn!(job = %job_id, error = %ce, "record undeliverable job");
        }
        state.job_finished(&failed);
        return Err(DispatchError::Undeliverable(e));
    }
    info!(site, target, agent = %agent, job = %job_id, kind = kind_name.as_str(), trigger = trigger.as_str(), "job dispatched");
    state.job_started(&job);
    Ok((job_id, updates))
}

/// When the agent of a job holds its session at another replica, relay the job's
/// outcome to this replica's watchers once it is recorded there; stops when it arrives,
/// when nobody waits any more, or at shutdown.
pub fn follow_remote(state: &std::sync::Arc<State>, site: &str, agent_id: &str, job_id: &str) {
    let (Some(f), None) = (state.hub.forwarder(), state.hub.session(site, agent_id)) else {
        return;
    };
    let (st, job_id) = (state.clone(), job_id.to_string());
    let stop = state.workers.stop_token();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
            }
            if let Some(u) = f.fetch_outcome(&job_id).await {
                st.hub.publish(u);
                return;
            }
            if !st.hub.watched(&job_id) {
                return;
            }
        }
    });
}
