//! RPO compliance: the state of every target, now and over time.
//!
//! [`evaluate`] decides a target's state from the age of its newest good snapshot, its
//! RPO, whether its agent is online and when the next run can finish. The scheduler
//! records every change as an [`RpoEvent`]; [`compliance`] turns those into the share of
//! a window spent in compliance and the list of violations. Compliance means the newest
//! good snapshot is younger than the RPO: OK, AT RISK and AGENT OFFLINE comply; VIOLATED
//! and NEVER BACKED UP do not.

use serde::{Deserialize, Serialize};

/// A target's RPO state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RpoState {
    Ok,
    AtRisk,
    Violated,
    AgentOffline,
    NeverBackedUp,
}

impl RpoState {
    pub fn label(self) -> &'static str {
        match self {
            RpoState::Ok => "OK",
            RpoState::AtRisk => "AT RISK",
            RpoState::Violated => "VIOLATED",
            RpoState::AgentOffline => "AGENT OFFLINE",
            RpoState::NeverBackedUp => "NEVER BACKED UP",
        }
    }

    pub fn complies(self) -> bool {
        !matches!(self, RpoState::Violated | RpoState::NeverBackedUp)
    }
}

/// A recorded change of state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RpoEvent {
    pub v: u32,
    pub site: String,
    pub target: String,
    pub at_unix_ms: u64,
    pub state: RpoState,
    pub reason: String,
}

/// What [`evaluate`] looks at.
#[derive(Debug, Clone, Default)]
pub struct RpoInput {
    pub now_ms: u64,
    pub newest_good_ms: Option<u64>,
    pub rpo_ms: u64,
    pub agent_online: bool,
    /// Next scheduled run, and how long the last backup took.
    pub next_run_ms: Option<u64>,
    pub expected_duration_ms: u64,
}

/// Age past which a compliant target is AT RISK, as a fraction of its RPO.
pub const WARN_FRACTION: f64 = 0.8;

/// The state and a one-line reason.
pub fn evaluate(i: &RpoInput) -> (RpoState, String) {
    let Some(newest) = i.newest_good_ms else {
        return (RpoState::NeverBackedUp, "no snapshot yet".into());
    };
    let age = i.now_ms.saturating_sub(newest);
    let fmt = |ms: u64| crate::policy::human_secs(ms / 1000);
    if age > i.rpo_ms {
        return (
            RpoState::Violated,
            format!("newest snapshot is {} old, RPO {}", fmt(age), fmt(i.rpo_ms)),
        );
    }
    if !i.agent_online {
        return (
            RpoState::AgentOffline,
            format!("agent offline; newest snapshot {} old", fmt(age)),
        );
    }
    if let Some(next) = i.next_run_ms {
        let done = next.saturating_add(i.expected_duration_ms);
        if done > newest.saturating_add(i.rpo_ms) {
            return (
                RpoState::AtRisk,
                "the next scheduled run cannot finish inside the RPO".into(),
            );
        }
    }
    if age as f64 > i.rpo_ms as f64 * WARN_FRACTION {
        return (
            RpoState::AtRisk,
            format!(
                "newest snapshot is {} old, past {:.0} % of the RPO",
                fmt(age),
                WARN_FRACTION * 100.0
            ),
        );
    }
    (RpoState::Ok, format!("newest snapshot {} old", fmt(age)))
}

/// A period spent VIOLATED (or never backed up), `to` = None while ongoing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub from_ms: u64,
    pub to_ms: Option<u64>,
}

/// Share of `[from_ms, now_ms)` in compliance, and the violations in it, from a target's
/// events sorted by time. Time before the first event is not counted.
pub fn compliance(events: &[RpoEvent], from_ms: u64, now_ms: u64) -> (f64, Vec<Violation>) {
    let (mut ok_ms, mut total_ms) = (0u64, 0u64);
    let mut violations: Vec<Violation> = vec![];
    for (i, e) in events.iter().enumerate() {
        let start = e.at_unix_ms.max(from_ms);
        let end = events
            .get(i + 1)
            .map_or(now_ms, |n| n.at_unix_ms)
            .min(now_ms);
        if end <= start {
            continue;
        }
        total_ms += end - start;
        if e.state.complies() {
            ok_ms += end - start;
        } else {
            violations.push(Violation {
                from_ms: start,
                // Ongoing only if no later event closed it.
                to_ms: (i + 1 < events.len()).then_some(end),
            });
        }
    }
    let pct = if total_ms == 0 {
        100.0
    } else {
        ok_ms as f64 * 100.0 / total_ms as f64
    };
    (pct, violations)
}

#[cfg(test)]
mod tests;
