//! `nex-backup verify`: check the store against its recorded checksums (no keys), or
//! (`--deep`) have the site's agent decrypt and check one snapshot; `--damaged` lists the
//! snapshots marked damaged.

use std::process::ExitCode;

use clap::Args;
use nex_backup_shared::pb;
use serde_json::json;

use super::ClientOpts;
use super::client::{connect, status};
use super::format::{bytes, table, time};
use super::ops::exit;

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Only this site (default: every site).
    #[arg(long)]
    pub site: Option<String>,
    /// Deep verification of one snapshot through the site's agent: fetch, decrypt and
    /// check every chunk and the stream digest, restore nothing. Needs --site, --target.
    #[arg(long, requires_all = ["site", "target"])]
    pub deep: bool,
    /// With --deep: the target.
    #[arg(long)]
    pub target: Option<String>,
    /// With --deep: a snapshot id or `latest` (the newest, whatever its standing).
    #[arg(long, default_value = "latest")]
    pub snapshot: String,
    /// Check at most this many chunks now (a share of the store); `--resume` continues.
    #[arg(long)]
    pub max_objects: Option<u64>,
    /// Read at most this much per second, e.g. 50MiB (default: unlimited).
    #[arg(long, value_parser = super::policy_args::parse_rate)]
    pub rate: Option<u64>,
    /// Continue the recorded whole-store pass (the scheduled one) instead of starting over.
    #[arg(long, conflicts_with = "site")]
    pub resume: bool,
    /// List the snapshots marked damaged, and why.
    #[arg(long, conflicts_with = "deep")]
    pub damaged: bool,
    #[command(flatten)]
    pub client: ClientOpts,
}

pub async fn verify(a: VerifyArgs) -> anyhow::Result<ExitCode> {
    if a.damaged {
        return damaged(&a).await;
    }
    if a.deep {
        return super::ops::deep_verify(&a).await;
    }
    let r = connect(&a.client)
        .await?
        .verify_store(pb::VerifyStoreRequest {
            site: a.site.clone().unwrap_or_default(),
            max_objects: a.max_objects.unwrap_or(0),
            rate_bytes_per_sec: a.rate.unwrap_or(0),
            resume: a.resume,
        })
        .await
        .map_err(status)?
        .into_inner();
    let unrepaired = r.findings.iter().filter(|f| !f.repaired).count();
    if a.client.json {
        let findings: Vec<_> = r
            .findings
            .iter()
            .map(|f| {
                json!({"site": f.site, "key": f.key, "problem": f.problem, "chunk": f.chunk,
                    "snapshots": f.snapshots, "repaired": f.repaired})
            })
            .collect();
        let v = json!({"objects": r.objects, "bytes": r.bytes, "complete": r.complete,
            "duration_ms": r.duration_ms, "sites": r.sites, "findings": findings,
            "marked": r.marked, "healed": r.healed});
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(exit(unrepaired == 0));
    }
    println!(
        "checked {} stored chunk(s), {} of site(s) {} in {:.1}s{}: {}",
        r.objects,
        bytes(r.bytes),
        if r.sites.is_empty() {
            "(none)".to_string()
        } else {
            r.sites.join(", ")
        },
        r.duration_ms as f64 / 1000.0,
        if r.complete {
            ""
        } else {
            " (a share: run again with --resume to go on)"
        },
        if r.findings.is_empty() {
            "every object matches its checksum".to_string()
        } else {
            format!("{unrepaired} damaged or missing")
        }
    );
    if !r.findings.is_empty() {
        let rows: Vec<Vec<String>> = r
            .findings
            .iter()
            .map(|f| {
                let what = if f.repaired {
                    format!("{} (repaired from the catalog's copy)", f.problem)
                } else {
                    f.problem.clone()
                };
                vec![f.key.clone(), what, f.snapshots.join("\n")]
            })
            .collect();
        println!(
            "{}",
            table(&["OBJECT", "PROBLEM", "NEEDED BY (target/snapshot)"], &rows)
        );
    }
    for m in &r.marked {
        println!(
            "snapshot {m} is now marked DAMAGED: it no longer counts for RPO or `restore latest`"
        );
    }
    for h in &r.healed {
        println!("snapshot {h} is whole again: its damage mark is cleared");
    }
    if unrepaired > 0 {
        println!(
            "next: take a fresh backup of each target named above (nex-backup backup --site S --target T); \
             the bad chunks were set aside, so it stores them again and the damaged snapshots heal at the next verify"
        );
    }
    Ok(exit(unrepaired == 0))
}

async fn damaged(a: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let r = connect(&a.client)
        .await?
        .list_damaged(pb::ListDamagedRequest {
            site: a.site.clone().unwrap_or_default(),
        })
        .await
        .map_err(status)?
        .into_inner();
    if a.client.json {
        let v: Vec<_> = r
            .snapshots
            .iter()
            .map(|d| {
                json!({"site": d.site, "target": d.target, "snapshot_id": d.snapshot_id,
                "found_unix_ms": d.found_unix_ms, "source": d.source, "objects": d.objects})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    if r.snapshots.is_empty() {
        println!("no snapshot is marked damaged");
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = r
        .snapshots
        .iter()
        .map(|d| {
            vec![
                format!("{}/{}", d.site, d.target),
                d.snapshot_id.clone(),
                time(d.found_unix_ms),
                d.source.clone(),
                d.objects.join("\n"),
            ]
        })
        .collect();
    println!(
        "{}",
        table(&["TARGET", "SNAPSHOT", "FOUND", "BY", "OBJECTS"], &rows)
    );
    Ok(ExitCode::SUCCESS)
}
