//! Policy and retention commands: `policy set|show|list`, `prune`. With `--target` a
//! policy command is about that target; without, about the site's own settings
//! (see [`super::site_policy`]).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::anyhow;
use clap::{Args, Subcommand};
use nex_backup_shared::pb;
use serde_json::json;

use super::ClientOpts;
use super::client::{connect, status};
use super::format::{bytes, table, time};
pub use super::policy_args::PolicySetArgs;
use crate::policy::human_secs;

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Change a target's policy (with --target) or the site's settings (without);
    /// fields not given keep their current value.
    Set(Box<PolicySetArgs>),
    /// A target's effective policy and its next run, or (without --target) the site's
    /// settings and its window's state.
    Show {
        #[arg(long)]
        site: String,
        #[arg(long)]
        target: Option<String>,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Every known target's effective policy, and every site's settings.
    List {
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Remove a target's own policy (it reverts to the default; a target no agent
    /// declares disappears), or without --target the site's own settings (audited).
    Delete {
        #[arg(long)]
        site: String,
        #[arg(long)]
        target: Option<String>,
        #[command(flatten)]
        client: ClientOpts,
    },
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// The customer site, e.g. acme.
    #[arg(long)]
    pub site: Option<String>,
    /// The target (a database the site's agent backs up), e.g. invoices.
    #[arg(long)]
    pub target: Option<String>,
    /// Show the plan and what it would free; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub client: ClientOpts,
}

fn apply(a: &PolicySetArgs, p: &mut pb::PolicyMsg) {
    let secs = |d: Duration| d.as_secs();
    if let Some(v) = &a.schedule {
        p.schedule = v.clone();
    }
    if let Some(v) = &a.timezone {
        p.timezone = v.clone();
    }
    p.rpo_secs = a.rpo.map_or(p.rpo_secs, secs);
    p.rto_secs = a.rto.map_or(p.rto_secs, secs);
    p.keep_daily = a.keep_daily.unwrap_or(p.keep_daily);
    p.keep_weekly = a.keep_weekly.unwrap_or(p.keep_weekly);
    p.keep_monthly = a.keep_monthly.unwrap_or(p.keep_monthly);
    p.keep_last = a.keep_last.unwrap_or(p.keep_last);
    if a.keep_verified.is_some() {
        p.keep_verified = a.keep_verified;
    }
    p.drill_every_secs = a.drill_every.map_or(p.drill_every_secs, secs);
}

fn policy_json(i: &pb::PolicyInfo) -> serde_json::Value {
    let p = i.policy.clone().unwrap_or_default();
    json!({
        "site": i.site, "target": i.target, "is_default": i.is_default,
        "schedule": p.schedule, "timezone": p.timezone, "rpo_secs": p.rpo_secs,
        "rto_secs": p.rto_secs, "keep_daily": p.keep_daily, "keep_weekly": p.keep_weekly,
        "keep_monthly": p.keep_monthly, "keep_last": p.keep_last,
        "drill_every_secs": p.drill_every_secs, "next_run_unix_ms": i.next_run_unix_ms,
    })
}

fn print_policies(list: &[pb::PolicyInfo], as_json: bool) {
    if as_json {
        let v: Vec<_> = list.iter().map(policy_json).collect();
        println!("{}", serde_json::Value::Array(v));
        return;
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|i| {
            let p = i.policy.clone().unwrap_or_default();
            vec![
                i.site.clone(),
                i.target.clone(),
                format!("{} {}", p.schedule, p.timezone),
                human_secs(p.rpo_secs),
                human_secs(p.rto_secs),
                format!(
                    "d{} w{} m{} last{}",
                    p.keep_daily, p.keep_weekly, p.keep_monthly, p.keep_last
                ),
                if p.drill_every_secs == 0 {
                    "never".into()
                } else {
                    human_secs(p.drill_every_secs)
                },
                time(i.next_run_unix_ms),
                if i.is_default { "default" } else { "own" }.into(),
            ]
        })
        .collect();
    let header = [
        "SITE", "TARGET", "SCHEDULE", "RPO", "RTO", "KEEP", "DRILL", "NEXT RUN", "POLICY",
    ];
    println!("{}", table(&header, &rows));
}

pub async fn policy(c: PolicyCommand) -> anyhow::Result<ExitCode> {
    match c {
        PolicyCommand::Set(a) => match a.target.clone() {
            Some(target) => set_target(&a, target).await?,
            None => super::site_policy::set(&a).await?,
        },
        PolicyCommand::Show {
            site,
            target: Some(target),
            client,
        } => {
            let i = connect(&client)
                .await?
                .get_policy(pb::GetPolicyRequest { site, target })
                .await
                .map_err(status)?
                .into_inner();
            print_policies(&[i], client.json);
        }
        PolicyCommand::Show {
            site,
            target: None,
            client,
        } => super::site_policy::show(site, &client).await?,
        PolicyCommand::Delete {
            site,
            target,
            client,
        } => {
            let what = target
                .as_ref()
                .map_or_else(|| format!("site {site}"), |t| format!("{site}/{t}"));
            let r = connect(&client)
                .await?
                .delete_policy(pb::DeletePolicyRequest {
                    site,
                    target: target.unwrap_or_default(),
                })
                .await
                .map_err(status)?
                .into_inner();
            if r.deleted {
                println!("{what}: own settings deleted; the defaults apply");
            } else {
                println!("{what}: had no settings of its own; nothing deleted");
            }
        }
        PolicyCommand::List { client } => {
            let r = connect(&client)
                .await?
                .list_policies(pb::ListPoliciesRequest {})
                .await
                .map_err(status)?
                .into_inner();
            if client.json {
                let targets: Vec<_> = r.policies.iter().map(policy_json).collect();
                let sites: Vec<_> = r.sites.iter().map(super::site_policy::site_json).collect();
                println!("{}", json!({"targets": targets, "sites": sites}));
            } else {
                print_policies(&r.policies, false);
                println!();
                super::site_policy::print_sites(&r.sites);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn set_target(a: &PolicySetArgs, target: String) -> anyhow::Result<()> {
    let site_flags = a.site_flags();
    if !site_flags.is_empty() {
        return Err(anyhow!(
            "{} {} the site's, not a target's: run `nex-backup policy set --site {}` without --target",
            site_flags.join(", "),
            if site_flags.len() == 1 { "is" } else { "are" },
            a.site
        ));
    }
    let mut client = connect(&a.client).await?;
    let current = client
        .get_policy(pb::GetPolicyRequest {
            site: a.site.clone(),
            target: target.clone(),
        })
        .await;
    let mut p = match current {
        Ok(c) => c.into_inner().policy.unwrap_or_default(),
        Err(e) if e.code() == tonic::Code::NotFound && a.create => {
            pb::PolicyMsg::from(&crate::policy::Policy::default())
        }
        Err(e) => return Err(status(e)),
    };
    apply(a, &mut p);
    let set = client
        .set_policy(pb::SetPolicyRequest {
            site: a.site.clone(),
            target,
            policy: Some(p),
            force: a.force,
            create: a.create,
        })
        .await
        .map_err(status)?
        .into_inner();
    print_policies(&[set], a.client.json);
    Ok(())
}

pub async fn prune(a: PruneArgs) -> anyhow::Result<ExitCode> {
    let r = connect(&a.client)
        .await?
        .prune(pb::PruneRequest {
            site: a.site.unwrap_or_default(),
            target: a.target.unwrap_or_default(),
            dry_run: a.dry_run,
        })
        .await
        .map_err(status)?
        .into_inner();
    if a.client.json {
        let targets: Vec<_> = r
            .targets
            .iter()
            .map(|t| {
                json!({
                    "site": t.site, "target": t.target, "keep": t.keep, "delete": t.delete,
                    "standing": t.standing, "spared": t.spared, "spared_by": t.spared_by,
                    "hold": t.hold,
                })
            })
            .collect();
        println!(
            "{}",
            json!({"dry_run": r.dry_run, "targets": targets, "deleted_snapshots": r.deleted_snapshots,
                "deleted_chunks": r.deleted_chunks, "freed_bytes": r.freed_bytes,
                "pinned_chunks": r.pinned_chunks, "gc_note": r.gc_note,
                "orphans_deleted": r.orphans_deleted, "orphan_bytes": r.orphan_bytes,
                "sweep_refused": r.sweep_refused})
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = vec![];
    for t in &r.targets {
        for (i, id) in t.keep.iter().enumerate() {
            let why = match t.spared.iter().position(|s| s == id) {
                Some(k) if t.spared_by[k] == "lock" => "keep (retention lock)".to_string(),
                Some(_) => "keep (anomaly hold)".to_string(),
                None => "keep".to_string(),
            };
            let standing = t.standing.get(i).cloned().unwrap_or_default();
            rows.push(vec![
                t.site.clone(),
                t.target.clone(),
                id.clone(),
                format!("{why}, {standing}"),
            ]);
        }
        for id in &t.delete {
            let what = if r.dry_run { "would delete" } else { "deleted" };
            rows.push(vec![
                t.site.clone(),
                t.target.clone(),
                id.clone(),
                what.into(),
            ]);
        }
    }
    println!(
        "{}",
        table(&["SITE", "TARGET", "SNAPSHOT", "ACTION"], &rows)
    );
    for t in r.targets.iter().filter(|t| !t.hold.is_empty()) {
        println!(
            "{} / {}: ON ANOMALY HOLD, nothing is deleted: {} (release with: nex-backup hold release --site {} --target {})",
            t.site, t.target, t.hold, t.site, t.target
        );
    }
    if !r.gc_note.is_empty() {
        println!("{}", r.gc_note);
    }
    let verb = if r.dry_run { "would free" } else { "freed" };
    println!(
        "{} snapshot(s), {} chunk(s): {verb} {}{}",
        r.deleted_snapshots,
        r.deleted_chunks,
        bytes(r.freed_bytes),
        if r.pinned_chunks > 0 {
            format!(
                " ({} unreferenced chunk(s) kept for uploads in flight)",
                r.pinned_chunks
            )
        } else {
            String::new()
        }
    );
    if r.orphans_deleted > 0 {
        let verb = if r.dry_run { "would sweep" } else { "swept" };
        println!(
            "{verb} {} orphaned store object(s) no catalog record referenced: {}",
            r.orphans_deleted,
            bytes(r.orphan_bytes)
        );
    }
    for why in &r.sweep_refused {
        println!("sweep stopped for {why}");
    }
    Ok(ExitCode::SUCCESS)
}
