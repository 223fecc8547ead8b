//! `nex-backup jobs` (the job history, newest first) and `nex-backup rpo` (compliance).

use std::process::ExitCode;

use anyhow::anyhow;
use clap::Args;
use nex_backup_shared::pb;
use serde_json::json;

use super::ClientOpts;
use super::client::connect;
use super::format::{bytes, job_kind, job_state, job_trigger, table, time};

/// What `jobs` does besides listing.
#[derive(Debug, clap::Subcommand)]
pub enum JobsAction {
    /// One job in full: its error (whole), times, duration, bytes, snapshot, agent.
    Show { job_id: String },
    /// Stop a running job: recorded as failed, the agent stops it (a backup commits
    /// nothing). Audited.
    Cancel {
        job_id: String,
        /// Why (kept with the job and in the audit trail).
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct JobsArgs {
    #[command(subcommand)]
    pub action: Option<JobsAction>,
    /// The customer site, e.g. acme.
    #[arg(long)]
    pub site: Option<String>,
    /// The target (a database the site's agent backs up), e.g. invoices.
    #[arg(long)]
    pub target: Option<String>,
    /// Only failed jobs.
    #[arg(long)]
    pub failed: bool,
    /// At most this many.
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    #[command(flatten)]
    pub client: ClientOpts,
}

fn duration(j: &pb::JobInfo) -> String {
    if j.ended_unix_ms == 0 {
        return "-".into();
    }
    let ms = j.ended_unix_ms.saturating_sub(j.started_unix_ms);
    format!("{:.1}s", ms as f64 / 1000.0)
}

/// Up to `a.limit` jobs, newest first, fetched page by page.
async fn fetch_jobs(a: &JobsArgs) -> anyhow::Result<Vec<pb::JobInfo>> {
    let mut client = connect(&a.client).await?;
    let (mut out, mut page_token) = (Vec::new(), String::new());
    while out.len() < a.limit as usize {
        let r = client
            .list_jobs(pb::ListJobsRequest {
                site: a.site.clone().unwrap_or_default(),
                target: a.target.clone().unwrap_or_default(),
                failed_only: a.failed,
                limit: (a.limit as usize - out.len()).min(1000) as u32,
                page_token,
                job_id: String::new(),
            })
            .await
            .map_err(|s| anyhow!("{}", s.message()))?
            .into_inner();
        out.extend(r.jobs);
        if r.next_page_token.is_empty() {
            break;
        }
        page_token = r.next_page_token;
    }
    Ok(out)
}

/// `jobs show ID`.
async fn show(a: &JobsArgs, job_id: &str) -> anyhow::Result<ExitCode> {
    let r = connect(&a.client)
        .await?
        .list_jobs(pb::ListJobsRequest {
            job_id: job_id.into(),
            ..Default::default()
        })
        .await
        .map_err(|s| anyhow!("{}", s.message()))?
        .into_inner();
    let Some(j) = r.jobs.into_iter().next() else {
        anyhow::bail!("no job {job_id}");
    };
    if a.client.json {
        println!("{}", job_json(&j));
        return Ok(ExitCode::SUCCESS);
    }
    let rows = [
        ("job", j.job_id.clone()),
        (
            "what",
            format!(
                "{} of {}/{} ({})",
                job_kind(j.kind),
                j.site,
                j.target,
                job_trigger(j.trigger)
            ),
        ),
        ("agent", j.agent_id.clone()),
        ("state", job_state(j.state).into()),
        ("started", time(j.started_unix_ms)),
        ("ended", time(j.ended_unix_ms)),
        ("duration", duration(&j)),
        (
            "snapshot",
            if j.snapshot_id.is_empty() {
                "-".into()
            } else {
                j.snapshot_id.clone()
            },
        ),
        ("read", bytes(j.logical_bytes)),
        ("new", bytes(j.new_bytes)),
    ];
    for (k, v) in rows {
        println!("{k:<10}{v}");
    }
    if !j.error.is_empty() {
        println!("error:\n{}", j.error);
    }
    Ok(ExitCode::SUCCESS)
}

fn job_json(j: &pb::JobInfo) -> serde_json::Value {
    json!({
        "job_id": j.job_id, "site": j.site, "target": j.target, "kind": job_kind(j.kind),
        "state": job_state(j.state), "trigger": job_trigger(j.trigger), "started_unix_ms": j.started_unix_ms,
        "ended_unix_ms": j.ended_unix_ms, "error": j.error, "snapshot_id": j.snapshot_id,
        "logical_bytes": j.logical_bytes, "new_bytes": j.new_bytes, "agent_id": j.agent_id,
    })
}

pub async fn jobs(a: JobsArgs) -> anyhow::Result<ExitCode> {
    if let Some(JobsAction::Show { job_id }) = &a.action {
        return show(&a, job_id).await;
    }
    if let Some(JobsAction::Cancel { job_id, reason }) = &a.action {
        let j = connect(&a.client)
            .await?
            .cancel_job(pb::CancelJobRequest {
                job_id: job_id.clone(),
                reason: reason.clone().unwrap_or_default(),
            })
            .await
            .map_err(|s| anyhow!("{}", s.message()))?
            .into_inner();
        println!(
            "job {} ({} of {}/{}) cancelled; its agent was told to stop",
            j.job_id,
            job_kind(j.kind),
            j.site,
            j.target
        );
        return Ok(ExitCode::SUCCESS);
    }
    let r = pb::ListJobsResponse {
        jobs: fetch_jobs(&a).await?,
        next_page_token: String::new(),
    };
    if a.client.json {
        let v: Vec<_> = r.jobs.iter().map(job_json).collect();
        println!("{}", serde_json::Value::Array(v));
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = r
        .jobs
        .iter()
        .map(|j| {
            vec![
                j.job_id.clone(),
                j.site.clone(),
                j.target.clone(),
                j.agent_id.clone(),
                format!("{} ({})", job_kind(j.kind), job_trigger(j.trigger)),
                time(j.started_unix_ms),
                time(j.ended_unix_ms),
                job_state(j.state).into(),
                duration(j),
                if j.logical_bytes > 0 {
                    format!("{} / {} new", bytes(j.logical_bytes), bytes(j.new_bytes))
                } else {
                    "-".into()
                },
                match j.error.lines().next() {
                    Some(first) if first.chars().count() > 80 || j.error.contains('\n') => {
                        format!(
                            "{}… (jobs show {})",
                            first.chars().take(80).collect::<String>(),
                            j.job_id
                        )
                    }
                    Some(first) => first.to_string(),
                    None => String::new(),
                },
            ]
        })
        .collect();
    let header = [
        "JOB", "SITE", "TARGET", "AGENT", "KIND", "STARTED", "ENDED", "OUTCOME", "DURATION",
        "BYTES", "ERROR",
    ];
    println!("{}", table(&header, &rows));
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct RpoArgs {
    /// Window for the compliance figures, in days.
    #[arg(long, default_value_t = 30)]
    pub days: u32,
    /// The customer site, e.g. acme.
    #[arg(long)]
    pub site: Option<String>,
    #[command(flatten)]
    pub client: ClientOpts,
}

/// `nex-backup rpo`: per target and per site, state, age, compliance, violations.
pub async fn rpo(a: RpoArgs) -> anyhow::Result<ExitCode> {
    let r = connect(&a.client)
        .await?
        .rpo(pb::RpoRequest {
            days: a.days,
            site: a.site.unwrap_or_default(),
        })
        .await
        .map_err(|s| anyhow!("{}", s.message()))?
        .into_inner();
    let now = nex_backup_shared::clock::now_ms();
    if a.client.json {
        let targets: Vec<_> = r.targets.iter().map(|t| json!({
            "site": t.site, "target": t.target, "state": rpo_label(t.state), "reason": t.reason,
            "newest_good_unix_ms": t.newest_good_unix_ms, "rpo_secs": t.rpo_secs,
            "compliance_pct": t.compliance_pct, "rto_secs": t.rto_secs, "drilled": t.drilled,
            "measured_rto_ms": t.measured_rto_ms, "last_drill_ok": t.last_drill_ok,
            "violations": t.violations.iter().map(|v| json!({
                "from_unix_ms": v.from_unix_ms, "to_unix_ms": v.to_unix_ms})).collect::<Vec<_>>(),
        })).collect();
        let sites: Vec<_> = r
            .sites
            .iter()
            .map(|s| {
                json!({
            "site": s.site, "state": rpo_label(s.state), "compliance_pct": s.compliance_pct,
            "violations": s.violations})
            })
            .collect();
        println!(
            "{}",
            json!({"days": a.days, "targets": targets, "sites": sites})
        );
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = r
        .targets
        .iter()
        .map(|t| {
            let violations: Vec<String> = t
                .violations
                .iter()
                .map(|v| {
                    let to = if v.to_unix_ms == 0 {
                        "now".to_string()
                    } else {
                        time(v.to_unix_ms)
                    };
                    format!("{} - {to}", time(v.from_unix_ms))
                })
                .collect();
            vec![
                t.site.clone(),
                t.target.clone(),
                rpo_label(t.state).into(),
                super::format::age(now, t.newest_good_unix_ms),
                crate::policy::human_secs(t.rpo_secs),
                if t.drilled && t.last_drill_ok {
                    format!(
                        "{:.1}s / {}",
                        t.measured_rto_ms as f64 / 1000.0,
                        crate::policy::human_secs(t.rto_secs)
                    )
                } else if t.drilled {
                    // A failed drill restored nothing usable: it measured no RTO.
                    format!("drill FAILED / {}", crate::policy::human_secs(t.rto_secs))
                } else {
                    format!("not drilled / {}", crate::policy::human_secs(t.rto_secs))
                },
                format!("{:.2} %", t.compliance_pct),
                if violations.is_empty() {
                    "-".into()
                } else {
                    violations.join("; ")
                },
            ]
        })
        .collect();
    let header = [
        "SITE",
        "TARGET",
        "STATE",
        "NEWEST AGE",
        "RPO",
        "RTO MEASURED / TARGET",
        "COMPLIANCE",
        "VIOLATIONS",
    ];
    println!("{}", table(&header, &rows));
    for t in r
        .targets
        .iter()
        .filter(|t| t.state != pb::RpoStatus::Ok as i32)
    {
        println!(
            "{}/{}: {}: {}",
            t.site,
            t.target,
            rpo_label(t.state),
            t.reason
        );
    }
    println!("\nper site, last {} days:", a.days);
    let rows: Vec<Vec<String>> = r
        .sites
        .iter()
        .map(|s| {
            vec![
                s.site.clone(),
                rpo_label(s.state).into(),
                format!("{:.2} %", s.compliance_pct),
                s.violations.to_string(),
            ]
        })
        .collect();
    println!(
        "{}",
        table(&["SITE", "STATE", "COMPLIANCE", "VIOLATIONS"], &rows)
    );
    Ok(ExitCode::SUCCESS)
}

/// How an RPO state is printed.
fn rpo_label(state: i32) -> &'static str {
    match pb::RpoStatus::try_from(state).unwrap_or_default() {
        pb::RpoStatus::Ok => "OK",
        pb::RpoStatus::AtRisk => "AT RISK",
        pb::RpoStatus::Violated => "VIOLATED",
        pb::RpoStatus::AgentOffline => "AGENT OFFLINE",
        pb::RpoStatus::NeverBackedUp => "NEVER BACKED UP",
        pb::RpoStatus::Unspecified => "?",
    }
}
