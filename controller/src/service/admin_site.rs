//! Admin calls about a site's own settings: the backup window, the upload bandwidth limit
//! and the designated drill agent.

use nex_backup_shared::pb;
use tonic::Status;
use tracing::info;

use super::admin::AdminApi;
use super::{catalog_status, now_ms, parse_site};
use crate::catalog::SitePolicyRecord;
use crate::policy::site::SitePolicy;
use crate::state::{default_site_policy, own_site_policy};

impl From<&SitePolicy> for pb::SitePolicyMsg {
    fn from(p: &SitePolicy) -> Self {
        pb::SitePolicyMsg {
            window: p.window.clone().unwrap_or_default(),
            timezone: p.timezone.clone(),
            bandwidth_bytes_per_sec: p.bandwidth_bytes_per_sec,
            drill_agent: p.drill_agent.clone().unwrap_or_default(),
            retention_lock_secs: Some(p.retention_lock_secs),
            drill_hours: Some(p.drill_hours.clone().unwrap_or_else(|| "any".into())),
        }
    }
}

/// The settings a request asks for; an unset retention lock keeps `current`'s.
fn requested(m: pb::SitePolicyMsg, current: &SitePolicy) -> SitePolicy {
    let opt = |s: String| (!s.is_empty()).then_some(s);
    SitePolicy {
        v: 1,
        window: opt(m.window),
        timezone: m.timezone,
        bandwidth_bytes_per_sec: m.bandwidth_bytes_per_sec,
        drill_agent: opt(m.drill_agent),
        retention_lock_secs: m.retention_lock_secs.unwrap_or(current.retention_lock_secs),
        drill_hours: match m.drill_hours.as_deref().map(str::trim) {
            None => current.drill_hours.clone(),
            Some("any") | Some("") => None,
            Some(h) => Some(h.to_string()),
        },
    }
}

/// A site's settings as reported, with the window's state now.
pub(super) fn site_info(site: &str, p: &SitePolicy, is_default: bool) -> pb::SitePolicyInfo {
    let (open, changes) = p.window_state(now_ms());
    pb::SitePolicyInfo {
        site: site.into(),
        policy: Some(p.into()),
        is_default,
        window_open: open,
        window_changes_unix_ms: changes,
    }
}

impl AdminApi {
    pub(super) async fn set_site_policy_impl(
        &self,
        req: pb::SetSitePolicyRequest,
    ) -> Result<pb::SitePolicyInfo, Status> {
        parse_site(&req.site)?;
        if !req.create {
            self.require_known_site(&req.site).await?;
        }
        let current = crate::state::site_policy_of(&self.state, &req.site)
            .await
            .map_err(catalog_status)?;
        let policy = requested(
            req.policy
                .ok_or_else(|| Status::invalid_argument("site policy missing"))?,
            &current,
        );
        policy
            .validate()
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if let Some(agent) = &policy.drill_agent {
            let known = self
                .state
                .catalog
                .identities()
                .await
                .map_err(catalog_status)?
                .into_iter()
                .any(|i| i.site == req.site && &i.agent_id == agent && i.revoked_unix_ms.is_none());
            if !known {
                return Err(Status::invalid_argument(format!(
                    "policy drill-agent: no enrolled agent {agent} at site {}",
                    req.site
                )));
            }
        }
        let rec = SitePolicyRecord {
            v: 1,
            site: req.site.clone(),
            policy: policy.clone(),
            updated_unix_ms: now_ms(),
        };
        self.state
            .catalog
            .put_site_policy(&rec)
            .await
            .map_err(catalog_status)?;
        if policy.retention_lock_secs != current.retention_lock_secs {
            let (from, to) = (current.retention_lock_secs, policy.retention_lock_secs);
            let action = if to < from {
                "retention lock shortened"
            } else {
                "retention lock extended"
            };
            self.audit(
                &req.site,
                "",
                action,
                format!(
                    "{} -> {}",
                    crate::policy::human_secs(from),
                    crate::policy::human_secs(to)
                ),
            )
            .await?;
        }
        super::durable(&self.state).await?;
        info!(site = %req.site, window = ?policy.window, timezone = %policy.timezone,
            bandwidth = policy.bandwidth_bytes_per_sec, drill_agent = ?policy.drill_agent,
            retention_lock_secs = policy.retention_lock_secs, "site policy set");
        Ok(site_info(&req.site, &policy, false))
    }

    /// Refuse a site nothing knows of (no agent enrolled, no settings): a typo.
    async fn require_known_site(&self, site: &str) -> Result<(), Status> {
        let cat = &self.state.catalog;
        let enrolled = cat
            .identities()
            .await
            .map_err(catalog_status)?
            .iter()
            .any(|i| i.site == site);
        let has_settings = own_site_policy(&self.state, site)
            .await
            .map_err(catalog_status)?
            .is_some();
        if enrolled || has_settings {
            return Ok(());
        }
        Err(Status::not_found(format!(
            "no agent is enrolled for site {site}; check the name, or add --create to set it up ahead of its agents"
        )))
    }

    pub(super) async fn get_site_policy_impl(
        &self,
        req: pb::GetSitePolicyRequest,
    ) -> Result<pb::SitePolicyInfo, Status> {
        parse_site(&req.site)?;
        let own = own_site_policy(&self.state, &req.site)
            .await
            .map_err(catalog_status)?;
        if own.is_none() {
            self.require_known_site(&req.site).await?;
        }
        let is_default = own.is_none();
        let p = own.unwrap_or_else(|| default_site_policy(&self.state));
        Ok(site_info(&req.site, &p, is_default))
    }

    /// Every site with agents or settings of its own, with its effective settings.
    pub(super) async fn list_site_policies(&self) -> Result<Vec<pb::SitePolicyInfo>, Status> {
        let cat = &self.state.catalog;
        let mut sites: std::collections::BTreeSet<String> = cat
            .agents()
            .await
            .map_err(catalog_status)?
            .into_iter()
            .map(|a| a.site)
            .collect();
        let stored = cat.site_policies().await.map_err(catalog_status)?;
        sites.extend(stored.iter().map(|p| p.site.clone()));
        let mut out = vec![];
        for site in sites {
            let own = stored.iter().find(|p| p.site == site);
            let p = own.map_or_else(|| default_site_policy(&self.state), |r| r.policy.clone());
            out.push(site_info(&site, &p, own.is_none()));
        }
        Ok(out)
    }
}
