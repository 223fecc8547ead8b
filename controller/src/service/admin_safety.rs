//! Admin calls about the safety net: anomaly holds (list, release) and the audit trail
//! of operator actions that weaken protection.

use nex_backup_shared::pb;
use tonic::Status;
use tracing::{info, warn};

use super::admin::AdminApi;
use super::{catalog_status, now_ms, parse_site, parse_target};
use crate::catalog::safety::HoldRecord;

fn hold_info(h: HoldRecord) -> pb::HoldInfo {
    pb::HoldInfo {
        site: h.site,
        target: h.target,
        since_unix_ms: h.since_unix_ms,
        reason: h.reason,
        suspicious: h.suspicious,
    }
}

impl AdminApi {
    /// The standing label of each of `snaps`, by (site, snapshot id).
    pub(super) async fn standing_of(
        &self,
        snaps: &[crate::catalog::SnapshotRecord],
    ) -> Result<std::collections::HashMap<(String, String), &'static str>, Status> {
        let cat = &self.state.catalog;
        // One site's snapshots (the usual listing) are judged from that site's jobs.
        let site = snaps.first().map(|s| s.site.as_str());
        let jobs = match site {
            Some(site) if snaps.iter().all(|s| s.site == site) => cat.site_jobs(site).await,
            _ => cat.jobs().await,
        }
        .map_err(catalog_status)?;
        let holds = cat.holds().await.map_err(catalog_status)?;
        let damaged = crate::fleet::standing::load_damaged(&*self.state.integrity)
            .await
            .map_err(catalog_status)?;
        Ok(crate::fleet::standing::labels(
            snaps, &jobs, &holds, &damaged,
        ))
    }

    /// Stop a running job (see the RPC's doc): failed first, so that nothing the agent
    /// still sends (a commit) is accepted, then the agent is told.
    pub(super) async fn cancel_job_impl(
        &self,
        req: pb::CancelJobRequest,
    ) -> Result<pb::JobInfo, Status> {
        let cat = &self.state.catalog;
        let mut job = cat
            .job(&req.job_id)
            .await
            .map_err(catalog_status)?
            .ok_or_else(|| Status::not_found(format!("job {} not found", req.job_id)))?;
        if job.state != crate::catalog::JobState::Running {
            return Err(Status::failed_precondition(format!(
                "job {} is not running; nothing to cancel",
                job.job_id
            )));
        }
        let reason = nex_backup_shared::text::clean(req.reason.trim(), 500);
        let why = if reason.is_empty() {
            "cancelled by an operator".to_string()
        } else {
            format!("cancelled by an operator: {reason}")
        };
        let as_read = job.clone();
        job.state = crate::catalog::JobState::Failed;
        job.ended_unix_ms = Some(now_ms());
        job.error = Some(why.clone());
        if !cat
            .update_job(&as_read, &job)
            .await
            .map_err(catalog_status)?
        {
            return Err(Status::failed_precondition(format!(
                "job {} finished while it was being cancelled; nothing to cancel",
                job.job_id
            )));
        }
        self.state.job_finished(&job);
        self.audit(
            &job.site,
            &job.target,
            "job cancelled",
            format!("{}: {why}", job.job_id),
        )
        .await?;
        let cancel = pb::ControllerMessage {
            msg: Some(pb::controller_message::Msg::CancelJob(pb::CancelJob {
                job_id: job.job_id.clone(),
                reason: why.clone(),
            })),
        };
        if let Err(e) = self.state.hub.send(&job.site, &job.agent_id, cancel).await {
            warn!(job = %job.job_id, error = %e, "tell the agent to cancel; it fails the job when it reconnects");
        }
        // Whoever follows the job sees it end.
        self.state.hub.publish(pb::JobUpdate {
            job_id: job.job_id.clone(),
            update: Some(pb::job_update::Update::Outcome(pb::JobOutcome {
                ok: false,
                error: why,
                snapshot_id: job.snapshot_id.clone().unwrap_or_default(),
                ..Default::default()
            })),
        });
        info!(job = %job.job_id, site = %job.site, target = %job.target, "job cancelled by an operator");
        Ok(super::admin_policy::job_info(job))
    }

    pub(super) async fn list_holds_impl(
        &self,
        req: pb::ListHoldsRequest,
    ) -> Result<pb::ListHoldsResponse, Status> {
        let holds = self.state.catalog.holds().await.map_err(catalog_status)?;
        Ok(pb::ListHoldsResponse {
            holds: holds
                .into_iter()
                .filter(|h| req.site.is_empty() || h.site == req.site)
                .map(hold_info)
                .collect(),
        })
    }

    pub(super) async fn release_hold_impl(
        &self,
        req: pb::ReleaseHoldRequest,
    ) -> Result<pb::HoldInfo, Status> {
        parse_site(&req.site)?;
        parse_target(&req.target)?;
        let held = self
            .state
            .catalog
            .delete_hold(&req.site, &req.target)
            .await
            .map_err(catalog_status)?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "target {} of site {} is not on hold",
                    req.target, req.site
                ))
            })?;
        self.audit(
            &req.site,
            &req.target,
            "anomaly hold released",
            format!(
                "{} (since {}; {} suspicious snapshot(s) now count as good)",
                held.reason,
                held.since_unix_ms,
                held.suspicious.len()
            ),
        )
        .await?;
        info!(site = %req.site, target = %req.target, "anomaly hold released");
        Ok(hold_info(held))
    }

    pub(super) async fn list_audit_impl(
        &self,
        req: pb::ListAuditRequest,
    ) -> Result<pb::ListAuditResponse, Status> {
        let site = (!req.site.is_empty()).then_some(req.site.as_str());
        let limit = if req.limit == 0 {
            1000
        } else {
            req.limit.min(10_000)
        } as usize;
        let entries = self
            .state
            .catalog
            .audit(site, req.since_unix_ms, limit)
            .await
            .map_err(catalog_status)?;
        Ok(pb::ListAuditResponse {
            entries: entries
                .into_iter()
                .map(|e| pb::AuditInfo {
                    unix_ms: e.unix_ms,
                    site: e.site,
                    target: e.target,
                    action: e.action,
                    detail: e.detail,
                    actor: e.actor,
                    outcome: e.outcome,
                })
                .collect(),
        })
    }
}
