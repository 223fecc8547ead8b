//! Store verification on the controller, without keys: re-read every stored chunk and
//! check it against the size and SHA-256 recorded when it was stored, check every
//! snapshot's manifest copy against the catalog's, and check that every chunk a snapshot
//! references is recorded.
//!
//! A bad chunk is named with every snapshot that needs it; those snapshots are marked
//! damaged (no longer good for RPO, `restore latest` or retention, which also never
//! deletes them), the `store-damaged` alert opens an incident, and the chunk is set
//! aside and forgotten so that the next backup stores it again. A later pass that finds
//! every object of a damaged snapshot whole again clears its mark. A bad manifest copy is
//! replaced by the catalog's.
//!
//! A pass walks sites and chunks in key order and records its cursor, so that a share
//! of the store can be checked per run (the scheduled worker covers the whole store over
//! `--verify-period`) and an interrupted pass resumes. Reads can be rate-limited.
//!
//! - [`check`]: checking one object, setting a bad one aside.
//! - [`worker`]: the scheduled verification.

pub mod check;
pub mod worker;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use nex_backup_shared::ids::ChunkId;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::catalog::integrity::{
    BadObject, DamageRecord, DamageSource, MAX_OBJECTS_PER_RECORD, VerifyState,
};
use crate::state::State;

/// Chunk records read per catalog page.
const PAGE: usize = 256;

/// What to verify.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// One site, or every site.
    pub site: Option<String>,
    /// Stop after this many chunks (a share of the store); the next run resumes.
    pub max_objects: Option<u64>,
    /// Read at most this many bytes per second.
    pub rate_bytes_per_sec: Option<u64>,
    /// Continue the recorded pass instead of starting a new one.
    pub resume: bool,
}

/// A bad object and the snapshots that need it.
#[derive(Debug, Clone)]
pub struct Finding {
    pub site: String,
    pub object: BadObject,
    /// (target, snapshot id) of every snapshot that needs it.
    pub snapshots: Vec<(String, String)>,
    /// A manifest copy replaced by the catalog's: nothing is lost.
    pub repaired: bool,
}

/// What a run found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub objects: u64,
    pub bytes: u64,
    pub findings: Vec<Finding>,
    /// (site, target, snapshot) newly marked damaged.
    pub marked: Vec<(String, String, String)>,
    /// (site, snapshot) whose damage mark was cleared: every object verified whole.
    pub healed: Vec<(String, String)>,
    /// The whole scope was checked (not stopped by `max_objects` or cancellation).
    pub complete: bool,
    pub sites: Vec<String>,
    pub duration_ms: u64,
}

/// Keeps reads under a byte rate.
struct Pace {
    rate: Option<u64>,
    started: Instant,
    bytes: u64,
}

impl Pace {
    async fn add(&mut self, bytes: u64) {
        self.bytes += bytes;
        if let Some(rate) = self.rate.filter(|r| *r > 0) {
            let due = Duration::from_secs_f64(self.bytes as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(self.started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Run a verification. Cancelling stops it at the next object; its cursor is kept.
pub async fn run(
    state: &State,
    scope: &Scope,
    cancel: &CancellationToken,
) -> anyhow::Result<Report> {
    let started = Instant::now();
    let sites = match &scope.site {
        Some(s) => vec![s.clone()],
        None => crate::state::enrolled_sites(state).await?,
    };
    // Only whole-store runs move the recorded pass; a one-site run leaves it alone.
    let track = scope.site.is_none();
    let mut vs = state.integrity.verify_state().await?;
    let resume_at = if track && scope.resume && vs.cursor_site.is_some() {
        vs.cursor_site.clone()
    } else {
        vs = VerifyState {
            v: 1,
            pass_started_unix_ms: nex_backup_shared::clock::now_ms(),
            last_complete_unix_ms: vs.last_complete_unix_ms,
            ..Default::default()
        };
        None
    };
    let mut report = Report {
        sites: sites.clone(),
        complete: true,
        ..Default::default()
    };
    let mut pace = Pace {
        rate: scope.rate_bytes_per_sec,
        started: Instant::now(),
        bytes: 0,
    };
    let mut budget = scope.max_objects.unwrap_or(u64::MAX);
    let first = resume_at
        .as_ref()
        .and_then(|s| sites.iter().position(|x| x >= s))
        .unwrap_or(0);
    for site in &sites[first..] {
        let after = if resume_at.as_deref() == Some(site.as_str()) {
            vs.cursor_chunk
                .as_deref()
                .and_then(|h| ChunkId::from_hex(h).ok())
        } else {
            None
        };
        let walk = Walk {
            state,
            site,
            cancel,
            track,
        };
        let (bad, finished) = walk
            .chunks(after, &mut budget, &mut pace, &mut vs, &mut report)
            .await?;
        walk.settle(bad, finished, &mut report).await?;
        if !finished {
            report.complete = false;
            break;
        }
    }
    if report.complete && scope.site.is_none() {
        vs.cursor_site = None;
        vs.cursor_chunk = None;
        vs.last_complete_unix_ms = Some(nex_backup_shared::clock::now_ms());
    }
    vs.bad += report.findings.iter().filter(|f| !f.repaired).count() as u64;
    if track {
        state.integrity.put_verify_state(&vs).await?;
    }
    state.durable().await?;
    report.duration_ms = started.elapsed().as_millis() as u64;
    state.events.publish(crate::events::Event::StoreVerified {
        objects: report.objects,
        bytes: report.bytes,
        bad: report.findings.len() as u64,
        damaged_snapshots: report.marked.len() as u64,
    });
    info!(
        objects = report.objects,
        bytes = report.bytes,
        bad = report.findings.len(),
        marked = report.marked.len(),
        healed = report.healed.len(),
        complete = report.complete,
        "store verification ran"
    );
    Ok(report)
}

/// One site's part of a run.
struct Walk<'a> {
    state: &'a State,
    site: &'a str,
    cancel: &'a CancellationToken,
    /// Record the cursor (whole-store runs).
    track: bool,
}

impl Walk<'_> {
    /// Check the site's chunks after `after`, within the budget. Returns the bad ones and
    /// whether the site was finished.
    async fn chunks(
        &self,
        mut after: Option<ChunkId>,
        budget: &mut u64,
        pace: &mut Pace,
        vs: &mut VerifyState,
        report: &mut Report,
    ) -> anyhow::Result<(HashMap<ChunkId, BadObject>, bool)> {
        let (state, site) = (self.state, self.site);
        let mut bad = HashMap::new();
        loop {
            if *budget == 0 || self.cancel.is_cancelled() {
                return Ok((bad, false));
            }
            let limit = PAGE.min(usize::try_from(*budget).unwrap_or(PAGE));
            let page = state
                .integrity
                .chunk_page(site, after.as_ref(), limit)
                .await?;
            if page.is_empty() {
                return Ok((bad, true));
            }
            for e in &page {
                if self.cancel.is_cancelled() {
                    return Ok((bad, false));
                }
                let checked = check::chunk(state, site, e).await?;
                report.objects += 1;
                report.bytes += checked.bytes;
                vs.objects += 1;
                vs.bytes += checked.bytes;
                *budget -= 1;
                if let Some(b) = checked.bad {
                    warn!(site, chunk = %e.id.short(), problem = %b.problem, "stored chunk failed verification");
                    bad.insert(e.id, b);
                }
                after = Some(e.id);
                pace.add(checked.bytes).await;
            }
            vs.cursor_site = Some(site.to_string());
            vs.cursor_chunk = after.map(|a| a.to_hex());
            if self.track {
                state.integrity.put_verify_state(vs).await?;
            }
        }
    }

    /// After the chunks: manifests (for a finished site), the snapshots that need a bad
    /// object, their marks, and the marks that can be cleared.
    async fn settle(
        &self,
        mut bad: HashMap<ChunkId, BadObject>,
        finished: bool,
        report: &mut Report,
    ) -> anyhow::Result<()> {
        let (state, site) = (self.state, self.site);
        // (target, snapshot) -> bad objects it needs
        let mut needs: BTreeMap<(String, String), Vec<BadObject>> = BTreeMap::new();
        let mut by_chunk: HashMap<ChunkId, Vec<(String, String)>> = HashMap::new();
        let mut after: Option<String> = None;
        loop {
            let page = state
                .integrity
                .refs_page(site, after.as_deref(), PAGE)
                .await?;
            let Some(last) = page.last() else { break };
            after = Some(last.0.clone());
            for (snap, target, ids) in page {
                let key = (target.clone(), snap.clone());
                let mut objs = vec![];
                if finished {
                    if let Some((obj, repaired)) = check::manifest(state, site, &snap).await? {
                        report.findings.push(Finding {
                            site: site.into(),
                            object: obj,
                            snapshots: vec![key.clone()],
                            repaired,
                        });
                    }
                    // Every referenced chunk must be recorded (a record forgotten by an
                    // earlier pass stays missing until a backup stores it again).
                    for id in state.catalog.missing_chunks(site, &ids).await? {
                        bad.entry(id).or_insert_with(|| BadObject {
                            key: crate::store::chunk_key(site, &id),
                            problem: "referenced but not stored".into(),
                            chunk: Some(id.to_hex()),
                        });
                    }
                }
                for id in &ids {
                    if let Some(b) = bad.get(id) {
                        objs.push(b.clone());
                        by_chunk.entry(*id).or_default().push(key.clone());
                    }
                }
                if !objs.is_empty() {
                    needs.insert(key, objs);
                }
            }
        }
        for (id, b) in &bad {
            report.findings.push(Finding {
                site: site.into(),
                object: b.clone(),
                snapshots: by_chunk.remove(id).unwrap_or_default(),
                repaired: false,
            });
            if b.problem != "referenced but not stored" {
                check::release_chunk(state, site, id).await?;
            }
        }
        self.mark(needs, report).await?;
        self.heal(report).await
    }

    async fn mark(
        &self,
        needs: BTreeMap<(String, String), Vec<BadObject>>,
        report: &mut Report,
    ) -> anyhow::Result<()> {
        let existing: HashMap<String, DamageRecord> = self
            .state
            .integrity
            .damages(Some(self.site))
            .await?
            .into_iter()
            .map(|d| (d.snapshot_id.clone(), d))
            .collect();
        for ((target, snap), mut objs) in needs {
            let mut rec = existing.get(&snap).cloned().unwrap_or(DamageRecord {
                v: 1,
                site: self.site.into(),
                target: target.clone(),
                snapshot_id: snap.clone(),
                found_unix_ms: nex_backup_shared::clock::now_ms(),
                source: DamageSource::Store,
                objects: vec![],
            });
            objs.retain(|o| !rec.objects.iter().any(|x| x.key == o.key));
            let fresh = !existing.contains_key(&snap);
            rec.objects.extend(objs);
            rec.objects.truncate(MAX_OBJECTS_PER_RECORD);
            self.state.integrity.put_damage(&rec).await?;
            if fresh {
                warn!(site = %self.site, target = %target, snapshot = %snap, "snapshot marked damaged");
                report.marked.push((self.site.into(), target, snap));
            }
        }
        Ok(())
    }

    /// Clear the marks of snapshots whose every listed object is whole again.
    async fn heal(&self, report: &mut Report) -> anyhow::Result<()> {
        let (state, site) = (self.state, self.site);
        for d in state.integrity.damages(Some(site)).await? {
            // Damage the agent found by decrypting is invisible to checksums: only a
            // later deep verification clears it.
            if d.source != DamageSource::Store {
                continue;
            }
            if report.marked.iter().any(|(_, _, s)| *s == d.snapshot_id) {
                continue;
            }
            let mut whole = !d.objects.is_empty();
            for o in &d.objects {
                let Some(id) = o.chunk.as_deref().and_then(|h| ChunkId::from_hex(h).ok()) else {
                    continue; // manifests are repaired from the catalog
                };
                let ok = match state.integrity.chunk_entry(site, &id).await? {
                    Some(e) => check::chunk(state, site, &e).await?.bad.is_none(),
                    None => false,
                };
                whole &= ok;
            }
            if whole && state.integrity.clear_damage(site, &d.snapshot_id).await? {
                info!(site, snapshot = %d.snapshot_id, "damaged snapshot is whole again");
                report.healed.push((site.into(), d.snapshot_id.clone()));
            }
        }
        Ok(())
    }
}
