//! `AdminService`: what operators call through the CLI.

use std::sync::Arc;

use nex_backup_shared::pb::admin_service_server::AdminService;
use nex_backup_shared::pb::{self, command::Kind, job_update::Update};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::warn;

use super::{State, catalog_status, now_ms, parse_site, parse_snapshot, parse_target};
use crate::catalog::AgentRecord;

/// The operator-facing service.
#[derive(Clone)]
pub struct AdminApi {
    pub state: Arc<State>,
}

impl AdminApi {
    /// Whether some agent of `site` declares `target`; NotFound names what is unknown.
    async fn check_target_known(&self, site: &str, target: Option<&str>) -> Result<(), Status> {
        let agents: Vec<AgentRecord> = self
            .state
            .catalog
            .agents()
            .await
            .map_err(catalog_status)?
            .into_iter()
            .filter(|a| a.site == site)
            .collect();
        if agents.is_empty() {
            return Err(Status::not_found(format!("unknown site {site}")));
        }
        match target {
            Some(t) if !agents.iter().any(|a| a.targets.iter().any(|(n, _)| n == t)) => Err(
                Status::not_found(format!("unknown target {t} at site {site}")),
            ),
            _ => Ok(()),
        }
    }

    /// The site and target exist (whether an agent that can run the job is online is
    /// [`crate::dispatch::start_job`]'s to say, before it records anything).
    pub(super) async fn check_dispatch(&self, site: &str, target: &str) -> Result<(), Status> {
        parse_site(site)?;
        parse_target(target)?;
        self.check_target_known(site, Some(target)).await
    }

    /// Record, watch and dispatch a job; stream its updates until its outcome.
    pub(super) async fn dispatch(
        &self,
        site: &str,
        target: &str,
        kind: Kind,
        trigger: crate::catalog::Trigger,
    ) -> Result<ReceiverStream<Result<pb::JobUpdate, Status>>, Status> {
        let (job_id, mut updates) =
            crate::dispatch::start_job(&self.state, site, target, kind, trigger).await?;
        if let Ok(Some(job)) = self.state.catalog.job(&job_id).await {
            crate::dispatch::follow_remote(&self.state, site, &job.agent_id, &job_id);
        }
        let (tx, rx) = mpsc::channel(16);
        // The job id at once, so that a client can name the job (to cancel it, say)
        // before its first progress report.
        let _ = tx
            .send(Ok(pb::JobUpdate {
                job_id: job_id.clone(),
                update: Some(Update::Progress(pb::JobProgressInfo {
                    phase: "dispatched".into(),
                    ..Default::default()
                })),
            }))
            .await;
        tokio::spawn(async move {
            loop {
                match updates.recv().await {
                    Ok(u) => {
                        let last = matches!(u.update, Some(Update::Outcome(_)));
                        if tx.send(Ok(u)).await.is_err() || last {
                            break;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        warn!(job = %job_id, n, "watcher lagged")
                    }
                    Err(_) => {
                        let _ = tx
                            .send(Err(Status::unavailable(format!(
                                "the controller stopped before job {job_id} finished; the agent keeps it and reports it when the controller is back (see nex-backup jobs)"
                            ))))
                            .await;
                        break;
                    }
                }
            }
        });
        Ok(ReceiverStream::new(rx))
    }
}

/// Fill in the target's last backup job: its state, time and the first line of its error.
fn last_backup(
    jobs: &[crate::catalog::JobRecord],
    site: &str,
    target: &str,
    t: &mut pb::TargetStatus,
) {
    let Some(j) = jobs
        .iter()
        .filter(|j| {
            j.site == site && j.target == target && j.kind == crate::catalog::JobKind::Backup
        })
        .max_by_key(|j| j.started_unix_ms)
    else {
        return;
    };
    t.last_job_state = pb::JobStatus::from(j.state).into();
    t.last_job_unix_ms = j.ended_unix_ms.unwrap_or(j.started_unix_ms);
    let first = j.error_line();
    t.last_job_error = nex_backup_shared::text::clean(first, 200);
}

/// A snapshot by its id or a unique prefix of it (at least 8 characters, e.g. the
/// date part `20261130T0912`).
pub(super) fn find_snapshot<'a>(
    snaps: &'a [crate::catalog::SnapshotRecord],
    id: &str,
    target: &str,
) -> Result<&'a crate::catalog::SnapshotRecord, Status> {
    if let Some(s) = snaps.iter().find(|s| s.snapshot_id == id) {
        return Ok(s);
    }
    if parse_snapshot(id).is_ok() || id.len() < 8 {
        parse_snapshot(id)?;
        return Err(Status::not_found(format!(
            "snapshot {id} of target {target} not found"
        )));
    }
    let id = nex_backup_shared::text::clean(id, 64);
    let matches: Vec<_> = snaps
        .iter()
        .filter(|s| s.snapshot_id.starts_with(id.as_str()))
        .collect();
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(Status::not_found(format!(
            "no snapshot of target {target} starts with {id}"
        ))),
        many => Err(Status::invalid_argument(format!(
            "{id} is the start of {} snapshots of target {target} ({}); give more of the id",
            many.len(),
            many.iter()
                .take(5)
                .map(|s| s.snapshot_id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    type RunBackupStream = ReceiverStream<Result<pb::JobUpdate, Status>>;
    type RunRestoreStream = ReceiverStream<Result<pb::JobUpdate, Status>>;

    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        self.audited("Status", request, |_request| async move {
            let cat = &self.state.catalog;
            let mut sites = vec![];
            // One row per agent (a site may have several), by site.
            let mut agents = cat.agents().await.map_err(catalog_status)?;
            agents.sort_by(|a, b| (&a.site, &a.agent_id).cmp(&(&b.site, &b.agent_id)));
            let holds = cat.holds().await.map_err(catalog_status)?;
            let damaged = crate::fleet::standing::load_damaged(&*self.state.integrity)
                .await
                .map_err(catalog_status)?;
            // One query for every target's newest snapshot, not one per agent.
            let newest = cat.newest_snapshots().await.map_err(catalog_status)?;
            // The jobs status needs, not every job: each target's newest backup (its
            // last result) and the jobs of the newest snapshots (their standing).
            let keys: Vec<(String, String)> = newest
                .iter()
                .map(|s| (s.site.clone(), s.snapshot_id.clone()))
                .collect();
            let mut jobs = cat
                .newest_jobs(crate::catalog::JobKind::Backup)
                .await
                .map_err(catalog_status)?;
            jobs.extend(cat.jobs_of_snapshots(&keys).await.map_err(catalog_status)?);
            jobs.sort_by(|a, b| a.job_id.cmp(&b.job_id));
            jobs.dedup_by(|a, b| a.job_id == b.job_id);
            let standing = crate::fleet::standing::labels(&newest, &jobs, &holds, &damaged);
            for a in agents {
                let first = newest.partition_point(|s| s.site < a.site);
                let snaps = newest[first..]
                    .iter()
                    .take_while(|s| s.site == a.site)
                    .collect::<Vec<_>>();
                let live = self.state.hub.online(&a.site, &a.agent_id).then_some(());
                let targets = a
                    .targets
                    .iter()
                    .map(|(name, kind)| {
                        let newest = snaps.iter().find(|s| &s.target == name);
                        let mut t = pb::TargetStatus {
                            target: name.clone(),
                            kind: kind.clone(),
                            newest_snapshot: newest
                                .map(|s| s.snapshot_id.clone())
                                .unwrap_or_default(),
                            newest_unix_ms: newest.map_or(0, |s| s.created_unix_ms),
                            newest_standing: newest
                                .and_then(|s| {
                                    standing.get(&(s.site.clone(), s.snapshot_id.clone()))
                                })
                                .map(|l| l.to_string())
                                .unwrap_or_default(),
                            ..Default::default()
                        };
                        last_backup(&jobs, &a.site, name, &mut t);
                        t
                    })
                    .collect();
                sites.push(pb::SiteStatus {
                    site: a.site.clone(),
                    agent_id: a.agent_id.clone(),
                    online: live.is_some(),
                    agent_version: a.version.clone(),
                    last_seen_unix_ms: if live.is_some() {
                        now_ms()
                    } else {
                        a.last_seen_unix_ms
                    },
                    targets,
                    health: self
                        .state
                        .health
                        .latest(&a.site, &a.agent_id)
                        .map(|h| h.to_pb()),
                });
            }
            let st = &self.state.hub.stats;
            let workers = self
                .state
                .workers
                .statuses()
                .into_iter()
                .map(|w| pb::WorkerInfo {
                    name: w.name,
                    state: w.state.as_str().into(),
                    runs: w.runs,
                    errors: w.errors,
                    last_error: w.last_error.unwrap_or_default(),
                    last_error_unix_ms: w.last_error_unix_ms,
                    last_run_unix_ms: w.last_run_unix_ms,
                })
                .collect();
            let copies = self
                .state
                .copy_lag
                .readings()
                .into_iter()
                .filter(|(_, site, _)| sites.iter().any(|s| &s.site == site))
                .map(|(copy, site, lag_secs)| pb::CopyStatus {
                    copy,
                    site,
                    lag_secs,
                })
                .collect();
            Ok(Response::new(pb::StatusResponse {
                sites,
                workers,
                copies,
                chunks_received: st
                    .chunks_received
                    .load(std::sync::atomic::Ordering::Relaxed),
                duplicate_chunks_received: st
                    .duplicate_chunks_received
                    .load(std::sync::atomic::Ordering::Relaxed),
            }))
        })
        .await
    }

    async fn list_snapshots(
        &self,
        request: Request<pb::ListSnapshotsRequest>,
    ) -> Result<Response<pb::ListSnapshotsResponse>, Status> {
        self.audited("ListSnapshots", request, |request| async move {
            let req = request.into_inner();
            let site = (!req.site.is_empty()).then_some(req.site.as_str());
            let target = (!req.target.is_empty()).then_some(req.target.as_str());
            if let Some(s) = site {
                parse_site(s)?;
                self.check_target_known(s, target).await?;
            }
            let cat = &self.state.catalog;
            let size = super::paging::page_size(req.limit, super::paging::MAX_PAGE);
            let after = super::paging::parse(&req.page_token)?;
            let snaps = cat
                .snapshots_page(site, target, after.as_ref(), size + 1)
                .await
                .map_err(catalog_status)?;
            let (snaps, next_page_token) =
                super::paging::split(snaps, size, |s| (s.created_unix_ms, s.snapshot_id.as_str()));
            let standing = self.standing_of(&snaps).await?;
            Ok(Response::new(pb::ListSnapshotsResponse {
                next_page_token,
                snapshots: snaps
                    .into_iter()
                    .map(|s| pb::SnapshotInfo {
                        standing: standing
                            .get(&(s.site.clone(), s.snapshot_id.clone()))
                            .copied()
                            .unwrap_or("no job")
                            .into(),
                        site: s.site,
                        target: s.target,
                        snapshot_id: s.snapshot_id,
                        created_unix_ms: s.created_unix_ms,
                        logical_bytes: s.logical_bytes,
                        stored_bytes: s.stored_bytes,
                        new_bytes: s.new_bytes,
                        duration_ms: s.duration_ms,
                        chunks: s.chunks,
                    })
                    .collect(),
            }))
        })
        .await
    }

    async fn run_backup(
        &self,
        request: Request<pb::RunBackupRequest>,
    ) -> Result<Response<Self::RunBackupStream>, Status> {
        self.audited("RunBackup", request, |request| async move {
            let req = request.into_inner();
            self.check_dispatch(&req.site, &req.target).await?;
            let sp = crate::state::site_policy_of(&self.state, &req.site)
                .await
                .map_err(catalog_status)?;
            let kind =
                crate::dispatch::backup_command(&sp, &req.target, now_ms(), req.outside_window)
                    .map_err(|e| {
                        Status::failed_precondition(format!(
                            "site {}: {e} (use --outside-window to back up now)",
                            req.site
                        ))
                    })?;
            Ok(Response::new(
                self.dispatch(
                    &req.site,
                    &req.target,
                    kind,
                    crate::catalog::Trigger::Manual,
                )
                .await?,
            ))
        })
        .await
    }

    async fn run_restore(
        &self,
        request: Request<pb::RunRestoreRequest>,
    ) -> Result<Response<Self::RunRestoreStream>, Status> {
        self.audited("RunRestore", request, |request| async move {
            Ok(Response::new(
                self.run_restore_impl(request.into_inner()).await?,
            ))
        })
        .await
    }

    async fn create_token(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        self.audited("CreateToken", request, |request| async move {
            Ok(Response::new(
                self.create_token_impl(request.into_inner()).await?,
            ))
        })
        .await
    }

    async fn list_agents(
        &self,
        request: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        self.audited("ListAgents", request, |_request| async move {
            Ok(Response::new(self.list_agents_impl().await?))
        })
        .await
    }

    async fn revoke_agent(
        &self,
        request: Request<pb::RevokeAgentRequest>,
    ) -> Result<Response<pb::RevokeAgentResponse>, Status> {
        self.audited("RevokeAgent", request, |request| async move {
            Ok(Response::new(
                self.revoke_agent_impl(request.into_inner()).await?,
            ))
        })
        .await
    }

    async fn set_policy(
        &self,
        request: Request<pb::SetPolicyRequest>,
    ) -> Result<Response<pb::PolicyInfo>, Status> {
        self.audited("SetPolicy", request, |request| async move {
            Ok(Response::new(
                self.set_policy_impl(request.into_inner()).await?,
            ))
        })
        .await
    }

    async fn get_policy(
        &self,
        request: Request<pb::GetPolicyRequest>,
    ) -> Result<Response<pb::PolicyInfo>, Status> {
        self.audited("GetPolicy", request, |request| async move {
            Ok(Response::new(
                self.get_policy_impl(request.into_inner()).await?,
            ))
        })
        .await
    }

    async fn list_policies(
        &self,
        request: Request<pb::ListPoliciesRequest>,
    ) -> Result<Response<pb::ListPoliciesResponse>, Status> {
        self.audited("ListPolicies", request, |_request| async move {
            Ok(Response::new(self.list_policies_impl().await?))
        })
        .await
    }

    async fn set_site_policy(
        &self,
        request: Request<pb::SetSitePolicyRequest>,
    ) -> Result<Response<pb::SitePolicyInfo>, Status> {
        self.audited("SetSitePolicy", request, |request| async move {
            Ok(Response::new(
                self.set_site_policy_impl(request.into_inner()).await?,
            ))
        })
        .await
    }

    async fn get_site_policy(
        &self,
        request: Request<pb::GetSitePolicyRequest>,
    ) -> Result<Response<pb::SitePolicyInfo>, Status> {
        self.audited("GetSitePolicy", request, |request| async move {
            Ok(Response::new(
                self.get_site_policy_impl(request.into_inner()).await?,
            ))
        })
        .await
    }

    async fn prune(
        &self,
        request: Request<pb::PruneRequest>,
    ) -> Result<Response<pb::PruneResponse>, Status> {
        self.audited("Prune", request, |request| async move {
            Ok(Response::new(self.prune_impl(request.into_inner()).await?))
        })
        .await
    }

    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        self.audited("ListJobs", request, |request| async move {
            Ok(Response::new(
                self.list_jobs_impl(request.into_inner()).await?,
            ))
        })
        .await
    }

    async fn rpo(
        &self,
        request: Request<pb::RpoRequest>,
    ) -> Result<Response<pb::RpoResponse>, Status> {
        self.audited("Rpo", request, |request| async move {
            Ok(Response::new(self.rpo_impl(request.into_inner()).await?))
        })
        .await
    }

    async fn delete_policy(
        &self,
        request: Request<pb::DeletePolicyRequest>,
    ) -> Result<Response<pb::DeletePolicyResponse>, Status> {
        self.audited("DeletePolicy", request, |request| async move {
            Ok(Response::new(
                self.delete_policy_impl(request.into_inner()).await?,
            ))
        })
        .await
    }

    async fn cancel_job(
        &self,
        request: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::JobInfo>, Status> {
        self.audited("CancelJob", request, |request| async move {
            Ok(Response::new(
                self.cancel_job_impl(request.into_inner()).await?,
            ))
        })
        .await
    }

    async fn list_holds(
        &self,
        request: Request<pb::ListHoldsRequest>,
    ) -> Result<Response<pb::ListHoldsResponse>, Status> {
        self.audited("ListHolds", request, |request| async move {
            Ok(Response::new(
                self.list_holds_impl(request.into_inner()).await?,
            ))
        })
        .await
    }

    async fn release_hold(
        &self,
        request: Request<pb::ReleaseHoldRequest>,
    ) -> Result<Response<pb::HoldInfo>, Status> {
        self.audited("ReleaseHold", request, |request| async move {
            Ok(Response::new(
                self.release_hold_impl(request.into_inner()).await?,
            ))
        })
        .await
    }

    async fn list_audit(
        &self,
        request: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        self.audited("ListAudit", request, |request| async move {
            Ok(Response::new(
                self.list_audit_impl(request.into_inner()).await?,
            ))
        })
        .await
    }

    async fn set_channel(
        &self,
        request: Request<pb::ChannelMsg>,
    ) -> Result<Response<pb::ChannelMsg>, Status> {
        self.audited("SetChannel", request, |request| async move {
            Ok(Response::new(
                self.set_channel_impl(request.into_inner()).await?,
            ))
        })
        .await
    }

    async fn list_channels(
        &self,
        request: Request<pb::ListChannelsRequest>,
    ) -> Result<Response<pb::ListChannelsResponse>, Status> {
        self.audited("ListChannels", request, |_request| async move {
            Ok(Response::new(self.list_channels_impl().await?))
        })
        .await
    }

    async fn delete_channel(
        &self,
        request: Request<pb::DeleteChannelRequest>,
    ) -> Result<Response<pb::DeleteChannelResponse>, Status> {
        self.audited("DeleteChannel", request, |request| async move {
            Ok(Response::new(
                self.delete_channel_impl(request.into_inner()).await?,
            ))
        })
        .await
    }

    async fn test_channel(
        &self,
        request: Request<pb::TestChannelRequest>,
    ) -> Result<Response<pb::TestChannelResponse>, Status> {
        self.audited("TestChannel", request, |request| async move {
            Ok(Response::new(
                self.test_channel_impl(request.into_inner()).await?,
            ))
        })
        .await
    }

    async fn set_alert_rule(
        &self,
        request: Request<pb::AlertRuleMsg>,
    ) -> Result<Response<pb::AlertRuleMsg>, Status> {
        self.audited("SetAlertRule", request, |request| async move {
            Ok(Response::new(
                self.set_alert_rule_impl(request.into_inner()).await?,
            ))
        })
        .await
    }

    async fn list_alert_rules(
        &self,
        request: Request<pb::ListAlertRulesRequest>,
    ) -> Result<Response<pb::ListAlertRulesResponse>, Status> {
        self.audited("ListAlertRules", request, |request| async move {
            Ok(Response::new(
                self.list_alert_rules_impl(request.into_inner()).await?,
            ))
        })
        .await
    }

    async fn list_incidents(
        &self,
        request: Request<pb::ListIncidentsRequest>,
    ) -> Result<Response<pb::ListIncidentsResponse>, Status> {
        self.audited("ListIncidents", request, |request| async move {
            Ok(Response::new(
                self.list_incidents_impl(request.into_inner()).await?,
            ))
        })
        .await
    }

    async fn ack_incident(
        &self,
        request: Request<pb::AckIncidentRequest>,
    ) -> Result<Response<pb::IncidentInfo>, Status> {
        self.audited("AckIncident", request, |request| async move {
            Ok(Response::new(
                self.ack_incident_impl(request.into_inner()).await?,
            ))
        })
        .await
    }

    async fn create_admin(
        &self,
        request: Request<pb::CreateAdminRequest>,
    ) -> Result<Response<pb::CreateAdminResponse>, Status> {
        self.audited("CreateAdmin", request, |request| async move {
            Ok(Response::new(
                self.create_admin_impl(request.into_inner()).await?,
            ))
        })
        .await
    }

    async fn list_admins(
        &self,
        request: Request<pb::ListAdminsRequest>,
    ) -> Result<Response<pb::ListAdminsResponse>, Status> {
        self.audited("ListAdmins", request, |_request| async move {
            Ok(Response::new(self.list_admins_impl().await?))
        })
        .await
    }

    async fn verify_store(
        &self,
        request: Request<pb::VerifyStoreRequest>,
    ) -> Result<Response<pb::VerifyStoreResponse>, Status> {
        self.audited("VerifyStore", request, |request| async move {
            Ok(Response::new(
                self.verify_store_impl(request.into_inner()).await?,
            ))
        })
        .await
    }

    async fn list_damaged(
        &self,
        request: Request<pb::ListDamagedRequest>,
    ) -> Result<Response<pb::ListDamagedResponse>, Status> {
        self.audited("ListDamaged", request, |request| async move {
            Ok(Response::new(
                self.list_damaged_impl(request.into_inner()).await?,
            ))
        })
        .await
    }

    async fn revoke_admin(
        &self,
        request: Request<pb::RevokeAdminRequest>,
    ) -> Result<Response<pb::AdminInfo>, Status> {
        self.audited("RevokeAdmin", request, |request| async move {
            Ok(Response::new(
                self.revoke_admin_impl(request.into_inner()).await?,
            ))
        })
        .await
    }

    async fn set_account(
        &self,
        request: Request<pb::SetAccountRequest>,
    ) -> Result<Response<pb::AccountInfo>, Status> {
        self.audited("SetAccount", request, |request| async move {
            Ok(Response::new(
                self.set_account_impl(request.into_inner()).await?,
            ))
        })
        .await
    }

    async fn list_accounts(
        &self,
        request: Request<pb::ListAccountsRequest>,
    ) -> Result<Response<pb::ListAccountsResponse>, Status> {
        self.audited("ListAccounts", request, |_request| async move {
            Ok(Response::new(self.list_accounts_impl().await?))
        })
        .await
    }

    async fn set_summary(
        &self,
        request: Request<pb::SummaryMsg>,
    ) -> Result<Response<pb::SummaryMsg>, Status> {
        self.audited("SetSummary", request, |request| async move {
            Ok(Response::new(
                self.set_summary_impl(request.into_inner()).await?,
            ))
        })
        .await
    }

    async fn send_summary(
        &self,
        request: Request<pb::SendSummaryRequest>,
    ) -> Result<Response<pb::SendSummaryResponse>, Status> {
        self.audited("SendSummary", request, |request| async move {
            Ok(Response::new(
                self.send_summary_impl(request.into_inner()).await?,
            ))
        })
        .await
    }
}
