//! What drills say about a target: which snapshots are suspect (their last drill failed)
//! and the last drill's measured RTO. Derived from the job history, so it survives
//! restarts without a record of its own.

use std::collections::{HashMap, HashSet};

use crate::catalog::{JobRecord, JobState};

/// Drill facts of one target.
#[derive(Debug, Clone, Default)]
pub struct DrillFacts {
    /// Snapshots whose most recent drill failed.
    pub suspect: HashSet<String>,
    /// Snapshots whose most recent drill passed.
    pub verified: HashSet<String>,
    /// The newest finished drill: (ended at, succeeded, measured duration ms, error).
    pub last: Option<(u64, bool, u64, String)>,
    /// Start of the newest drill, running or not.
    pub last_started_ms: Option<u64>,
}

/// Whether a job is a drill of `site`/`target`.
fn is_drill(j: &JobRecord, site: &str, target: &str) -> bool {
    j.site == site
        && j.target == target
        && j.kind == crate::catalog::JobKind::Restore
        && j.trigger == crate::catalog::Trigger::Drill
}

/// Errors of jobs that ended before they could verify anything.
fn never_judged(error: &str) -> bool {
    ["interrupted:", "stalled:", "cancelled by an operator"]
        .iter()
        .any(|p| error.starts_with(p))
}

pub fn facts(jobs: &[JobRecord], site: &str, target: &str) -> DrillFacts {
    let mut drills: Vec<&JobRecord> = jobs.iter().filter(|j| is_drill(j, site, target)).collect();
    drills.sort_by_key(|j| j.started_unix_ms);
    let mut latest_by_snapshot: HashMap<&str, bool> = HashMap::new();
    let mut f = DrillFacts {
        last_started_ms: drills.last().map(|j| j.started_unix_ms),
        ..Default::default()
    };
    for j in &drills {
        let ok = match j.state {
            JobState::Running => continue,
            JobState::Succeeded => true,
            JobState::Failed => false,
        };
        // A drill that never got to judge the data (the agent restarted or its
        // controller replica died under it, it stalled, an operator cancelled it) says
        // nothing about the snapshot: it is not marked suspect for it.
        let judged = ok || !j.error.as_deref().is_some_and(never_judged);
        if let (Some(s), true) = (&j.snapshot_id, judged) {
            latest_by_snapshot.insert(s, ok);
        }
        let ended = j.ended_unix_ms.unwrap_or(j.started_unix_ms);
        f.last = Some((
            ended,
            ok,
            ended.saturating_sub(j.started_unix_ms),
            j.error.clone().unwrap_or_default(),
        ));
    }
    for (s, ok) in latest_by_snapshot {
        if ok {
            f.verified.insert(s.to_string());
        } else {
            f.suspect.insert(s.to_string());
        }
    }
    f
}
