//! What the dashboard shows, as data: one function per page, each returning what both
//! the HTML page and its JSON twin under `/api/v1/` render, already narrowed to what
//! the viewer may see. A customer's scope is applied here, before anything is counted,
//! so no count, total or name of another site can reach a page or an answer.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::catalog::JobRecord;
use crate::catalog::history::JobFilter;
use crate::catalog::trust::{AccountRecord, Role};
use crate::rpo::RpoState;
use crate::state::State;

/// The sites an account sees.
#[derive(Debug, Clone)]
pub struct Scope {
    pub role: Role,
    /// `None`: every site.
    pub sites: Option<BTreeSet<String>>,
}

impl Scope {
    pub fn of(a: &AccountRecord) -> Scope {
        Scope {
            role: a.role,
            sites: (a.role == Role::Customer).then(|| a.sites.iter().cloned().collect()),
        }
    }

    pub fn sees(&self, site: &str) -> bool {
        self.sites.as_ref().is_none_or(|s| s.contains(site))
    }

    pub fn can_act(&self) -> bool {
        matches!(self.role, Role::Operator | Role::Admin)
    }
}

/// The order of states on the fleet page: the worst first.
pub const STATE_ORDER: [RpoState; 5] = [
    RpoState::Violated,
    RpoState::AtRisk,
    RpoState::AgentOffline,
    RpoState::NeverBackedUp,
    RpoState::Ok,
];

/// A state as a URL and CSS word (`at-risk`).
pub fn state_key(s: RpoState) -> String {
    s.label().to_ascii_lowercase().replace(' ', "-")
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Cell {
    pub site: String,
    pub target: String,
    pub state: &'static str,
    pub state_key: String,
    pub reason: String,
    pub newest_good_unix_ms: Option<u64>,
    pub age_ms: Option<u64>,
    pub rpo_ms: u64,
    pub rto_ms: u64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StateCount {
    pub state: &'static str,
    pub state_key: String,
    pub targets: usize,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Fleet {
    pub counts: Vec<StateCount>,
    pub open_incidents: usize,
    pub backups_24h_ok: usize,
    pub backups_24h_failed: usize,
    pub logical_bytes: u64,
    pub stored_bytes: u64,
    pub dedup_ratio: f64,
    /// Matching the filters, the worst first.
    pub cells: Vec<Cell>,
}

/// Filters of the fleet page.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::IntoParams)]
pub struct FleetFilter {
    /// A state key (`violated`, `at-risk`, ...).
    pub state: Option<String>,
    /// Part of a site's name.
    pub q: Option<String>,
}

/// The fleet at a glance, from the shared figures ([`super::fleetcache`]).
pub async fn fleet(
    st: &std::sync::Arc<State>,
    cache: &super::fleetcache::FleetCache,
    scope: &Scope,
    f: &FleetFilter,
    now: u64,
) -> anyhow::Result<Fleet> {
    let base = cache.get(st).await?;
    let mut cells: Vec<Cell> = base
        .statuses
        .iter()
        .filter(|t| scope.sees(&t.site))
        .map(|t| Cell {
            state: t.state.label(),
            state_key: state_key(t.state),
            reason: t.reason.clone(),
            newest_good_unix_ms: t.newest_good_ms,
            age_ms: t.newest_good_ms.map(|g| now.saturating_sub(g)),
            rpo_ms: t.rpo_ms,
            rto_ms: t.rto_ms,
            site: t.site.clone(),
            target: t.target.clone(),
        })
        .collect();
    let counts = STATE_ORDER
        .iter()
        .map(|s| StateCount {
            state: s.label(),
            state_key: state_key(*s),
            targets: cells.iter().filter(|c| c.state == s.label()).count(),
        })
        .collect();
    cells.sort_by(|a, b| {
        let ra = STATE_ORDER.iter().position(|s| s.label() == a.state);
        let rb = STATE_ORDER.iter().position(|s| s.label() == b.state);
        ra.cmp(&rb)
            .then(b.age_ms.cmp(&a.age_ms))
            .then((&a.site, &a.target).cmp(&(&b.site, &b.target)))
    });
    if let Some(k) = f.state.as_deref().filter(|k| !k.is_empty()) {
        cells.retain(|c| c.state_key == k);
    }
    if let Some(q) = f.q.as_deref().map(str::trim).filter(|q| !q.is_empty()) {
        let q = q.to_ascii_lowercase();
        cells.retain(|c| c.site.to_ascii_lowercase().contains(&q));
    }
    let mut total = super::fleetcache::SiteFigures::default();
    for (_, s) in base.sites.iter().filter(|(site, _)| scope.sees(site)) {
        total.backups_24h_ok += s.backups_24h_ok;
        total.backups_24h_failed += s.backups_24h_failed;
        total.logical_bytes += s.logical_bytes;
        total.new_bytes += s.new_bytes;
    }
    // The whole store's size for staff; a customer's own sites' share.
    let stored = if scope.sites.is_none() {
        base.stored_total
    } else {
        total.new_bytes
    };
    let open_incidents = st
        .alerts
        .incidents()
        .await?
        .iter()
        .filter(|i| i.is_open() && scope.sees(&i.site))
        .count();
    Ok(Fleet {
        counts,
        open_incidents,
        backups_24h_ok: total.backups_24h_ok,
        backups_24h_failed: total.backups_24h_failed,
        logical_bytes: total.logical_bytes,
        stored_bytes: stored,
        dedup_ratio: if stored == 0 {
            0.0
        } else {
            total.logical_bytes as f64 / stored as f64
        },
        cells,
    })
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobRow {
    pub job_id: String,
    pub site: String,
    pub target: String,
    pub kind: String,
    pub trigger: String,
    pub state: String,
    pub started_unix_ms: u64,
    pub ended_unix_ms: Option<u64>,
    pub logical_bytes: u64,
    pub new_bytes: u64,
    pub snapshot_id: Option<String>,
    pub error: Option<String>,
}

impl From<&JobRecord> for JobRow {
    fn from(j: &JobRecord) -> Self {
        JobRow {
            job_id: j.job_id.clone(),
            site: j.site.clone(),
            target: j.target.clone(),
            kind: j.kind.as_str().to_string(),
            trigger: j.trigger.as_str().to_string(),
            state: j.state.as_str().to_string(),
            started_unix_ms: j.started_unix_ms,
            ended_unix_ms: j.ended_unix_ms,
            logical_bytes: j.logical_bytes,
            new_bytes: j.new_bytes,
            snapshot_id: j.snapshot_id.clone(),
            error: j.error.clone(),
        }
    }
}

/// Filters of the jobs page.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::IntoParams)]
pub struct JobsFilter {
    pub site: Option<String>,
    pub target: Option<String>,
    pub kind: Option<String>,
    pub trigger: Option<String>,
    pub outcome: Option<String>,
}

fn set(o: &Option<String>) -> Option<&str> {
    o.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// Jobs, newest first, at most `limit`, by the filters, in scope. Paged by the catalog.
pub async fn jobs(
    st: &State,
    scope: &Scope,
    f: &JobsFilter,
    limit: usize,
) -> anyhow::Result<Vec<JobRow>> {
    if let Some(site) = set(&f.site)
        && !scope.sees(site)
    {
        return Ok(vec![]);
    }
    let filter = JobFilter {
        site: set(&f.site).map(String::from),
        target: set(&f.target).map(String::from),
        failed_only: set(&f.outcome) == Some("failed"),
    };
    let mut out = vec![];
    let mut before = None;
    // Pages until `limit` rows pass the remaining filters, or 20 pages were read.
    for _ in 0..20 {
        let page = st.catalog.jobs_page(&filter, before.as_ref(), 500).await?;
        let Some(last) = page.last() else { break };
        before = Some((last.started_unix_ms, last.job_id.clone()));
        for j in &page {
            let row = JobRow::from(j);
            let keep = scope.sees(&j.site)
                && set(&f.kind).is_none_or(|k| k == row.kind)
                && set(&f.trigger).is_none_or(|t| t == row.trigger)
                && set(&f.outcome).is_none_or(|o| o == row.state);
            if keep {
                out.push(row);
                if out.len() == limit {
                    return Ok(out);
                }
            }
        }
        if page.len() < 500 {
            break;
        }
    }
    Ok(out)
}
