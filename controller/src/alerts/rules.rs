//! The alert rules: each names a condition of the fleet, with a default setting that an
//! operator can change globally or per site. [`evaluate`] reads the fleet's state once
//! and returns every condition that holds now.

use std::collections::HashMap;

use crate::catalog::alerts::RuleRecord;
use crate::catalog::{CatalogError, JobState};
use crate::fleet::view::View;
use crate::rpo::RpoState;
use crate::state::State;

/// A rule. Names are what the CLI and the records use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    BackupFailed,
    RpoAtRisk,
    RpoViolated,
    AgentOffline,
    DrillFailed,
    DrillOverRto,
    JobStalled,
    AgentLowDisk,
    StoreLowDisk,
    CertExpiring,
    KeyUnsealed,
    StoreDamaged,
}

/// Every rule, in the order `notify rules` lists them.
pub const ALL: [Rule; 12] = [
    Rule::BackupFailed,
    Rule::RpoAtRisk,
    Rule::RpoViolated,
    Rule::AgentOffline,
    Rule::DrillFailed,
    Rule::DrillOverRto,
    Rule::JobStalled,
    Rule::AgentLowDisk,
    Rule::StoreLowDisk,
    Rule::CertExpiring,
    Rule::KeyUnsealed,
    Rule::StoreDamaged,
];

/// A rule's effective settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub enabled: bool,
    pub hold_secs: u64,
    pub remind_secs: u64,
    pub threshold: u64,
}

impl Rule {
    pub fn name(self) -> &'static str {
        match self {
            Rule::BackupFailed => "backup-failed",
            Rule::RpoAtRisk => "rpo-at-risk",
            Rule::RpoViolated => "rpo-violated",
            Rule::AgentOffline => "agent-offline",
            Rule::DrillFailed => "drill-failed",
            Rule::DrillOverRto => "drill-over-rto",
            Rule::JobStalled => "job-stalled",
            Rule::AgentLowDisk => "agent-low-disk",
            Rule::StoreLowDisk => "store-low-disk",
            Rule::CertExpiring => "cert-expiring",
            Rule::KeyUnsealed => "key-unsealed",
            Rule::StoreDamaged => "store-damaged",
        }
    }

    pub fn parse(s: &str) -> Option<Rule> {
        ALL.into_iter().find(|r| r.name() == s)
    }

    /// What the threshold means, for help and listings ("" when unused).
    pub fn threshold_unit(self) -> &'static str {
        match self {
            Rule::AgentOffline => "seconds offline",
            Rule::JobStalled => "seconds running",
            Rule::AgentLowDisk | Rule::StoreLowDisk => "MiB free",
            Rule::CertExpiring => "days left",
            _ => "",
        }
    }

    /// What the rule says, for listings and notices.
    pub fn title(self) -> &'static str {
        match self {
            Rule::BackupFailed => "backup failed",
            Rule::RpoAtRisk => "RPO at risk",
            Rule::RpoViolated => "RPO violated",
            Rule::AgentOffline => "agent offline",
            Rule::DrillFailed => "restore drill failed",
            Rule::DrillOverRto => "restore drill over its RTO",
            Rule::JobStalled => "job stalled",
            Rule::AgentLowDisk => "low disk on an agent host",
            Rule::StoreLowDisk => "low disk on the controller's store",
            Rule::CertExpiring => "agent certificate expiring",
            Rule::KeyUnsealed => "site key not sealed to a recovery key",
            Rule::StoreDamaged => "snapshots damaged in the store",
        }
    }

    pub fn defaults(self) -> Settings {
        let (hold_secs, threshold) = match self {
            Rule::RpoAtRisk => (300, 0),
            Rule::AgentOffline => (0, 900),
            Rule::JobStalled => (0, 6 * 3600),
            Rule::AgentLowDisk => (60, 2048),
            Rule::StoreLowDisk => (60, 5120),
            Rule::CertExpiring => (0, 7),
            Rule::KeyUnsealed => (600, 0),
            _ => (0, 0),
        };
        Settings {
            enabled: true,
            hold_secs,
            remind_secs: 24 * 3600,
            threshold,
        }
    }
}

/// Effective settings: defaults, then the global override, then the site's.
pub fn settings(rule: Rule, site: &str, records: &[RuleRecord]) -> Settings {
    let mut s = rule.defaults();
    for scope in ["", site] {
        if let Some(r) = records
            .iter()
            .find(|r| r.rule == rule.name() && r.site == scope)
        {
            s.enabled = r.enabled.unwrap_or(s.enabled);
            s.hold_secs = r.hold_secs.unwrap_or(s.hold_secs);
            s.remind_secs = r.remind_secs.unwrap_or(s.remind_secs);
            s.threshold = r.threshold.unwrap_or(s.threshold);
        }
        if site.is_empty() {
            break;
        }
    }
    s
}

/// A condition that holds now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub rule: Rule,
    pub site: String,
    /// A target, an agent, or `store`.
    pub subject: String,
    /// One line, with the figures.
    pub summary: String,
}

/// Every enabled rule's conditions now.
pub async fn evaluate(state: &State, now: u64) -> Result<Vec<Condition>, CatalogError> {
    let records = state.alerts.rules().await?;
    let view = View::load(state).await?;
    let mut out = vec![];
    let mut push = |rule: Rule, site: &str, subject: &str, summary: String| {
        if settings(rule, site, &records).enabled {
            out.push(Condition {
                rule,
                site: site.into(),
                subject: subject.into(),
                summary,
            });
        }
    };
    let th = |rule: Rule, site: &str| settings(rule, site, &records).threshold;
    // Backups and drills: the last finished job of each target decides.
    let mut last_backup: HashMap<(&str, &str), &crate::catalog::JobRecord> = HashMap::new();
    for j in view
        .jobs
        .iter()
        .filter(|j| j.kind == crate::catalog::JobKind::Backup && j.state != JobState::Running)
    {
        let e = last_backup.entry((&j.site, &j.target)).or_insert(j);
        if j.started_unix_ms > e.started_unix_ms {
            *e = j;
        }
    }
    for ((site, target), j) in &last_backup {
        if j.state == JobState::Failed {
            let err = j.error_line();
            push(
                Rule::BackupFailed,
                site,
                target,
                format!(
                    "the last backup of {site}/{target} failed ({}): {err}",
                    j.job_id
                ),
            );
        }
    }
    for j in view.jobs.iter().filter(|j| j.state == JobState::Running) {
        let limit = th(Rule::JobStalled, &j.site);
        let ran = now.saturating_sub(j.started_unix_ms) / 1000;
        if ran > limit {
            push(
                Rule::JobStalled,
                &j.site,
                &j.target,
                format!(
                    "{} job {} of {}/{} has been running for {}",
                    j.kind.as_str(),
                    j.job_id,
                    j.site,
                    j.target,
                    crate::policy::human_secs(ran)
                ),
            );
        }
    }
    for t in crate::fleet::compliance::evaluate_all(state, &view, now) {
        match t.state {
            RpoState::Violated | RpoState::NeverBackedUp => push(
                Rule::RpoViolated,
                &t.site,
                &t.target,
                format!(
                    "{}/{}: RPO {}: {}",
                    t.site,
                    t.target,
                    t.state.label(),
                    t.reason
                ),
            ),
            RpoState::AtRisk => push(
                Rule::RpoAtRisk,
                &t.site,
                &t.target,
                format!("{}/{}: RPO AT RISK: {}", t.site, t.target, t.reason),
            ),
            _ => {}
        }
        let facts = crate::fleet::drills::facts(&view.jobs, &t.site, &t.target);
        if let Some((_, ok, took, err)) = facts.last {
            if !ok {
                push(
                    Rule::DrillFailed,
                    &t.site,
                    &t.target,
                    format!(
                        "the last restore drill of {}/{} failed: {}",
                        t.site,
                        t.target,
                        err.lines().next().unwrap_or("")
                    ),
                );
            } else if t.rto_ms > 0 && took > t.rto_ms {
                push(
                    Rule::DrillOverRto,
                    &t.site,
                    &t.target,
                    format!(
                        "the last restore drill of {}/{} took {}, over its RTO of {}",
                        t.site,
                        t.target,
                        crate::policy::human_secs(took / 1000),
                        crate::policy::human_secs(t.rto_ms / 1000)
                    ),
                );
            }
        }
    }
    agent_conditions(state, &view, now, &th, &mut push);
    store_condition(state, &th, &mut push).await;
    damage_conditions(state, &mut push).await?;
    trust_conditions(state, now, &th, &mut push).await?;
    Ok(out)
}

type Push<'a> = dyn FnMut(Rule, &str, &str, String) + Send + 'a;

fn agent_conditions(
    state: &State,
    view: &View,
    now: u64,
    th: &(dyn Fn(Rule, &str) -> u64 + Sync),
    push: &mut Push<'_>,
) {
    for a in &view.agents {
        let online = state.hub.online(&a.site, &a.agent_id);
        // Offline time counts from the later of the last heartbeat and this
        // controller's start: a restart of the controller is not an agent outage.
        let since = a.last_seen_unix_ms.max(state.started_ms);
        let away = now.saturating_sub(since) / 1000;
        if !online && away > th(Rule::AgentOffline, &a.site) {
            push(
                Rule::AgentOffline,
                &a.site,
                &a.agent_id,
                format!(
                    "agent {} of site {} has been offline for {} (last seen {})",
                    a.agent_id,
                    a.site,
                    crate::policy::human_secs(now.saturating_sub(a.last_seen_unix_ms) / 1000),
                    crate::alerts::notice::utc(a.last_seen_unix_ms)
                ),
            );
        }
        if let Some(h) = state.health.latest(&a.site, &a.agent_id)
            && let Some(v) = h.tightest()
            && v.free_bytes < th(Rule::AgentLowDisk, &a.site).saturating_mul(1 << 20)
        {
            push(
                Rule::AgentLowDisk,
                &a.site,
                &a.agent_id,
                format!(
                    "agent {} of site {}: {} ({}) has {} MiB free of {} MiB (threshold {} MiB)",
                    a.agent_id,
                    a.site,
                    v.path,
                    v.role,
                    v.free_bytes >> 20,
                    v.total_bytes >> 20,
                    th(Rule::AgentLowDisk, &a.site)
                ),
            );
        }
    }
}

async fn store_condition(
    state: &State,
    th: &(dyn Fn(Rule, &str) -> u64 + Sync),
    push: &mut Push<'_>,
) {
    if let Ok(Some(free)) = state.store.free_bytes().await {
        let limit = th(Rule::StoreLowDisk, "");
        if free < limit.saturating_mul(1 << 20) {
            push(
                Rule::StoreLowDisk,
                "",
                "store",
                format!(
                    "the controller's blob store at {} has {} MiB free (threshold {limit} MiB)",
                    state.store.location(),
                    free >> 20
                ),
            );
        }
    }
}

/// One condition per target with damaged snapshots.
async fn damage_conditions(state: &State, push: &mut Push<'_>) -> Result<(), CatalogError> {
    let mut by_target: std::collections::BTreeMap<(String, String), Vec<_>> = Default::default();
    for d in state.integrity.damages(None).await? {
        by_target
            .entry((d.site.clone(), d.target.clone()))
            .or_default()
            .push(d);
    }
    for ((site, target), ds) in by_target {
        let first = &ds[0];
        let what = first
            .objects
            .first()
            .map(|o| format!("{} {}", o.key, o.problem))
            .unwrap_or_default();
        push(
            Rule::StoreDamaged,
            &site,
            &target,
            format!(
                "{} snapshot(s) of {site}/{target} need stored objects that are missing or damaged \
                 (first: {}: {what}); they no longer count as backups. Take a fresh backup \
                 (nex-backup backup --site {site} --target {target}), then nex-backup verify --site {site}",
                ds.len(),
                first.snapshot_id
            ),
        );
    }
    Ok(())
}

async fn trust_conditions(
    state: &State,
    now: u64,
    th: &(dyn Fn(Rule, &str) -> u64 + Sync),
    push: &mut Push<'_>,
) -> Result<(), CatalogError> {
    let now_s = (now / 1000) as i64;
    let mut sites = std::collections::BTreeSet::new();
    for id in state.catalog.identities().await? {
        if id.revoked_unix_ms.is_some() {
            continue;
        }
        sites.insert(id.site.clone());
        let days = th(Rule::CertExpiring, &id.site) as i64;
        let left = id.not_after_unix - now_s;
        if left < days * 86_400 {
            let what = if left <= 0 {
                "expired".to_string()
            } else {
                format!("expires in {}", crate::policy::human_secs(left as u64))
            };
            push(
                Rule::CertExpiring,
                &id.site,
                &id.agent_id,
                format!(
                    "the certificate of agent {} of site {} {what} ({}); re-enroll it: nex-backup token create --site {} --replace-agent {}",
                    id.agent_id,
                    id.site,
                    crate::alerts::notice::utc(id.not_after_unix as u64 * 1000),
                    id.site,
                    id.agent_id
                ),
            );
        }
    }
    let recipients: Vec<[u8; 8]> = state.recovery_keys.iter().map(|k| k.tag()).collect();
    for site in sites {
        let sealed = state.catalog.sealed_keys(&site).await?;
        let mut epochs: Vec<u32> = sealed.iter().map(|s| s.epoch).collect();
        epochs.sort_unstable();
        epochs.dedup();
        for e in epochs {
            let missing = recipients
                .iter()
                .filter(|r| !sealed.iter().any(|s| s.epoch == e && &s.recipient == *r))
                .count();
            if missing > 0 {
                push(
                    Rule::KeyUnsealed,
                    &site,
                    &format!("epoch {e}"),
                    format!(
                        "key epoch {e} of site {site} is not sealed to {missing} of the {} recovery key(s); the site's agent seals it at its next backup",
                        recipients.len()
                    ),
                );
            }
        }
    }
    Ok(())
}
