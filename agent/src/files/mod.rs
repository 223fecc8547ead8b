//! File and environment sets: backing up configuration files, `.env` files and
//! environment variables as a pax tar stream through the same chunk, dedup, compress and
//! encrypt pipeline as a database; restoring them into a directory; listing and diffing
//! snapshots.
//!
//! - [`archive`]: writing the archive and its per-file entries.
//! - [`extract`]: restoring an archive into a directory, refusing what would land outside.
//! - [`inspect`]: `ls` and `diff` (keys of `.env` files and environments, values masked).
//! - [`jobs`]: the restore, drill, `ls` and `diff` jobs on set snapshots.
//! - [`range`]: one file from only the chunks that hold it.
//! - [`platform`]: archive paths, modes, links on Unix and (unverified) Windows.
//! - [`owners`]: owner and group names.

pub mod archive;
pub mod extract;
pub mod inspect;
pub mod jobs;
pub mod owners;
pub mod platform;
pub mod range;

use std::sync::Arc;
use std::time::Instant;

use nex_backup_shared::files::STREAM_FILES;
use nex_backup_shared::manifest::{Manifest, SourceInfo};
use tokio_util::io::SyncIoBridge;

use crate::backup::pipeline::{JobRef, upload_stream};
use crate::config::SetSpec;
use crate::ctx::Ctx;
use crate::error::AgentError;

/// Pipe buffer between the archive writer and the upload.
const PIPE: usize = 1 << 20;

/// The environment variables an env set names, as a `.env` text (sorted).
pub fn environment(patterns: &[String]) -> Vec<u8> {
    let mut vars: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| {
            patterns.iter().any(|p| match p.strip_suffix('*') {
                Some(prefix) => k.starts_with(prefix),
                None => k == p,
            })
        })
        .collect();
    vars.sort();
    let mut out = String::new();
    for (k, v) in vars {
        out.push_str(&format!("{k}={}\n", inspect::quote(&v)));
    }
    out.into_bytes()
}

/// Back up a file or environment set; returns the logical size and a note (partial).
pub async fn backup(
    ctx: &Arc<Ctx>,
    job: &JobRef,
    spec: SetSpec,
    started_ms: u64,
) -> Result<(u64, String), AgentError> {
    let started = Instant::now();
    let env = (spec.kind == "env").then(|| environment(&spec.variables));
    let (w, r) = tokio::io::duplex(PIPE);
    let bridge = SyncIoBridge::new(w);
    let writer_spec = spec.clone();
    let writer = tokio::task::spawn_blocking(move || archive::write(&writer_spec, env, bridge));
    let what = format!("archive of {} set {}", spec.kind, spec.name);
    let uploaded = upload_stream(ctx, job, STREAM_FILES, what, r).await;
    let written = writer
        .await
        .map_err(|e| AgentError::from(format!("archive worker: {e}")))?;
    let stream = uploaded?;
    let archived = written.map_err(|e| format!("set {}: write the archive: {e}", spec.name))?;
    let failed: Vec<String> = archived
        .entries
        .iter()
        .filter(|e| !e.error.is_empty() && !e.error.starts_with("skipped:"))
        .take(3)
        .map(|e| format!("{}: {}", e.path, e.error))
        .collect();
    if spec.fail_on_unreadable && archived.unreadable > 0 {
        return Err(format!(
            "set {}: {} file(s) could not be read (fail_on_unreadable): {}",
            spec.name,
            archived.unreadable,
            failed.join("; ")
        )
        .into());
    }
    let changed = archived.entries.iter().filter(|e| e.changed).count();
    let mut notes = vec![];
    if archived.unreadable > 0 {
        notes.push(format!(
            "partial: {} file(s) could not be read ({})",
            archived.unreadable,
            failed.join("; ")
        ));
    }
    if changed > 0 {
        notes.push(format!(
            "{changed} file(s) changed while they were read (flagged)"
        ));
    }
    if archived.skipped_large > 0 {
        notes.push(format!(
            "{} file(s) over max_file_size_mib skipped",
            archived.skipped_large
        ));
    }
    let manifest = Manifest {
        site: ctx.site().into(),
        target: spec.name.clone(),
        snapshot_id: job.snapshot_id.clone(),
        created_unix_ms: started_ms,
        streams: vec![stream],
        row_counts: vec![],
        row_counts_from_dump: false,
        source: SourceInfo {
            kind: spec.kind.into(),
            agent_version: nex_backup_shared::VERSION.into(),
            host: ctx.agent_id.clone(),
            ..Default::default()
        },
        duration_ms: started.elapsed().as_millis() as u64,
        files: archived.entries,
    };
    crate::backup::commit(ctx, job, &manifest, started_ms).await?;
    Ok((manifest.logical_bytes(), notes.join("; ")))
}
