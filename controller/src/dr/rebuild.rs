//! `nex-backup restore-controller`: build a working controller data dir from a copy of
//! the blob store and a recovery key. The newest state copy that opens gives the CA and
//! server keys (agents reconnect with their certificates), the admin credentials and the
//! controller's records; the snapshot and chunk records are rebuilt from the store: every
//! chunk is recorded with the checksum of what is stored now, every manifest opened with
//! the site keys (sealed in the store to the recovery key) and committed again.

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use nex_backup_shared::ids::{ChunkId, SiteId, SnapshotId};
use nex_backup_shared::keyring::KeyRing;
use nex_backup_shared::manifest::Manifest;
use nex_backup_shared::recovery::{RecoverySecret, open_into_ring, sealed_info};
use nex_backup_shared::seal::Header;
use sha2::{Digest, Sha256};

use super::{PREFIX, StateCopy};
use crate::catalog::integrity::IntegrityCatalog;
use crate::catalog::sled_catalog::SledCatalog;
use crate::catalog::trust::SealedKeyRecord;
use crate::catalog::{
    Catalog, CatalogError, JobKind, JobRecord, JobState, NewSnapshot, SnapshotRecord, Trigger,
};

/// What `restore-controller` did, for the operator.
#[derive(Debug, Default)]
pub struct Rebuilt {
    pub copy_key: String,
    pub copy_made_unix_ms: u64,
    pub sites: usize,
    pub chunks: u64,
    pub snapshots: u64,
    /// Snapshots no job of the copy accounts for (made after it): given a job record.
    pub without_job: u64,
    /// What could not be rebuilt, one line each.
    pub lost: Vec<String>,
}

/// The blobs root of a store copy (its `blobs` directory or the data dir above it).
fn blobs_root(store: &Path) -> anyhow::Result<PathBuf> {
    for p in [store.to_path_buf(), store.join("blobs")] {
        if p.join("manifests").is_dir() || p.join(PREFIX).is_dir() {
            return Ok(p);
        }
    }
    bail!(
        "{} is not a copy of a NEX blob store (no manifests/ or controller/state/ in it)",
        store.display()
    )
}

/// Copy (hard-link when possible) every blob of `from` into `to`.
fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<u64> {
    std::fs::create_dir_all(to).with_context(|| format!("create {}", to.display()))?;
    let mut n = 0;
    for e in std::fs::read_dir(from).with_context(|| format!("read {}", from.display()))? {
        let e = e?;
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if e.file_type()?.is_dir() {
            n += copy_tree(&src, &dst)?;
        } else if !e.file_name().to_string_lossy().contains(".tmp.") {
            if std::fs::hard_link(&src, &dst).is_err() {
                std::fs::copy(&src, &dst)
                    .with_context(|| format!("copy {} to {}", src.display(), dst.display()))?;
            }
            n += 1;
        }
    }
    Ok(n)
}

/// The newest state copy in `root` that `secret` opens.
fn newest_copy(root: &Path, secret: &RecoverySecret) -> anyhow::Result<(String, StateCopy)> {
    let dir = root.join(PREFIX);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("no controller state copy in the store ({})", dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.contains(".tmp."))
        .collect();
    names.sort();
    let mut errors = vec![];
    for name in names.iter().rev() {
        let blob = std::fs::read(dir.join(name))?;
        match nex_backup_shared::statecopy::open_state(name, &blob, secret) {
            Ok(json) => {
                let copy: StateCopy = serde_json::from_slice(&json)
                    .with_context(|| format!("state copy {name} does not parse"))?;
                return Ok((format!("{PREFIX}{name}"), copy));
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    bail!(
        "no controller state copy in {} opens with this recovery key ({} tried): {}",
        dir.display(),
        names.len(),
        errors.first().map_or("none found", String::as_str)
    )
}

/// Write the copied files (CA, server keys, admin credential) into the new data dir.
fn write_files(copy: &StateCopy, data_dir: &Path) -> anyhow::Result<()> {
    for (rel, b64) in &copy.files {
        let known = super::FILES.contains(&rel.as_str());
        let clean = Path::new(rel)
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
        if !known || !clean {
            bail!("state copy names an unexpected file {rel:?}; refused");
        }
        let path = data_dir.join(rel);
        std::fs::create_dir_all(path.parent().expect("has a parent"))?;
        let bytes = B64
            .decode(b64)
            .with_context(|| format!("state copy file {rel}"))?;
        nex_backup_shared::keyring::write_private_file(&path, &bytes)
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

/// Put the copy's records into the new catalog.
async fn write_records(
    copy: &StateCopy,
    cat: &SledCatalog,
    ints: &dyn IntegrityCatalog,
) -> anyhow::Result<()> {
    let alerts = cat.alerts()?;
    use crate::catalog::alerts::AlertCatalog;
    for a in &copy.admins {
        cat.put_admin(a).await?;
    }
    for a in &copy.accounts {
        cat.put_account(a).await?;
    }
    for i in &copy.identities {
        cat.put_identity(i).await?;
    }
    for a in &copy.agents {
        cat.put_agent(a).await?;
    }
    for p in &copy.policies {
        cat.put_policy(p).await?;
    }
    for p in &copy.site_policies {
        cat.put_site_policy(p).await?;
    }
    for h in &copy.holds {
        cat.put_hold(h).await?;
    }
    for j in &copy.jobs {
        cat.put_job(j).await?;
    }
    for e in &copy.audit {
        cat.put_audit(e).await?;
    }
    for d in &copy.damages {
        ints.put_damage(d).await?;
    }
    for c in &copy.channels {
        alerts.put_channel(c).await?;
    }
    for r in &copy.rules {
        alerts.put_rule(r).await?;
    }
    alerts.put_summary(copy.summary.as_ref()).await?;
    Ok(())
}

/// The controller's own time of a snapshot: the dispatch time in its id.
fn id_time_ms(id: &str) -> Option<u64> {
    let ts = id.get(..16)?;
    let dt = jiff::civil::DateTime::strptime("%Y%m%dT%H%M%SZ", ts).ok()?;
    let t = dt.to_zoned(jiff::tz::TimeZone::UTC).ok()?.timestamp();
    u64::try_from(t.as_millisecond()).ok()
}

/// Record every chunk file of `site` with its size and current checksum.
fn chunk_files(
    root: &Path,
    site: &str,
    out: &mut Vec<(ChunkId, u32, [u8; 32])>,
) -> anyhow::Result<()> {
    let dir = root.join("chunks").join(site);
    let Ok(prefixes) = std::fs::read_dir(&dir) else {
        return Ok(());
    };
    for p in prefixes {
        for f in std::fs::read_dir(p?.path())? {
            let f = f?;
            let name = f.file_name().to_string_lossy().into_owned();
            let Ok(id) = ChunkId::from_hex(&name) else {
                continue;
            };
            let bytes = std::fs::read(f.path())?;
            out.push((id, bytes.len() as u32, Sha256::digest(&bytes).into()));
        }
    }
    Ok(())
}

/// Rebuild one site: sealed keys, chunk records, snapshots.
async fn rebuild_site(
    root: &Path,
    site: &SiteId,
    secret: &RecoverySecret,
    cat: &SledCatalog,
    jobs: &HashSet<(String, String)>,
    out: &mut Rebuilt,
) -> anyhow::Result<()> {
    let keys_dir = root.join("keys").join(&**site);
    let mut sealed = vec![];
    if let Ok(rd) = std::fs::read_dir(&keys_dir) {
        for f in rd {
            let path = f?.path();
            let blob = std::fs::read(&path)?;
            let info = match sealed_info(&blob) {
                Ok(info) => info,
                Err(e) => {
                    out.lost
                        .push(format!("sealed key {}: {e}; skipped", path.display()));
                    continue;
                }
            };
            cat.put_sealed_key(&SealedKeyRecord {
                site: site.to_string(),
                epoch: info.epoch,
                key_id: info.key_id,
                recipient: info.recipient,
                blob: blob.clone(),
            })
            .await?;
            sealed.push(blob);
        }
    }
    let mut ring = KeyRing::new(site);
    let held = format!(" in {}", keys_dir.display());
    if let Err(e) = open_into_ring(
        site,
        sealed.iter().map(Vec::as_slice),
        secret,
        &mut ring,
        &held,
    ) {
        out.lost
            .push(format!("site {site}: its snapshots cannot be opened: {e}"));
        return Ok(());
    }
    let mut chunks = vec![];
    chunk_files(root, site, &mut chunks)?;
    let sizes: std::collections::HashMap<ChunkId, u32> =
        chunks.iter().map(|(id, len, _)| (*id, *len)).collect();
    for (id, len, sum) in &chunks {
        cat.record_chunk(site, id, *len, sum).await?;
    }
    out.chunks += chunks.len() as u64;
    drop(chunks);
    let mdir = root.join("manifests").join(&**site);
    let mut ids: Vec<String> = std::fs::read_dir(&mdir)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| SnapshotId::try_from(n.as_str()).is_ok())
        .collect();
    ids.sort();
    for id in ids {
        let blob = std::fs::read(mdir.join(&id))?;
        let opened = Header::parse(&blob, "manifest")
            .ok()
            .and_then(|h| ring.by_key_id(h.key_id))
            .ok_or_else(|| "sealed with a key the recovery key does not open".to_string())
            .and_then(|k| Manifest::open(&k.derive(), site, &id, &blob).map_err(|e| e.to_string()));
        let m = match opened {
            Ok(m) => m,
            Err(e) => {
                out.lost
                    .push(format!("snapshot {site}/{id}: manifest does not open: {e}"));
                continue;
            }
        };
        let chunk_ids: Vec<ChunkId> = m.chunk_ids().copied().collect();
        let distinct: HashSet<ChunkId> = chunk_ids.iter().copied().collect();
        let at = id_time_ms(&id).unwrap_or(m.created_unix_ms);
        let created = m.created_unix_ms.clamp(at, at + 86_400_000);
        let job_id = if jobs.contains(&(site.to_string(), id.clone())) {
            None
        } else {
            Some(format!("recovered-{id}"))
        };
        let record = SnapshotRecord {
            v: 1,
            site: site.to_string(),
            target: m.target.clone(),
            snapshot_id: id.clone(),
            job_id: job_id.clone().unwrap_or_default(),
            created_unix_ms: created,
            committed_unix_ms: created,
            logical_bytes: m.logical_bytes(),
            stored_bytes: distinct
                .iter()
                .filter_map(|c| sizes.get(c))
                .map(|l| u64::from(*l))
                .sum(),
            new_bytes: 0,
            duration_ms: m.duration_ms,
            chunks: distinct.len() as u64,
        };
        let snap = NewSnapshot {
            record,
            manifest: blob,
            chunk_ids,
            settles: None,
        };
        match cat.commit_snapshot(snap).await {
            Ok(_) => out.snapshots += 1,
            Err(CatalogError::MissingChunks { missing, first, .. }) => {
                out.lost.push(format!(
                    "snapshot {site}/{id}: {missing} chunk(s) it needs are not in the store (first {first}); not rebuilt"
                ));
                continue;
            }
            Err(e) => return Err(e.into()),
        }
        if let Some(job_id) = job_id {
            // Made after the state copy: committed by a job whose record is lost. Its
            // manifest copy is written only by a commit, so it counts as a backup.
            cat.put_job(&JobRecord {
                v: 1,
                job_id,
                site: site.to_string(),
                target: m.target.clone(),
                kind: JobKind::Backup,
                state: JobState::Succeeded,
                started_unix_ms: created,
                ended_unix_ms: Some(created),
                error: None,
                snapshot_id: Some(id.clone()),
                trigger: Trigger::Manual,
                logical_bytes: m.logical_bytes(),
                new_bytes: 0,
                agent_id: String::new(),
                expected_snapshot: Some(id.clone()),
            })
            .await?;
            out.without_job += 1;
        }
    }
    Ok(())
}

/// Build a controller data dir at `data_dir` (new or empty) from the store copy at
/// `store`, with the recovery private key `secret`.
pub async fn restore_controller(
    store: &Path,
    secret: &RecoverySecret,
    data_dir: &Path,
) -> anyhow::Result<Rebuilt> {
    if data_dir.exists() && std::fs::read_dir(data_dir)?.next().is_some() {
        bail!(
            "{} is not empty; restore-controller builds a new data dir and never overwrites one",
            data_dir.display()
        );
    }
    let root = blobs_root(store)?;
    let (copy_key, copy) = newest_copy(&root, secret)?;
    crate::datadir::prepare(data_dir)?;
    write_files(&copy, data_dir)?;
    let blobs = data_dir.join("blobs");
    copy_tree(&root, &blobs).context("copy the store")?;
    let cat = SledCatalog::open(&data_dir.join("catalog"))?;
    let ints = cat.integrity()?;
    write_records(&copy, &cat, &ints).await?;
    let jobs: HashSet<(String, String)> = copy
        .jobs
        .iter()
        .filter(|j| j.kind == JobKind::Backup && j.state == JobState::Succeeded)
        .filter_map(|j| Some((j.site.clone(), j.snapshot_id.clone()?)))
        .collect();
    let mut out = Rebuilt {
        copy_key,
        copy_made_unix_ms: copy.made_unix_ms,
        ..Default::default()
    };
    let mut sites: Vec<String> = std::fs::read_dir(blobs.join("manifests"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    sites.sort();
    for s in sites {
        let Ok(site) = SiteId::try_from(s.as_str()) else {
            continue;
        };
        rebuild_site(&blobs, &site, secret, &cat, &jobs, &mut out).await?;
        out.sites += 1;
    }
    cat.flush().await?;
    Ok(out)
}
