//! `Rpo`: compliance per target and per site.

use std::collections::BTreeMap;

use nex_backup_shared::pb;
use tonic::Status;

use super::admin::AdminApi;
use super::{catalog_status, now_ms, parse_site};
use crate::fleet::compliance::current;
use crate::rpo::RpoState;

/// Worse first: the order a site's state is chosen by.
fn severity(s: RpoState) -> u8 {
    match s {
        RpoState::Violated => 4,
        RpoState::NeverBackedUp => 3,
        RpoState::AgentOffline => 2,
        RpoState::AtRisk => 1,
        RpoState::Ok => 0,
    }
}

impl AdminApi {
    pub(super) async fn rpo_impl(&self, req: pb::RpoRequest) -> Result<pb::RpoResponse, Status> {
        if !req.site.is_empty() {
            parse_site(&req.site)?;
        }
        let now = now_ms();
        let days = if req.days == 0 {
            30
        } else {
            req.days.min(3650)
        };
        let from = now.saturating_sub(u64::from(days) * 86_400_000);
        let site_filter = (!req.site.is_empty()).then_some(req.site.as_str());
        let events = self
            .state
            .catalog
            .rpo_events(site_filter)
            .await
            .map_err(catalog_status)?;
        let mut targets = vec![];
        let mut sites: BTreeMap<String, (RpoState, f64, u32)> = BTreeMap::new();
        for t in current(&self.state, now).await.map_err(catalog_status)? {
            if site_filter.is_some_and(|s| s != t.site) {
                continue;
            }
            let (pct, violations) = t.compliance(&events, from, now);
            let site = sites
                .entry(t.site.clone())
                .or_insert((RpoState::Ok, 100.0, 0));
            if severity(t.state) > severity(site.0) {
                site.0 = t.state;
            }
            site.1 = site.1.min(pct);
            site.2 += violations.len() as u32;
            targets.push(pb::RpoTarget {
                site: t.site,
                target: t.target,
                state: pb::RpoStatus::from(t.state).into(),
                reason: t.reason,
                newest_good_unix_ms: t.newest_good_ms.unwrap_or(0),
                rpo_secs: t.rpo_ms / 1000,
                rto_secs: t.rto_ms / 1000,
                drilled: t.last_drill.is_some(),
                measured_rto_ms: t.last_drill.map_or(0, |d| d.0),
                last_drill_ok: t.last_drill.is_some_and(|d| d.1),
                compliance_pct: pct,
                violations: violations
                    .into_iter()
                    .map(|v| pb::RpoViolation {
                        from_unix_ms: v.from_ms,
                        to_unix_ms: v.to_ms.unwrap_or(0),
                    })
                    .collect(),
            });
        }
        Ok(pb::RpoResponse {
            targets,
            sites: sites
                .into_iter()
                .map(|(site, (st, pct, n))| pb::RpoSite {
                    site,
                    state: pb::RpoStatus::from(st).into(),
                    compliance_pct: pct,
                    violations: n,
                })
                .collect(),
        })
    }
}

impl From<RpoState> for pb::RpoStatus {
    fn from(s: RpoState) -> Self {
        match s {
            RpoState::Ok => pb::RpoStatus::Ok,
            RpoState::AtRisk => pb::RpoStatus::AtRisk,
            RpoState::Violated => pb::RpoStatus::Violated,
            RpoState::AgentOffline => pb::RpoStatus::AgentOffline,
            RpoState::NeverBackedUp => pb::RpoStatus::NeverBackedUp,
        }
    }
}
