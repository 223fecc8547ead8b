//! File and environment sets from the CLI: `restore --to-dir`, `ls` and `diff`. The
//! controller cannot read a snapshot (it holds no key): each runs as a job on the site's
//! agent, which answers with its lines.

use std::process::ExitCode;

use clap::Args;
use nex_backup_shared::pb;

use super::ClientOpts;
use super::ops::{exit, print_json, restore_job};

#[derive(Debug, Args)]
pub struct LsArgs {
    #[arg(long)]
    pub site: String,
    #[arg(long)]
    pub target: String,
    /// Snapshot id, a unique prefix (8+ characters), or `latest` (the newest).
    #[arg(long, default_value = "latest")]
    pub snapshot: String,
    #[command(flatten)]
    pub client: ClientOpts,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    #[arg(long)]
    pub site: String,
    #[arg(long)]
    pub target: String,
    /// The older snapshot (id or unique prefix).
    pub from: String,
    /// The newer snapshot (id, unique prefix, or `latest`).
    pub to: String,
    #[command(flatten)]
    pub client: ClientOpts,
}

/// Run an agent job and print its lines; true when it succeeded.
async fn lines_job(client: &ClientOpts, req: pb::RunRestoreRequest) -> anyhow::Result<bool> {
    let (job_id, o) = restore_job(client, req).await?;
    if print_json(client.json, &job_id, &o)? {
        return Ok(o.ok);
    }
    for l in &o.lines {
        println!("{l}");
    }
    if !o.note.is_empty() {
        println!("{}", o.note);
    }
    if !o.ok {
        println!("FAILED ({job_id}): {}", o.error);
    }
    Ok(o.ok)
}

pub async fn ls(a: &LsArgs) -> anyhow::Result<ExitCode> {
    let req = pb::RunRestoreRequest {
        site: a.site.clone(),
        target: a.target.clone(),
        snapshot_id: a.snapshot.clone(),
        list_only: true,
        ..Default::default()
    };
    Ok(exit(lines_job(&a.client, req).await?))
}

pub async fn diff(a: &DiffArgs) -> anyhow::Result<ExitCode> {
    let req = pb::RunRestoreRequest {
        site: a.site.clone(),
        target: a.target.clone(),
        snapshot_id: a.from.clone(),
        diff_against: a.to.clone(),
        ..Default::default()
    };
    Ok(exit(lines_job(&a.client, req).await?))
}

/// `restore --to-dir`: what was restored, and every entry that was not (and why).
pub async fn restore_to_dir(
    client: &ClientOpts,
    req: pb::RunRestoreRequest,
    dir: &str,
) -> anyhow::Result<ExitCode> {
    let snapshot = req.snapshot_id.clone();
    let ok = lines_job(client, req).await?;
    if ok && !client.json {
        println!("restore of {snapshot} into {dir} ok: every file matched its SHA-256");
    }
    Ok(exit(ok))
}
