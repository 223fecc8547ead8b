//! `policy set|show --site S` without `--target`: the site's own settings — the backup
//! window, the upload bandwidth limit and the designated drill agent.

use anyhow::anyhow;
use nex_backup_shared::pb;
use serde_json::json;

use super::ClientOpts;
use super::client::connect;
use super::client::status;
use super::format::{bytes, table, time};
use super::policy_args::PolicySetArgs;

/// Target-only flags given without `--target` are refused, naming them.
fn refuse_target_flags(a: &PolicySetArgs) -> anyhow::Result<()> {
    let given = a.target_flags();
    if given.is_empty() {
        return Ok(());
    }
    Err(anyhow!(
        "{} belong to a target: add --target (without it, policy set changes the site's window, bandwidth and drill agent)",
        given.join(", ")
    ))
}

/// "none" or "" clears an optional setting.
fn optional(v: &str) -> String {
    if v.trim().eq_ignore_ascii_case("none") {
        String::new()
    } else {
        v.trim().to_string()
    }
}

pub async fn set(a: &PolicySetArgs) -> anyhow::Result<()> {
    refuse_target_flags(a)?;
    let mut client = connect(&a.client).await?;
    let current = client
        .get_site_policy(pb::GetSitePolicyRequest {
            site: a.site.clone(),
        })
        .await;
    let mut p = match current {
        Ok(c) => c.into_inner().policy.unwrap_or_default(),
        Err(e) if e.code() == tonic::Code::NotFound && a.create => {
            pb::SitePolicyMsg::from(&crate::policy::site::SitePolicy::default())
        }
        Err(e) => return Err(status(e)),
    };
    if let Some(w) = &a.window {
        p.window = optional(w);
    }
    if let Some(tz) = &a.timezone {
        p.timezone = tz.clone();
    }
    if let Some(b) = a.bandwidth {
        p.bandwidth_bytes_per_sec = b;
    }
    if let Some(d) = &a.drill_agent {
        p.drill_agent = optional(d);
    }
    if let Some(h) = &a.drill_hours {
        p.drill_hours = Some(h.trim().to_string());
    }
    if let Some(l) = a.retention_lock {
        p.retention_lock_secs = Some(l.as_secs());
    }
    let set = client
        .set_site_policy(pb::SetSitePolicyRequest {
            site: a.site.clone(),
            policy: Some(p),
            create: a.create,
        })
        .await
        .map_err(status)?
        .into_inner();
    if a.client.json {
        println!("{}", json!([site_json(&set)]));
    } else {
        print_sites(&[set]);
    }
    Ok(())
}

pub async fn show(site: String, client: &ClientOpts) -> anyhow::Result<()> {
    let i = connect(client)
        .await?
        .get_site_policy(pb::GetSitePolicyRequest { site })
        .await
        .map_err(status)?
        .into_inner();
    if client.json {
        println!("{}", json!([site_json(&i)]));
    } else {
        print_sites(&[i]);
    }
    Ok(())
}

pub fn site_json(i: &pb::SitePolicyInfo) -> serde_json::Value {
    let p = i.policy.clone().unwrap_or_default();
    json!({
        "site": i.site, "is_default": i.is_default, "window": p.window,
        "timezone": p.timezone, "bandwidth_bytes_per_sec": p.bandwidth_bytes_per_sec,
        "drill_agent": p.drill_agent, "drill_hours": p.drill_hours.clone().unwrap_or_default(),
        "window_open": i.window_open,
        "window_changes_unix_ms": i.window_changes_unix_ms,
    })
}

pub fn print_sites(list: &[pb::SitePolicyInfo]) {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|i| {
            let p = i.policy.clone().unwrap_or_default();
            let window = if p.window.is_empty() {
                "any time".to_string()
            } else if i.window_open {
                format!(
                    "{} {} (open, closes {})",
                    p.window,
                    p.timezone,
                    time(i.window_changes_unix_ms)
                )
            } else {
                format!(
                    "{} {} (closed, opens {})",
                    p.window,
                    p.timezone,
                    time(i.window_changes_unix_ms)
                )
            };
            let bw = if p.bandwidth_bytes_per_sec == 0 {
                "unlimited".to_string()
            } else {
                format!("{}/s", bytes(p.bandwidth_bytes_per_sec))
            };
            let drill = if p.drill_agent.is_empty() {
                "target's agent".to_string()
            } else {
                p.drill_agent.clone()
            };
            let hours = match p.drill_hours.as_deref() {
                None | Some("any") => "any time".to_string(),
                Some(h) => format!("{h} {}", p.timezone),
            };
            vec![
                i.site.clone(),
                window,
                bw,
                drill,
                hours,
                if i.is_default { "default" } else { "own" }.into(),
            ]
        })
        .collect();
    println!(
        "{}",
        table(
            &[
                "SITE",
                "BACKUP WINDOW",
                "UPLOAD LIMIT",
                "DRILL AGENT",
                "DRILLS START",
                "POLICY"
            ],
            &rows
        )
    );
}
