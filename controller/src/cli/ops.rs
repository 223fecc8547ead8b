//! Operator commands: call the controller, print a table or JSON.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::anyhow;
use nex_backup_shared::pb::{self, job_update::Update};
use serde_json::json;
use tokio_stream::StreamExt;

use super::format::{age, bytes, table, time};
use super::{BackupArgs, ClientOpts, RestoreArgs, SnapshotsArgs};
use nex_backup_shared::clock::now_ms;

use super::client::connect;

fn status_err(s: tonic::Status) -> anyhow::Error {
    anyhow!("{}", s.message())
}

/// "failed 3m ago: target main: connect …", "succeeded 2h ago", or "-".
fn last_job(now: u64, t: &pb::TargetStatus) -> String {
    let state = super::format::job_state(t.last_job_state);
    if state.is_empty() {
        return "-".into();
    }
    let mut s = format!("{state} {} ago", age(now, t.last_job_unix_ms));
    if !t.last_job_error.is_empty() {
        s.push_str(": ");
        s.extend(t.last_job_error.chars().take(80));
    }
    s
}

pub async fn status(opts: &ClientOpts) -> anyhow::Result<ExitCode> {
    let resp = connect(opts)
        .await?
        .status(pb::StatusRequest {})
        .await
        .map_err(status_err)?
        .into_inner();
    let now = now_ms();
    if opts.json {
        let sites: Vec<_> = resp.sites.iter().map(|s| json!({
            "site": s.site, "agent_id": s.agent_id, "online": s.online, "agent_version": s.agent_version,
            "last_seen_unix_ms": s.last_seen_unix_ms,
            "health": super::format::health_json(s.health.as_ref()),
            "targets": s.targets.iter().map(|t| json!({
                "target": t.target, "kind": t.kind, "newest_snapshot": t.newest_snapshot,
                "newest_unix_ms": t.newest_unix_ms, "newest_standing": t.newest_standing,
                "last_job_state": super::format::job_state(t.last_job_state), "last_job_unix_ms": t.last_job_unix_ms,
                "last_job_error": t.last_job_error,
                "newest_age_s": (t.newest_unix_ms > 0).then(|| now.saturating_sub(t.newest_unix_ms) / 1000),
            })).collect::<Vec<_>>(),
        })).collect();
        let workers: Vec<_> = resp
            .workers
            .iter()
            .map(|w| {
                json!({
                    "name": w.name, "state": w.state, "runs": w.runs, "errors": w.errors,
                    "last_error": w.last_error, "last_error_unix_ms": w.last_error_unix_ms,
                    "last_run_unix_ms": w.last_run_unix_ms,
                })
            })
            .collect();
        let copies: Vec<_> = resp
            .copies
            .iter()
            .map(|c| json!({"copy": c.copy, "site": c.site, "lag_secs": c.lag_secs}))
            .collect();
        let out = json!({"sites": sites, "chunks_received": resp.chunks_received,
            "duplicate_chunks_received": resp.duplicate_chunks_received, "workers": workers,
            "copies": copies});
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = vec![];
    for s in &resp.sites {
        let state = if s.online {
            "online".to_string()
        } else {
            format!("offline ({} ago)", age(now, s.last_seen_unix_ms))
        };
        if s.targets.is_empty() {
            rows.push(vec![
                s.site.clone(),
                s.agent_id.clone(),
                state.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
        }
        for t in &s.targets {
            let snap = if t.newest_snapshot.is_empty() {
                "never backed up".into()
            } else {
                format!("{} ({})", t.newest_snapshot, t.newest_standing)
            };
            rows.push(vec![
                s.site.clone(),
                s.agent_id.clone(),
                state.clone(),
                t.target.clone(),
                snap,
                age(now, t.newest_unix_ms),
                last_job(now, t),
            ]);
        }
    }
    println!(
        "{}",
        table(
            &[
                "SITE",
                "AGENT",
                "STATE",
                "TARGET",
                "NEWEST SNAPSHOT",
                "AGE",
                "LAST BACKUP"
            ],
            &rows
        )
    );
    let hosts: Vec<Vec<String>> = resp
        .sites
        .iter()
        .filter(|s| s.health.is_some())
        .map(|s| {
            let h = s.health.as_ref();
            vec![
                s.site.clone(),
                s.agent_id.clone(),
                super::format::health(h),
                h.map(|h| h.os.clone()).unwrap_or_default(),
            ]
        })
        .collect();
    if !hosts.is_empty() {
        println!("\n{}", table(&["SITE", "AGENT", "HOST", "OS"], &hosts));
    }
    if !resp.workers.is_empty() {
        println!("\n{}", workers_table(now, &resp.workers));
    }
    let copies: Vec<Vec<String>> = resp
        .copies
        .iter()
        .map(|c| {
            let lag = if c.lag_secs == 0 {
                "up to date".to_string()
            } else {
                format!("{} behind", crate::policy::human_secs(c.lag_secs))
            };
            vec![c.copy.clone(), c.site.clone(), lag]
        })
        .collect();
    if !copies.is_empty() {
        println!("\n{}", table(&["OFF-SITE COPY", "SITE", "LAG"], &copies));
    }
    Ok(ExitCode::SUCCESS)
}

/// The controller's workers: state, runs, errors and the last error with its age.
fn workers_table(now: u64, workers: &[pb::WorkerInfo]) -> String {
    let rows: Vec<Vec<String>> = workers
        .iter()
        .map(|w| {
            let last_error = if w.last_error.is_empty() {
                "-".to_string()
            } else {
                let first = w.last_error.lines().next().unwrap_or_default();
                format!("{} ago: {}", age(now, w.last_error_unix_ms), first)
            };
            vec![
                w.name.clone(),
                w.state.clone(),
                w.runs.to_string(),
                w.errors.to_string(),
                age(now, w.last_run_unix_ms),
                last_error,
            ]
        })
        .collect();
    table(
        &[
            "WORKER",
            "STATE",
            "RUNS",
            "ERRORS",
            "LAST RUN",
            "LAST ERROR",
        ],
        &rows,
    )
}

/// Every snapshot in scope, oldest first, fetched page by page.
async fn fetch_snapshots(a: &SnapshotsArgs) -> anyhow::Result<Vec<pb::SnapshotInfo>> {
    let mut client = connect(&a.client).await?;
    let (mut out, mut page_token) = (Vec::new(), String::new());
    loop {
        let r = client
            .list_snapshots(pb::ListSnapshotsRequest {
                site: a.site.clone().unwrap_or_default(),
                target: a.target.clone().unwrap_or_default(),
                limit: 0,
                page_token,
            })
            .await
            .map_err(status_err)?
            .into_inner();
        out.extend(r.snapshots);
        if r.next_page_token.is_empty() {
            return Ok(out);
        }
        page_token = r.next_page_token;
    }
}

pub async fn snapshots(a: &SnapshotsArgs) -> anyhow::Result<ExitCode> {
    let resp = pb::ListSnapshotsResponse {
        snapshots: fetch_snapshots(a).await?,
        next_page_token: String::new(),
    };
    if a.client.json {
        let out: Vec<_> = resp.snapshots.iter().map(|s| json!({
            "site": s.site, "target": s.target, "snapshot_id": s.snapshot_id, "created_unix_ms": s.created_unix_ms,
            "logical_bytes": s.logical_bytes, "stored_bytes": s.stored_bytes, "new_bytes": s.new_bytes,
            "duration_ms": s.duration_ms, "chunks": s.chunks, "standing": s.standing,
        })).collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = resp
        .snapshots
        .iter()
        .map(|s| {
            vec![
                s.site.clone(),
                s.target.clone(),
                s.snapshot_id.clone(),
                time(s.created_unix_ms),
                bytes(s.logical_bytes),
                bytes(s.stored_bytes),
                bytes(s.new_bytes),
                format!("{:.1}s", s.duration_ms as f64 / 1000.0),
                s.standing.clone(),
            ]
        })
        .collect();
    println!(
        "{}",
        table(
            &[
                "SITE", "TARGET", "SNAPSHOT", "TIME", "LOGICAL", "STORED", "NEW SENT", "DURATION",
                "STANDING"
            ],
            &rows
        )
    );
    Ok(ExitCode::SUCCESS)
}

/// Follow a job's update stream, showing progress on stderr; returns its outcome.
pub(super) async fn follow(
    mut stream: tonic::Streaming<pb::JobUpdate>,
    quiet: bool,
) -> anyhow::Result<(String, pb::JobOutcome)> {
    let mut job_id = String::new();
    let tty = std::io::stderr().is_terminal();
    let mut shown = false;
    loop {
        let next = tokio::select! {
            u = stream.next() => u,
            _ = tokio::signal::ctrl_c() => {
                return Err(anyhow!(
                    "stopped following job {job_id}; it goes on. Cancel it with: nex-backup jobs cancel {job_id}"
                ));
            }
        };
        let Some(u) = next else { break };
        let u = u.map_err(status_err)?;
        job_id = u.job_id.clone();
        match u.update {
            Some(Update::Progress(p)) if p.phase == "dispatched" => {}
            Some(Update::Progress(p)) if !quiet => {
                let line = format!(
                    "{job_id}: {} {} ({} chunks) {}",
                    p.phase,
                    bytes(p.bytes_done),
                    p.chunks_done,
                    p.detail
                );
                if tty {
                    eprint!("\r{line:<100}");
                    let _ = std::io::stderr().flush();
                    shown = true;
                } else {
                    eprintln!("{line}");
                }
            }
            Some(Update::Outcome(o)) => {
                if shown {
                    eprintln!();
                }
                return Ok((job_id, o));
            }
            _ => {}
        }
    }
    Err(anyhow!(
        "controller closed the stream of job {job_id} before it finished; see `nex-backup status`"
    ))
}

fn outcome_json(job_id: &str, o: &pb::JobOutcome) -> serde_json::Value {
    json!({
        "job_id": job_id, "ok": o.ok, "error": o.error, "snapshot_id": o.snapshot_id,
        "lines": o.lines,
        "logical_bytes": o.logical_bytes, "duration_ms": o.duration_ms, "new_bytes": o.new_bytes,
        "stream_hash_ok": o.stream_hash_ok, "note": o.note,
        "tables": o.tables.iter().map(|t| json!({"table": t.table, "expected_rows": t.expected_rows,
            "actual_rows": t.actual_rows, "ok": t.ok})).collect::<Vec<_>>(),
    })
}

/// Print a job's outcome as JSON when asked; true if it was printed.
pub(super) fn print_json(json: bool, job_id: &str, o: &pb::JobOutcome) -> anyhow::Result<bool> {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&outcome_json(job_id, o))?
        );
    }
    Ok(json)
}

pub(super) fn exit(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

pub async fn backup(a: &BackupArgs) -> anyhow::Result<ExitCode> {
    let req = pb::RunBackupRequest {
        site: a.site.clone(),
        target: a.target.clone(),
        outside_window: a.outside_window,
    };
    let stream = connect(&a.client)
        .await?
        .run_backup(req)
        .await
        .map_err(status_err)?
        .into_inner();
    let (job_id, o) = follow(stream, a.client.json).await?;
    if print_json(a.client.json, &job_id, &o)? {
        return Ok(exit(o.ok));
    }
    if o.ok {
        println!(
            "backup of {}/{} ok: snapshot {} ({} logical, {} new sent, {:.1}s)",
            a.site,
            a.target,
            o.snapshot_id,
            bytes(o.logical_bytes),
            bytes(o.new_bytes),
            o.duration_ms as f64 / 1000.0
        );
    } else {
        println!(
            "backup of {}/{} FAILED ({job_id}): {}",
            a.site, a.target, o.error
        );
    }
    if !o.note.is_empty() {
        println!("{}", o.note);
    }
    Ok(exit(o.ok))
}

pub async fn restore(a: &RestoreArgs) -> anyhow::Result<ExitCode> {
    let req = pb::RunRestoreRequest {
        site: a.site.clone(),
        target: a.target.clone(),
        snapshot_id: a.snapshot.clone(),
        to_database: a.to_database.clone().unwrap_or_default(),
        clean: a.clean,
        restore_globals: a.globals,
        drop_old: a.drop_old,
        to_dir: a.to_dir.clone().unwrap_or_default(),
        paths: a.paths.clone(),
        overwrite: a.overwrite,
        no_owner: a.no_owner,
        no_privileges: a.no_privileges,
        no_tablespaces: a.no_tablespaces,
        ..Default::default()
    };
    if let Some(dir) = &a.to_dir {
        return super::files::restore_to_dir(&a.client, req, dir).await;
    }
    let into = a.to_database.clone().unwrap_or_default();
    let (ok, _) = run_restore(&a.client, req, &into).await?;
    Ok(exit(ok))
}

/// `nex-backup drill`: restore the newest snapshot into a scratch database, verify it,
/// drop it, and compare the measured time with the target's RTO.
pub async fn drill(a: &super::DrillArgs) -> anyhow::Result<ExitCode> {
    let req = pb::RunRestoreRequest {
        site: a.site.clone(),
        target: a.target.clone(),
        snapshot_id: a.snapshot.clone(),
        drill: true,
        ..Default::default()
    };
    let (ok, duration_ms) = run_restore(&a.client, req, "a scratch database").await?;
    if !ok {
        // A failed drill restored nothing usable: it has no RTO to report.
        if !a.client.json {
            println!("no RTO measured: the drill failed");
        }
        return Ok(exit(false));
    }
    let policy = connect(&a.client)
        .await?
        .get_policy(pb::GetPolicyRequest {
            site: a.site.clone(),
            target: a.target.clone(),
        })
        .await
        .map_err(status_err)?
        .into_inner()
        .policy
        .unwrap_or_default();
    let within = duration_ms <= policy.rto_secs * 1000;
    if !a.client.json {
        println!(
            "measured RTO {:.1}s (target RTO {}): {}",
            duration_ms as f64 / 1000.0,
            crate::policy::human_secs(policy.rto_secs),
            if within {
                "within the RTO"
            } else {
                "SLOWER than the RTO"
            }
        );
    }
    Ok(exit(ok && within))
}

/// Run a restore (or drill) and print its verification. Returns (ok, duration ms).
/// Start a job through `RunRestore` (restore, drill, deep verification, ls, diff) and
/// follow it to its outcome.
pub(super) async fn restore_job(
    client: &ClientOpts,
    req: pb::RunRestoreRequest,
) -> anyhow::Result<(String, pb::JobOutcome)> {
    let stream = connect(client)
        .await?
        .run_restore(req)
        .await
        .map_err(status_err)?
        .into_inner();
    follow(stream, client.json).await
}

/// `nex-backup verify --deep`: the site's agent decrypts and checks one snapshot.
pub async fn deep_verify(a: &super::verify::VerifyArgs) -> anyhow::Result<ExitCode> {
    let site = a.site.clone().unwrap_or_default();
    let target = a.target.clone().unwrap_or_default();
    let req = pb::RunRestoreRequest {
        site: site.clone(),
        target: target.clone(),
        snapshot_id: a.snapshot.clone(),
        verify_only: true,
        ..Default::default()
    };
    let (job_id, o) = restore_job(&a.client, req).await?;
    if print_json(a.client.json, &job_id, &o)? {
        return Ok(exit(o.ok));
    }
    if o.ok {
        println!(
            "deep verification of {site}/{target} snapshot {} ok: every chunk decrypted and \
             matched its id, every stream matched its SHA-256 ({} in {:.1}s)",
            o.snapshot_id,
            bytes(o.logical_bytes),
            o.duration_ms as f64 / 1000.0
        );
    } else {
        println!(
            "deep verification of {site}/{target} snapshot {} FAILED ({job_id}): {}",
            o.snapshot_id, o.error
        );
    }
    Ok(exit(o.ok))
}

async fn run_restore(
    client: &ClientOpts,
    req: pb::RunRestoreRequest,
    into: &str,
) -> anyhow::Result<(bool, u64)> {
    let (job_id, o) = restore_job(client, req).await?;
    if print_json(client.json, &job_id, &o)? {
        return Ok((o.ok, o.duration_ms));
    }
    let rows: Vec<Vec<String>> = o
        .tables
        .iter()
        .map(|t| {
            let verdict = if t.ok { "pass" } else { "FAIL" };
            vec![
                t.table.clone(),
                t.expected_rows.to_string(),
                t.actual_rows.to_string(),
                verdict.into(),
            ]
        })
        .collect();
    if !rows.is_empty() {
        println!(
            "{}",
            table(&["TABLE", "EXPECTED ROWS", "RESTORED ROWS", "CHECK"], &rows)
        );
    }
    let hash = if o.stream_hash_ok {
        "every chunk and the stream digest verified"
    } else {
        "stream digest NOT verified"
    };
    if o.ok {
        println!(
            "restore of {} into {into} ok: {hash}, {} tables verified",
            o.snapshot_id,
            o.tables.len()
        );
    } else {
        println!(
            "restore of {} into {into} FAILED ({job_id}): {}",
            o.snapshot_id, o.error
        );
    }
    if !o.note.is_empty() {
        println!("{}", o.note);
    }
    Ok((o.ok, o.duration_ms))
}
