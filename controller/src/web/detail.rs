//! The site, target and incident data of the dashboard (see [`super::data`]): each
//! answers `None` for a site outside the viewer's scope, which the pages and the API
//! turn into the same 404 as a site that does not exist.

use serde::Serialize;

use super::data::{Cell, FleetFilter, JobRow, JobsFilter, Scope, fleet, jobs};
use super::fleetcache::FleetCache;
use crate::catalog::alerts::IncidentRecord;
use crate::state::State;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AgentRow {
    pub agent_id: String,
    pub version: String,
    pub online: bool,
    pub last_seen_unix_ms: u64,
    pub cert_not_after_unix: Option<i64>,
    /// The last reports of its host (10 minutes, on the replica that holds its session).
    pub health: Option<HealthSeries>,
}

/// An agent's host health over its last reports, oldest first (percent).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct HealthSeries {
    pub cpu_pct: Vec<f64>,
    pub mem_pct: Vec<f64>,
    /// The fullest volume that matters (PostgreSQL data, the agent's state dir).
    pub disk_pct: Vec<f64>,
    pub disk_path: String,
    pub os: String,
}

fn pct(used: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        used as f64 * 100.0 / total as f64
    }
}

/// The health series of (site, agent), if it has reported here.
fn health_of(st: &State, site: &str, agent: &str) -> Option<HealthSeries> {
    let h = st.health.history(site, agent);
    let last = h.last()?;
    let tight = last.tightest().map(|v| v.path.clone()).unwrap_or_default();
    Some(HealthSeries {
        cpu_pct: h
            .iter()
            .map(|r| (r.cpu_load_1m * 100.0 / f64::from(r.cpus.max(1))).min(100.0))
            .collect(),
        mem_pct: h
            .iter()
            .map(|r| pct(r.mem_used_bytes, r.mem_total_bytes))
            .collect(),
        disk_pct: h
            .iter()
            .map(|r| {
                r.volumes.iter().find(|v| v.path == tight).map_or(0.0, |v| {
                    pct(v.total_bytes.saturating_sub(v.free_bytes), v.total_bytes)
                })
            })
            .collect(),
        disk_path: tight,
        os: last.os.clone(),
    })
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct IncidentRow {
    pub id: u64,
    pub site: String,
    pub rule: String,
    pub subject: String,
    pub summary: String,
    pub opened_unix_ms: u64,
    pub resolved_unix_ms: Option<u64>,
    pub acked_by: Option<String>,
}

impl From<&IncidentRecord> for IncidentRow {
    fn from(i: &IncidentRecord) -> Self {
        IncidentRow {
            id: i.id,
            site: i.site.clone(),
            rule: i.rule.clone(),
            subject: i.subject.clone(),
            summary: i.summary.clone(),
            opened_unix_ms: i.opened_unix_ms,
            resolved_unix_ms: i.resolved_unix_ms,
            acked_by: i.acked_by.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Site {
    pub site: String,
    pub agents: Vec<AgentRow>,
    /// Its window, bandwidth limit, drill agent and retention lock.
    pub settings: super::site_settings::SiteSettings,
    pub targets: Vec<Cell>,
    pub incidents: Vec<IncidentRow>,
    pub jobs: Vec<JobRow>,
}

/// Whether `site` is known to the controller (an agent, a snapshot or a policy names it).
pub(super) async fn known(st: &State, site: &str) -> anyhow::Result<bool> {
    let cat = &st.catalog;
    Ok(cat.agents().await?.iter().any(|a| a.site == site)
        || !cat
            .snapshots_page(Some(site), None, None, 1)
            .await?
            .is_empty()
        || cat.policies().await?.iter().any(|p| p.site == site))
}

/// One site, if the viewer sees it and it exists.
pub async fn site(
    st: &std::sync::Arc<State>,
    cache: &FleetCache,
    scope: &Scope,
    site: &str,
    now: u64,
) -> anyhow::Result<Option<Site>> {
    if !scope.sees(site) || !known(st, site).await? {
        return Ok(None);
    }
    let idents = st.catalog.identities().await?;
    let agents = st
        .catalog
        .agents()
        .await?
        .into_iter()
        .filter(|a| a.site == site)
        .map(|a| AgentRow {
            health: health_of(st, &a.site, &a.agent_id),
            online: st.hub.online(&a.site, &a.agent_id),
            cert_not_after_unix: idents
                .iter()
                .find(|i| i.site == a.site && i.agent_id == a.agent_id)
                .map(|i| i.not_after_unix),
            agent_id: a.agent_id,
            version: a.version,
            last_seen_unix_ms: a.last_seen_unix_ms,
        })
        .collect();
    let mut targets = fleet(st, cache, scope, &FleetFilter::default(), now)
        .await?
        .cells;
    targets.retain(|c| c.site == site);
    let incidents = incidents(st, scope, Some(site), false).await?;
    let f = JobsFilter {
        site: Some(site.to_string()),
        ..Default::default()
    };
    Ok(Some(Site {
        site: site.to_string(),
        agents,
        settings: super::site_settings::of(st, site, now).await?,
        targets,
        incidents,
        jobs: jobs(st, scope, &f, 20).await?,
    }))
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SnapshotRow {
    pub snapshot_id: String,
    pub created_unix_ms: u64,
    pub logical_bytes: u64,
    pub stored_bytes: u64,
    pub new_bytes: u64,
    pub duration_ms: u64,
    /// good, verified, suspect, suspicious, damaged...
    pub standing: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Target {
    pub site: String,
    pub target: String,
    /// What it is, as its agent declares it: "postgres", "files" or "env" (restored
    /// into a database, or into a directory).
    pub kind: String,
    pub status: Option<Cell>,
    /// Newest first.
    pub snapshots: Vec<SnapshotRow>,
    pub jobs: Vec<JobRow>,
    /// The age (ms) of the newest good snapshot, hourly over 30 days.
    pub age_30d: Vec<(u64, f64)>,
    /// RPO compliance per day over 30 days (percent; none before the first record).
    pub calendar_30d: Vec<(u64, Option<f64>)>,
    /// Restore drills: (started, duration ms, passed), oldest first.
    pub drills: Vec<(u64, u64, bool)>,
}

/// A target's kind as one of the site's agents declares it ("postgres" when none does:
/// a target only snapshots or a policy know).
async fn kind_of(st: &State, site: &str, target: &str) -> anyhow::Result<String> {
    Ok(st
        .catalog
        .agents()
        .await?
        .into_iter()
        .filter(|a| a.site == site)
        .flat_map(|a| a.targets)
        .find(|(t, _)| t == target)
        .map_or_else(|| "postgres".into(), |(_, k)| k))
}

/// One target of a site, if the viewer sees the site and the target exists.
pub async fn target(
    st: &std::sync::Arc<State>,
    cache: &FleetCache,
    scope: &Scope,
    site: &str,
    target: &str,
    now: u64,
) -> anyhow::Result<Option<Target>> {
    if !scope.sees(site) {
        return Ok(None);
    }
    let cat = &st.catalog;
    let snaps = cat.snapshots(Some(site), Some(target)).await?;
    let mut status = fleet(st, cache, scope, &FleetFilter::default(), now)
        .await?
        .cells;
    status.retain(|c| c.site == site && c.target == target);
    if snaps.is_empty() && status.is_empty() {
        return Ok(None);
    }
    let site_jobs = cat.site_jobs(site).await?;
    let holds = cat.holds().await?;
    let damaged = crate::fleet::standing::load_damaged(&*st.integrity).await?;
    let labels = crate::fleet::standing::labels(&snaps, &site_jobs, &holds, &damaged);
    let snapshots = snaps
        .iter()
        .rev()
        .map(|s| SnapshotRow {
            snapshot_id: s.snapshot_id.clone(),
            created_unix_ms: s.created_unix_ms,
            logical_bytes: s.logical_bytes,
            stored_bytes: s.stored_bytes,
            new_bytes: s.new_bytes,
            duration_ms: s.duration_ms,
            standing: labels
                .get(&(s.site.clone(), s.snapshot_id.clone()))
                .copied()
                .unwrap_or("unknown")
                .to_string(),
        })
        .collect();
    let good: Vec<u64> = snaps
        .iter()
        .filter(|s| {
            labels
                .get(&(s.site.clone(), s.snapshot_id.clone()))
                .is_some_and(|l| matches!(*l, "good" | "verified"))
        })
        .map(|s| s.created_unix_ms)
        .collect();
    const MONTH: u64 = 30 * 86_400_000;
    let mut events = cat.rpo_events(Some(site)).await?;
    events.retain(|e| e.target == target);
    let mut drills: Vec<(u64, u64, bool)> = site_jobs
        .iter()
        .filter(|j| j.target == target && j.trigger == crate::job::Trigger::Drill)
        .filter_map(|j| {
            let end = j.ended_unix_ms?;
            Some((
                j.started_unix_ms,
                end.saturating_sub(j.started_unix_ms),
                j.state == crate::catalog::JobState::Succeeded,
            ))
        })
        .collect();
    drills.sort_unstable();
    let f = JobsFilter {
        site: Some(site.to_string()),
        target: Some(target.to_string()),
        ..Default::default()
    };
    Ok(Some(Target {
        age_30d: super::charts::age_series(&good, now.saturating_sub(MONTH), now),
        calendar_30d: super::charts::calendar_days(&events, 30, now),
        drills,
        kind: kind_of(st, site, target).await?,
        site: site.to_string(),
        target: target.to_string(),
        status: status.pop(),
        snapshots,
        jobs: jobs(st, scope, &f, 20).await?,
    }))
}

/// Incidents in scope (of one site, if given), newest first.
pub async fn incidents(
    st: &State,
    scope: &Scope,
    site: Option<&str>,
    open_only: bool,
) -> anyhow::Result<Vec<IncidentRow>> {
    let mut all: Vec<IncidentRecord> = st
        .alerts
        .incidents()
        .await?
        .into_iter()
        .filter(|i| scope.sees(&i.site) && site.is_none_or(|s| s == i.site))
        .filter(|i| !open_only || i.is_open())
        .collect();
    all.sort_by_key(|i| std::cmp::Reverse(i.id));
    all.truncate(500);
    Ok(all.iter().map(IncidentRow::from).collect())
}
