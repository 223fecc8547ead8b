//! `RunRestore`: a restore into a database or (file sets) a directory, a drill, a deep
//! verification, or `ls` / `diff` of a file set snapshot, all run by the site's agent.

use nex_backup_shared::pb;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::admin::{AdminApi, find_snapshot};
use super::{catalog_status, now_ms};
use crate::catalog::SnapshotRecord;
use nex_backup_shared::pb::command::Kind;

/// Longest `--to-dir` and `--path` accepted, and most `--path`s.
const MAX_DIR_LEN: usize = 4096;
const MAX_PATHS: usize = 256;

/// Clear the options that do not apply to what is asked, and check the rest.
fn normalize(req: &mut pb::RunRestoreRequest) -> Result<(), Status> {
    let inspect = req.list_only || !req.diff_against.is_empty();
    if req.verify_only || inspect {
        req.to_database.clear();
        req.to_dir.clear();
        (req.drill, req.clean, req.restore_globals) = (false, false, false);
    } else if req.drill {
        req.to_database = crate::dispatch::drill_database(now_ms());
        req.to_dir.clear();
        (req.clean, req.restore_globals) = (false, false);
    }
    if !req.to_dir.is_empty() {
        let d = &req.to_dir;
        if d.len() > MAX_DIR_LEN
            || d.contains('\0')
            || !(d.starts_with('/') || d.get(1..3) == Some(":\\"))
        {
            return Err(Status::invalid_argument(format!(
                "--to-dir {:?} must be an absolute path on the agent's host",
                nex_backup_shared::text::clean(d, 128)
            )));
        }
        req.to_database.clear();
        (req.clean, req.restore_globals) = (false, false);
    }
    if req.paths.len() > MAX_PATHS
        || req
            .paths
            .iter()
            .any(|p| p.len() > MAX_DIR_LEN || p.contains('\0'))
    {
        return Err(Status::invalid_argument(format!(
            "at most {MAX_PATHS} --path globs of at most {MAX_DIR_LEN} characters"
        )));
    }
    let db = &req.to_database;
    let needs_db = !(req.verify_only || inspect || !req.to_dir.is_empty());
    if needs_db && (db.is_empty() || db.len() > 63 || db.contains('\0')) {
        return Err(Status::invalid_argument(format!(
            "database name {db:?} must be 1-63 characters (or give --to-dir for a file set)"
        )));
    }
    Ok(())
}

impl AdminApi {
    /// The snapshot `wanted` names: an id or prefix, or `latest` (the newest good one;
    /// for deep verification, `ls` and `diff` the newest, whatever its standing).
    async fn pick<'a>(
        &self,
        req: &pb::RunRestoreRequest,
        snaps: &'a [SnapshotRecord],
        wanted: &str,
    ) -> Result<&'a SnapshotRecord, Status> {
        let none = || {
            Status::not_found(format!(
                "target {} at site {} has no snapshots",
                req.target, req.site
            ))
        };
        if !(wanted.is_empty() || wanted == "latest") {
            return find_snapshot(snaps, wanted, &req.target);
        }
        if req.verify_only || req.list_only || !req.diff_against.is_empty() {
            return snaps.last().ok_or_else(none);
        }
        if snaps.is_empty() {
            return Err(none());
        }
        crate::fleet::standing::Judged::load(&self.state, snaps, &req.site, &req.target)
            .await
            .map_err(catalog_status)?
            .newest_good()
            .ok_or_else(|| {
                Status::failed_precondition(format!(
                    "target {} at site {} has {} snapshot(s) but none is good (failed drill, anomaly hold, damaged, or no successful job); name one with --snapshot",
                    req.target,
                    req.site,
                    snaps.len()
                ))
            })
    }

    pub(super) async fn run_restore_impl(
        &self,
        mut req: pb::RunRestoreRequest,
    ) -> Result<ReceiverStream<Result<pb::JobUpdate, Status>>, Status> {
        self.check_dispatch(&req.site, &req.target).await?;
        normalize(&mut req)?;
        let snaps = self
            .state
            .catalog
            .snapshots(Some(&req.site), Some(&req.target))
            .await
            .map_err(catalog_status)?;
        let snap = self.pick(&req, &snaps, &req.snapshot_id).await?;
        let diff_against = if req.diff_against.is_empty() {
            String::new()
        } else if req.diff_against == "latest" {
            snaps
                .last()
                .map(|s| s.snapshot_id.clone())
                .unwrap_or_default()
        } else {
            find_snapshot(&snaps, &req.diff_against, &req.target)?
                .snapshot_id
                .clone()
        };
        let kind = Kind::Restore(pb::RestoreCommand {
            target: req.target.clone(),
            snapshot_id: snap.snapshot_id.clone(),
            to_database: req.to_database.clone(),
            clean: req.clean,
            restore_globals: req.restore_globals,
            drill: req.drill,
            drop_old: req.drop_old && req.clean,
            verify_only: req.verify_only,
            to_dir: req.to_dir.clone(),
            paths: req.paths.clone(),
            overwrite: req.overwrite,
            list_only: req.list_only,
            diff_against,
            no_owner: req.no_owner,
            no_privileges: req.no_privileges,
            no_tablespaces: req.no_tablespaces,
        });
        let trigger = if req.drill {
            crate::catalog::Trigger::Drill
        } else {
            crate::catalog::Trigger::Manual
        };
        self.dispatch(&req.site, &req.target, kind, trigger).await
    }
}
