//! Admin calls about policy, retention and history: policies, prune, jobs.

use nex_backup_shared::pb;
use tonic::Status;
use tracing::info;

use super::admin::AdminApi;
use super::{catalog_status, now_ms, parse_site, parse_target};
use crate::catalog::PolicyRecord;
use crate::policy::{Policy, Retention, Schedule};
use crate::prune::{PruneScope, prune};
use crate::state::own_policy;

/// A job as the operator API shows it.
pub(super) fn job_info(j: crate::catalog::JobRecord) -> pb::JobInfo {
    pb::JobInfo {
        state: pb::JobStatus::from(j.state).into(),
        job_id: j.job_id,
        site: j.site,
        target: j.target,
        kind: pb::JobKind::from(j.kind).into(),
        started_unix_ms: j.started_unix_ms,
        ended_unix_ms: j.ended_unix_ms.unwrap_or(0),
        error: j.error.unwrap_or_default(),
        snapshot_id: j.snapshot_id.unwrap_or_default(),
        trigger: pb::JobTrigger::from(j.trigger).into(),
        logical_bytes: j.logical_bytes,
        new_bytes: j.new_bytes,
        agent_id: j.agent_id,
    }
}

impl From<crate::catalog::JobState> for pb::JobStatus {
    fn from(s: crate::catalog::JobState) -> Self {
        match s {
            crate::catalog::JobState::Running => pb::JobStatus::Running,
            crate::catalog::JobState::Succeeded => pb::JobStatus::Succeeded,
            crate::catalog::JobState::Failed => pb::JobStatus::Failed,
        }
    }
}

impl From<crate::catalog::JobKind> for pb::JobKind {
    fn from(k: crate::catalog::JobKind) -> Self {
        match k {
            crate::catalog::JobKind::Backup => pb::JobKind::Backup,
            crate::catalog::JobKind::Restore => pb::JobKind::Restore,
            crate::catalog::JobKind::Verify => pb::JobKind::Verify,
            crate::catalog::JobKind::Inspect => pb::JobKind::Inspect,
        }
    }
}

impl From<crate::catalog::Trigger> for pb::JobTrigger {
    fn from(t: crate::catalog::Trigger) -> Self {
        match t {
            crate::catalog::Trigger::Manual => pb::JobTrigger::Manual,
            crate::catalog::Trigger::Schedule => pb::JobTrigger::Schedule,
            crate::catalog::Trigger::Retry => pb::JobTrigger::Retry,
            crate::catalog::Trigger::Drill => pb::JobTrigger::Drill,
        }
    }
}

impl From<&Policy> for pb::PolicyMsg {
    fn from(p: &Policy) -> Self {
        pb::PolicyMsg {
            schedule: p.schedule.clone(),
            timezone: p.timezone.clone(),
            rpo_secs: p.rpo_secs,
            rto_secs: p.rto_secs,
            keep_daily: p.retention.keep_daily,
            keep_weekly: p.retention.keep_weekly,
            keep_monthly: p.retention.keep_monthly,
            keep_last: p.retention.keep_last,
            drill_every_secs: p.drill_every_secs,
            keep_verified: Some(p.retention.keep_verified),
        }
    }
}

impl From<pb::PolicyMsg> for Policy {
    fn from(m: pb::PolicyMsg) -> Self {
        Policy {
            v: 1,
            schedule: m.schedule,
            timezone: m.timezone,
            rpo_secs: m.rpo_secs,
            rto_secs: m.rto_secs,
            retention: Retention {
                keep_daily: m.keep_daily,
                keep_weekly: m.keep_weekly,
                keep_monthly: m.keep_monthly,
                keep_last: m.keep_last,
                keep_verified: m
                    .keep_verified
                    .unwrap_or(crate::policy::DEFAULT_KEEP_VERIFIED),
            },
            drill_every_secs: m.drill_every_secs,
        }
    }
}

fn info_of(site: &str, target: &str, p: &Policy, is_default: bool) -> pb::PolicyInfo {
    let next = Schedule::parse(&p.schedule, &p.timezone)
        .ok()
        .and_then(|s| s.next_after(now_ms()))
        .unwrap_or(0);
    pb::PolicyInfo {
        site: site.into(),
        target: target.into(),
        policy: Some(p.into()),
        is_default,
        next_run_unix_ms: next,
    }
}

impl AdminApi {
    pub(super) async fn set_policy_impl(
        &self,
        req: pb::SetPolicyRequest,
    ) -> Result<pb::PolicyInfo, Status> {
        parse_site(&req.site)?;
        parse_target(&req.target)?;
        if !req.create {
            self.require_known_target(&req.site, &req.target).await?;
        }
        let policy: Policy = req
            .policy
            .ok_or_else(|| Status::invalid_argument("policy missing"))?
            .into();
        policy
            .validate(now_ms(), req.force)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let rec = PolicyRecord {
            v: 1,
            site: req.site.clone(),
            target: req.target.clone(),
            policy: policy.clone(),
            updated_unix_ms: now_ms(),
        };
        self.state
            .catalog
            .put_policy(&rec)
            .await
            .map_err(catalog_status)?;
        super::durable(&self.state).await?;
        info!(site = %req.site, target = %req.target, schedule = %policy.schedule,
            timezone = %policy.timezone, rpo_secs = policy.rpo_secs, forced = req.force, "policy set");
        Ok(info_of(&req.site, &req.target, &policy, false))
    }

    pub(super) async fn delete_policy_impl(
        &self,
        req: pb::DeletePolicyRequest,
    ) -> Result<pb::DeletePolicyResponse, Status> {
        parse_site(&req.site)?;
        let target = (!req.target.is_empty()).then_some(req.target.as_str());
        if let Some(t) = target {
            parse_target(t)?;
        }
        let before = crate::state::site_policy_of(&self.state, &req.site)
            .await
            .map_err(catalog_status)?;
        let deleted = self
            .state
            .catalog
            .delete_policy(&req.site, target)
            .await
            .map_err(catalog_status)?;
        if deleted && target.is_none() {
            let lock = crate::policy::site::DEFAULT_RETENTION_LOCK_SECS;
            self.audit(
                &req.site,
                "",
                "site settings deleted",
                format!(
                    "retention lock {} -> {} (default)",
                    crate::policy::human_secs(before.retention_lock_secs),
                    crate::policy::human_secs(lock)
                ),
            )
            .await?;
        }
        super::durable(&self.state).await?;
        info!(site = %req.site, target = ?target, deleted, "policy deleted");
        Ok(pb::DeletePolicyResponse { deleted })
    }

    /// Refuse a (site, target) nothing knows of: no agent declares it, it has no
    /// snapshot and no policy. A typo must not create a phantom target that then shows
    /// as NEVER BACKED UP; `--create` sets one up ahead of its agent.
    pub(super) async fn require_known_target(
        &self,
        site: &str,
        target: &str,
    ) -> Result<(), Status> {
        let cat = &self.state.catalog;
        let mut known: Vec<String> = cat
            .agents()
            .await
            .map_err(catalog_status)?
            .into_iter()
            .filter(|a| a.site == site)
            .flat_map(|a| a.targets.into_iter().map(|(t, _)| t))
            .collect();
        let declared = known.iter().any(|t| t == target);
        let has_policy = own_policy(&self.state, site, target)
            .await
            .map_err(catalog_status)?
            .is_some();
        if declared || has_policy {
            return Ok(());
        }
        let snaps = cat
            .snapshots(Some(site), Some(target))
            .await
            .map_err(catalog_status)?;
        if !snaps.is_empty() {
            return Ok(());
        }
        known.sort();
        known.dedup();
        Err(Status::not_found(format!(
            "no agent of site {site} declares target {target} (known: {}); check the name, or add --create to set it up ahead of its agent",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )))
    }

    pub(super) async fn get_policy_impl(
        &self,
        req: pb::GetPolicyRequest,
    ) -> Result<pb::PolicyInfo, Status> {
        parse_site(&req.site)?;
        parse_target(&req.target)?;
        let own = own_policy(&self.state, &req.site, &req.target)
            .await
            .map_err(catalog_status)?;
        if own.is_none() {
            self.require_known_target(&req.site, &req.target).await?;
        }
        let is_default = own.is_none();
        let p = own.unwrap_or_else(|| self.state.default_policy.clone());
        Ok(info_of(&req.site, &req.target, &p, is_default))
    }

    /// Every target with a policy of its own, plus every target agents report, with its
    /// effective policy.
    pub(super) async fn list_policies_impl(&self) -> Result<pb::ListPoliciesResponse, Status> {
        let cat = &self.state.catalog;
        let stored = cat.policies().await.map_err(catalog_status)?;
        let mut out: std::collections::BTreeMap<(String, String), pb::PolicyInfo> =
            Default::default();
        for a in cat.agents().await.map_err(catalog_status)? {
            for (t, _) in &a.targets {
                out.insert(
                    (a.site.clone(), t.clone()),
                    info_of(&a.site, t, &self.state.default_policy, true),
                );
            }
        }
        for p in stored {
            out.insert(
                (p.site.clone(), p.target.clone()),
                info_of(&p.site, &p.target, &p.policy, false),
            );
        }
        Ok(pb::ListPoliciesResponse {
            policies: out.into_values().collect(),
            sites: self.list_site_policies().await?,
        })
    }

    pub(super) async fn prune_impl(
        &self,
        req: pb::PruneRequest,
    ) -> Result<pb::PruneResponse, Status> {
        let opt = |s: String| (!s.is_empty()).then_some(s);
        let scope = PruneScope {
            site: opt(req.site),
            target: opt(req.target),
            dry_run: req.dry_run,
            plan_only: false,
        };
        if let Some(s) = &scope.site {
            parse_site(s)?;
        }
        if let Some(t) = &scope.target {
            parse_target(t)?;
        }
        let r = prune(&self.state, &scope, now_ms()).await.map_err(|e| {
            tracing::error!(error = %e, "prune");
            Status::internal(e.to_string())
        })?;
        Ok(pb::PruneResponse {
            dry_run: r.dry_run,
            targets: r
                .targets
                .into_iter()
                .map(|t| pb::TargetPrune {
                    site: t.site,
                    target: t.target,
                    keep: t.keep,
                    delete: t.delete,
                    spared_by: t.spared.iter().map(|(_, by)| by.to_string()).collect(),
                    spared: t.spared.into_iter().map(|(id, _)| id).collect(),
                    standing: t.standing.into_iter().map(String::from).collect(),
                    hold: t.hold.unwrap_or_default(),
                })
                .collect(),
            deleted_snapshots: r.deleted_snapshots,
            deleted_chunks: r.deleted_chunks,
            freed_bytes: r.freed_bytes,
            pinned_chunks: r.pinned_chunks,
            gc_note: r.gc_note.unwrap_or_default(),
            orphans_deleted: r.orphans_deleted,
            orphan_bytes: r.orphan_bytes,
            sweep_refused: r.sweep_refused,
        })
    }

    pub(super) async fn list_jobs_impl(
        &self,
        req: pb::ListJobsRequest,
    ) -> Result<pb::ListJobsResponse, Status> {
        if !req.job_id.is_empty() {
            let j = self
                .state
                .catalog
                .job(&req.job_id)
                .await
                .map_err(catalog_status)?
                .ok_or_else(|| {
                    Status::not_found(format!(
                        "no job {} (nex-backup jobs lists them)",
                        nex_backup_shared::text::clean(&req.job_id, 80)
                    ))
                })?;
            return Ok(pb::ListJobsResponse {
                jobs: vec![job_info(j)],
                next_page_token: String::new(),
            });
        }
        let filter = crate::catalog::history::JobFilter {
            site: (!req.site.is_empty()).then(|| req.site.clone()),
            target: (!req.target.is_empty()).then(|| req.target.clone()),
            failed_only: req.failed_only,
        };
        let size = super::paging::page_size(req.limit, 50);
        let before = super::paging::parse(&req.page_token)?;
        let jobs = self
            .state
            .catalog
            .jobs_page(&filter, before.as_ref(), size + 1)
            .await
            .map_err(catalog_status)?;
        let (jobs, next_page_token) =
            super::paging::split(jobs, size, |j| (j.started_unix_ms, j.job_id.as_str()));
        Ok(pb::ListJobsResponse {
            next_page_token,
            jobs: jobs.into_iter().map(job_info).collect(),
        })
    }
}
