//! Deep verification of a snapshot (`nex-backup verify --deep`): fetch the manifest and
//! every chunk, decrypt and check each (GCM tag, decompression, length, HMAC id) and each
//! stream's SHA-256, and write nothing anywhere. It tells damaged data (`data_damaged`)
//! apart from a job that could not run (network, missing key).

use std::sync::Arc;
use std::time::Instant;

use nex_backup_shared::manifest::Manifest;
use nex_backup_shared::pb;
use nex_backup_shared::seal::Header;

use super::feed::{FeedError, feed};
use crate::ctx::Ctx;

/// Run a deep verification and describe the outcome.
pub async fn run(ctx: &Arc<Ctx>, job_id: &str, cmd: &pb::RestoreCommand) -> pb::JobResult {
    let started = Instant::now();
    let mut r = pb::JobResult {
        snapshot_id: cmd.snapshot_id.clone(),
        ..Default::default()
    };
    if let Err((damaged, e)) = check(ctx, job_id, cmd, &mut r).await {
        r.data_damaged = damaged;
        r.error = format!("verify snapshot {}: {e}", cmd.snapshot_id);
    } else {
        r.ok = true;
        r.stream_hash_ok = true;
    }
    r.duration_ms = started.elapsed().as_millis() as u64;
    r
}

/// `Err((damaged, why))`: `damaged` when the data itself failed.
async fn check(
    ctx: &Arc<Ctx>,
    job_id: &str,
    cmd: &pb::RestoreCommand,
    r: &mut pb::JobResult,
) -> Result<(), (bool, String)> {
    let blob = super::manifest_blob(ctx, &cmd.snapshot_id)
        .await
        .map_err(|e| (false, e.to_string()))?;
    let what = format!("manifest of snapshot {}", cmd.snapshot_id);
    let header = Header::parse(&blob, &what).map_err(|e| (true, e.to_string()))?;
    let codec = ctx
        .codec_for(header.key_id)
        .map_err(|e| (false, e.to_string()))?;
    let m = Manifest::open(codec.keys(), ctx.site(), &cmd.snapshot_id, &blob)
        .map_err(|e| (true, e.to_string()))?;
    if m.target != cmd.target {
        return Err((
            true,
            format!(
                "snapshot belongs to target {}, not {}",
                m.target, cmd.target
            ),
        ));
    }
    r.logical_bytes = m.logical_bytes();
    for s in &m.streams {
        match feed(ctx, &codec, job_id, s, tokio::io::sink()).await {
            Ok(()) => {}
            Err(FeedError::Damaged(e)) => return Err((true, format!("{}: {e}", s.name))),
            Err(e) => return Err((false, format!("{}: {e}", s.name))),
        }
    }
    Ok(())
}
