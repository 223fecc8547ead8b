//! The scheduler: once a second it brings every known target's durable
//! [`ScheduleRecord`] up to the clock ([`decide::decide`]) and carries out what that says —
//! start a backup down the agent's session, or fail a stalled job. Rotation runs after
//! each new snapshot of a target (scheduled or manual) and once a day (for everything).
//! Backups and drills start only inside the site's backup window, drills also only in
//! its drill hours (01:00-05:00 site time by default). Its state lives in the
//! catalog, so a restart loses no schedule and, since the job record is written before
//! the command is sent and a running job blocks a new one, runs nothing twice.
//!
//! - [`decide`]: the pure decision function and its tunables.

pub mod decide;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nex_backup_shared::pb::{self, command::Kind};
use tracing::{info, warn};

use crate::catalog::{CatalogError, JobRecord, JobState, ScheduleRecord};
use crate::dispatch::{backup_command, new_job_id, online_agent, start_job, start_job_as};
use crate::fleet::{drills, view};
use crate::policy::Schedule;
use crate::policy::site::SitePolicy;
use crate::prune::{PruneScope, prune};
use crate::state::State;
use crate::workers::WorkerCtx;
use decide::{Action, Live, SchedConfig, decide};
use view::View;

/// How long after a whole second the scheduler ticks.
const TICK_OFFSET_MS: u64 = 20;

/// Where the scheduler reads the time; tests drive a manual one.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        nex_backup_shared::clock::now_ms()
    }
}

/// See module docs.
pub struct Scheduler {
    state: Arc<State>,
    clock: Arc<dyn Clock>,
    cfg: SchedConfig,
    /// job id -> (progress count last seen, clock time it last changed).
    progress: Mutex<HashMap<String, (u64, u64)>>,
    /// Newest snapshot of each target at its last rotation.
    rotated: Mutex<HashMap<(String, String), String>>,
}

impl Scheduler {
    pub fn new(state: Arc<State>, clock: Arc<dyn Clock>, cfg: SchedConfig) -> Self {
        Scheduler {
            state,
            clock,
            cfg,
            progress: Mutex::new(HashMap::new()),
            rotated: Mutex::new(HashMap::new()),
        }
    }

    /// Tick once a second, just after each whole second (when slots fall), until the
    /// worker stops. Aligned ticks see a slot and a reconnected agent's missed slots
    /// together, so they coalesce into one job.
    pub async fn run(self, w: WorkerCtx) {
        loop {
            let wait = 1000 - self.clock.now_ms() % 1000 + TICK_OFFSET_MS;
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
                _ = w.stop.cancelled() => return,
            }
            if !self.state.workers.leadership().is_leader() {
                continue; // another replica schedules
            }
            w.begin();
            let began = std::time::Instant::now();
            let r = tokio::select! {
                r = self.tick() => r.map(|_| ()),
                _ = w.stop.cancelled() => return,
            };
            w.end(r);
            // A fleet whose tick takes long is ticked less often (see `paced`): slots
            // are late by that much, never missed (a tick catches up on missed slots).
            let rest = crate::workers::paced(Duration::from_secs(1), began.elapsed())
                .saturating_sub(Duration::from_secs(1));
            tokio::select! {
                _ = tokio::time::sleep(rest) => {}
                _ = w.stop.cancelled() => return,
            }
        }
    }

    /// Milliseconds since a running job last made progress, on the scheduler's clock.
    fn idle_ms(&self, job_id: &str, now: u64) -> u64 {
        let seen = self.state.hub.progress_count(job_id);
        let mut g = self.progress.lock().unwrap_or_else(|p| p.into_inner());
        let e = g.entry(job_id.to_string()).or_insert((seen, now));
        if e.0 != seen {
            *e = (seen, now);
        }
        now.saturating_sub(e.1)
    }

    /// Apply retention (and collect garbage) after a backup.
    async fn rotate(&self, site: Option<&str>, target: Option<&str>, now: u64) {
        let scope = PruneScope {
            site: site.map(str::to_string),
            target: target.map(str::to_string),
            dry_run: false,
            plan_only: false,
        };
        match prune(&self.state, &scope, now).await {
            Ok(r) if r.deleted_snapshots > 0 || r.deleted_chunks > 0 => {
                info!(site = ?site, target = ?target, snapshots = r.deleted_snapshots,
                    chunks = r.deleted_chunks, freed_bytes = r.freed_bytes, "rotation")
            }
            Ok(_) => {}
            Err(e) => warn!(site = ?site, target = ?target, error = %e, "rotation"),
        }
    }

    /// Bring every target up to the clock. Returns the jobs started.
    pub async fn tick(&self) -> Result<Vec<String>, CatalogError> {
        let now = self.clock.now_ms();
        let mut view = View::load(&self.state).await?;
        let mut targets = std::collections::BTreeSet::new();
        for a in &view.agents {
            for (t, _) in &a.targets {
                targets.insert((a.site.clone(), t.clone()));
            }
        }
        let mut newest: HashMap<(String, String), (u64, String)> = HashMap::new();
        for s in &view.snapshots {
            let e = newest
                .entry((s.site.clone(), s.target.clone()))
                .or_default();
            *e = (*e).clone().max((s.created_unix_ms, s.snapshot_id.clone()));
        }
        let mut started = vec![];
        for key in targets {
            let stored = view.schedules.get(&key).cloned();
            let before = stored.clone().unwrap_or_else(|| ScheduleRecord {
                v: 1,
                site: key.0.clone(),
                target: key.1.clone(),
                ..Default::default()
            });
            let (rec, ids) = self
                .tick_target(before, stored.as_ref(), &view, now)
                .await?;
            started.extend(ids);
            view.schedules.insert(key.clone(), rec);
            self.rotate_if_new(&key, newest.get(&key).map(|n| &n.1), now)
                .await;
        }
        Ok(started)
    }

    /// Rotation after each backup, scheduled or not: when a target's newest snapshot is
    /// not the one it had at its last rotation (every target once after a start).
    async fn rotate_if_new(&self, key: &(String, String), newest: Option<&String>, now: u64) {
        let Some(newest) = newest else { return };
        let seen = self
            .rotated
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned();
        if seen.as_ref() == Some(newest) {
            return;
        }
        self.rotate(Some(&key.0), Some(&key.1), now).await;
        self.rotated
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone(), newest.clone());
    }

    /// One target's tick: advance its schedule record, act on it, maybe start a drill.
    /// Returns the record as it now stands and the jobs started.
    async fn tick_target(
        &self,
        before: ScheduleRecord,
        stored: Option<&ScheduleRecord>,
        view: &View,
        now: u64,
    ) -> Result<(ScheduleRecord, Vec<String>), CatalogError> {
        let (site, target) = (before.site.clone(), before.target.clone());
        let (policy, sp, jobs) = (
            view.policy(&site, &target),
            view.site_policy(&site),
            &view.jobs,
        );
        let outside_window = sp.window().is_some_and(|w| w.open_until(now).is_none());
        let Ok(schedule) = Schedule::parse(&policy.schedule, &policy.timezone) else {
            warn!(%site, %target, "policy schedule no longer parses; not scheduled");
            return Ok((before, vec![]));
        };
        let running = jobs
            .iter()
            .find(|j| {
                j.site == site
                    && j.target == target
                    && j.kind == crate::catalog::JobKind::Backup
                    && j.state == JobState::Running
            })
            .map(|j| (j.job_id.clone(), self.idle_ms(&j.job_id, now)));
        let last_outcome = before.last_job.as_ref().and_then(|id| {
            match jobs.iter().find(|j| &j.job_id == id).map(|j| j.state) {
                Some(JobState::Succeeded) => Some(true),
                Some(JobState::Failed) | None => Some(false),
                Some(JobState::Running) => None,
            }
        });
        let live = Live {
            now_ms: now,
            agent_online: self.state.hub.agent_id_for(&site, &target).is_some(),
            outside_window,
            running,
            last_outcome,
        };
        let (mut rec, actions) = decide(before.clone(), &schedule, &live, &self.cfg);
        let mut started = vec![];
        for a in actions {
            match a {
                Action::Stalled { job_id, idle_ms } => {
                    self.fail_stalled(jobs, &job_id, idle_ms).await?
                }
                Action::Start { trigger } => {
                    match self
                        .start(&site, &target, trigger, sp, stored, &mut rec)
                        .await?
                    {
                        Started::Job(id) => started.push(id),
                        Started::Not => {}
                        // Another scheduler claimed the slot: its record stands.
                        Started::Lost => return Ok((before, started)),
                    }
                }
            }
        }
        if rec != before {
            self.state.catalog.put_schedule(&rec).await?;
        }
        // Drills (a full restore on the customer's server) keep to the window and to
        // the site's drill hours (the small hours unless set otherwise).
        if sp.drills_allowed(now)
            && let Some(id) = self
                .maybe_drill(&site, &target, policy, sp, view, now)
                .await?
        {
            started.push(id);
        }
        Ok((rec, started))
    }

    /// Start a restore drill when the target's cadence says so: never drilled, or the last
    /// drill started a cadence ago; only while the agent that runs it (the site's drill
    /// agent, else the target's) is online and no job of the target runs.
    async fn maybe_drill(
        &self,
        site: &str,
        target: &str,
        policy: &crate::policy::Policy,
        sp: &SitePolicy,
        view: &View,
        now: u64,
    ) -> Result<Option<String>, CatalogError> {
        let jobs = &view.jobs;
        let online = online_agent(&self.state.hub, sp, site, target, true).is_ok();
        if policy.drill_every_secs == 0 || !online {
            return Ok(None);
        }
        let busy = jobs
            .iter()
            .any(|j| j.site == site && j.target == target && j.state == JobState::Running);
        let facts = drills::facts(jobs, site, target);
        let due = facts
            .last_started_ms
            .is_none_or(|t| now.saturating_sub(t) >= policy.drill_every_secs * 1000);
        if busy || !due {
            return Ok(None);
        }
        // The tick's view already holds every snapshot and hold.
        let key = (site.to_string(), target.to_string());
        let judged = crate::fleet::standing::Judged::new(
            &view.snapshots,
            jobs,
            view.holds.get(&key),
            &view.damaged,
            site,
            target,
        );
        let Some(newest) = judged.newest_good() else {
            return Ok(None);
        };
        let db = crate::dispatch::drill_database(nex_backup_shared::clock::now_ms());
        let kind = Kind::Restore(pb::RestoreCommand {
            target: target.into(),
            snapshot_id: newest.snapshot_id.clone(),
            to_database: db,
            clean: false,
            restore_globals: false,
            drill: true,
            ..Default::default()
        });
        match start_job(
            &self.state,
            site,
            target,
            kind,
            crate::catalog::Trigger::Drill,
        )
        .await
        {
            Ok((id, _)) => Ok(Some(id)),
            Err(e) => {
                warn!(%site, %target, error = %e, "drill not delivered");
                Ok(None)
            }
        }
    }

    async fn start(
        &self,
        site: &str,
        target: &str,
        trigger: crate::catalog::Trigger,
        sp: &SitePolicy,
        stored: Option<&ScheduleRecord>,
        rec: &mut ScheduleRecord,
    ) -> Result<Started, CatalogError> {
        let now = self.clock.now_ms();
        let kind = match backup_command(sp, target, now, false) {
            Ok(k) => k,
            Err(e) => {
                info!(%site, %target, reason = %e, "scheduled backup waits for the window");
                rec.pending_since_unix_ms.get_or_insert(now);
                return Ok(Started::Not);
            }
        };
        // The schedule names the job durably before the job exists: a crash between the
        // two can never start a second job for the same slot (a named job that was never
        // recorded counts as failed and is retried).
        let job_id = new_job_id();
        let before = (rec.last_job.clone(), rec.last_job_handled);
        rec.last_job = Some(job_id.clone());
        rec.last_job_handled = false;
        // Claimed only if the record is still as this tick read it: during a failover an
        // old and a new leader may both see the slot due; one job is started for it.
        if !self.state.catalog.claim_schedule(stored, rec).await? {
            warn!(%site, %target, "slot claimed by another scheduler; not started here");
            return Ok(Started::Lost);
        }
        match start_job_as(&self.state, job_id, site, target, kind, trigger).await {
            Ok((job_id, _)) => Ok(Started::Job(job_id)),
            Err(e) => {
                // The agent went away between the check and the send: try again later.
                warn!(%site, %target, error = %e, "scheduled job not delivered; it stays pending");
                (rec.last_job, rec.last_job_handled) = before;
                rec.pending_since_unix_ms.get_or_insert(now);
                Ok(Started::Not)
            }
        }
    }

    async fn fail_stalled(
        &self,
        jobs: &[JobRecord],
        job_id: &str,
        idle_ms: u64,
    ) -> Result<(), CatalogError> {
        let Some(job) = jobs.iter().find(|j| j.job_id == job_id) else {
            return Ok(());
        };
        let as_read = job.clone();
        let mut job = job.clone();
        job.state = JobState::Failed;
        job.ended_unix_ms = Some(nex_backup_shared::clock::now_ms());
        job.error = Some(format!(
            "stalled: no progress for {} (limit {})",
            crate::policy::human_secs(idle_ms / 1000),
            crate::policy::human_secs(self.cfg.stall_limit_ms / 1000)
        ));
        // Only a job still as read: its result or commit may have landed meanwhile.
        if !self.state.catalog.update_job(&as_read, &job).await? {
            return Ok(());
        }
        warn!(site = %job.site, target = %job.target, job = %job_id, idle_ms, "job stalled; failed");
        self.state.job_finished(&job);
        // Stop it on the agent too, so that the next run is never a second backup
        // alongside it; the agent's "cancelled" result then replaces this record.
        let cancel = pb::ControllerMessage {
            msg: Some(pb::controller_message::Msg::CancelJob(pb::CancelJob {
                job_id: job_id.into(),
                reason: job.error.clone().unwrap_or_default(),
            })),
        };
        if let Err(e) = self.state.hub.send(&job.site, &job.agent_id, cancel).await {
            info!(job = %job_id, error = %e, "stalled job not cancelled on its agent; its agent will report it when back");
        }
        Ok(())
    }
}

/// What starting a scheduled job came to.
enum Started {
    Job(String),
    /// Not now (window closed, agent gone); the slot stays pending.
    Not,
    /// Another scheduler claimed the slot first.
    Lost,
}
