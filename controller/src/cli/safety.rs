//! `nex-backup hold list|release` and `nex-backup audit`: anomaly holds and the audit
//! trail of operator actions that weakened protection.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use nex_backup_shared::pb;
use serde_json::json;

use super::ClientOpts;
use super::client::connect;
use super::client::status;
use super::format::{table, time};

#[derive(Debug, Subcommand)]
pub enum HoldCommand {
    /// Targets whose rotation is held because a new snapshot looked wrong.
    List(SiteArgs),
    /// Release a hold after checking the data: its suspicious snapshots count as good
    /// again and rotation resumes. Audited.
    Release(ReleaseArgs),
}

#[derive(Debug, Args)]
pub struct SiteArgs {
    #[arg(long)]
    pub site: Option<String>,
    #[command(flatten)]
    pub client: ClientOpts,
}

#[derive(Debug, Args)]
pub struct ReleaseArgs {
    #[arg(long)]
    pub site: String,
    #[arg(long)]
    pub target: String,
    #[command(flatten)]
    pub client: ClientOpts,
}

pub async fn hold(c: HoldCommand) -> anyhow::Result<ExitCode> {
    match c {
        HoldCommand::List(a) => {
            let r = connect(&a.client)
                .await?
                .list_holds(pb::ListHoldsRequest {
                    site: a.site.unwrap_or_default(),
                })
                .await
                .map_err(status)?
                .into_inner();
            if a.client.json {
                let holds: Vec<_> = r
                    .holds
                    .iter()
                    .map(|h| json!({"site": h.site, "target": h.target, "since_unix_ms": h.since_unix_ms, "reason": h.reason, "suspicious": h.suspicious}))
                    .collect();
                println!("{}", json!({ "holds": holds }));
                return Ok(ExitCode::SUCCESS);
            }
            let rows: Vec<Vec<String>> = r
                .holds
                .iter()
                .map(|h| {
                    vec![
                        h.site.clone(),
                        h.target.clone(),
                        time(h.since_unix_ms),
                        h.suspicious.len().to_string(),
                        h.reason.clone(),
                    ]
                })
                .collect();
            println!(
                "{}",
                table(&["SITE", "TARGET", "SINCE", "SUSPICIOUS", "REASON"], &rows)
            );
        }
        HoldCommand::Release(a) => {
            let h = connect(&a.client)
                .await?
                .release_hold(pb::ReleaseHoldRequest {
                    site: a.site,
                    target: a.target,
                })
                .await
                .map_err(status)?
                .into_inner();
            println!(
                "hold on {} / {} released; {} snapshot(s) no longer suspicious (audited)",
                h.site,
                h.target,
                h.suspicious.len()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn audit(a: SiteArgs) -> anyhow::Result<ExitCode> {
    let r = connect(&a.client)
        .await?
        .list_audit(pb::ListAuditRequest {
            site: a.site.unwrap_or_default(),
        })
        .await
        .map_err(status)?
        .into_inner();
    if a.client.json {
        let entries: Vec<_> = r
            .entries
            .iter()
            .map(|e| json!({"unix_ms": e.unix_ms, "site": e.site, "target": e.target, "action": e.action, "detail": e.detail, "actor": e.actor}))
            .collect();
        println!("{}", json!({ "entries": entries }));
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = r
        .entries
        .iter()
        .map(|e| {
            vec![
                time(e.unix_ms),
                e.site.clone(),
                e.target.clone(),
                e.action.clone(),
                e.detail.clone(),
                e.actor.clone(),
            ]
        })
        .collect();
    println!(
        "{}",
        table(&["TIME", "SITE", "TARGET", "ACTION", "DETAIL", "BY"], &rows)
    );
    Ok(ExitCode::SUCCESS)
}
