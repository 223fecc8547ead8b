//! Listing and forgetting history: job filters and pages, and the rule by which old
//! job records and RPO events are removed.
//!
//! History retention never weakens what the controller knows about a snapshot it
//! still holds: a snapshot's standing comes from its backup job and its drills, so a
//! job whose snapshot still exists is kept however old it is. So is the newest job of
//! each target (what `status` shows as its last backup), and the last RPO event of each
//! target before the horizon (the state the kept history starts from).

use std::collections::HashSet;

use super::{JobRecord, JobState};
use crate::rpo::RpoEvent;

/// Which jobs a listing wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    pub site: Option<String>,
    pub target: Option<String>,
    pub failed_only: bool,
}

impl JobFilter {
    pub fn matches(&self, j: &JobRecord) -> bool {
        self.site.as_ref().is_none_or(|s| *s == j.site)
            && self.target.as_ref().is_none_or(|t| *t == j.target)
            && (!self.failed_only || j.state == JobState::Failed)
    }
}

/// A position in a listing: the (time, id) sort key of the last item seen.
pub type Cursor = (u64, String);

/// What one history retention pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Forgotten {
    pub jobs: u64,
    pub rpo_events: u64,
}

/// The ids of the jobs retention removes from `jobs`: finished, started before
/// `before_ms`, not a job of a snapshot for which `snapshot_exists`, and not the newest
/// job of its (site, target).
pub fn forgettable_jobs(
    jobs: &[JobRecord],
    snapshot_exists: impl Fn(&str, &str) -> bool,
    before_ms: u64,
) -> Vec<&str> {
    let mut newest: std::collections::HashMap<(&str, &str), (u64, &str)> = Default::default();
    for j in jobs {
        let k = (j.site.as_str(), j.target.as_str());
        let v = (j.started_unix_ms, j.job_id.as_str());
        let e = newest.entry(k).or_insert(v);
        if v > *e {
            *e = v;
        }
    }
    let newest: HashSet<&str> = newest.values().map(|(_, id)| *id).collect();
    jobs.iter()
        .filter(|j| {
            j.state != JobState::Running
                && j.started_unix_ms < before_ms
                && !newest.contains(j.job_id.as_str())
                && !j
                    .snapshot_id
                    .as_deref()
                    .is_some_and(|s| snapshot_exists(&j.site, s))
        })
        .map(|j| j.job_id.as_str())
        .collect()
}

/// The RPO events retention removes from `events` (ordered by site, target, time):
/// those before `before_ms` except the last of each target before it.
pub fn forgettable_events(events: &[RpoEvent], before_ms: u64) -> Vec<&RpoEvent> {
    let mut out = vec![];
    for (i, e) in events.iter().enumerate() {
        let next_also_old = events
            .get(i + 1)
            .is_some_and(|n| n.site == e.site && n.target == e.target && n.at_unix_ms < before_ms);
        if e.at_unix_ms < before_ms && next_also_old {
            out.push(e);
        }
    }
    out
}
