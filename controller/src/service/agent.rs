//! `AgentService`: the calls agents make. Every call is authorized by the client
//! certificate (re-checked against the catalog, so revocation is immediate) and may only
//! touch the caller's own site. Agents are append-only: nothing here deletes or
//! overwrites a chunk, a snapshot or a sealed key.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use nex_backup_shared::pb::agent_service_server::AgentService;
use nex_backup_shared::pb::{self, agent_message::Msg};
use nex_backup_shared::text::{MAX_LABEL_LEN, clean};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{Instrument, info, info_span, warn};

use super::{
    State, catalog_status, chunk_ids, now_ms, parse_site, parse_snapshot, parse_target,
    store_status,
};
use crate::catalog::AgentRecord;
use crate::service::auth::{agent_identity, require_site};
use crate::store::chunk_key;
use nex_backup_shared::identity::AgentIdentity;
use nex_backup_shared::ids::ChunkId;

const MAX_IDS_PER_REQUEST: usize = 100_000;
/// Most targets one agent may declare, and most jobs its hello may list.
const MAX_TARGETS: usize = 256;
const MAX_KNOWN_JOBS: usize = 4096;
const MAX_CHUNKS_PER_GET: usize = 4096;

/// The agent-facing service.
#[derive(Clone)]
pub struct AgentApi {
    pub state: Arc<State>,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

impl AgentApi {
    async fn on_hello(
        &self,
        who: &AgentIdentity,
        hello: pb::Hello,
        tx: super::super::hub::SessionTx,
    ) -> Result<(u64, tokio_util::sync::CancellationToken), Status> {
        // Jobs dispatched from now on go to this agent process (or wait for it): none of
        // them can have been lost with an earlier one.
        let hello_at = now_ms();
        parse_site(&hello.site)?;
        super::parse_agent(&hello.agent_id)?;
        require_site(who, &hello.site)?;
        if hello.targets.len() > MAX_TARGETS || hello.known_jobs.len() > MAX_KNOWN_JOBS {
            return Err(Status::invalid_argument(format!(
                "hello lists {} targets and {} jobs; at most {MAX_TARGETS} and {MAX_KNOWN_JOBS}",
                hello.targets.len(),
                hello.known_jobs.len()
            )));
        }
        let mut hello = hello;
        hello.version = clean(&hello.version, MAX_LABEL_LEN);
        hello.known_jobs.retain(|j| j.len() <= 128);
        if hello.agent_id != who.agent_id {
            warn!(site = %who.site, agent = %who.agent_id, claimed = %hello.agent_id, "hello with another agent id refused");
            return Err(Status::permission_denied(
                "hello names another agent than the certificate",
            ));
        }
        tx.send(Ok(pb::ControllerMessage {
            msg: Some(pb::controller_message::Msg::Welcome(
                super::keys::custody(&self.state, &who.site).await?,
            )),
        }))
        .await
        .map_err(|_| Status::cancelled("session closed"))?;
        let mut targets = vec![];
        for t in hello.targets {
            parse_target(&t.name)?;
            targets.push((t.name, clean(&t.kind, MAX_LABEL_LEN)));
        }
        let rec = AgentRecord {
            v: 1,
            site: hello.site.clone(),
            agent_id: hello.agent_id.clone(),
            version: hello.version.clone(),
            last_seen_unix_ms: now_ms(),
            targets: targets.clone(),
        };
        self.state
            .catalog
            .put_agent(&rec)
            .await
            .map_err(super::catalog_status)?;
        // Commands another replica queued for this agent and could not deliver (it died
        // or the agent moved here): they are delivered now, so their jobs are not lost.
        let relayed = self
            .state
            .hub
            .take_relayed(&hello.site, &hello.agent_id)
            .await;
        let mut known = hello.known_jobs.clone();
        known.extend(relayed.iter().filter_map(|m| match &m.msg {
            Some(pb::controller_message::Msg::Command(c)) => Some(c.job_id.clone()),
            _ => None,
        }));
        self.interrupt_lost_jobs(&hello.site, &hello.agent_id, &known, hello_at)
            .await;
        let (conn, cut) =
            self.state
                .hub
                .register(&hello.site, &hello.agent_id, &hello.version, targets, tx);
        for m in relayed {
            if let Err(e) = self.state.hub.send(&hello.site, &hello.agent_id, m).await {
                warn!(site = %hello.site, agent = %hello.agent_id, error = %e, "deliver a relayed command");
            }
        }
        info!(site = %hello.site, agent = %hello.agent_id, version = %hello.version, "agent connected");
        self.state
            .events
            .publish(crate::events::Event::AgentOnline {
                site: hello.site.clone(),
                agent_id: hello.agent_id.clone(),
            });
        Ok((conn, cut))
    }

    /// Jobs sent to this agent before `before_ms` (its hello) and still marked running that
    /// it does not know were lost with an earlier agent process: record them as failed so
    /// that nothing waits on them (a result that still arrives replaces this). A job
    /// dispatched during the hello is on its way to this process. Jobs of the site's other
    /// agents are not this agent's to judge.
    async fn interrupt_lost_jobs(&self, site: &str, agent: &str, known: &[String], before_ms: u64) {
        let jobs = match self.state.catalog.jobs().await {
            Ok(j) => j,
            Err(e) => {
                warn!(%site, error = %e, "load jobs to find lost ones");
                return;
            }
        };
        for mut job in jobs {
            if job.site != site
                || (job.agent_id != agent && !job.agent_id.is_empty())
                || job.state != crate::catalog::JobState::Running
                || job.started_unix_ms >= before_ms
                || known.contains(&job.job_id)
            {
                continue;
            }
            let as_read = job.clone();
            job.state = crate::catalog::JobState::Failed;
            job.ended_unix_ms = Some(now_ms());
            job.error = Some("interrupted: the agent restarted before reporting".into());
            match self.state.catalog.update_job(&as_read, &job).await {
                Ok(true) => {
                    warn!(%site, job = %job.job_id, target = %job.target, "job lost with an agent restart");
                    self.state.job_finished(&job);
                    // Whoever waits for it (here or through another replica) learns it.
                    let failed = pb::JobResult {
                        ok: false,
                        error: job.error.clone().unwrap_or_default(),
                        ..Default::default()
                    };
                    let done = pb::JobUpdate {
                        job_id: job.job_id.clone(),
                        update: Some(pb::job_update::Update::Outcome(super::results::outcome(
                            failed, 0,
                        ))),
                    };
                    self.state.hub.share_outcome(&done).await;
                    self.state.hub.publish(done);
                }
                Ok(false) => {} // settled meanwhile
                Err(e) => warn!(%site, job = %job.job_id, error = %e, "record lost job"),
            }
        }
    }

    async fn session_loop(
        self,
        site: String,
        agent: String,
        conn: u64,
        cut: tokio_util::sync::CancellationToken,
        mut inbound: Streaming<pb::AgentMessage>,
    ) {
        // A heartbeat records "last seen"; a flood of them writes at most once a second.
        let mut last_touch = std::time::Instant::now();
        loop {
            let msg = tokio::select! {
                m = inbound.next() => m,
                _ = cut.cancelled() => {
                    info!(%site, "session cut (agent revoked, replaced by a newer session, or the controller is stopping)");
                    break;
                }
            };
            let Some(msg) = msg else { break };
            let msg = match msg {
                Ok(m) => m,
                Err(e) => {
                    info!(%site, error = %e, "agent session ended with error");
                    break;
                }
            };
            match msg.msg {
                Some(Msg::Heartbeat(hb)) if last_touch.elapsed() >= Duration::from_secs(1) => {
                    last_touch = std::time::Instant::now();
                    self.touch(&site, &agent).await;
                    if let Some(h) = hb.health {
                        self.on_health(&site, &agent, h);
                    }
                }
                Some(Msg::Heartbeat(_)) => {}
                Some(Msg::JobEvent(ev)) => self.on_job_event(&site, &agent, ev).await,
                Some(Msg::Hello(_)) | None => {
                    warn!(%site, "unexpected message on established session")
                }
            }
        }
        self.touch(&site, &agent).await;
        if self.state.hub.unregister(&site, &agent, conn) {
            info!(%site, "agent disconnected");
            self.state
                .events
                .publish(crate::events::Event::AgentOffline {
                    site: site.clone(),
                    agent_id: agent.clone(),
                });
        }
    }

    /// Keep the host's health report (bounded and cleaned) and announce it.
    fn on_health(&self, site: &str, agent: &str, h: pb::HostHealth) {
        let version = self
            .state
            .hub
            .session(site, agent)
            .map(|s| s.version)
            .unwrap_or_default();
        let h = crate::health::HostHealth::from_pb(h, &version, now_ms());
        self.state.health.record(site, agent, h);
        self.state.events.publish(crate::events::Event::HostHealth {
            site: site.into(),
            agent_id: agent.into(),
        });
    }

    async fn touch(&self, site: &str, agent: &str) {
        let Some(s) = self.state.hub.session(site, agent) else {
            return;
        };
        let rec = AgentRecord {
            v: 1,
            site: site.into(),
            agent_id: s.agent_id,
            version: s.version,
            last_seen_unix_ms: now_ms(),
            targets: s.targets,
        };
        if let Err(e) = self.state.catalog.put_agent(&rec).await {
            warn!(%site, error = %e, "record agent heartbeat");
        }
    }
}

#[tonic::async_trait]
impl AgentService for AgentApi {
    type SessionStream = ReceiverStream<Result<pb::ControllerMessage, Status>>;
    type GetChunksStream = BoxStream<pb::ChunkBlob>;

    async fn session(
        &self,
        request: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let who = agent_identity(&self.state, request.extensions()).await?;
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(Duration::from_secs(30), inbound.next())
            .await
            .map_err(|_| Status::deadline_exceeded("no hello within 30 s"))?;
        let Some(Ok(pb::AgentMessage {
            msg: Some(Msg::Hello(hello)),
        })) = first
        else {
            return Err(Status::invalid_argument("a session must start with hello"));
        };
        let (tx, rx) = mpsc::channel(64);
        let site = hello.site.clone();
        let (conn, cut) = self.on_hello(&who, hello, tx).await?;
        let span = info_span!("session", site = %site, agent = %who.agent_id, conn);
        tokio::spawn(
            self.clone()
                .session_loop(site, who.agent_id.clone(), conn, cut, inbound)
                .instrument(span),
        );
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn find_missing(
        &self,
        request: Request<pb::FindMissingRequest>,
    ) -> Result<Response<pb::FindMissingResponse>, Status> {
        let who = agent_identity(&self.state, request.extensions()).await?;
        let req = request.into_inner();
        parse_site(&req.site)?;
        require_site(&who, &req.site)?;
        let ids = chunk_ids(&req.ids, MAX_IDS_PER_REQUEST)?;
        let missing = self
            .state
            .catalog
            .missing_chunks(&req.site, &ids)
            .await
            .map_err(catalog_status)?;
        // What we say exists must still exist when the agent commits.
        let absent: HashSet<ChunkId> = missing.iter().copied().collect();
        self.state.hub.pin(
            &req.site,
            ids.iter().copied().filter(|i| !absent.contains(i)),
            now_ms() + self.state.gc_grace_ms,
        );
        Ok(Response::new(pb::FindMissingResponse {
            missing: missing.iter().map(|i| i.0.to_vec()).collect(),
        }))
    }

    async fn put_chunks(
        &self,
        request: Request<Streaming<pb::PutChunkRequest>>,
    ) -> Result<Response<pb::PutChunksResponse>, Status> {
        let who = agent_identity(&self.state, request.extensions()).await?;
        let resp = self.store_chunks(&who, request.into_inner()).await?;
        Ok(Response::new(resp))
    }

    async fn commit_snapshot(
        &self,
        request: Request<pb::CommitSnapshotRequest>,
    ) -> Result<Response<pb::CommitSnapshotResponse>, Status> {
        let who = agent_identity(&self.state, request.extensions()).await?;
        let keys = super::keys::site_key_ids(&self.state, &who.site).await?;
        let claim = self
            .validate_commit(&who, &keys, request.into_inner())
            .await?;
        let r = &claim.snap.record;
        let span = info_span!("commit", site = %r.site, target = %r.target, snapshot = %r.snapshot_id, job = %r.job_id);
        let rec = self.commit(claim).instrument(span).await?;
        Ok(Response::new(pb::CommitSnapshotResponse {
            stored_bytes: rec.stored_bytes,
            new_bytes: rec.new_bytes,
        }))
    }

    async fn get_manifest(
        &self,
        request: Request<pb::GetManifestRequest>,
    ) -> Result<Response<pb::GetManifestResponse>, Status> {
        let who = agent_identity(&self.state, request.extensions()).await?;
        let req = request.into_inner();
        parse_site(&req.site)?;
        require_site(&who, &req.site)?;
        parse_snapshot(&req.snapshot_id)?;
        let cat = &self.state.catalog;
        let not_found = || Status::not_found(format!("snapshot {} not found", req.snapshot_id));
        let rec = cat
            .snapshot(&req.site, &req.snapshot_id)
            .await
            .map_err(catalog_status)?
            .ok_or_else(not_found)?;
        let manifest = cat
            .manifest(&req.site, &req.snapshot_id)
            .await
            .map_err(catalog_status)?
            .ok_or_else(not_found)?;
        Ok(Response::new(pb::GetManifestResponse {
            manifest,
            target: rec.target,
        }))
    }

    async fn get_chunks(
        &self,
        request: Request<pb::GetChunksRequest>,
    ) -> Result<Response<Self::GetChunksStream>, Status> {
        let who = agent_identity(&self.state, request.extensions()).await?;
        let req = request.into_inner();
        parse_site(&req.site)?;
        require_site(&who, &req.site)?;
        let ids = chunk_ids(&req.ids, MAX_CHUNKS_PER_GET)?;
        let store = self.state.store.clone();
        let site = req.site;
        let stream = futures::stream::iter(ids).then(move |id| {
            let store = store.clone();
            let site = site.clone();
            async move {
                let blob = store
                    .get(&chunk_key(&site, &id))
                    .await
                    .map_err(store_status)?;
                let blob = blob.ok_or_else(|| {
                    Status::not_found(format!(
                        "chunk {} of site {site} is missing from the store",
                        id.short()
                    ))
                })?;
                Ok(pb::ChunkBlob {
                    id: id.0.to_vec(),
                    blob: blob.to_vec(),
                })
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn renew_certificate(
        &self,
        request: Request<pb::RenewRequest>,
    ) -> Result<Response<pb::RenewResponse>, Status> {
        let who = agent_identity(&self.state, request.extensions()).await?;
        let req = request.into_inner();
        Ok(Response::new(
            super::keys::renew(&self.state, &who, &req.csr_der).await?,
        ))
    }

    async fn put_sealed_keys(
        &self,
        request: Request<pb::PutSealedKeysRequest>,
    ) -> Result<Response<pb::PutSealedKeysResponse>, Status> {
        let who = agent_identity(&self.state, request.extensions()).await?;
        let req = request.into_inner();
        parse_site(&req.site)?;
        require_site(&who, &req.site)?;
        let stored = super::keys::put_sealed(&self.state, &who, req.sealed).await?;
        Ok(Response::new(pb::PutSealedKeysResponse { stored }))
    }

    async fn get_sealed_keys(
        &self,
        request: Request<pb::GetSealedKeysRequest>,
    ) -> Result<Response<pb::GetSealedKeysResponse>, Status> {
        let who = agent_identity(&self.state, request.extensions()).await?;
        let req = request.into_inner();
        parse_site(&req.site)?;
        require_site(&who, &req.site)?;
        let sealed = self
            .state
            .catalog
            .sealed_keys(&who.site)
            .await
            .map_err(catalog_status)?;
        info!(site = %who.site, agent = %who.agent_id, count = sealed.len(), "sealed site keys fetched");
        Ok(Response::new(pb::GetSealedKeysResponse {
            sealed: sealed.into_iter().map(|s| s.blob).collect(),
            custody: Some(super::keys::custody(&self.state, &who.site).await?),
        }))
    }
}
