//! The jobs on file and environment set snapshots: restore into a directory (a drill
//! restores into a scratch directory and removes it), `ls` and `diff`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use nex_backup_shared::chunk::ChunkCodec;
use nex_backup_shared::files::STREAM_FILES;
use nex_backup_shared::manifest::{Manifest, StreamEntry};
use nex_backup_shared::pb;
use tokio_util::io::SyncIoBridge;

use super::extract::{Extracted, Plan, extract, selection};
use super::inspect::{diff_lines, is_env_file, ls_line};
use crate::ctx::Ctx;
use crate::error::AgentError;
use crate::restore::feed::{ChunkSource, feed};

/// Most output lines one job returns.
pub const MAX_LINES: usize = 100_000;
/// Largest `.env` content a diff reads.
const MAX_ENV_FILE: usize = 1 << 20;

/// Run a restore command on a file or environment set snapshot.
pub async fn run(ctx: &Arc<Ctx>, job_id: &str, cmd: &pb::RestoreCommand) -> pb::JobResult {
    let started = Instant::now();
    let mut r = pb::JobResult {
        snapshot_id: cmd.snapshot_id.clone(),
        ..Default::default()
    };
    let outcome = if cmd.list_only {
        list(ctx, cmd, &mut r).await
    } else if !cmd.diff_against.is_empty() {
        diff(ctx, job_id, cmd, &mut r).await
    } else {
        to_dir(ctx, job_id, cmd, &mut r).await
    };
    match outcome {
        Ok(()) => r.ok = r.error.is_empty(),
        Err(e) => r.error = format!("snapshot {}: {e}", cmd.snapshot_id),
    }
    r.lines.truncate(MAX_LINES);
    r.duration_ms = started.elapsed().as_millis() as u64;
    r
}

pub fn files_stream(m: &Manifest) -> Result<&StreamEntry, AgentError> {
    m.stream(STREAM_FILES).ok_or_else(|| {
        format!(
            "snapshot {} of {} holds no files (a database target: restore it with --to-database)",
            m.snapshot_id, m.target
        )
        .into()
    })
}

/// Feed the archive of `m` to `work` running on a blocking thread; both must succeed.
pub async fn through_archive<S: ChunkSource, T: Send + 'static>(
    ctx: &Arc<S>,
    codec: &ChunkCodec,
    job_id: &str,
    m: &Manifest,
    work: impl FnOnce(&mut dyn Read) -> std::io::Result<T> + Send + 'static,
) -> Result<T, AgentError> {
    let s = files_stream(m)?;
    let (w, r) = tokio::io::duplex(1 << 20);
    let mut reader = SyncIoBridge::new(r);
    let worker = tokio::task::spawn_blocking(move || {
        let out = work(&mut reader)?;
        // The tar end marker may be followed by padding: read it all.
        std::io::copy(&mut reader, &mut std::io::sink())?;
        Ok::<T, std::io::Error>(out)
    });
    let fed = feed(ctx, codec, job_id, s, w).await;
    let done = worker
        .await
        .map_err(|e| AgentError::from(format!("archive worker: {e}")))?;
    let out = done.map_err(|e| format!("read the archive: {e}"))?;
    fed.map_err(|e| AgentError::from(e.to_string()))?;
    Ok(out)
}

async fn to_dir(
    ctx: &Arc<Ctx>,
    job_id: &str,
    cmd: &pb::RestoreCommand,
    r: &mut pb::JobResult,
) -> Result<(), AgentError> {
    if cmd.to_dir.is_empty() && !cmd.drill {
        return Err(format!(
            "target {} is a file or environment set: restore it with --to-dir DIR",
            cmd.target
        )
        .into());
    }
    let (m, codec) = crate::restore::fetch_manifest(ctx, cmd).await?;
    let dir = if cmd.drill {
        ctx.cfg.state_dir.join("drills").join(job_id)
    } else {
        PathBuf::from(&cmd.to_dir)
    };
    if !dir.is_absolute() {
        return Err(format!("--to-dir {} is not an absolute path", dir.display()).into());
    }
    let plan = Plan {
        dir: dir.clone(),
        only: selection(&cmd.paths).map_err(|e| e.to_string())?,
        overwrite: cmd.overwrite,
        entries: m
            .files
            .iter()
            .map(|e| (e.path.clone(), e.clone()))
            .collect::<HashMap<_, _>>(),
    };
    r.logical_bytes = m.logical_bytes();
    let extracted = match few_files(&m, &plan) {
        Some(picked) => one_by_one(ctx, &codec, &m, &plan, picked).await,
        None => through_archive(ctx, &codec, job_id, &m, move |rd| extract(rd, &plan)).await,
    };
    if cmd.drill
        && let Err(e) = std::fs::remove_dir_all(&dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %dir.display(), error = %e, "could not remove the drill's scratch directory");
    }
    let x: Extracted = extracted?;
    r.stream_hash_ok = true;
    let problems: Vec<&(String, String)> = x
        .refused
        .iter()
        .filter(|(_, why)| !(cmd.drill && why.starts_with("not restorable")))
        .collect();
    r.note = format!(
        "restored {} file(s) ({} bytes), {} dir(s), {} link(s) into {}{}",
        x.files,
        x.bytes,
        x.dirs,
        x.links,
        dir.display(),
        if cmd.drill {
            " (drill: removed again)"
        } else {
            ""
        }
    );
    r.lines = x
        .refused
        .iter()
        .map(|(p, why)| format!("{p}: {why}"))
        .collect();
    if !problems.is_empty() {
        r.error = format!(
            "{} entr(ies) not restored, first {}: {}",
            problems.len(),
            problems[0].0,
            problems[0].1
        );
    }
    Ok(())
}

/// Files a `--path` selection picks, when they are few regular files read faster from
/// their own chunks than by a pass over the whole archive.
fn few_files<'a>(
    m: &'a Manifest,
    plan: &Plan,
) -> Option<Vec<&'a nex_backup_shared::files::FileEntry>> {
    let only = plan.only.as_ref()?;
    let picked: Vec<_> = m.files.iter().filter(|e| only.is_match(&e.path)).collect();
    let small = picked.len() <= 100
        && picked.iter().all(|e| {
            e.is_file()
                && e.stored()
                && e.size <= MAX_ONE_FILE
                && (e.data_offset > 0 || e.size == 0)
        });
    small.then_some(picked)
}

/// Largest file a `--path` restore reads on its own.
const MAX_ONE_FILE: u64 = 64 << 20;

async fn one_by_one(
    ctx: &Arc<Ctx>,
    codec: &ChunkCodec,
    m: &Manifest,
    plan: &Plan,
    picked: Vec<&nex_backup_shared::files::FileEntry>,
) -> Result<Extracted, AgentError> {
    let s = files_stream(m)?;
    let mut out = Extracted::default();
    std::fs::create_dir_all(&plan.dir)
        .map_err(|e| format!("create {}: {e}", plan.dir.display()))?;
    for e in picked {
        let content = super::range::read_file(ctx, codec, s, e, MAX_ONE_FILE).await?;
        super::extract::place_file(plan, e, &content, &mut out)
            .map_err(|err| format!("write {}: {err}", e.path))?;
    }
    Ok(out)
}

async fn list(
    ctx: &Arc<Ctx>,
    cmd: &pb::RestoreCommand,
    r: &mut pb::JobResult,
) -> Result<(), AgentError> {
    let (m, _) = crate::restore::fetch_manifest(ctx, cmd).await?;
    files_stream(&m)?;
    r.lines = m.files.iter().map(ls_line).collect();
    let stored = m.files.iter().filter(|e| e.stored()).count();
    r.note = format!(
        "{} entr(ies), {} not stored, {} bytes in the archive",
        m.files.len(),
        m.files.len() - stored,
        m.logical_bytes()
    );
    r.logical_bytes = m.logical_bytes();
    Ok(())
}

async fn diff(
    ctx: &Arc<Ctx>,
    _job_id: &str,
    cmd: &pb::RestoreCommand,
    r: &mut pb::JobResult,
) -> Result<(), AgentError> {
    let (a, ca) = crate::restore::fetch_manifest(ctx, cmd).await?;
    let other = pb::RestoreCommand {
        snapshot_id: cmd.diff_against.clone(),
        ..cmd.clone()
    };
    let (b, cb) = crate::restore::fetch_manifest(ctx, &other).await?;
    // Changed `.env`-like files: their keys are compared, so both contents are read.
    let bm: HashMap<&str, _> = b
        .files
        .iter()
        .map(|e| (e.path.as_str(), e.sha256))
        .collect();
    let wanted: HashSet<String> = a
        .files
        .iter()
        .filter(|e| is_env_file(&e.path) && bm.get(e.path.as_str()).is_some_and(|s| *s != e.sha256))
        .map(|e| e.path.clone())
        .collect();
    // Each is read from the chunks that hold it, not the whole archive.
    let mut contents = BTreeMap::new();
    for (side, m, codec) in [(false, &a, &ca), (true, &b, &cb)] {
        let s = files_stream(m)?;
        for e in m
            .files
            .iter()
            .filter(|e| wanted.contains(&e.path) && e.stored())
        {
            let c = super::range::read_file(ctx, codec, s, e, MAX_ENV_FILE as u64).await?;
            contents.insert((side, e.path.clone()), c);
        }
    }
    r.lines = diff_lines(&a.files, &b.files, &contents);
    r.note = format!(
        "{} -> {}: {} difference(s)",
        a.snapshot_id,
        b.snapshot_id,
        r.lines.iter().filter(|l| !l.starts_with("    ")).count()
    );
    Ok(())
}
