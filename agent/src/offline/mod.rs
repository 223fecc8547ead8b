//! Restore without the controller: from a copy of its blob store and an offline recovery
//! key, on any host (enrolled or not). The store is self-describing: the sealed site keys
//! (`keys/`) open with the recovery key, the sealed manifests with the site keys, and the
//! manifests name the chunks.
//!
//! - [`store`]: the store copy (a directory or an S3 bucket) and its chunks as a
//!   restore source.
//! - [`unlock`], [`list`]: the snapshots a recovery key can open.
//! - [`to_file`], [`to_database`]: restore one snapshot, verified as a normal restore is.
//! - [`commands`]: the `snapshots` and `restore --store` commands: arguments and output.

pub mod commands;
pub mod store;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use nex_backup_shared::chunk::{ChunkCodec, DEFAULT_ZSTD_LEVEL};
use nex_backup_shared::ids::{SiteId, SnapshotId};
use nex_backup_shared::keyring::KeyRing;
use nex_backup_shared::manifest::{Manifest, STREAM_DATABASE, STREAM_GLOBALS};
use nex_backup_shared::pb;
use nex_backup_shared::recovery::{RecoverySecret, open_into_ring};
use nex_backup_shared::seal::Header;

use self::store::{SiteChunks, StoreCopy};
use crate::config::TargetConfig;
use crate::error::AgentError;
use crate::restore::feed::{FeedError, feed};

/// A site of the store copy whose keys the recovery key opened.
pub struct Unlocked {
    pub store: StoreCopy,
    pub site: SiteId,
    ring: KeyRing,
    /// The key epochs opened.
    pub epochs: Vec<u32>,
}

/// Read the recovery private key file.
pub fn read_secret(path: &Path) -> Result<RecoverySecret, AgentError> {
    RecoverySecret::read_file(path).map_err(|e| e.to_string().into())
}

/// Open the sealed keys of `site` held in the store with `secret`.
pub async fn unlock(
    store: &StoreCopy,
    site: &SiteId,
    secret: &RecoverySecret,
) -> Result<Unlocked, AgentError> {
    let sealed = store.sealed_keys(site).await?;
    let mut ring = KeyRing::new(site);
    let held_at = format!(" in the store copy {}", store.shown());
    let epochs = open_into_ring(
        site,
        sealed.iter().map(Vec::as_slice),
        secret,
        &mut ring,
        &held_at,
    )
    .map_err(|e| e.to_string())?;
    Ok(Unlocked {
        store: store.clone(),
        site: site.clone(),
        ring,
        epochs,
    })
}

impl Unlocked {
    /// Open the manifest of `snapshot`; returns it with the codec of its key epoch.
    pub async fn open(&self, snapshot: &SnapshotId) -> Result<(Manifest, ChunkCodec), AgentError> {
        let blob = self.store.manifest(&self.site, snapshot).await?;
        let what = format!("manifest of snapshot {snapshot}");
        let header = Header::parse(&blob, &what).map_err(|e| e.to_string())?;
        let key = self.ring.by_key_id(header.key_id).ok_or_else(|| {
            format!(
                "{what} is sealed with key {}, which the recovery key did not open (opened epochs {:?})",
                hex::encode(header.key_id),
                self.epochs
            )
        })?;
        let codec = ChunkCodec::new(key.derive(), DEFAULT_ZSTD_LEVEL);
        let m =
            Manifest::open(codec.keys(), &self.site, snapshot, &blob).map_err(|e| e.to_string())?;
        Ok((m, codec))
    }

    /// The snapshot `wanted` (an id, or `latest`: the newest of `target` in the store).
    /// It must belong to `target`.
    pub async fn pick(
        &self,
        target: &str,
        wanted: &str,
    ) -> Result<(Manifest, ChunkCodec), AgentError> {
        if wanted != "latest" {
            let id = SnapshotId::try_from(wanted).map_err(|e| e.to_string())?;
            let (m, codec) = self.open(&id).await?;
            if m.target != target {
                return Err(format!(
                    "snapshot {wanted} belongs to target {}, not {target}",
                    m.target
                )
                .into());
            }
            return Ok((m, codec));
        }
        // Ids sort by second only: the newest is the latest creation time.
        let mut best: Option<(u64, SnapshotId)> = None;
        for id in self.store.snapshot_ids(&self.site).await? {
            match self.open(&id).await {
                Ok((m, _)) if m.target == target => {
                    let key = (m.created_unix_ms, id);
                    if best.as_ref().is_none_or(|b| key > *b) {
                        best = Some(key);
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(snapshot = %id, error = %e, "skipping a snapshot that does not open")
                }
            }
        }
        match best {
            Some((_, id)) => self.open(&id).await,
            None => Err(format!(
                "no snapshot of target {target} of site {} opens in the store copy {}",
                self.site,
                self.store.shown()
            )
            .into()),
        }
    }

    /// The chunks of this site as a restore source.
    pub fn chunks(&self) -> Arc<SiteChunks> {
        Arc::new(SiteChunks {
            store: self.store.clone(),
            site: self.site.clone(),
        })
    }
}

/// One snapshot of a listing: its manifest, or why it did not open.
pub struct Listed {
    pub site: SiteId,
    pub snapshot: SnapshotId,
    pub manifest: Result<Manifest, AgentError>,
}

/// Every snapshot of `site` (or of every site) that the store copy holds, opened with
/// `secret`. A site whose keys the recovery key does not open is an error naming it.
pub async fn list(
    store: &StoreCopy,
    secret: &RecoverySecret,
    site: Option<&SiteId>,
) -> Result<Vec<Listed>, AgentError> {
    let sites = match site {
        Some(s) => vec![s.clone()],
        None => store.sites().await?,
    };
    let mut out = vec![];
    for site in &sites {
        let unlocked = unlock(store, site, secret).await?;
        for snapshot in store.snapshot_ids(site).await? {
            let manifest = unlocked.open(&snapshot).await.map(|(m, _)| m);
            out.push(Listed {
                site: site.clone(),
                snapshot,
                manifest,
            });
        }
    }
    Ok(out)
}

/// Where `--to-file OUT` puts the globals: beside the archive.
pub fn globals_path(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".globals.sql");
    PathBuf::from(name)
}

/// Write one stream to `path` through a temporary file, verified, then renamed into place.
async fn stream_to_file(
    src: &Arc<SiteChunks>,
    codec: &ChunkCodec,
    m: &Manifest,
    stream: &str,
    path: &Path,
) -> Result<(), AgentError> {
    let s = m
        .stream(stream)
        .ok_or_else(|| format!("snapshot {} has no {stream} stream", m.snapshot_id))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".partial");
    let tmp = PathBuf::from(tmp);
    let file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .await
        .map_err(|e| format!("create {}: {e}", tmp.display()))?;
    let result = async {
        let mut w = tokio::io::BufWriter::with_capacity(1 << 20, file);
        feed(src, codec, "offline", s, &mut w)
            .await
            .map_err(|e| match e {
                FeedError::Write(e) => format!("write {}: {e}", tmp.display()),
                FeedError::Data(e) | FeedError::Damaged(e) => e,
            })?;
        w.into_inner()
            .sync_all()
            .await
            .map_err(|e| format!("sync {}: {e}", tmp.display()))?;
        tokio::fs::rename(&tmp, path)
            .await
            .map_err(|e| format!("rename {} to {}: {e}", tmp.display(), path.display()))
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    result.map_err(AgentError::from)
}

/// Restore a snapshot as files a DBA can use by hand: the pg_dump custom archive at
/// `out` and `globals.sql` beside it. Nothing existing is overwritten; each file appears
/// only once its SHA-256 matched the manifest.
pub async fn to_file(
    u: &Unlocked,
    m: &Manifest,
    codec: &ChunkCodec,
    out: &Path,
) -> Result<String, AgentError> {
    let globals = globals_path(out);
    for p in [out, globals.as_path()] {
        if p.exists() {
            return Err(format!("{} already exists; choose another --to-file", p.display()).into());
        }
    }
    let src = u.chunks();
    stream_to_file(&src, codec, m, STREAM_DATABASE, out).await?;
    let mut note = format!(
        "wrote {} ({} bytes, SHA-256 verified)",
        out.display(),
        m.stream(STREAM_DATABASE).map_or(0, |s| s.length)
    );
    if m.stream(STREAM_GLOBALS).is_some() {
        stream_to_file(&src, codec, m, STREAM_GLOBALS, &globals).await?;
        note.push_str(&format!(" and {} (verified)", globals.display()));
    }
    Ok(note)
}

/// Restore a file or environment set snapshot into `dir`, every file checked against its
/// SHA-256; nothing lands outside `dir`, nothing existing is replaced without `overwrite`.
pub async fn to_dir(
    u: &Unlocked,
    m: &Manifest,
    codec: &ChunkCodec,
    dir: &Path,
    paths: &[String],
    overwrite: bool,
) -> Result<String, AgentError> {
    use crate::files::extract::{Plan, extract, selection};
    let dir = std::path::absolute(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let plan = Plan {
        dir: dir.clone(),
        only: selection(paths).map_err(|e| e.to_string())?,
        overwrite,
        entries: m
            .files
            .iter()
            .map(|e| (e.path.clone(), e.clone()))
            .collect(),
    };
    let src = u.chunks();
    let x = crate::files::jobs::through_archive(&src, codec, "offline", m, move |rd| {
        extract(rd, &plan)
    })
    .await?;
    let mut note = format!(
        "restored {} file(s) ({} bytes), {} dir(s), {} link(s) into {}, every file matched its SHA-256",
        x.files,
        x.bytes,
        x.dirs,
        x.links,
        dir.display()
    );
    if let Some((p, why)) = x.refused.first() {
        return Err(format!(
            "{note}; {} entr(ies) NOT restored, first {p}: {why}",
            x.refused.len()
        )
        .into());
    }
    note.push('.');
    Ok(note)
}

/// Restore a snapshot into database `cmd.to_database` on server `t`, verified like a
/// normal restore (every chunk and the stream digest, then every table's row count).
pub async fn to_database(
    u: &Unlocked,
    m: &Manifest,
    codec: &ChunkCodec,
    t: &TargetConfig,
    cmd: &pb::RestoreCommand,
) -> pb::JobResult {
    let started = std::time::Instant::now();
    let mut result = pb::JobResult {
        snapshot_id: m.snapshot_id.clone(),
        ..Default::default()
    };
    let job = format!("offline-{:08x}", rand::random::<u32>());
    let outcome =
        crate::restore::restore_into(&u.chunks(), codec, m, &job, t, cmd, &mut result).await;
    result.duration_ms = started.elapsed().as_millis() as u64;
    crate::restore::conclude(&mut result, outcome, &m.snapshot_id);
    result
}
