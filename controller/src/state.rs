//! The application state every layer above the catalog shares: the catalog and blob
//! store, live sessions ([`Hub`]), the PKI, the controller's tunables, the event bus and
//! the background workers.

use std::sync::Arc;

use crate::catalog::{Catalog, CatalogError};
use crate::hub::Hub;
use crate::policy::Policy;
use crate::policy::site::SitePolicy;
use crate::store::BlobStore;

/// Everything a request handler needs.
pub struct State {
    pub catalog: Arc<dyn Catalog>,
    pub store: Arc<dyn BlobStore>,
    /// Requests, errors and bytes of the blob store (for `/metrics`).
    pub store_meter: Arc<crate::store::layers::Meter>,
    /// How far each off-site copy is behind (for `status` and `/metrics`).
    pub copy_lag: Arc<crate::offsite::CopyLag>,
    pub hub: Hub,
    pub pki: Arc<crate::pki::Pki>,
    pub recovery_keys: Vec<nex_backup_shared::recovery::RecoveryPublicKey>,
    pub agent_cert_lifetime: std::time::Duration,
    /// Policy of targets without one of their own.
    pub default_policy: crate::policy::Policy,
    /// How long a chunk an agent was told about stays safe from garbage collection; also
    /// how long after start GC waits (pins are in memory).
    pub gc_grace_ms: u64,
    pub started_ms: u64,
    /// Free space the blob store keeps; below it uploads are refused.
    pub reserve: crate::store::Reserve,
    /// Room kept on the data directory's disk for GC to start on a full disk.
    pub ballast: crate::ballast::Ballast,
    /// Domain events, published where they happen.
    pub events: crate::events::EventBus,
    /// The background workers and their shutdown tree.
    pub workers: crate::workers::Workers,
    /// Agents' latest host health reports.
    pub health: crate::health::HealthBook,
    /// Alerting records (channels, rules, incidents, outbox).
    pub alerts: Arc<dyn crate::catalog::alerts::AlertCatalog>,
    /// Store integrity records (chunk checksums, damaged snapshots, verification cursor).
    pub integrity: Arc<dyn crate::catalog::integrity::IntegrityCatalog>,
    /// Notices for the outbox worker: wakes it when something was queued.
    pub outbox_wake: Arc<tokio::sync::Notify>,
    /// This controller's host name (in Message-IDs and notices).
    pub host: String,
    /// The admin credentials in force.
    pub admins: Arc<crate::admins::AdminBook>,
    /// The fleet as recently loaded, shared by the readers that only look.
    pub views: crate::fleet::view::SharedView,
}

impl State {
    /// Make every catalog write so far durable: an acknowledgement (chunk stored, snapshot
    /// committed, key held, agent enrolled, job dispatched) must survive a crash.
    pub async fn durable(&self) -> Result<(), CatalogError> {
        self.catalog.flush().await
    }
}

/// A target's own policy, if it has one.
pub async fn own_policy(
    state: &State,
    site: &str,
    target: &str,
) -> Result<Option<Policy>, CatalogError> {
    Ok(state
        .catalog
        .policies()
        .await?
        .into_iter()
        .find(|p| p.site == site && p.target == target)
        .map(|p| p.policy))
}

/// The effective policy of a target: its own, else the controller default.
pub async fn policy_of(state: &State, site: &str, target: &str) -> Result<Policy, CatalogError> {
    Ok(own_policy(state, site, target)
        .await?
        .unwrap_or_else(|| state.default_policy.clone()))
}

/// A site's own settings, if it has them.
pub async fn own_site_policy(
    state: &State,
    site: &str,
) -> Result<Option<SitePolicy>, CatalogError> {
    Ok(state
        .catalog
        .site_policies()
        .await?
        .into_iter()
        .find(|p| p.site == site)
        .map(|p| p.policy))
}

/// Settings of a site without its own: no window, no limit, in the default zone.
pub fn default_site_policy(state: &State) -> SitePolicy {
    SitePolicy {
        timezone: state.default_policy.timezone.clone(),
        ..SitePolicy::default()
    }
}

/// The effective settings of a site.
pub async fn site_policy_of(state: &State, site: &str) -> Result<SitePolicy, CatalogError> {
    Ok(own_site_policy(state, site)
        .await?
        .unwrap_or_else(|| default_site_policy(state)))
}

impl State {
    /// Publish [`crate::events::Event::JobStarted`] for a job just dispatched.
    pub fn job_started(&self, job: &crate::catalog::JobRecord) {
        self.events.publish(crate::events::Event::JobStarted {
            job: job_ref(job),
            trigger: job.trigger.as_str().into(),
        });
    }

    /// Publish [`crate::events::Event::JobFinished`] for a job whose record just left
    /// `running` (once per job: callers publish on that transition only).
    pub fn job_finished(&self, job: &crate::catalog::JobRecord) {
        use crate::events::{Event, Outcome};
        let outcome = match job.state {
            crate::catalog::JobState::Succeeded => Outcome::Succeeded,
            _ => Outcome::Failed,
        };
        let duration_ms = job
            .ended_unix_ms
            .unwrap_or(job.started_unix_ms)
            .saturating_sub(job.started_unix_ms);
        self.events.publish(Event::JobFinished {
            job: job_ref(job),
            outcome,
            error: job.error.is_some().then(|| job.error_line().to_string()),
            duration_ms,
            logical_bytes: job.logical_bytes,
            new_bytes: job.new_bytes,
        });
    }
}

fn job_ref(job: &crate::catalog::JobRecord) -> crate::events::JobRef {
    crate::events::JobRef {
        site: job.site.clone(),
        target: job.target.clone(),
        job_id: job.job_id.clone(),
        kind: crate::events::JobKind::of(job.kind, job.trigger),
    }
}

impl State {
    /// Append a trust event (enrollment, renewal) to the audit log; a failure to write
    /// it is logged, never hides the event.
    pub async fn audit_trust(&self, site: &str, action: &str, detail: String, actor: String) {
        let e = crate::catalog::safety::AuditEntry {
            v: 2,
            unix_ms: nex_backup_shared::clock::now_ms(),
            site: site.into(),
            target: String::new(),
            action: action.into(),
            detail,
            actor,
            outcome: "ok".into(),
        };
        if let Err(err) = self.catalog.put_audit(&e).await {
            tracing::error!(site, action, error = %err, "audit entry of a trust event not written");
        }
    }
}

/// The sites that have (or had) an enrolled agent, sorted.
pub async fn enrolled_sites(state: &State) -> Result<Vec<String>, CatalogError> {
    let mut sites: Vec<String> = state
        .catalog
        .identities()
        .await?
        .into_iter()
        .map(|i| i.site)
        .collect();
    sites.sort();
    sites.dedup();
    Ok(sites)
}
