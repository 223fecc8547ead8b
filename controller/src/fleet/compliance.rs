//! The current RPO state of every target, from the catalog and what is live; recorded by
//! the scheduler on every change and reported by `nex-backup rpo`.

use std::collections::{BTreeSet, HashMap};

use super::view::View;
use crate::catalog::{CatalogError, JobRecord, SnapshotRecord};
use crate::fleet::standing::Judged;
use crate::rpo::{RpoInput, RpoState, evaluate};
use crate::state::State;

/// One target's state now.
#[derive(Debug, Clone)]
pub struct TargetStatus {
    /// The newest drill's measured duration (ms) and whether it passed.
    pub last_drill: Option<(u64, bool)>,
    pub site: String,
    pub target: String,
    pub state: RpoState,
    pub reason: String,
    pub newest_good_ms: Option<u64>,
    pub rpo_ms: u64,
    pub rto_ms: u64,
}

impl TargetStatus {
    /// This target's share of `[from, now)` in compliance and its violations, from the
    /// recorded events (all sites' events may be given) plus the present state (the RPO
    /// watch records a change within a second; a report shows the present).
    pub fn compliance(
        &self,
        events: &[crate::rpo::RpoEvent],
        from: u64,
        now: u64,
    ) -> (f64, Vec<crate::rpo::Violation>) {
        let mut mine: Vec<_> = events
            .iter()
            .filter(|e| e.site == self.site && e.target == self.target)
            .cloned()
            .collect();
        if mine.last().map(|e| e.state) != Some(self.state) {
            mine.push(self.event(now));
        }
        crate::rpo::compliance(&mine, from, now)
    }

    /// This state as a recorded event at `now`.
    pub fn event(&self, now: u64) -> crate::rpo::RpoEvent {
        crate::rpo::RpoEvent {
            v: 1,
            site: self.site.clone(),
            target: self.target.clone(),
            at_unix_ms: now,
            state: self.state,
            reason: self.reason.clone(),
        }
    }
}

/// Every target an agent reports, that has snapshots, or that has a policy.
pub async fn current(state: &State, now: u64) -> Result<Vec<TargetStatus>, CatalogError> {
    Ok(evaluate_all(state, &View::load(state).await?, now))
}

/// Why a snapshot does not count as good, in an operator's words.
fn not_good_reason(st: crate::fleet::standing::Standing) -> &'static str {
    if st.damaged {
        "damaged: store verification found an object it needs missing or damaged"
    } else if st.suspect {
        "suspect: its restore drill failed"
    } else if st.suspicious {
        "suspicious: flagged by an anomaly hold"
    } else {
        "not from a backup job that succeeded"
    }
}

/// [`current`] from a view already loaded.
pub fn evaluate_all(state: &State, view: &View, now: u64) -> Vec<TargetStatus> {
    let (snaps, jobs) = (&view.snapshots, &view.jobs);
    let mut targets: BTreeSet<(String, String)> = snaps
        .iter()
        .map(|s| (s.site.clone(), s.target.clone()))
        .collect();
    for a in &view.agents {
        targets.extend(a.targets.iter().map(|(t, _)| (a.site.clone(), t.clone())));
    }
    targets.extend(view.policy_keys().cloned());
    // Each target's own snapshots and jobs, in their order, so that judging a target
    // reads its records only (not the whole fleet's once per target).
    let mut groups: HashMap<(String, String), (Vec<SnapshotRecord>, Vec<JobRecord>)> =
        HashMap::new();
    for s in snaps {
        let k = (s.site.clone(), s.target.clone());
        groups.entry(k).or_default().0.push(s.clone());
    }
    for j in jobs {
        let k = (j.site.clone(), j.target.clone());
        groups.entry(k).or_default().1.push(j.clone());
    }
    let mut out = vec![];
    for (site, target) in targets {
        let (snaps, jobs) = groups
            .get(&(site.clone(), target.clone()))
            .map_or((&[][..], &[][..]), |(s, j)| (s.as_slice(), j.as_slice()));
        let policy = view.policy(&site, &target);
        let window = view.site_policy(&site).window();
        let drills = super::drills::facts(jobs, &site, &target);
        // Only good snapshots count: from a dispatched job that succeeded, not suspect
        // (failed drill), not suspicious (anomaly hold).
        let key = (site.clone(), target.clone());
        let judged = Judged::new(
            snaps,
            jobs,
            view.holds.get(&key),
            &view.damaged,
            &site,
            &target,
        );
        let newest = judged.newest_good().map(|s| s.created_unix_ms);
        // The next run starts at its slot, or when the site's window next opens after it.
        let next_run = view
            .schedules
            .get(&(site.clone(), target.clone()))
            .map(|r| {
                let due = if r.pending_since_unix_ms.is_some() {
                    now
                } else {
                    r.next_due_unix_ms
                };
                window.map_or(due, |w| w.next_open(due))
            });
        let expected = crate::fleet::standing::succeeded_backups(jobs, &site, &target)
            .max_by_key(|j| j.started_unix_ms)
            .and_then(|j| j.ended_unix_ms.map(|e| e.saturating_sub(j.started_unix_ms)))
            .unwrap_or(0);
        let input = RpoInput {
            now_ms: now,
            newest_good_ms: newest,
            rpo_ms: policy.rpo_secs * 1000,
            agent_online: state.hub.agent_id_for(&site, &target).is_some(),
            next_run_ms: next_run,
            expected_duration_ms: expected,
        };
        let (mut st, mut reason) = evaluate(&input);
        if newest.is_none()
            && let Some(last) = judged.snaps.last()
        {
            // Snapshots exist, none good: say so, so that rpo and status agree.
            st = RpoState::Violated;
            reason = format!(
                "no good snapshot: {} snapshot(s), the newest ({}) is {}",
                judged.snaps.len(),
                last.snapshot_id,
                not_good_reason(judged.standing_of(last))
            );
        }
        if let Some(h) = view.holds.get(&key) {
            if st == RpoState::Ok {
                st = RpoState::AtRisk;
            }
            reason = format!("ANOMALY HOLD: {}; {reason}", h.reason);
        }
        if st == RpoState::Ok
            && let Some((_, ok, took, err)) = &drills.last
        {
            let rto = policy.rto_secs * 1000;
            if !ok {
                st = RpoState::AtRisk;
                reason = format!("the last restore drill failed: {err}");
            } else if *took > rto {
                st = RpoState::AtRisk;
                reason = format!(
                    "the last restore drill took {}, over the RTO of {}",
                    crate::policy::human_secs(took / 1000),
                    crate::policy::human_secs(policy.rto_secs)
                );
            }
        }
        out.push(TargetStatus {
            last_drill: drills.last.as_ref().map(|(_, ok, took, _)| (*took, *ok)),
            site,
            target,
            state: st,
            reason,
            newest_good_ms: newest,
            rpo_ms: input.rpo_ms,
            rto_ms: policy.rto_secs * 1000,
        });
    }
    out
}
