//! Records that protect data from the controller's own automation: the audit trail of
//! operator actions that weaken protection (a shorter retention lock, a released hold),
//! and anomaly holds that freeze a target's rotation until an operator looks.

use serde::{Deserialize, Serialize};

/// One audited operator action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub v: u32,
    pub unix_ms: u64,
    pub site: String,
    /// Empty for site-wide actions.
    pub target: String,
    /// What was done, e.g. `retention lock shortened`.
    pub action: String,
    /// The details, e.g. `7d -> 1d`.
    pub detail: String,
    /// Who: the named admin credential and the address it came from, an agent, or
    /// the scheduler.
    pub actor: String,
    /// `ok`, or why the call was refused.
    #[serde(default)]
    pub outcome: String,
}

/// A target whose new snapshots looked wrong: rotation deletes nothing of it until an
/// operator releases the hold. `suspicious` snapshots do not count as good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldRecord {
    pub v: u32,
    pub site: String,
    pub target: String,
    pub since_unix_ms: u64,
    /// Why, in the words of the first anomaly.
    pub reason: String,
    /// Snapshots flagged while the hold stands (bounded).
    pub suspicious: Vec<String>,
}

/// Most snapshot ids one hold remembers.
pub const MAX_SUSPICIOUS: usize = 1000;
