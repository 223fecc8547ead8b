//! `nex-backup notify ...` (channels, rules, test) and `nex-backup incidents [ack]`.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use nex_backup_shared::pb;
use serde_json::json;

use super::ClientOpts;
use super::client::{connect, status};
use super::format::{table, time};
use super::trust::{parse_duration, parse_duration_or_zero};
use crate::policy::human_secs;

#[derive(Debug, Subcommand)]
pub enum NotifyCommand {
    /// Add or replace an e-mail channel (SMTP). Secrets are named, never given: the
    /// password is read from the controller's environment or a file when mail is sent.
    AddEmail(EmailArgs),
    /// Add or replace a webhook channel: a JSON POST signed with HMAC-SHA256
    /// (header x-nex-signature: sha256=HEX over "TIMESTAMP.BODY", x-nex-timestamp),
    /// with an idempotency-key header; its `text` field suits Slack and Teams.
    AddWebhook(WebhookArgs),
    /// Every channel, with notices waiting and the last delivery error.
    List(ClientOnlyArgs),
    /// Remove a channel (its waiting notices are dropped).
    Remove(NameArgs),
    /// Send a test message now and print what the server answered.
    Test(TestArgs),
    /// Every alert rule's effective settings (globally, or for --site).
    Rules(RulesArgs),
    /// Change a rule globally or for one site; unset flags keep their value.
    Rule(RuleArgs),
    /// The daily summary (and weekly report) by e-mail: show, schedule, or send now.
    Summary(SummaryArgs),
}

#[derive(Debug, Args)]
pub struct SummaryArgs {
    /// Local time of the daily summary, HH:MM (default 07:00).
    #[arg(long)]
    pub at: Option<String>,
    /// Its time zone, e.g. Europe/Bratislava (default: the controller's default zone).
    #[arg(long)]
    pub timezone: Option<String>,
    /// Day of the weekly report: mon..sun, or off.
    #[arg(long)]
    pub weekly: Option<String>,
    /// Stop sending summaries.
    #[arg(long, conflicts_with_all = ["at", "timezone", "weekly", "send_now"])]
    pub off: bool,
    /// Send the summary now (with --weekly-report: the weekly report).
    #[arg(long)]
    pub send_now: bool,
    #[arg(long, requires = "send_now")]
    pub weekly_report: bool,
    #[command(flatten)]
    pub client: ClientOpts,
}

#[derive(Debug, Args)]
pub struct ClientOnlyArgs {
    #[command(flatten)]
    pub client: ClientOpts,
}

#[derive(Debug, Args)]
pub struct NameArgs {
    /// The channel's name.
    pub name: String,
    #[command(flatten)]
    pub client: ClientOpts,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// The channel to test.
    #[arg(long)]
    pub channel: String,
    #[command(flatten)]
    pub client: ClientOpts,
}

#[derive(Debug, Args)]
pub struct EmailArgs {
    /// The channel's name, e.g. oncall.
    pub name: String,
    /// Only this site's incidents (a customer's contacts); without it, every incident.
    #[arg(long)]
    pub site: Option<String>,
    /// SMTP server host.
    #[arg(long)]
    pub smtp_host: String,
    /// SMTP port (default: 587 for starttls, 465 for tls, 25 for none).
    #[arg(long)]
    pub smtp_port: Option<u16>,
    /// starttls, tls (implicit TLS) or none (only to localhost).
    #[arg(long, default_value = "starttls")]
    pub smtp_tls: String,
    /// SMTP user, if the server wants authentication.
    #[arg(long)]
    pub smtp_user: Option<String>,
    /// Environment variable of the controller that holds the SMTP password.
    #[arg(long, conflicts_with = "password_file")]
    pub password_env: Option<String>,
    /// File (absolute path, readable by the controller) that holds the SMTP password.
    #[arg(long)]
    pub password_file: Option<String>,
    /// Sender address, e.g. "NEX Backup <backup@example.net>".
    #[arg(long)]
    pub from: String,
    /// Recipient(s); repeat or separate with commas.
    #[arg(long, required = true, value_delimiter = ',')]
    pub to: Vec<String>,
    #[command(flatten)]
    pub client: ClientOpts,
}

#[derive(Debug, Args)]
pub struct WebhookArgs {
    /// The channel's name.
    pub name: String,
    /// Only this site's incidents; without it, every incident.
    #[arg(long)]
    pub site: Option<String>,
    /// The URL to POST to.
    #[arg(long)]
    pub url: String,
    /// Environment variable of the controller that holds the signing secret.
    #[arg(long, conflicts_with = "secret_file")]
    pub secret_env: Option<String>,
    /// File (absolute path) that holds the signing secret.
    #[arg(long)]
    pub secret_file: Option<String>,
    /// How long one POST may take, e.g. 10s.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    #[command(flatten)]
    pub client: ClientOpts,
}

#[derive(Debug, Args)]
pub struct RulesArgs {
    /// The customer site, e.g. acme.
    #[arg(long)]
    pub site: Option<String>,
    #[command(flatten)]
    pub client: ClientOpts,
}

#[derive(Debug, Args)]
pub struct RuleArgs {
    /// The rule, e.g. backup-failed, agent-offline (see `notify rules`).
    pub rule: String,
    /// Change it for this site only; without it, for every site.
    #[arg(long)]
    pub site: Option<String>,
    /// Turn the rule on or off.
    #[arg(long)]
    pub enabled: Option<bool>,
    /// How long the condition must hold before an incident opens, e.g. 5m (0 = at once).
    #[arg(long, value_parser = parse_duration_or_zero)]
    pub hold: Option<Duration>,
    /// Reminder interval while an incident is open and not acknowledged, e.g. 24h
    /// (0 = no reminders).
    #[arg(long, value_parser = parse_duration_or_zero)]
    pub remind: Option<Duration>,
    /// The rule's threshold, in the unit `notify rules` shows (seconds, MiB, days).
    #[arg(long)]
    pub threshold: Option<u64>,
    /// Remove the override first (back to the defaults, then apply the flags given).
    #[arg(long)]
    pub reset: bool,
    #[command(flatten)]
    pub client: ClientOpts,
}

#[derive(Debug, Args)]
pub struct IncidentsArgs {
    #[command(subcommand)]
    pub command: Option<IncidentsCommand>,
    /// Only open incidents.
    #[arg(long)]
    pub open: bool,
    /// The customer site, e.g. acme.
    #[arg(long)]
    pub site: Option<String>,
    #[command(flatten)]
    pub client: ClientOpts,
}

#[derive(Debug, Subcommand)]
pub enum IncidentsCommand {
    /// Acknowledge an open incident: its reminders stop (it still resolves by itself).
    Ack {
        /// The incident's number (`nex-backup incidents`).
        id: u64,
    },
}

pub async fn notify(c: NotifyCommand) -> anyhow::Result<ExitCode> {
    match c {
        NotifyCommand::AddEmail(a) => {
            let m = pb::ChannelMsg {
                name: a.name,
                site: a.site.unwrap_or_default(),
                kind: "email".into(),
                smtp_host: a.smtp_host,
                smtp_port: a.smtp_port.unwrap_or(0) as u32,
                smtp_tls: a.smtp_tls,
                mail_from: a.from,
                mail_to: a.to,
                smtp_user: a.smtp_user.unwrap_or_default(),
                password_env: a.password_env.unwrap_or_default(),
                password_file: a.password_file.unwrap_or_default(),
                ..Default::default()
            };
            let r = connect(&a.client)
                .await?
                .set_channel(m)
                .await
                .map_err(status)?
                .into_inner();
            println!(
                "channel {} set: e-mail via {}:{} ({}) to {}",
                r.name,
                r.smtp_host,
                r.smtp_port,
                r.smtp_tls,
                r.mail_to.join(", ")
            );
        }
        NotifyCommand::AddWebhook(a) => {
            let m = pb::ChannelMsg {
                name: a.name,
                site: a.site.unwrap_or_default(),
                kind: "webhook".into(),
                url: a.url,
                secret_env: a.secret_env.unwrap_or_default(),
                secret_file: a.secret_file.unwrap_or_default(),
                timeout_secs: a.timeout.as_secs().max(1),
                ..Default::default()
            };
            let r = connect(&a.client)
                .await?
                .set_channel(m)
                .await
                .map_err(status)?
                .into_inner();
            println!("channel {} set: webhook to {}", r.name, r.url);
        }
        NotifyCommand::List(a) => list(&a.client).await?,
        NotifyCommand::Remove(a) => {
            let r = connect(&a.client)
                .await?
                .delete_channel(pb::DeleteChannelRequest {
                    name: a.name.clone(),
                })
                .await
                .map_err(status)?
                .into_inner();
            if !r.deleted {
                anyhow::bail!("no notification channel {}", a.name);
            }
            println!("channel {} removed", a.name);
        }
        NotifyCommand::Test(a) => {
            let r = connect(&a.client)
                .await?
                .test_channel(pb::TestChannelRequest {
                    name: a.channel.clone(),
                })
                .await
                .map_err(status)?
                .into_inner();
            println!(
                "test message sent on channel {}; the server answered: {}",
                a.channel, r.answer
            );
        }
        NotifyCommand::Rules(a) => rules(&a).await?,
        NotifyCommand::Summary(a) => summary(a).await?,
        NotifyCommand::Rule(a) => {
            let m = pb::AlertRuleMsg {
                rule: a.rule,
                site: a.site.unwrap_or_default(),
                enabled: a.enabled,
                hold_secs: a.hold.map(|d| d.as_secs()),
                remind_secs: a.remind.map(|d| d.as_secs()),
                threshold: a.threshold,
                reset: a.reset,
                ..Default::default()
            };
            let r = connect(&a.client)
                .await?
                .set_alert_rule(m)
                .await
                .map_err(status)?
                .into_inner();
            println!("{}", rules_table(&[r]));
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn list(client: &ClientOpts) -> anyhow::Result<()> {
    let r = connect(client)
        .await?
        .list_channels(pb::ListChannelsRequest {})
        .await
        .map_err(status)?
        .into_inner();
    if client.json {
        let v: Vec<_> = r.channels.iter().map(|c| json!({"name": c.name, "site": c.site, "kind": c.kind,
            "smtp_host": c.smtp_host, "smtp_port": c.smtp_port, "smtp_tls": c.smtp_tls, "from": c.mail_from,
            "to": c.mail_to, "url": c.url, "queued": c.queued, "last_error": c.last_error})).collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = r
        .channels
        .iter()
        .map(|c| {
            let dest = if c.kind == "email" {
                format!(
                    "{} via {}:{} ({})",
                    c.mail_to.join(","),
                    c.smtp_host,
                    c.smtp_port,
                    c.smtp_tls
                )
            } else {
                c.url.clone()
            };
            vec![
                c.name.clone(),
                if c.site.is_empty() {
                    "(all)".into()
                } else {
                    c.site.clone()
                },
                c.kind.clone(),
                dest,
                c.queued.to_string(),
                if c.last_error.is_empty() {
                    "-".into()
                } else {
                    c.last_error.clone()
                },
            ]
        })
        .collect();
    println!(
        "{}",
        table(
            &["CHANNEL", "SITE", "KIND", "TO", "QUEUED", "LAST ERROR"],
            &rows
        )
    );
    Ok(())
}

fn rules_table(rules: &[pb::AlertRuleMsg]) -> String {
    let rows: Vec<Vec<String>> = rules
        .iter()
        .map(|r| {
            let th = if r.threshold_unit.is_empty() {
                "-".into()
            } else {
                format!("{} {}", r.threshold.unwrap_or(0), r.threshold_unit)
            };
            vec![
                r.rule.clone(),
                if r.enabled.unwrap_or(true) {
                    "on".into()
                } else {
                    "off".into()
                },
                human_secs(r.hold_secs.unwrap_or(0)),
                human_secs(r.remind_secs.unwrap_or(0)),
                th,
                r.title.clone(),
            ]
        })
        .collect();
    table(
        &["RULE", "ON", "HOLD", "REMIND", "THRESHOLD", "WHAT"],
        &rows,
    )
}

async fn rules(a: &RulesArgs) -> anyhow::Result<()> {
    let r = connect(&a.client)
        .await?
        .list_alert_rules(pb::ListAlertRulesRequest {
            site: a.site.clone().unwrap_or_default(),
        })
        .await
        .map_err(status)?
        .into_inner();
    println!("{}", rules_table(&r.rules));
    Ok(())
}

pub async fn incidents(a: IncidentsArgs) -> anyhow::Result<ExitCode> {
    if let Some(IncidentsCommand::Ack { id }) = a.command {
        let i = connect(&a.client)
            .await?
            .ack_incident(pb::AckIncidentRequest { id })
            .await
            .map_err(status)?
            .into_inner();
        println!(
            "incident #{} acknowledged by {}: no more reminders; it resolves by itself when the condition clears",
            i.id, i.acked_by
        );
        return Ok(ExitCode::SUCCESS);
    }
    let r = connect(&a.client)
        .await?
        .list_incidents(pb::ListIncidentsRequest {
            site: a.site.unwrap_or_default(),
            open_only: a.open,
            limit: 0,
        })
        .await
        .map_err(status)?
        .into_inner();
    if a.client.json {
        let v: Vec<_> = r.incidents.iter().map(|i| json!({"id": i.id, "rule": i.rule, "site": i.site, "subject": i.subject,
            "opened_unix_ms": i.opened_unix_ms, "resolved_unix_ms": (i.resolved_unix_ms > 0).then_some(i.resolved_unix_ms),
            "summary": i.summary, "reminders": i.reminders, "acked_by": (!i.acked_by.is_empty()).then_some(&i.acked_by)})).collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = r
        .incidents
        .iter()
        .map(|i| {
            let state = if i.resolved_unix_ms > 0 {
                format!("resolved {}", time(i.resolved_unix_ms))
            } else if !i.acked_by.is_empty() {
                "open (acked)".into()
            } else {
                "OPEN".into()
            };
            vec![
                format!("#{}", i.id),
                state,
                i.rule.clone(),
                if i.site.is_empty() {
                    "-".into()
                } else {
                    i.site.clone()
                },
                i.subject.clone(),
                time(i.opened_unix_ms),
                i.summary.clone(),
            ]
        })
        .collect();
    println!(
        "{}",
        table(
            &[
                "ID", "STATE", "RULE", "SITE", "SUBJECT", "OPENED", "SUMMARY"
            ],
            &rows
        )
    );
    Ok(ExitCode::SUCCESS)
}

async fn summary(a: SummaryArgs) -> anyhow::Result<()> {
    let mut client = connect(&a.client).await?;
    if a.send_now {
        let r = client
            .send_summary(pb::SendSummaryRequest {
                weekly: a.weekly_report,
            })
            .await
            .map_err(status)?
            .into_inner();
        println!("summary queued for {} e-mail channel(s)", r.queued);
        return Ok(());
    }
    let show_only = !a.off && a.at.is_none() && a.timezone.is_none() && a.weekly.is_none();
    let m = pb::SummaryMsg {
        at: a.at.unwrap_or_default(),
        timezone: a.timezone.unwrap_or_default(),
        weekly_day: a.weekly.unwrap_or_default(),
        off: a.off,
        show_only,
        enabled: false,
    };
    let r = client.set_summary(m).await.map_err(status)?.into_inner();
    if r.enabled {
        println!(
            "daily summary at {} ({}); weekly report: {}",
            r.at, r.timezone, r.weekly_day
        );
    } else {
        println!(
            "no summaries are sent (set one with: nex-backup notify summary --at 07:00 --timezone Europe/Bratislava)"
        );
    }
    Ok(())
}
