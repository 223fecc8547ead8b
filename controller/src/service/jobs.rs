//! Starting a job on a site's agent: recorded first (so a crash never loses it), watched,
//! then sent down the session. Used by operator calls and by the scheduler.

use nex_backup_shared::ids::new_snapshot_id;
use nex_backup_shared::pb::{self, command::Kind};
use tokio::sync::broadcast;
use tonic::Status;
use tracing::{info, warn};

use super::{State, catalog_status, now_ms};
use crate::catalog::{JobRecord, JobState};

/// The scratch database of a drill started at `now_ms` (agents accept only this prefix).
pub fn drill_database(now_ms: u64) -> String {
    format!(
        "nexb_drill_{}",
        new_snapshot_id(now_ms).to_lowercase().replace('-', "_")
    )
}

/// Record and dispatch a job; returns its id and a receiver of its updates (subscribed
/// before the command leaves, so no update is missed).
pub async fn start_job(
    state: &State,
    site: &str,
    target: &str,
    kind: Kind,
    trigger: &str,
) -> Result<(String, broadcast::Receiver<pb::JobUpdate>), Status> {
    let job_id = format!("job-{}", new_snapshot_id(now_ms()));
    let kind_name = match kind {
        Kind::Backup(_) => "backup",
        Kind::Restore(_) => "restore",
    };
    let job = JobRecord {
        v: 1,
        job_id: job_id.clone(),
        site: site.into(),
        target: target.into(),
        kind: kind_name.into(),
        state: JobState::Running,
        started_unix_ms: now_ms(),
        ended_unix_ms: None,
        error: None,
        snapshot_id: None,
        trigger: trigger.into(),
        logical_bytes: 0,
        new_bytes: 0,
    };
    state.catalog.put_job(&job).await.map_err(catalog_status)?;
    let updates = state.hub.watch(&job_id);
    let cmd = pb::ControllerMessage {
        msg: Some(pb::controller_message::Msg::Command(pb::Command {
            job_id: job_id.clone(),
            kind: Some(kind),
        })),
    };
    if let Err(e) = state.hub.send(site, cmd).await {
        let mut failed = job.clone();
        failed.state = JobState::Failed;
        failed.error = Some(e.clone());
        failed.ended_unix_ms = Some(now_ms());
        if let Err(ce) = state.catalog.put_job(&failed).await {
            warn!(job = %job_id, error = %ce, "record undeliverable job");
        }
        return Err(Status::unavailable(e));
    }
    info!(site, target, job = %job_id, kind = kind_name, trigger, "job dispatched");
    Ok((job_id, updates))
}
