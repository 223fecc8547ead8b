//! How far the controller trusts each snapshot, from what it recorded itself (never from
//! what an agent says about a snapshot):
//!
//! - **verified**: its most recent restore drill passed;
//! - **good**: it was committed by a backup job the controller dispatched and that
//!   succeeded, no drill of it failed (suspect), and no anomaly flagged it (suspicious);
//! - **damaged**: store verification found an object it needs missing or damaged;
//! - anything else (a commit no job accounts for, a failed drill, an anomaly, damage) is
//!   not good: retention does not count it, and RPO does not see it as a backup.

use std::collections::{HashMap, HashSet};

use crate::catalog::safety::HoldRecord;
use crate::catalog::{CatalogError, JobRecord, JobState, SnapshotRecord};
use crate::fleet::drills;

/// The standing of one snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Standing {
    pub good: bool,
    pub verified: bool,
    /// Flagged by an anomaly hold.
    pub suspicious: bool,
    /// Its last drill failed.
    pub suspect: bool,
    /// Verification found an object it needs missing or damaged.
    pub damaged: bool,
}

/// Damaged snapshots, by (site, snapshot id).
pub type Damaged = HashSet<(String, String)>;

/// The damaged set from the integrity records.
pub async fn load_damaged(
    ints: &dyn crate::catalog::integrity::IntegrityCatalog,
) -> Result<Damaged, CatalogError> {
    Ok(ints
        .damages(None)
        .await?
        .into_iter()
        .map(|d| (d.site, d.snapshot_id))
        .collect())
}

impl Standing {
    /// One word for operators: damaged, verified, good, suspicious, suspect, or "no job".
    pub fn label(&self) -> &'static str {
        if self.damaged {
            "damaged"
        } else if self.verified {
            "verified"
        } else if self.good {
            "good"
        } else if self.suspicious {
            "suspicious"
        } else if self.suspect {
            "suspect"
        } else {
            "no job"
        }
    }
}

/// Standing of every snapshot of one (site, target) among `snaps`, by snapshot id.
pub fn of_target<'a>(
    snaps: impl IntoIterator<Item = &'a SnapshotRecord>,
    jobs: &[JobRecord],
    hold: Option<&HoldRecord>,
    damaged: &Damaged,
    site: &str,
    target: &str,
) -> HashMap<String, Standing> {
    let facts = drills::facts(jobs, site, target);
    let backed: HashSet<&str> = succeeded_backups(jobs, site, target)
        .filter_map(|j| j.snapshot_id.as_deref())
        .collect();
    let flagged: HashSet<&str> = hold
        .map(|h| h.suspicious.iter().map(String::as_str).collect())
        .unwrap_or_default();
    snaps
        .into_iter()
        .filter(|s| s.site == site && s.target == target)
        .map(|s| {
            let id = s.snapshot_id.as_str();
            let suspect = facts.suspect.contains(id);
            let suspicious = flagged.contains(id);
            let damaged =
                !damaged.is_empty() && damaged.contains(&(site.to_string(), s.snapshot_id.clone()));
            let good = backed.contains(id) && !suspect && !suspicious && !damaged;
            let st = Standing {
                good,
                verified: good && facts.verified.contains(id),
                suspicious,
                suspect,
                damaged,
            };
            (s.snapshot_id.clone(), st)
        })
        .collect()
}

/// The backup jobs of (site, target) that succeeded.
pub fn succeeded_backups<'a>(
    jobs: &'a [JobRecord],
    site: &'a str,
    target: &'a str,
) -> impl Iterator<Item = &'a JobRecord> + 'a {
    jobs.iter().filter(move |j| {
        j.site == site
            && j.target == target
            && j.kind == crate::catalog::JobKind::Backup
            && j.state == JobState::Succeeded
    })
}

/// One target's snapshots (oldest first), each with its standing.
pub struct Judged<'a> {
    pub snaps: Vec<&'a SnapshotRecord>,
    pub standing: HashMap<String, Standing>,
}

impl<'a> Judged<'a> {
    /// The snapshots of (site, target) among `all`, judged.
    pub fn new(
        all: &'a [SnapshotRecord],
        jobs: &[JobRecord],
        hold: Option<&HoldRecord>,
        damaged: &Damaged,
        site: &str,
        target: &str,
    ) -> Self {
        let snaps: Vec<&SnapshotRecord> = all
            .iter()
            .filter(|s| s.site == site && s.target == target)
            .collect();
        let standing = of_target(snaps.iter().copied(), jobs, hold, damaged, site, target);
        Judged { snaps, standing }
    }

    /// As [`Judged::new`], reading the jobs, holds and damage from the catalog.
    pub async fn load(
        state: &crate::state::State,
        all: &'a [SnapshotRecord],
        site: &str,
        target: &str,
    ) -> Result<Self, CatalogError> {
        let jobs = state.catalog.jobs().await?;
        let holds = state.catalog.holds().await?;
        let damaged = load_damaged(&*state.integrity).await?;
        let hold = holds.iter().find(|h| h.site == site && h.target == target);
        Ok(Judged::new(all, &jobs, hold, &damaged, site, target))
    }

    /// The newest good snapshot, if any.
    pub fn newest_good(&self) -> Option<&'a SnapshotRecord> {
        self.snaps
            .iter()
            .rev()
            .find(|s| self.standing_of(s).good)
            .copied()
    }

    pub fn standing_of(&self, s: &SnapshotRecord) -> Standing {
        self.standing
            .get(&s.snapshot_id)
            .copied()
            .unwrap_or_default()
    }
}

/// The standing label of each of `snaps` (any sites and targets), by (site, snapshot id).
pub fn labels(
    snaps: &[SnapshotRecord],
    jobs: &[JobRecord],
    holds: &[HoldRecord],
    damaged: &Damaged,
) -> HashMap<(String, String), &'static str> {
    let mut targets: Vec<(&str, &str)> = snaps
        .iter()
        .map(|s| (s.site.as_str(), s.target.as_str()))
        .collect();
    targets.sort_unstable();
    targets.dedup();
    let mut out = HashMap::new();
    for (site, target) in targets {
        let hold = holds.iter().find(|h| h.site == site && h.target == target);
        for (id, st) in of_target(snaps, jobs, hold, damaged, site, target) {
            out.insert((site.to_string(), id), st.label());
        }
    }
    out
}
