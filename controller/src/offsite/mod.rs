//! Off-site copies (3-2-1): the `offsite` worker replicates each site's sealed objects to
//! second stores (`serve --copy-to URL`, another bucket, another provider, the
//! customer's own disk). Only sealed objects travel; no key is needed, and a copy opens
//! with a recovery key alone (`nex-backup-agent restore --store`).
//!
//! The copy is self-describing, so that it keeps its own retention after the primary
//! has rotated a snapshot away: next to each copied manifest, `copyindex/<site>/<id>`
//! lists the chunks the snapshot needs. The site's sealed keys go first; per snapshot
//! the order is chunks, index, then the manifest: a manifest in the copy means the
//! snapshot is whole there.
//!
//! Retention of the copy ([`CopyKeep`]): the newest `last` snapshots of each target and
//! the newest of each of the last `monthly` months, judged over what the copy holds and
//! what the primary offers (good snapshots only). A snapshot leaving that plan is removed
//! from the copy manifest first; chunks no remaining index names are then removed once
//! older than the GC grace.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use nex_backup_shared::ids::ChunkId;
use tracing::{debug, info, warn};

use crate::state::State;
use crate::store::objectlock::ObjectLock;
use crate::store::{BlobStore, manifest_key};

mod index;
mod place;

use index::Index;
use place::{LockPass, Placer};

/// How much of a site the copy keeps.
#[derive(Debug, Clone, Copy)]
pub struct CopyKeep {
    pub last: usize,
    pub monthly: usize,
}

impl Default for CopyKeep {
    fn default() -> Self {
        CopyKeep {
            last: 3,
            monthly: 12,
        }
    }
}

/// One destination.
pub struct Destination {
    pub store: Arc<dyn BlobStore>,
    pub keep: CopyKeep,
    /// S3 Object Lock on this copy, when asked for.
    pub lock: Option<Arc<ObjectLock>>,
}

/// How far each copy is behind, by (destination, site): seconds between the newest good
/// snapshot of the primary and the newest one in the copy (0: up to date).
#[derive(Default)]
pub struct CopyLag {
    inner: Mutex<BTreeMap<(String, String), u64>>,
}

impl CopyLag {
    pub fn readings(&self) -> Vec<(String, String, u64)> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.iter()
            .map(|((d, s), v)| (d.clone(), s.clone(), *v))
            .collect()
    }

    fn set(&self, dest: &str, site: &str, secs: u64) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.insert((dest.into(), site.into()), secs);
    }
}

/// The time a snapshot id names (`20261130T155751Z-…`), in ms.
fn id_time_ms(id: &str) -> Option<u64> {
    let t = chrono::NaiveDateTime::parse_from_str(id.get(..16)?, "%Y%m%dT%H%M%SZ").ok()?;
    u64::try_from(t.and_utc().timestamp_millis()).ok()
}

/// (site, target) -> the good snapshots of the primary as (creation ms, id), oldest first.
type Primary = BTreeMap<(String, String), Vec<(u64, String)>>;

/// The snapshots of one target the copy keeps, of `ids` (sorted oldest first).
fn plan(ids: &[String], keep: CopyKeep) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = ids.iter().rev().take(keep.last).cloned().collect();
    let mut months: Vec<String> = vec![];
    for id in ids.iter().rev() {
        let month = id.get(..6).unwrap_or_default().to_string();
        if !months.contains(&month) {
            if months.len() == keep.monthly {
                break;
            }
            months.push(month);
            out.insert(id.clone());
        }
    }
    out
}

/// Start the `offsite` worker (runs on the leader, every `every`).
pub fn spawn(state: &Arc<State>, dests: Vec<Destination>, every: Duration, lag: Arc<CopyLag>) {
    if dests.is_empty() {
        return;
    }
    let (st, dests) = (state.clone(), Arc::new(dests));
    state.workers.periodic("offsite", every, None, move || {
        let (st, dests, lag) = (st.clone(), dests.clone(), lag.clone());
        async move {
            for d in dests.iter() {
                if let Some(l) = &d.lock {
                    // Never write a copy unlocked that was meant to be locked.
                    l.check_bucket().await?;
                }
                copy_all(&st, d, &lag).await?;
            }
            Ok::<(), anyhow::Error>(())
        }
    });
}

/// One pass over every site for one destination.
pub async fn copy_all(state: &State, d: &Destination, lag: &CopyLag) -> anyhow::Result<()> {
    let snaps = state.catalog.snapshots(None, None).await?;
    let jobs = state.catalog.jobs().await?;
    let holds = state.catalog.holds().await?;
    let damaged = crate::fleet::standing::load_damaged(&*state.integrity).await?;
    let standing = crate::fleet::standing::labels(&snaps, &jobs, &holds, &damaged);
    let mut primary = Primary::new();
    for s in &snaps {
        let good = standing
            .get(&(s.site.clone(), s.snapshot_id.clone()))
            .is_some_and(|l| matches!(*l, "good" | "verified"));
        if good {
            primary
                .entry((s.site.clone(), s.target.clone()))
                .or_default()
                .push((s.created_unix_ms, s.snapshot_id.clone()));
        }
    }
    let sites: BTreeSet<String> = primary.keys().map(|(s, _)| s.clone()).collect();
    for site in sites {
        copy_site(state, d, &site, &primary, lag).await?;
    }
    Ok(())
}

async fn copy_site(
    state: &State,
    d: &Destination,
    site: &str,
    primary: &Primary,
    lag: &CopyLag,
) -> anyhow::Result<()> {
    let dest = &*d.store;
    let now = nex_backup_shared::clock::now_ms();
    let placer = Placer {
        state,
        dest,
        lock: d.lock.as_deref().map(|l| LockPass::new(l, now)),
    };
    let copied = crate::store::list_keys(dest, &format!("manifests/{site}/")).await?;
    let copied: BTreeSet<String> = copied
        .iter()
        .filter_map(|k| k.rsplit('/').next().map(String::from))
        .collect();
    // What the copy holds: each copied snapshot's index (its chunks left out), and under
    // a lock, how long each chunk is locked as far as the indexes tell.
    let mut heads: BTreeMap<String, Index> = BTreeMap::new();
    let mut chunk_locks: HashMap<ChunkId, u64> = HashMap::new();
    for id in &copied {
        let mut ix = index::read(dest, site, id).await?.unwrap_or_default();
        if placer.lock.is_some() {
            for c in &ix.chunks {
                let e = chunk_locks.entry(*c).or_default();
                *e = (*e).max(ix.lock_until);
            }
        }
        ix.chunks = vec![];
        heads.insert(id.clone(), ix);
    }
    let by_target = by_target(site, primary, &heads);
    let wanted = keep_of(&by_target, d.keep, |_| true);
    let refs = snapshot_refs(state, site, &wanted, &copied).await?;
    for id in wanted
        .iter()
        .filter(|id| !copied.contains(*id) && !refs.contains_key(*id))
    {
        warn!(%site, snapshot = %id, copy = %dest.location(),
            "not copied off site: the catalog lists no chunks for it (older snapshots stay in the copy)");
    }
    // Kept snapshots whose lock runs short of a full period ahead.
    let stale: Vec<String> = match &placer.lock {
        Some(l) => heads
            .iter()
            .filter(|(id, h)| wanted.contains(*id) && h.lock_until < l.needed)
            .map(|(id, _)| id.clone())
            .collect(),
        None => vec![],
    };
    if !refs.is_empty() || !stale.is_empty() {
        // The site's sealed keys first: every copied manifest needs them.
        for k in crate::store::list_keys(&*state.store, &format!("keys/{site}/")).await? {
            placer.place(&k, 0).await?;
        }
    }
    for (id, (target, chunks)) in &refs {
        let created = by_target.get(target).and_then(|t| t.get(id)).copied();
        let what = Copied {
            id,
            target,
            created: created.unwrap_or(0),
        };
        copy_snapshot(&placer, site, &what, chunks, &mut chunk_locks).await?;
    }
    for id in &stale {
        relock_snapshot(&placer, site, id, &mut chunk_locks).await?;
    }
    // Retention of the copy: manifests first, then indexes, then unreferenced chunks.
    // A snapshot leaves only for newer ones the copy now holds (one the primary offers
    // but that is not in the copy does not count), and stays while its lock lasts, so
    // that the copy lists all it protects.
    let kept = keep_of(&by_target, d.keep, |id| {
        copied.contains(id) || refs.contains_key(id)
    });
    for id in copied.iter().filter(|id| !kept.contains(*id)) {
        let locked_until = heads.get(id).map_or(0, |h| h.lock_until);
        if locked_until > now {
            debug!(%site, snapshot = %id, locked_until, "kept in the off-site copy while its Object Lock lasts");
            continue;
        }
        dest.delete(&manifest_key(site, id)).await?;
        dest.delete(&index::key(site, id)).await?;
        info!(%site, snapshot = %id, copy = %dest.location(), "snapshot left the off-site copy by its retention");
    }
    collect_copy(state, dest, site).await?;
    record_lag(dest, site, primary, lag).await
}

/// Each target's snapshots of `site` (id -> creation ms), from the primary's good
/// snapshots and the copy's `heads`. The target and time come from the primary while it
/// still knows a snapshot, else from the copy's index (or the id's second).
fn by_target(
    site: &str,
    primary: &Primary,
    heads: &BTreeMap<String, Index>,
) -> BTreeMap<String, BTreeMap<String, u64>> {
    let mut out: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for ((_, t), ids) in primary.iter().filter(|((s, _), _)| s == site) {
        let e = out.entry(t.clone()).or_default();
        e.extend(ids.iter().map(|(ms, id)| (id.clone(), *ms)));
    }
    for (id, h) in heads {
        let ms = match h.created {
            0 => id_time_ms(id).unwrap_or(0),
            ms => ms,
        };
        out.entry(h.target.clone())
            .or_default()
            .entry(id.clone())
            .or_insert(ms);
    }
    out
}

/// The snapshots the copy keeps of `by_target`, among those `present`: [`plan`] per
/// target, ordered by creation time (ids alone name only the second).
fn keep_of(
    by_target: &BTreeMap<String, BTreeMap<String, u64>>,
    keep: CopyKeep,
    present: impl Fn(&str) -> bool,
) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for snaps in by_target.values() {
        let mut order: Vec<(u64, &String)> = snaps
            .iter()
            .filter(|(id, _)| present(id))
            .map(|(id, ms)| (*ms, id))
            .collect();
        order.sort();
        let ids: Vec<String> = order.into_iter().map(|(_, id)| id.clone()).collect();
        out.extend(plan(&ids, keep));
    }
    out
}

/// How far the copy of `site` is behind the primary.
async fn record_lag(
    dest: &dyn BlobStore,
    site: &str,
    primary: &Primary,
    lag: &CopyLag,
) -> anyhow::Result<()> {
    let newest_primary = primary
        .iter()
        .filter(|((s, _), _)| s == site)
        .filter_map(|(_, ids)| ids.last())
        .filter_map(|(_, id)| id_time_ms(id))
        .max()
        .unwrap_or(0);
    let newest_copy = crate::store::list_keys(dest, &format!("manifests/{site}/"))
        .await?
        .iter()
        .filter_map(|k| k.rsplit('/').next().and_then(id_time_ms))
        .max()
        .unwrap_or(0);
    lag.set(
        &dest.location(),
        site,
        newest_primary.saturating_sub(newest_copy) / 1000,
    );
    Ok(())
}

/// The chunks (and target) of each wanted snapshot not yet in the copy.
async fn snapshot_refs(
    state: &State,
    site: &str,
    wanted: &BTreeSet<String>,
    copied: &BTreeSet<String>,
) -> anyhow::Result<HashMap<String, (String, Vec<ChunkId>)>> {
    let mut out = HashMap::new();
    let mut after: Option<String> = None;
    loop {
        let page = state
            .integrity
            .refs_page(site, after.as_deref(), 100)
            .await?;
        let Some((last, _, _)) = page.last() else {
            return Ok(out);
        };
        after = Some(last.clone());
        for (id, target, chunks) in page {
            if wanted.contains(&id) && !copied.contains(&id) {
                out.insert(id, (target, chunks));
            }
        }
    }
}

/// The snapshot a copy is made of.
struct Copied<'a> {
    id: &'a str,
    target: &'a str,
    /// Its creation time as the primary recorded it (ms; 0: unknown).
    created: u64,
}

/// Copy one snapshot: its chunks, its index, then its manifest (a manifest in the copy
/// means the snapshot is whole there).
async fn copy_snapshot(
    placer: &Placer<'_>,
    site: &str,
    what: &Copied<'_>,
    chunks: &[ChunkId],
    chunk_locks: &mut HashMap<ChunkId, u64>,
) -> anyhow::Result<()> {
    let id = what.id;
    placer.place_chunks(site, chunks, chunk_locks).await?;
    let ix = Index {
        target: what.target.to_string(),
        lock_until: placer.lock.as_ref().map_or(0, |l| l.until),
        created: what.created,
        chunks: chunks.to_vec(),
    };
    placer.put(&index::key(site, id), ix.encode()).await?;
    let mkey = manifest_key(site, id);
    if placer.dest.exists(&mkey).await? {
        placer.place(&mkey, 0).await?;
    } else {
        let manifest = match placer.state.store.get(&mkey).await? {
            Some(m) => m,
            None => Bytes::from(
                placer
                    .state
                    .catalog
                    .manifest(site, id)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("snapshot {site}/{id} has no manifest"))?,
            ),
        };
        placer.put(&mkey, manifest).await?;
    }
    info!(%site, snapshot = %id, chunks = chunks.len(), copy = %placer.dest.location(), "snapshot copied off site");
    Ok(())
}

/// Extend the lock of a kept snapshot already in the copy: its chunks and manifest,
/// then its index, which records the new time.
async fn relock_snapshot(
    placer: &Placer<'_>,
    site: &str,
    id: &str,
    chunk_locks: &mut HashMap<ChunkId, u64>,
) -> anyhow::Result<()> {
    let Some(mut ix) = index::read(placer.dest, site, id).await? else {
        return Ok(());
    };
    placer.place_chunks(site, &ix.chunks, chunk_locks).await?;
    placer.place(&manifest_key(site, id), 0).await?;
    let Some(l) = &placer.lock else {
        return Ok(());
    };
    ix.lock_until = l.until;
    placer.put(&index::key(site, id), ix.encode()).await?;
    info!(%site, snapshot = %id, locked_until = l.until, copy = %placer.dest.location(), "Object Lock of a kept snapshot extended");
    Ok(())
}

/// Delete chunks of the copy no remaining index names, once older than the GC grace.
async fn collect_copy(state: &State, dest: &dyn BlobStore, site: &str) -> anyhow::Result<()> {
    let mut needed = std::collections::HashSet::new();
    for k in crate::store::list_keys(dest, &format!("copyindex/{site}/")).await? {
        let id = k.rsplit('/').next().unwrap_or_default();
        if let Some(ix) = index::read(dest, site, id).await? {
            needed.extend(ix.chunks);
        }
    }
    let old_before = nex_backup_shared::clock::now_ms().saturating_sub(state.gc_grace_ms);
    let prefix = format!("chunks/{site}/");
    let doomed: Vec<String> = dest
        .list(&prefix)
        .try_filter(|m| {
            let hex = m.key.rsplit('/').next().unwrap_or_default();
            let needed = ChunkId::from_hex(hex).is_ok_and(|id| needed.contains(&id));
            futures::future::ready(
                !needed && m.modified_unix_ms > 0 && m.modified_unix_ms < old_before,
            )
        })
        .map_ok(|m| m.key)
        .try_collect()
        .await?;
    for k in &doomed {
        dest.delete(k).await?;
    }
    if !doomed.is_empty() {
        info!(%site, chunks = doomed.len(), copy = %dest.location(), "chunks no copied snapshot needs removed from the off-site copy");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_keeps_the_newest_and_one_per_month() {
        let ids: Vec<String> = [
            "20260105T010000Z-a",
            "20260120T010000Z-b",
            "20260203T010000Z-c",
            "20260301T010000Z-d",
            "20260302T010000Z-e",
            "20260303T010000Z-f",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let p = plan(
            &ids,
            CopyKeep {
                last: 2,
                monthly: 2,
            },
        );
        let want: BTreeSet<String> = [
            "20260302T010000Z-e",
            "20260303T010000Z-f",
            "20260203T010000Z-c",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            p, want,
            "the two newest, and the newest of March and February"
        );
        assert_eq!(id_time_ms("20260105T010000Z-a"), Some(1_767_574_800_000));
    }

    #[test]
    fn two_snapshots_of_one_second_keep_their_order_and_absent_ones_displace_nothing() {
        // Same second: the later one's random suffix sorts first.
        let (older, newer) = ("20261202T012205Z-7bf0fc66", "20261202T012205Z-4ff19b43");
        let primary: Primary = [(
            ("acme".to_string(), "main".to_string()),
            vec![
                (1_764_638_525_300, older.to_string()),
                (1_764_638_525_900, newer.to_string()),
            ],
        )]
        .into();
        let copied = Index {
            target: "main".into(),
            ..Index::default()
        };
        let heads = [(older.to_string(), copied)].into();
        let targets = by_target("acme", &primary, &heads);
        let keep = CopyKeep {
            last: 1,
            monthly: 1,
        };
        let wanted = keep_of(&targets, keep, |_| true);
        assert_eq!(
            wanted,
            [newer.to_string()].into(),
            "the later one is copied"
        );
        let kept = keep_of(&targets, keep, |id| id == older);
        assert_eq!(
            kept,
            [older.to_string()].into(),
            "until the newer one is in the copy, the older one stays"
        );
    }
}
