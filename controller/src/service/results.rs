//! Job events arriving on agent sessions, for jobs the controller sent to that agent
//! only: progress is relayed to watchers, results are recorded durably (texts capped and
//! escaped), relayed, and acknowledged so the agent can forget them. A backup succeeds
//! only by committing its snapshot (see `commit.rs`); its result adds the details.

use nex_backup_shared::pb::{self, job_event::Event, job_update::Update};
use tracing::{debug, info, warn};

use nex_backup_shared::text::{MAX_ERROR_LEN, MAX_LABEL_LEN, clean};

use super::agent::AgentApi;
use super::now_ms;
use crate::catalog::{JobRecord, JobState};

/// Most table checks one result may carry.
const MAX_TABLES: usize = 100_000;
/// Most output lines (`ls`, `diff`) a job result carries, and their total size.
const MAX_LINES: usize = 100_000;
const MAX_LINES_BYTES: usize = 12 << 20;

impl AgentApi {
    pub(super) async fn on_job_event(&self, site: &str, agent: &str, ev: pb::JobEvent) {
        let job_id = ev.job_id;
        // Only jobs the controller sent to this agent: anything else is dropped, so a
        // made-up job id can neither create a record nor grow the controller's memory.
        let is_result = matches!(ev.event, Some(Event::Result(_)));
        let job = match self.own_job(site, agent, &job_id, is_result).await {
            Some(j) => j,
            None => return,
        };
        match ev.event {
            Some(Event::Progress(p)) if job.state == JobState::Running => {
                self.state.hub.publish(pb::JobUpdate {
                    job_id,
                    update: Some(Update::Progress(pb::JobProgressInfo {
                        phase: clean(&p.phase, MAX_LABEL_LEN),
                        bytes_done: p.bytes_done,
                        chunks_done: p.chunks_done,
                        detail: clean(&p.detail, MAX_LABEL_LEN * 4),
                    })),
                })
            }
            Some(Event::Progress(_)) => {}
            Some(Event::Result(r)) => self.on_result(site, agent, job, r).await,
            None => warn!(site, job = %job_id, "empty job event"),
        }
    }

    /// The job `job_id` if it was dispatched to `agent` of `site`; drops others, with a
    /// warning for a result (progress floods stay out of the log: debug only).
    async fn own_job(
        &self,
        site: &str,
        agent: &str,
        job_id: &str,
        is_result: bool,
    ) -> Option<JobRecord> {
        if nex_backup_shared::ids::JobId::try_from(job_id).is_err() {
            if is_result {
                // A malformed id names no job the controller sent: same refusal.
                warn!(site, agent, job = ?nex_backup_shared::text::clean(job_id, 64),
                    "event for a job not sent to this agent dropped");
            }
            return None;
        }
        match self.state.catalog.job(job_id).await {
            Ok(Some(j)) if j.site == site && (j.agent_id == agent || j.agent_id.is_empty()) => {
                Some(j)
            }
            Ok(_) if is_result => {
                warn!(site, agent, job = ?job_id, "event for a job not sent to this agent dropped");
                None
            }
            Ok(_) => {
                debug!(site, agent, job = ?job_id, "progress for a job not sent to this agent dropped");
                None
            }
            Err(e) => {
                warn!(site, job = ?job_id, error = %e, "load job; the agent will re-send a result");
                None
            }
        }
    }

    async fn on_result(&self, site: &str, agent: &str, mut job: JobRecord, mut r: pb::JobResult) {
        let cat = &self.state.catalog;
        let job_id = job.job_id.clone();
        let as_read = job.clone();
        r.error = clean(&r.error, MAX_ERROR_LEN);
        r.note = clean(&r.note, MAX_LABEL_LEN * 4);
        r.tables.truncate(MAX_TABLES);
        // `ls` and `diff` output: bounded in count and in total size, each line escaped.
        r.lines.truncate(MAX_LINES);
        let mut budget = MAX_LINES_BYTES;
        r.lines = std::mem::take(&mut r.lines)
            .into_iter()
            .map(|l| clean(&l, MAX_LABEL_LEN * 8))
            .take_while(|l| {
                budget = budget.saturating_sub(l.len() + 1);
                budget > 0
            })
            .collect();
        for t in &mut r.tables {
            t.table = clean(&t.table, MAX_LABEL_LEN * 2);
        }
        // A backup's snapshot is the one its commit settled; an agent cannot name another.
        let committed =
            job.kind == crate::catalog::JobKind::Backup && job.state == JobState::Succeeded;
        let was_running = job.state == JobState::Running;
        if committed {
            if !r.ok {
                warn!(site, job = %job_id, error = %r.error, "failure reported for a backup whose snapshot was committed; the snapshot stands");
            }
            r.ok = true;
        } else if job.state == JobState::Running
            || job.error.as_deref().is_some_and(is_interruption)
        {
            job.state = if r.ok && job.kind != crate::catalog::JobKind::Backup {
                JobState::Succeeded
            } else {
                JobState::Failed
            };
            if r.ok && job.kind == crate::catalog::JobKind::Backup {
                // A backup succeeds only by its commit.
                r.ok = false;
                r.error = "the agent reported success but committed no snapshot".into();
            }
            job.ended_unix_ms = Some(now_ms());
            job.error = (!r.error.is_empty()).then(|| r.error.clone());
        }
        if committed {
            // The agent's own note (a partial file set) first, then what the controller adds.
            let ours = self.backup_note(&job).await;
            if !r.note.is_empty() {
                warn!(site, job = %job_id, note = %r.note, "backup note from the agent");
            }
            // A partial file set stays visible in the job list and status.
            if let Some(p) = r.note.split("; ").find(|n| n.starts_with("partial:")) {
                job.error = Some(p.to_string());
            }
            r.note = [std::mem::take(&mut r.note), ours]
                .into_iter()
                .filter(|n| !n.is_empty())
                .collect::<Vec<_>>()
                .join("; ");
        }
        // The snapshot of a job is the one the controller dispatched, whatever the agent says.
        r.snapshot_id = job.snapshot_id.clone().unwrap_or_default();
        job.logical_bytes = r.logical_bytes;
        match cat.update_job(&as_read, &job).await {
            Ok(true) => {}
            Ok(false) => {
                // A stall check or a cancel wrote first: the re-sent result is judged
                // against what it wrote.
                warn!(site, job = %job_id, "job changed while its result was recorded; the agent will re-send it");
                return;
            }
            Err(e) => {
                warn!(site, job = %job_id, error = %e, "record job result; the agent will re-send it");
                return;
            }
        }
        info!(site, job = %job_id, target = %job.target, ok = r.ok, error = %r.error, "job finished");
        if was_running && job.kind == crate::catalog::JobKind::Verify {
            self.deep_verified(&job, &r).await;
        }
        if was_running {
            self.state.job_finished(&job);
            if job.trigger == crate::catalog::Trigger::Drill {
                self.state
                    .events
                    .publish(crate::events::Event::DrillFinished {
                        site: job.site.clone(),
                        target: job.target.clone(),
                        ok: r.ok,
                        rto_ms: job
                            .ended_unix_ms
                            .unwrap_or_default()
                            .saturating_sub(job.started_unix_ms),
                    });
            }
        }
        let done = pb::JobUpdate {
            job_id: job_id.clone(),
            update: Some(Update::Outcome(outcome(r, job.new_bytes))),
        };
        // A CLI waiting through another replica reads it from the shared catalog.
        self.state.hub.share_outcome(&done).await;
        self.state.hub.publish(done);
        let ack = pb::ControllerMessage {
            msg: Some(pb::controller_message::Msg::AckJob(job_id)),
        };
        if let Err(e) = self.state.hub.send(site, agent, ack).await {
            warn!(site, error = %e, "acknowledge job result");
        }
    }
}

impl AgentApi {
    /// A deep verification's verdict on its snapshot (the one the controller dispatched):
    /// damaged data marks it damaged; a later passing one clears that mark. A job that
    /// could not run (network, a key the agent lacks) changes nothing.
    async fn deep_verified(&self, job: &JobRecord, r: &pb::JobResult) {
        use crate::catalog::integrity::{BadObject, DamageRecord, DamageSource};
        let Some(snap) = job.snapshot_id.clone() else {
            return;
        };
        let ints = &self.state.integrity;
        let existing = match ints.damages(Some(&job.site)).await {
            Ok(ds) => ds.into_iter().find(|d| d.snapshot_id == snap),
            Err(e) => {
                warn!(site = %job.site, error = %e, "read damage records");
                return;
            }
        };
        let result = if r.ok {
            // A mark the store verification made stays until it finds the objects whole.
            match existing {
                Some(d) if d.source == DamageSource::Deep => {
                    ints.clear_damage(&job.site, &snap).await.map(|_| ())
                }
                _ => Ok(()),
            }
        } else if r.data_damaged && existing.is_none() {
            warn!(site = %job.site, target = %job.target, snapshot = %snap, error = %r.error,
                "deep verification found the snapshot damaged");
            ints.put_damage(&DamageRecord {
                v: 1,
                site: job.site.clone(),
                target: job.target.clone(),
                snapshot_id: snap,
                found_unix_ms: now_ms(),
                source: DamageSource::Deep,
                objects: vec![BadObject {
                    key: format!("snapshot {}", job.snapshot_id.as_deref().unwrap_or("")),
                    problem: r.error.clone(),
                    chunk: None,
                }],
            })
            .await
        } else {
            Ok(())
        };
        if let Err(e) = result.and(self.state.catalog.flush().await) {
            warn!(site = %job.site, job = %job.job_id, error = %e, "record the deep verification's verdict");
        }
    }

    /// What a finished backup means for its target, for the operator: an anomaly hold it
    /// raised, and what retention deletes now that it exists (nothing young, by the lock).
    async fn backup_note(&self, job: &JobRecord) -> String {
        let mut notes = vec![];
        let hold = self.state.catalog.holds().await.ok().and_then(|hs| {
            hs.into_iter()
                .find(|h| h.site == job.site && h.target == job.target)
        });
        if let Some(h) = hold
            && job
                .snapshot_id
                .as_ref()
                .is_some_and(|s| h.suspicious.contains(s))
        {
            notes.push(format!(
                "ANOMALY HOLD on {}/{}: {}; this snapshot is suspicious and rotation deletes nothing of the target until an operator releases the hold (nex-backup hold release)",
                job.site, job.target, h.reason
            ));
        }
        let scope = crate::prune::PruneScope {
            site: Some(job.site.clone()),
            target: Some(job.target.clone()),
            dry_run: true,
            plan_only: true,
        };
        match crate::prune::prune(&self.state, &scope, now_ms()).await {
            Ok(r) => {
                let doomed: Vec<String> = r.targets.into_iter().flat_map(|t| t.delete).collect();
                notes.push(if doomed.is_empty() {
                    "retention: this backup makes no snapshot due for deletion".into()
                } else {
                    format!(
                        "retention: this backup makes {} older snapshot(s) due for deletion at the next rotation: {}",
                        doomed.len(),
                        doomed.join(", ")
                    )
                });
            }
            Err(e) => {
                warn!(site = %job.site, job = %job.job_id, error = %e, "plan retention for the backup's note")
            }
        }
        notes.join("\n")
    }
}

/// A failure the controller recorded itself while the agent may still have been working
/// (a restart it did not know of): the agent's own result replaces it.
fn is_interruption(e: &str) -> bool {
    e.starts_with("interrupted:")
}

/// The operator-facing outcome of an agent's job result.
pub(super) fn outcome(r: pb::JobResult, new_bytes: u64) -> pb::JobOutcome {
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
        note: r.note,
        lines: r.lines,
    }
}
