//! What a job is and what started it: domain types the catalog stores (as
//! `"backup"`, `"schedule"`, ...) and the events and operator API carry.

use serde::{Deserialize, Serialize};

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    Backup,
    Restore,
    /// Deep verification of a snapshot through the agent (restores nothing).
    Verify,
    /// `ls` or `diff` of a file set snapshot through the agent (restores nothing).
    Inspect,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Backup => "backup",
            JobKind::Restore => "restore",
            JobKind::Verify => "verify",
            JobKind::Inspect => "inspect",
        }
    }
}

/// What started a job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// An operator (`nex-backup backup|restore`).
    #[default]
    #[serde(alias = "")]
    Manual,
    /// A scheduled slot.
    Schedule,
    /// A retry of a failed scheduled backup.
    Retry,
    /// A restore drill (scheduled or `nex-backup drill`).
    Drill,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Manual => "manual",
            Trigger::Schedule => "schedule",
            Trigger::Retry => "retry",
            Trigger::Drill => "drill",
        }
    }
}
