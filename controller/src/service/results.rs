//! Job events arriving on agent sessions: progress is relayed to watchers, results are
//! recorded durably, relayed, and acknowledged so the agent can forget them.

use nex_backup_shared::pb::{self, job_event::Event, job_update::Update};
use tracing::{info, warn};

use super::agent::AgentApi;
use super::now_ms;
use crate::catalog::{JobRecord, JobState};

impl AgentApi {
    pub(super) async fn on_job_event(&self, site: &str, agent: &str, ev: pb::JobEvent) {
        let job_id = ev.job_id.clone();
        match ev.event {
            Some(Event::Progress(p)) => self.state.hub.publish(pb::JobUpdate {
                job_id,
                update: Some(Update::Progress(pb::JobProgressInfo {
                    phase: p.phase,
                    bytes_done: p.bytes_done,
                    chunks_done: p.chunks_done,
                    detail: p.detail,
                })),
            }),
            Some(Event::Result(r)) => self.on_result(site, agent, job_id, r).await,
            None => warn!(site, job = %job_id, "empty job event"),
        }
    }

    async fn on_result(&self, site: &str, agent: &str, job_id: String, r: pb::JobResult) {
        let cat = &self.state.catalog;
        let mut job = match cat.job(&job_id).await {
            Ok(Some(j)) if j.site == site => j,
            Ok(Some(_)) => {
                warn!(site, job = %job_id, "result for another site's job ignored");
                return;
            }
            Ok(None) => JobRecord {
                v: 1,
                job_id: job_id.clone(),
                site: site.into(),
                agent_id: agent.into(),
                target: String::new(),
                kind: "unknown".into(),
                state: JobState::Running,
                started_unix_ms: now_ms().saturating_sub(r.duration_ms),
                ended_unix_ms: None,
                error: None,
                snapshot_id: None,
                trigger: "unknown".into(),
                logical_bytes: 0,
                new_bytes: 0,
            },
            Err(e) => {
                warn!(site, job = %job_id, error = %e, "load job; result will be re-sent by the agent");
                return;
            }
        };
        job.state = if r.ok {
            JobState::Succeeded
        } else {
            JobState::Failed
        };
        job.ended_unix_ms = Some(now_ms());
        job.error = (!r.error.is_empty()).then(|| r.error.clone());
        job.snapshot_id = (!r.snapshot_id.is_empty()).then(|| r.snapshot_id.clone());
        job.logical_bytes = r.logical_bytes;
        if let (Some(s), "backup") = (&job.snapshot_id, job.kind.as_str()) {
            job.new_bytes = match cat.snapshot(site, s).await {
                Ok(snap) => snap.map_or(0, |s| s.new_bytes),
                Err(e) => {
                    warn!(site, job = %job_id, snapshot = %s, error = %e, "load snapshot for the job's new bytes");
                    0
                }
            };
        }
        if let Err(e) = cat.put_job(&job).await.and(cat.flush().await) {
            warn!(site, job = %job_id, error = %e, "record job result; the agent will re-send it");
            return;
        }
        info!(site, job = %job_id, target = %job.target, ok = r.ok, error = %r.error, "job finished");
        self.state.hub.publish(pb::JobUpdate {
            job_id: job_id.clone(),
            update: Some(Update::Outcome(outcome(r, job.new_bytes))),
        });
        let ack = pb::ControllerMessage {
            msg: Some(pb::controller_message::Msg::AckJob(job_id)),
        };
        if let Err(e) = self.state.hub.send(site, agent, ack).await {
            warn!(site, error = %e, "acknowledge job result");
        }
    }
}

/// The operator-facing outcome of an agent's job result.
fn outcome(r: pb::JobResult, new_bytes: u64) -> pb::JobOutcome {
    let tables = r
        .tables
        .into_iter()
        .map(|t| pb::TableResult {
            table: t.table,
            expected_rows: t.expected_rows,
            actual_rows: t.actual_rows,
            ok: t.ok,
        })
        .collect();
    pb::JobOutcome {
        ok: r.ok,
        error: r.error,
        snapshot_id: r.snapshot_id,
        logical_bytes: r.logical_bytes,
        duration_ms: r.duration_ms,
        tables,
        stream_hash_ok: r.stream_hash_ok,
        new_bytes,
    }
}
