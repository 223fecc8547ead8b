//! The scheduler's decision for one target, as a pure function of its durable record, the
//! clock and what is live. Everything time-related is tested against a controllable
//! clock through this function.

use crate::catalog::ScheduleRecord;
use crate::policy::Schedule;

/// Scheduler tunables.
#[derive(Debug, Clone)]
pub struct SchedConfig {
    /// A running job with no progress for this long is failed as stalled.
    pub stall_limit_ms: u64,
    /// Retries of a failed scheduled job before waiting for the next slot.
    pub max_retries: u32,
    /// First retry delay; doubles with each failure.
    pub retry_base_ms: u64,
}

impl Default for SchedConfig {
    fn default() -> Self {
        SchedConfig {
            stall_limit_ms: 30 * 60_000,
            max_retries: 3,
            retry_base_ms: 60_000,
        }
    }
}

/// What is live about a target at this tick.
#[derive(Debug, Clone, Default)]
pub struct Live {
    pub now_ms: u64,
    pub agent_online: bool,
    /// The site's backup window is closed: nothing new starts.
    pub outside_window: bool,
    /// The target's running backup: job id and milliseconds since its last progress.
    pub running: Option<(String, u64)>,
    /// Outcome of `last_job` if it has ended: true = succeeded.
    pub last_outcome: Option<bool>,
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start a backup; `trigger` is `Schedule` or `Retry`.
    Start { trigger: crate::catalog::Trigger },
    /// Fail a running job that made no progress for `idle_ms`.
    Stalled { job_id: String, idle_ms: u64 },
}

/// Advance `rec` to `live.now_ms` and say what to do. Missed slots coalesce into one
/// pending run; a failed scheduled job is retried with exponential backoff up to
/// `max_retries`; nothing starts while a backup of the target runs, its agent is away or
/// the site's backup window is closed (a due run waits for the window to open).
pub fn decide(
    mut rec: ScheduleRecord,
    schedule: &Schedule,
    live: &Live,
    cfg: &SchedConfig,
) -> (ScheduleRecord, Vec<Action>) {
    let now = live.now_ms;
    let mut actions = vec![];
    if rec.next_due_unix_ms == 0 || rec.schedule != schedule.key {
        // First sight, or the policy's schedule changed: the next slot of the new one
        // (a slot already pending stays pending).
        rec.next_due_unix_ms = schedule.next_after(now).unwrap_or(u64::MAX);
        rec.schedule = schedule.key.clone();
    }
    if now >= rec.next_due_unix_ms {
        rec.pending_since_unix_ms
            .get_or_insert(rec.next_due_unix_ms);
        rec.next_due_unix_ms = schedule.next_after(now).unwrap_or(u64::MAX);
        // A new slot is a fresh start.
        rec.failures = 0;
        rec.retry_at_unix_ms = None;
    }
    if rec.last_job.is_some()
        && !rec.last_job_handled
        && let Some(ok) = live.last_outcome
    {
        rec.last_job_handled = true;
        if ok {
            rec.failures = 0;
            rec.retry_at_unix_ms = None;
        } else {
            rec.failures += 1;
            let backoff = cfg
                .retry_base_ms
                .saturating_mul(1 << (rec.failures - 1).min(20));
            rec.retry_at_unix_ms = (rec.failures <= cfg.max_retries).then_some(now + backoff);
        }
    }
    if let Some((job_id, idle_ms)) = &live.running {
        if *idle_ms > cfg.stall_limit_ms {
            actions.push(Action::Stalled {
                job_id: job_id.clone(),
                idle_ms: *idle_ms,
            });
        }
        return (rec, actions);
    }
    if !live.agent_online || live.outside_window {
        return (rec, actions);
    }
    let retry_due = rec.retry_at_unix_ms.is_some_and(|t| t <= now);
    if rec.pending_since_unix_ms.is_some() || retry_due {
        let trigger = if rec.pending_since_unix_ms.is_some() {
            crate::catalog::Trigger::Schedule
        } else {
            crate::catalog::Trigger::Retry
        };
        rec.pending_since_unix_ms = None;
        rec.retry_at_unix_ms = None;
        actions.push(Action::Start { trigger });
    }
    (rec, actions)
}

#[cfg(test)]
mod tests;
