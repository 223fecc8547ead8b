//! A backup job (file and environment sets: [`crate::files`]). A PostgreSQL backup: the
//! globals, and beside them the database dumped from an exported snapshot with exact row
//! counts taken in that same snapshot; committed only if every step
//! succeeded. A backup still running when the site's backup window closes is stopped
//! (pg_dump killed, nothing committed); the chunks it uploaded are reused by the next run.

pub mod dump;
pub mod pipeline;
pub mod rowcount;
pub mod throttle;

use std::sync::Arc;
use std::time::Instant;

use nex_backup_shared::manifest::{
    Manifest, STREAM_DATABASE, STREAM_GLOBALS, SourceInfo, StreamEntry,
};
use nex_backup_shared::pb;
use tracing::info;

use self::pipeline::{JobRef, upload_stream, upload_stream_tapped};
use crate::config::TargetConfig;
use crate::ctx::Ctx;
use crate::error::AgentError;
use crate::{pg, pgtools};

pub(crate) use nex_backup_shared::clock::now_ms;

/// Run a backup command to completion and describe the outcome.
pub async fn run(ctx: Arc<Ctx>, job_id: String, cmd: pb::BackupCommand) -> pb::JobResult {
    let started = Instant::now();
    let started_ms = now_ms();
    crate::custody::ensure_keys_sealed(&ctx).await;
    let codec = match ctx.backup_codec() {
        Ok(c) => c,
        Err(e) => {
            return pb::JobResult {
                error: e.to_string(),
                ..Default::default()
            };
        }
    };
    let throttle = (cmd.upload_bytes_per_sec > 0).then(|| {
        info!(
            bytes_per_sec = cmd.upload_bytes_per_sec,
            "upload bandwidth limited"
        );
        Arc::new(throttle::Throttle::new(cmd.upload_bytes_per_sec))
    });
    let job = JobRef {
        job_id,
        snapshot_id: cmd.snapshot_id.clone(),
        codec,
        throttle,
    };
    let window = cmd.window_remaining_ms;
    let outcome = if let Some(t) = ctx.cfg.target(&cmd.target) {
        within_window(window, async {
            Ok((backup(&ctx, &job, t, started_ms).await?, String::new()))
        })
        .await
    } else if let Some(set) = ctx.cfg.set(&cmd.target) {
        match set {
            Ok(set) => {
                within_window(window, crate::files::backup(&ctx, &job, set, started_ms)).await
            }
            Err(e) => Err(e.to_string().into()),
        }
    } else {
        Err(format!("unknown target {}", cmd.target).into())
    };
    let duration_ms = started.elapsed().as_millis() as u64;
    match outcome {
        Ok((logical, note)) => pb::JobResult {
            ok: true,
            snapshot_id: job.snapshot_id,
            logical_bytes: logical,
            duration_ms,
            stream_hash_ok: true,
            note,
            ..Default::default()
        },
        Err(e) => pb::JobResult {
            ok: false,
            error: e.to_string(),
            duration_ms,
            ..Default::default()
        },
    }
}

/// Run `work`, giving up when the backup window closes `remaining_ms` from now (0 = no
/// window). Dropping the work kills pg_dump and ends the exporting transaction.
async fn within_window<T>(
    remaining_ms: u64,
    work: impl std::future::Future<Output = Result<T, AgentError>>,
) -> Result<T, AgentError> {
    if remaining_ms == 0 {
        return work.await;
    }
    info!(
        closes_in_secs = remaining_ms / 1000,
        "backup window closes in {} s",
        remaining_ms / 1000
    );
    let limit = std::time::Duration::from_millis(remaining_ms);
    tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
        tracing::warn!(after_ms = remaining_ms, "backup window closed; backup stopped");
        Err(format!(
            "the site's backup window closed {:.0} s after the backup started; stopped before commit (uploaded chunks are reused by the next run)",
            limit.as_secs_f64()
        ).into())
    })
}

async fn backup(
    ctx: &Arc<Ctx>,
    job: &JobRef,
    t: &TargetConfig,
    started_ms: u64,
) -> Result<u64, AgentError> {
    let started = Instant::now();
    let client = pg::connect(t, &t.dbname).await?;
    let (server_num, server_version) = pg::server_version(&client)
        .await
        .map_err(|e| AgentError::from(format!("target {}: {e}", t.name)))?;
    let major = (server_num / 10000) as u32;
    let dir = t.pg_bin_dir.as_deref();
    let (pg_dump, pg_dumpall) = tokio::try_join!(
        pgtools::find("pg_dump", dir, major),
        pgtools::find("pg_dumpall", dir, major)
    )
    .map_err(|e| AgentError::from(format!("target {}: {e}", t.name)))?;
    let password = pg::password(t, &t.dbname)?;
    info!(target = %t.name, server = %server_version, pg_dump = %pg_dump.version, "backup starting");

    // The globals (cluster-wide, outside the database's snapshot) are dumped beside the
    // database, not before it: the backup does not wait for a second connection and
    // pg_dumpall's queries. Either failing stops the other (its tool is killed).
    let (globals, (database, row_counts, row_counts_from_dump)) = tokio::try_join!(
        dump_globals(ctx, job, t, &pg_dumpall, password.as_deref()),
        dump_database(ctx, job, t, &client, &pg_dump, password.as_deref())
    )?;
    let manifest = Manifest {
        site: ctx.site().into(),
        target: t.name.clone(),
        snapshot_id: job.snapshot_id.clone(),
        created_unix_ms: started_ms,
        streams: vec![globals, database],
        row_counts,
        row_counts_from_dump,
        source: SourceInfo {
            kind: "postgres".into(),
            server_version,
            pg_dump_version: pg_dump.version.clone(),
            database: t.dbname.clone(),
            agent_version: nex_backup_shared::VERSION.into(),
            host: ctx.agent_id.clone(),
        },
        duration_ms: started.elapsed().as_millis() as u64,
        files: vec![],
    };
    commit(ctx, job, &manifest, started_ms)
        .await
        .map_err(|e| match e.code() {
            // The controller no longer runs this job (cancelled, or failed as stalled):
            // it commits nothing; say so rather than only relaying the refusal.
            Some(tonic::Code::FailedPrecondition) => format!(
                "{e} (the controller no longer runs job {}: nothing was committed)",
                job.job_id
            ),
            _ => e.to_string(),
        })?;
    Ok(manifest.logical_bytes())
}

/// Dump the cluster globals (roles, tablespaces) as stream `globals.sql`.
async fn dump_globals(
    ctx: &Arc<Ctx>,
    job: &JobRef,
    t: &TargetConfig,
    pg_dumpall: &pgtools::Tool,
    password: Option<&str>,
) -> Result<StreamEntry, AgentError> {
    let mut args = dump::conn_args(t, &t.dbname);
    args[6] = "-l".into(); // pg_dumpall names its maintenance database with -l
    args.push("--globals-only".into());
    if !t.include_role_passwords {
        args.push("--no-role-passwords".into());
    }
    let mut proc = dump::spawn(pg_dumpall, &args, password, false, true)?;
    let out = proc.child.stdout.take().expect("stdout piped");
    let what = format!("pg_dumpall of target {}", t.name);
    let entry = match upload_stream(ctx, job, STREAM_GLOBALS, what, out).await {
        Ok(entry) => entry,
        Err(e) => {
            let _ = proc.child.start_kill();
            let _ = proc.finish().await;
            return Err(e);
        }
    };
    proc.finish()
        .await
        .map_err(|e| AgentError::from(format!("target {}: {e}", t.name)))?;
    Ok(entry)
}

/// Dump the database from an exported snapshot, counting each table's rows in the dump
/// as it streams past ([`rowcount`]). Only if the archive cannot be read that way are
/// the rows counted with `count(*)` in the same snapshot (a second scan of the data);
/// the flag says which.
async fn dump_database(
    ctx: &Arc<Ctx>,
    job: &JobRef,
    t: &TargetConfig,
    client: &tokio_postgres::Client,
    pg_dump: &pgtools::Tool,
    password: Option<&str>,
) -> Result<(StreamEntry, Vec<(String, i64)>, bool), AgentError> {
    let sql_err =
        |e: tokio_postgres::Error| format!("target {}: {}", t.name, pg::db_error_text(&e));
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await
        .map_err(sql_err)?;
    let snapshot: String = client
        .query_one("SELECT pg_export_snapshot()", &[])
        .await
        .map_err(sql_err)?
        .get(0);
    let mut args = dump::conn_args(t, &t.dbname);
    args.extend([format!("--snapshot={snapshot}"), "-Fc".into(), "-Z0".into()]);
    // The job in pg_dump's application name: its backend can be found (and lowered).
    let app = format!("nex-backup {}", job.job_id);
    let mut proc = dump::spawn_with(
        pg_dump,
        &args,
        password,
        (false, true),
        &[("PGAPPNAME", &app)],
    )?;
    let _lowering = ctx.cfg.low_priority.then(|| {
        let lower = crate::priority::lower_backend(t.clone(), app.clone());
        tokio_util::task::AbortOnDropHandle::new(tokio::spawn(lower))
    });
    let out = proc.child.stdout.take().expect("stdout piped");
    let what = format!("pg_dump of target {}", t.name);
    let (tap, counter) = rowcount::spawn_counter();
    let uploaded = upload_stream_tapped(ctx, job, STREAM_DATABASE, what, out, Some(tap)).await;
    let entry = match uploaded {
        Ok(entry) => entry,
        Err(e) => {
            // A stalled or cut pipeline: stop pg_dump, and quote it if it had complained.
            let _ = client.batch_execute("ROLLBACK").await;
            let _ = proc.child.start_kill();
            return match proc.finish().await {
                Err(pe) if !pe.to_string().contains("signal") => Err(format!("{e}; {pe}").into()),
                _ => Err(e),
            };
        }
    };
    // pg_dump's own error explains a failure best, so it goes first.
    if let Err(e) = proc.finish().await {
        let _ = client.batch_execute("ROLLBACK").await;
        return Err(format!("target {}: {e}", t.name).into());
    }
    let counted = tokio::task::spawn_blocking(move || counter.join())
        .await
        .ok()
        .and_then(|joined| joined.ok());
    match counted {
        Some(Ok(counts)) => {
            let _ = client.batch_execute("ROLLBACK").await;
            Ok((entry, counts, true))
        }
        other => {
            let why = match other {
                Some(Err(e)) => e.to_string(),
                _ => "the row counter stopped".into(),
            };
            tracing::warn!(target = %t.name, reason = %why, "rows not counted from the dump; counting with count(*) in its snapshot");
            // The exported snapshot lives as long as this transaction: keep it open
            // until the counting connection has imported it (or given up).
            let (imported_tx, imported_rx) = tokio::sync::oneshot::channel();
            let counts = tokio::spawn(count_rows_in_snapshot(t.clone(), snapshot, imported_tx));
            let _ = imported_rx.await;
            let _ = client.batch_execute("ROLLBACK").await;
            let counts = counts
                .await
                .map_err(|e| AgentError::from(format!("target {}: count rows: {e}", t.name)))??;
            Ok((entry, counts, false))
        }
    }
}

/// Exact row counts on a second connection that imports the exported snapshot: an error
/// there (say, a table this user may not read) must not abort the exporting transaction
/// before pg_dump has imported it.
async fn count_rows_in_snapshot(
    t: TargetConfig,
    snapshot: String,
    imported: tokio::sync::oneshot::Sender<()>,
) -> Result<Vec<(String, i64)>, AgentError> {
    let sql_err = |e: tokio_postgres::Error| {
        format!("target {}: count rows: {}", t.name, pg::db_error_text(&e))
    };
    let counter = pg::connect(&t, &t.dbname).await?;
    counter
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await
        .map_err(sql_err)?;
    let set = format!("SET TRANSACTION SNAPSHOT '{}'", snapshot.replace('\'', ""));
    counter.batch_execute(&set).await.map_err(sql_err)?;
    let _ = imported.send(());
    Ok(pg::row_counts(&counter, false).await.map_err(sql_err)?)
}

pub(crate) async fn commit(
    ctx: &Arc<Ctx>,
    job: &JobRef,
    m: &Manifest,
    started_ms: u64,
) -> Result<(), AgentError> {
    let sealed = m.seal(job.codec.keys());
    let mut ids: Vec<_> = m.chunk_ids().copied().collect();
    ids.sort_unstable();
    ids.dedup();
    let req = pb::CommitSnapshotRequest {
        site: m.site.clone(),
        target: m.target.clone(),
        snapshot_id: m.snapshot_id.clone(),
        job_id: job.job_id.clone(),
        manifest: sealed,
        chunk_ids: ids.iter().map(|i| i.0.to_vec()).collect(),
        logical_bytes: m.logical_bytes(),
        started_unix_ms: started_ms,
        duration_ms: m.duration_ms,
        chunk_refs: m.streams.iter().map(|s| s.chunks.len() as u64).sum(),
        streams: m.streams.len() as u32,
    };
    let resp = ctx
        .retry("commit snapshot", || {
            let (mut c, r) = (ctx.client(), req.clone());
            async move { c.commit_snapshot(r).await }
        })
        .await?;
    let r = resp.into_inner();
    info!(snapshot = %m.snapshot_id, stored = r.stored_bytes, new = r.new_bytes, "snapshot committed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::within_window;

    #[tokio::test(start_paused = true)]
    async fn a_backup_stops_when_the_window_closes() {
        let slow = async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok::<_, crate::error::AgentError>(1)
        };
        let e = within_window(90_000, slow).await.unwrap_err().to_string();
        assert!(e.contains("window closed 90 s after"), "{e}");
        // No window: the work runs to its end; a window longer than the work: too.
        let quick = || async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok::<_, crate::error::AgentError>(2)
        };
        assert_eq!(within_window(0, quick()).await.unwrap(), 2);
        assert_eq!(within_window(10_000, quick()).await.unwrap(), 2);
    }
}
