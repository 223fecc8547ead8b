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
    /// The customer site, e.g. acme.
    #[arg(long)]
    pub site: Option<String>,
    #[command(flatten)]
    pub client: ClientOpts,
}

#[derive(Debug, Args)]
pub struct ReleaseArgs {
    /// The customer site, e.g. acme.
    #[arg(long)]
    pub site: String,
    /// The target (a database the site's agent backs up), e.g. invoices.
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

/// `nex-backup audit`: the audit log, oldest first.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// The customer site, e.g. acme.
    #[arg(long)]
    pub site: Option<String>,
    /// Only entries of the last DURATION, e.g. 24h or 7d.
    #[arg(long, value_parser = super::trust::parse_duration)]
    pub since: Option<std::time::Duration>,
    /// At most this many entries (the newest).
    #[arg(long, default_value_t = 1000)]
    pub limit: u32,
    #[command(flatten)]
    pub client: ClientOpts,
}

pub async fn audit(a: AuditArgs) -> anyhow::Result<ExitCode> {
    let since = a.since.map_or(0, |d| {
        nex_backup_shared::clock::now_ms().saturating_sub(d.as_millis() as u64)
    });
    let r = connect(&a.client)
        .await?
        .list_audit(pb::ListAuditRequest {
            site: a.site.unwrap_or_default(),
            since_unix_ms: since,
            limit: a.limit,
        })
        .await
        .map_err(status)?
        .into_inner();
    if a.client.json {
        let entries: Vec<_> = r
            .entries
            .iter()
            .map(|e| json!({"unix_ms": e.unix_ms, "site": e.site, "target": e.target, "action": e.action, "detail": e.detail, "actor": e.actor, "outcome": e.outcome}))
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
                e.outcome.clone(),
            ]
        })
        .collect();
    println!(
        "{}",
        table(
            &[
                "TIME", "SITE", "TARGET", "ACTION", "DETAIL", "BY", "OUTCOME"
            ],
            &rows
        )
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create a named admin credential for a person; it is printed (or written with
    /// --out, 0600) once and never shown again.
    Create {
        name: String,
        /// Write the credential to this file (0600) instead of printing it.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Every admin credential, revoked ones included.
    List {
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Revoke a credential at once (not the last one in force).
    Revoke {
        name: String,
        #[command(flatten)]
        client: ClientOpts,
    },
}

pub async fn admin(c: AdminCommand) -> anyhow::Result<ExitCode> {
    match c {
        AdminCommand::Create { name, out, client } => {
            let r = connect(&client)
                .await?
                .create_admin(pb::CreateAdminRequest { name })
                .await
                .map_err(status)?
                .into_inner();
            match out {
                Some(path) => {
                    nex_backup_shared::keyring::write_private_file(
                        &path,
                        format!("{}\n", r.token).as_bytes(),
                    )
                    .map_err(|e| anyhow::anyhow!("write {}: {e}", path.display()))?;
                    println!(
                        "admin credential {} written to {} (0600); give it to that person only",
                        r.name,
                        path.display()
                    );
                }
                None => println!(
                    "admin credential {} (shown once; use it as admin_token_file or NEX_ADMIN_TOKEN):\n{}",
                    r.name, r.token
                ),
            }
        }
        AdminCommand::List { client } => {
            let r = connect(&client)
                .await?
                .list_admins(pb::ListAdminsRequest {})
                .await
                .map_err(status)?
                .into_inner();
            if client.json {
                let v: Vec<_> = r.admins.iter().map(|a| json!({"name": a.name, "created_unix_ms": a.created_unix_ms, "revoked_unix_ms": (a.revoked_unix_ms > 0).then_some(a.revoked_unix_ms)})).collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(ExitCode::SUCCESS);
            }
            let rows: Vec<Vec<String>> = r
                .admins
                .iter()
                .map(|a| {
                    vec![
                        a.name.clone(),
                        time(a.created_unix_ms),
                        if a.revoked_unix_ms > 0 {
                            format!("revoked {}", time(a.revoked_unix_ms))
                        } else {
                            "in force".into()
                        },
                    ]
                })
                .collect();
            println!("{}", table(&["NAME", "CREATED", "STATE"], &rows));
        }
        AdminCommand::Revoke { name, client } => {
            let a = connect(&client)
                .await?
                .revoke_admin(pb::RevokeAdminRequest { name })
                .await
                .map_err(status)?
                .into_inner();
            println!(
                "admin credential {} revoked; calls with it are refused from now on",
                a.name
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
