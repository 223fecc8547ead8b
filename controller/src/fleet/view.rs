//! What a scheduler tick and the RPO evaluation read from the catalog, loaded once per
//! tick (or per `rpo` call) instead of once per target. [`SharedView`] lets the readers
//! that only look (the RPO watch and the dashboard's figures) share one recent load
//! instead of each reading the whole catalog.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

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

/// One recent [`View`] for every reader that only looks; loaded by one of them at a time
/// (the others wait for that load instead of starting their own).
#[derive(Default)]
pub struct SharedView {
    slot: tokio::sync::Mutex<Option<(std::time::Instant, Arc<View>)>>,
}

impl SharedView {
    /// A view loaded at most `max_age` ago (its load's start), loading one if needed.
    /// The load runs on a blocking thread: decoding a whole fleet's records takes
    /// seconds of CPU at hundreds of sites, which must not stall the request threads.
    pub async fn get(
        &self,
        state: &Arc<State>,
        max_age: Duration,
    ) -> Result<Arc<View>, CatalogError> {
        let mut slot = self.slot.lock().await;
        if let Some((at, v)) = slot.as_ref()
            && at.elapsed() <= max_age
        {
            return Ok(v.clone());
        }
        let at = std::time::Instant::now();
        let (st, rt) = (state.clone(), tokio::runtime::Handle::current());
        let loaded = tokio::task::spawn_blocking(move || rt.block_on(View::load(&st)))
            .await
            .map_err(|e| CatalogError::Storage(format!("loading the fleet's view: {e}")))?;
        let v = Arc::new(loaded?);
        *slot = Some((at, v.clone()));
        Ok(v)
    }
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
