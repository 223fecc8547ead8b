//! Controller disaster recovery. The controller regularly writes a sealed copy of its own
//! state into the blob store (`controller/state/<time>`), sealed to the recovery keys
//! (`nex_backup_shared::statecopy`): the CA and server keys, the admin credentials,
//! agent identities, policies and site settings, holds, damage marks, alert channels and
//! rules, job history and the newest audit entries. Snapshot and chunk records are not
//! in it: they are rebuilt from the store's manifests and chunks.
//!
//! - this module: what a copy holds, making and storing one, the `state-copy` worker;
//! - [`rebuild`]: `nex-backup restore-controller`, a working data dir from a store alone.

pub mod migrate;
pub mod rebuild;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::catalog::alerts::{ChannelRecord, RuleRecord, SummaryRecord};
use crate::catalog::integrity::DamageRecord;
use crate::catalog::safety::{AuditEntry, HoldRecord};
use crate::catalog::trust::{AdminRecord, IdentityRecord};
use crate::catalog::{AgentRecord, JobRecord, PolicyRecord, SitePolicyRecord};
use crate::state::State;

/// Where state copies live in the store.
pub const PREFIX: &str = "controller/state/";
/// State copies kept; older ones are deleted once a newer one is stored and read back.
pub const KEEP: usize = 24;
/// Newest audit entries and jobs a copy holds.
const MAX_AUDIT: usize = 20_000;
const MAX_JOBS: usize = 100_000;
/// The files of the data dir a copy holds (relative paths).
pub const FILES: [&str; 6] = [
    "pki/ca.key",
    "pki/ca.crt",
    "pki/server.key",
    "pki/server.crt",
    "pki/server.names",
    "admin.token",
];

/// What a state copy holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StateCopy {
    pub v: u32,
    pub made_unix_ms: u64,
    pub controller_version: String,
    /// (relative path, base64 content) of [`FILES`] present.
    pub files: Vec<(String, String)>,
    pub admins: Vec<AdminRecord>,
    /// Dashboard accounts (password hashes only).
    #[serde(default)]
    pub accounts: Vec<crate::catalog::trust::AccountRecord>,
    pub identities: Vec<IdentityRecord>,
    pub agents: Vec<AgentRecord>,
    pub policies: Vec<PolicyRecord>,
    pub site_policies: Vec<SitePolicyRecord>,
    pub holds: Vec<HoldRecord>,
    pub damages: Vec<DamageRecord>,
    pub jobs: Vec<JobRecord>,
    pub audit: Vec<AuditEntry>,
    pub channels: Vec<ChannelRecord>,
    pub rules: Vec<RuleRecord>,
    pub summary: Option<SummaryRecord>,
}

/// Gather the state to copy.
pub async fn collect(state: &State, data_dir: &Path) -> anyhow::Result<StateCopy> {
    let mut files = vec![];
    for f in FILES {
        match std::fs::read(data_dir.join(f)) {
            Ok(b) => files.push((f.to_string(), B64.encode(b))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => anyhow::bail!("read {}: {e}", data_dir.join(f).display()),
        }
    }
    let cat = &state.catalog;
    let mut jobs = cat.jobs().await?;
    jobs.sort_by_key(|j| std::cmp::Reverse(j.started_unix_ms));
    jobs.truncate(MAX_JOBS);
    Ok(StateCopy {
        v: 1,
        made_unix_ms: nex_backup_shared::clock::now_ms(),
        controller_version: env!("CARGO_PKG_VERSION").into(),
        files,
        admins: cat.admins().await?,
        accounts: cat.accounts().await?,
        identities: cat.identities().await?,
        agents: cat.agents().await?,
        policies: cat.policies().await?,
        site_policies: cat.site_policies().await?,
        holds: cat.holds().await?,
        damages: state.integrity.damages(None).await?,
        jobs,
        audit: cat.audit(None, 0, MAX_AUDIT).await?,
        channels: state.alerts.channels().await?,
        rules: state.alerts.rules().await?,
        summary: state.alerts.summary().await?,
    })
}

/// The store key of a copy made at `unix_ms` (sorts by time).
pub fn copy_key(unix_ms: u64) -> String {
    let t = jiff::Timestamp::from_millisecond(unix_ms as i64).unwrap_or_default();
    format!("{PREFIX}{}", t.strftime("%Y%m%dT%H%M%S%3fZ"))
}

/// Make a copy, store it, read it back, then delete the copies beyond [`KEEP`].
/// Returns the key written.
pub async fn write_copy(state: &State, data_dir: &Path) -> anyhow::Result<String> {
    if state.recovery_keys.is_empty() {
        anyhow::bail!(
            "no recovery key configured (--recovery-key): the state copy cannot be sealed"
        );
    }
    let copy = collect(state, data_dir).await?;
    let key = copy_key(copy.made_unix_ms);
    let name = key.trim_start_matches(PREFIX).to_string();
    let json = serde_json::to_vec(&copy)?;
    let keys: Vec<_> = state
        .recovery_keys
        .iter()
        .take(nex_backup_shared::statecopy::MAX_RECIPIENTS)
        .cloned()
        .collect();
    let blob = bytes::Bytes::from(nex_backup_shared::statecopy::seal_state(
        &name, &json, &keys,
    ));
    state.store.put(&key, blob.clone()).await?;
    match state.store.get(&key).await? {
        Some(b) if b == blob => {}
        _ => anyhow::bail!("state copy {key} did not read back as written; older copies kept"),
    }
    let mut all = crate::store::list_keys(&*state.store, PREFIX).await?;
    all.sort();
    let excess = all.len().saturating_sub(KEEP);
    for old in &all[..excess] {
        state.store.delete(old).await?;
    }
    info!(key = %key, bytes = blob.len(), jobs = copy.jobs.len(), agents = copy.identities.len(),
        "controller state copy stored");
    Ok(key)
}

/// Start the `state-copy` worker: a copy every `every` (the first one `every` after start).
pub fn spawn(state: &Arc<State>, data_dir: &Path, every: Duration) {
    if every.is_zero() {
        return;
    }
    if state.recovery_keys.is_empty() {
        warn!("no recovery key: the controller cannot write a copy of its own state");
        return;
    }
    let (st, dir) = (state.clone(), data_dir.to_path_buf());
    state.workers.periodic("state-copy", every, None, move || {
        let (st, dir) = (st.clone(), dir.clone());
        async move { write_copy(&st, &dir).await.map(|_| ()) }
    });
}
