//! What a scheduler tick and the RPO evaluation read from the catalog, loaded once per
//! tick (or per `rpo` call) instead of once per target.

use std::collections::HashMap;

use crate::catalog::{AgentRecord, CatalogError, JobRecord, ScheduleRecord, SnapshotRecord};
use crate::policy::Policy;
use crate::policy::site::SitePolicy;
use crate::state::State;
use crate::state::default_site_policy;

type Key = (String, String);

/// See module docs.
pub struct View {
    pub snapshots: Vec<SnapshotRecord>,
    pub agents: Vec<AgentRecord>,
    pub jobs: Vec<JobRecord>,
    /// Per (site, target); the scheduler writes back the records it changes.
    pub schedules: HashMap<Key, ScheduleRecord>,
    policies: HashMap<Key, Policy>,
    site_policies: HashMap<String, SitePolicy>,
    default_policy: Policy,
    default_site: SitePolicy,
    /// Anomaly holds per (site, target).
    pub holds: HashMap<Key, crate::catalog::safety::HoldRecord>,
    /// Snapshots store verification found damaged.
    pub damaged: crate::fleet::standing::Damaged,
}

impl View {
    pub async fn load(state: &State) -> Result<View, CatalogError> {
        let cat = &state.catalog;
        Ok(View {
            snapshots: cat.snapshots(None, None).await?,
            agents: cat.agents().await?,
            jobs: cat.jobs().await?,
            schedules: cat
                .schedules()
                .await?
                .into_iter()
                .map(|r| ((r.site.clone(), r.target.clone()), r))
                .collect(),
            policies: cat
                .policies()
                .await?
                .into_iter()
                .map(|p| ((p.site, p.target), p.policy))
                .collect(),
            site_policies: cat
                .site_policies()
                .await?
                .into_iter()
                .map(|p| (p.site, p.policy))
                .collect(),
            default_policy: state.default_policy.clone(),
            default_site: default_site_policy(state),
            holds: cat
                .holds()
                .await?
                .into_iter()
                .map(|h| ((h.site.clone(), h.target.clone()), h))
                .collect(),
            damaged: crate::fleet::standing::load_damaged(&*state.integrity).await?,
        })
    }

    /// Targets with a policy of their own.
    pub fn policy_keys(&self) -> impl Iterator<Item = &Key> {
        self.policies.keys()
    }

    /// The effective policy of a target.
    pub fn policy(&self, site: &str, target: &str) -> &Policy {
        self.policies
            .get(&(site.to_string(), target.to_string()))
            .unwrap_or(&self.default_policy)
    }

    /// The effective settings of a site.
    pub fn site_policy(&self, site: &str) -> &SitePolicy {
        self.site_policies.get(site).unwrap_or(&self.default_site)
    }
}
