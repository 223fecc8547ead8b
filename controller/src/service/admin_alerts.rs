//! Admin calls about alerting: channels, rules, incidents. Channel settings are checked
//! here, once, into [`ChannelRecord`]s; secrets are only named.

use nex_backup_shared::ids::validate_name;
use nex_backup_shared::pb;
use tonic::Status;

use super::admin::AdminApi;
use super::{bad_input, catalog_status, now_ms, parse_site};
use crate::alerts::rules::{self, Rule};
use crate::alerts::send::is_loopback;
use crate::catalog::alerts::{
    ChannelKind, ChannelRecord, IncidentRecord, RuleRecord, SecretRef, SmtpTls,
};

const MAX_RECIPIENTS: usize = 20;
const MAX_FIELD: usize = 512;

fn field(name: &str, v: &str) -> Result<String, Status> {
    if v.len() > MAX_FIELD || v.chars().any(char::is_control) {
        return Err(Status::invalid_argument(format!(
            "{name}: at most {MAX_FIELD} bytes, no control characters"
        )));
    }
    Ok(v.trim().to_string())
}

/// A secret's source: an environment variable name or an absolute file path.
fn secret(env: &str, file: &str, what: &str) -> Result<Option<SecretRef>, Status> {
    match (env.trim(), file.trim()) {
        ("", "") => Ok(None),
        (e, "") => {
            if e.len() > 128 || !e.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(Status::invalid_argument(format!(
                    "{what}: {e:?} is not an environment variable name"
                )));
            }
            Ok(Some(SecretRef::Env(e.into())))
        }
        ("", f) => {
            let f = field(what, f)?;
            if !std::path::Path::new(&f).is_absolute() {
                return Err(Status::invalid_argument(format!(
                    "{what}: the file {f} must be an absolute path"
                )));
            }
            Ok(Some(SecretRef::File(f)))
        }
        _ => Err(Status::invalid_argument(format!(
            "{what}: give an environment variable or a file, not both"
        ))),
    }
}

fn channel_record(m: &pb::ChannelMsg) -> Result<ChannelRecord, Status> {
    validate_name("channel", &m.name).map_err(bad_input)?;
    if !m.site.is_empty() {
        parse_site(&m.site)?;
    }
    let kind = match m.kind.as_str() {
        "email" => {
            let host = field("SMTP host", &m.smtp_host)?;
            if host.is_empty() {
                return Err(Status::invalid_argument(
                    "an e-mail channel needs an SMTP host (--smtp-host)",
                ));
            }
            let tls = match m.smtp_tls.as_str() {
                "" | "starttls" => SmtpTls::Starttls,
                "tls" => SmtpTls::Implicit,
                "none" if is_loopback(&host) => SmtpTls::None,
                "none" => {
                    return Err(Status::invalid_argument(format!(
                        "plain SMTP (--smtp-tls none) is allowed only to this machine, not to {host}: use starttls or tls"
                    )));
                }
                other => {
                    return Err(Status::invalid_argument(format!(
                        "--smtp-tls {other:?}: use starttls, tls or none"
                    )));
                }
            };
            let port = match (m.smtp_port, tls) {
                (0, SmtpTls::Implicit) => 465,
                (0, SmtpTls::Starttls) => 587,
                (0, SmtpTls::None) => 25,
                (p, _) if p <= 65535 => p as u16,
                (p, _) => {
                    return Err(Status::invalid_argument(format!(
                        "SMTP port {p} is out of range"
                    )));
                }
            };
            let from = field("from address", &m.mail_from)?;
            from.parse::<lettre::message::Mailbox>()
                .map_err(|e| Status::invalid_argument(format!("from address {from:?}: {e}")))?;
            if m.mail_to.is_empty() || m.mail_to.len() > MAX_RECIPIENTS {
                return Err(Status::invalid_argument(format!(
                    "an e-mail channel needs 1 to {MAX_RECIPIENTS} recipients (--to)"
                )));
            }
            let mut to = vec![];
            for r in &m.mail_to {
                let r = field("recipient", r)?;
                r.parse::<lettre::message::Mailbox>()
                    .map_err(|e| Status::invalid_argument(format!("recipient {r:?}: {e}")))?;
                to.push(r);
            }
            let username = Some(field("SMTP user", &m.smtp_user)?).filter(|u| !u.is_empty());
            let password = secret(&m.password_env, &m.password_file, "SMTP password")?;
            if password.is_some() && username.is_none() {
                return Err(Status::invalid_argument(
                    "an SMTP password needs an SMTP user (--smtp-user)",
                ));
            }
            ChannelKind::Email {
                host,
                port,
                tls,
                from,
                to,
                username,
                password,
            }
        }
        "webhook" => {
            let url = field("URL", &m.url)?;
            let parsed = reqwest::Url::parse(&url)
                .map_err(|e| Status::invalid_argument(format!("webhook URL: {e}")))?;
            if !matches!(parsed.scheme(), "https" | "http") {
                return Err(Status::invalid_argument(
                    "a webhook URL is http:// or https://",
                ));
            }
            ChannelKind::Webhook {
                url,
                secret: secret(&m.secret_env, &m.secret_file, "webhook secret")?,
                timeout_secs: if m.timeout_secs == 0 {
                    10
                } else {
                    m.timeout_secs.min(120)
                },
            }
        }
        other => {
            return Err(Status::invalid_argument(format!(
                "channel kind {other:?}: use email or webhook"
            )));
        }
    };
    Ok(ChannelRecord {
        v: 1,
        name: m.name.clone(),
        site: m.site.clone(),
        kind,
    })
}

fn channel_msg(c: &ChannelRecord) -> pb::ChannelMsg {
    let mut m = pb::ChannelMsg {
        name: c.name.clone(),
        site: c.site.clone(),
        ..Default::default()
    };
    match &c.kind {
        ChannelKind::Email {
            host,
            port,
            tls,
            from,
            to,
            username,
            password,
        } => {
            let (e, f) = split(password);
            m.kind = "email".into();
            m.smtp_host = host.clone();
            m.smtp_port = *port as u32;
            m.smtp_tls = match tls {
                SmtpTls::Starttls => "starttls",
                SmtpTls::Implicit => "tls",
                SmtpTls::None => "none",
            }
            .into();
            m.mail_from = from.clone();
            m.mail_to = to.clone();
            m.smtp_user = username.clone().unwrap_or_default();
            (m.password_env, m.password_file) = (e, f);
        }
        ChannelKind::Webhook {
            url,
            secret,
            timeout_secs,
        } => {
            let (e, f) = split(secret);
            m.kind = "webhook".into();
            m.url = crate::alerts::send::redact_url(url);
            m.timeout_secs = *timeout_secs;
            (m.secret_env, m.secret_file) = (e, f);
        }
    }
    m
}

fn split(s: &Option<SecretRef>) -> (String, String) {
    match s {
        Some(SecretRef::Env(e)) => (e.clone(), String::new()),
        Some(SecretRef::File(f)) => (String::new(), f.clone()),
        None => Default::default(),
    }
}

fn incident_info(i: IncidentRecord) -> pb::IncidentInfo {
    pb::IncidentInfo {
        id: i.id,
        rule: i.rule,
        site: i.site,
        subject: i.subject,
        opened_unix_ms: i.opened_unix_ms,
        resolved_unix_ms: i.resolved_unix_ms.unwrap_or(0),
        summary: i.summary,
        reminders: i.reminders,
        acked_by: i.acked_by.unwrap_or_default(),
        acked_unix_ms: i.acked_unix_ms.unwrap_or(0),
    }
}

fn rule_msg(rule: Rule, site: &str, records: &[RuleRecord]) -> pb::AlertRuleMsg {
    let s = rules::settings(rule, site, records);
    pb::AlertRuleMsg {
        rule: rule.name().into(),
        site: site.into(),
        enabled: Some(s.enabled),
        hold_secs: Some(s.hold_secs),
        remind_secs: Some(s.remind_secs),
        threshold: Some(s.threshold),
        threshold_unit: rule.threshold_unit().into(),
        title: rule.title().into(),
        reset: false,
    }
}

impl AdminApi {
    async fn channel_named(&self, name: &str) -> Result<Option<ChannelRecord>, Status> {
        Ok(self
            .state
            .alerts
            .channels()
            .await
            .map_err(catalog_status)?
            .into_iter()
            .find(|c| c.name == name))
    }

    pub(super) async fn set_channel_impl(
        &self,
        m: pb::ChannelMsg,
    ) -> Result<pb::ChannelMsg, Status> {
        let rec = channel_record(&m)?;
        let a = &self.state.alerts;
        a.put_channel(&rec).await.map_err(catalog_status)?;
        let out = channel_msg(&rec);
        self.audit(
            &rec.site,
            "",
            "notification channel set",
            format!(
                "{} ({}{})",
                rec.name,
                out.kind,
                if out.kind == "email" {
                    format!(" via {}:{}", out.smtp_host, out.smtp_port)
                } else {
                    format!(" to {}", out.url)
                }
            ),
        )
        .await?;
        Ok(out)
    }

    pub(super) async fn list_channels_impl(&self) -> Result<pb::ListChannelsResponse, Status> {
        let a = &self.state.alerts;
        let outbox = a.outbox().await.map_err(catalog_status)?;
        let channels = a
            .channels()
            .await
            .map_err(catalog_status)?
            .iter()
            .map(|c| {
                let mut m = channel_msg(c);
                let queued: Vec<_> = outbox.iter().filter(|e| e.channel == c.name).collect();
                m.queued = queued.len() as u64;
                m.last_error = queued
                    .iter()
                    .rev()
                    .find(|e| !e.last_error.is_empty())
                    .map(|e| e.last_error.clone())
                    .unwrap_or_default();
                m
            })
            .collect();
        Ok(pb::ListChannelsResponse { channels })
    }

    pub(super) async fn delete_channel_impl(
        &self,
        r: pb::DeleteChannelRequest,
    ) -> Result<pb::DeleteChannelResponse, Status> {
        validate_name("channel", &r.name).map_err(bad_input)?;
        let a = &self.state.alerts;
        let site = self.channel_named(&r.name).await?.map(|c| c.site);
        let deleted = a.delete_channel(&r.name).await.map_err(catalog_status)?;
        if deleted {
            self.audit(
                &site.unwrap_or_default(),
                "",
                "notification channel deleted",
                r.name.clone(),
            )
            .await?;
        }
        Ok(pb::DeleteChannelResponse { deleted })
    }

    pub(super) async fn test_channel_impl(
        &self,
        r: pb::TestChannelRequest,
    ) -> Result<pb::TestChannelResponse, Status> {
        validate_name("channel", &r.name).map_err(bad_input)?;
        let a = &self.state.alerts;
        let Some(ch) = self.channel_named(&r.name).await? else {
            return Err(Status::not_found(format!(
                "no notification channel {} (nex-backup notify list)",
                r.name
            )));
        };
        let id = a.next_id().await.map_err(catalog_status)?;
        let n = crate::alerts::notice::test_notice(id, &ch.name, &self.state.host, now_ms());
        match crate::alerts::send::deliver(&ch, &n).await {
            Ok(answer) => Ok(pb::TestChannelResponse { answer }),
            Err(e) => Err(Status::failed_precondition(format!(
                "test message not delivered: {e}"
            ))),
        }
    }

    pub(super) async fn set_alert_rule_impl(
        &self,
        m: pb::AlertRuleMsg,
    ) -> Result<pb::AlertRuleMsg, Status> {
        let Some(rule) = Rule::parse(&m.rule) else {
            let names: Vec<_> = rules::ALL.iter().map(|r| r.name()).collect();
            return Err(Status::invalid_argument(format!(
                "no alert rule {:?}; the rules are {}",
                m.rule,
                names.join(", ")
            )));
        };
        if !m.site.is_empty() {
            parse_site(&m.site)?;
        }
        let a = &self.state.alerts;
        let records = a.rules().await.map_err(catalog_status)?;
        let mut rec = records
            .iter()
            .find(|r| r.rule == m.rule && r.site == m.site)
            .cloned()
            .unwrap_or(RuleRecord {
                v: 1,
                rule: m.rule.clone(),
                site: m.site.clone(),
                ..Default::default()
            });
        if m.reset {
            rec = RuleRecord {
                v: 1,
                rule: m.rule.clone(),
                site: m.site.clone(),
                ..Default::default()
            };
        }
        rec.enabled = m.enabled.or(rec.enabled);
        rec.hold_secs = m.hold_secs.or(rec.hold_secs);
        rec.remind_secs = m.remind_secs.or(rec.remind_secs);
        rec.threshold = m.threshold.or(rec.threshold);
        a.put_rule(&rec).await.map_err(catalog_status)?;
        let records = a.rules().await.map_err(catalog_status)?;
        let out = rule_msg(rule, &m.site, &records);
        self.audit(
            &m.site,
            "",
            "alert rule set",
            format!(
                "{}: enabled={} hold={}s remind={}s threshold={}",
                rule.name(),
                out.enabled.unwrap_or(true),
                out.hold_secs.unwrap_or(0),
                out.remind_secs.unwrap_or(0),
                out.threshold.unwrap_or(0)
            ),
        )
        .await?;
        Ok(out)
    }

    pub(super) async fn list_alert_rules_impl(
        &self,
        r: pb::ListAlertRulesRequest,
    ) -> Result<pb::ListAlertRulesResponse, Status> {
        if !r.site.is_empty() {
            parse_site(&r.site)?;
        }
        let records = self.state.alerts.rules().await.map_err(catalog_status)?;
        Ok(pb::ListAlertRulesResponse {
            rules: rules::ALL
                .iter()
                .map(|rule| rule_msg(*rule, &r.site, &records))
                .collect(),
        })
    }

    pub(super) async fn list_incidents_impl(
        &self,
        r: pb::ListIncidentsRequest,
    ) -> Result<pb::ListIncidentsResponse, Status> {
        if !r.site.is_empty() {
            parse_site(&r.site)?;
        }
        let limit = if r.limit == 0 { 200 } else { r.limit.min(1000) } as usize;
        let mut all: Vec<IncidentRecord> = self
            .state
            .alerts
            .incidents()
            .await
            .map_err(catalog_status)?
            .into_iter()
            .filter(|i| (r.site.is_empty() || i.site == r.site) && (!r.open_only || i.is_open()))
            .collect();
        all.sort_by_key(|i| std::cmp::Reverse(i.id));
        all.truncate(limit);
        Ok(pb::ListIncidentsResponse {
            incidents: all.into_iter().map(incident_info).collect(),
        })
    }

    pub(super) async fn ack_incident_impl(
        &self,
        r: pb::AckIncidentRequest,
    ) -> Result<pb::IncidentInfo, Status> {
        let a = &self.state.alerts;
        let Some(mut inc) = a.incident(r.id).await.map_err(catalog_status)? else {
            return Err(Status::not_found(format!(
                "no incident #{} (nex-backup incidents)",
                r.id
            )));
        };
        if !inc.is_open() {
            return Err(Status::failed_precondition(format!(
                "incident #{} is already resolved",
                r.id
            )));
        }
        if inc.acked_by.is_none() {
            inc.acked_by = Some(self.actor());
            inc.acked_unix_ms = Some(now_ms());
            a.apply_incident(crate::catalog::alerts::IncidentChange {
                incident: inc.clone(),
                notices: vec![],
            })
            .await
            .map_err(catalog_status)?;
            self.audit(
                &inc.site,
                "",
                "incident acknowledged",
                format!("#{} {} {}", inc.id, inc.rule, inc.subject),
            )
            .await?;
        }
        Ok(incident_info(inc))
    }
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn summary_msg(r: Option<&crate::catalog::alerts::SummaryRecord>) -> pb::SummaryMsg {
    match r {
        None => pb::SummaryMsg::default(),
        Some(r) => pb::SummaryMsg {
            at: r.at.clone(),
            timezone: r.timezone.clone(),
            weekly_day: r
                .weekly_day
                .map_or("off".into(), |d| DAYS[d as usize % 7].into()),
            enabled: true,
            ..Default::default()
        },
    }
}

impl AdminApi {
    pub(super) async fn set_summary_impl(
        &self,
        m: pb::SummaryMsg,
    ) -> Result<pb::SummaryMsg, Status> {
        let a = &self.state.alerts;
        let current = a.summary().await.map_err(catalog_status)?;
        if m.show_only {
            return Ok(summary_msg(current.as_ref()));
        }
        if m.off {
            a.put_summary(None).await.map_err(catalog_status)?;
            self.audit("", "", "summary turned off", String::new())
                .await?;
            return Ok(summary_msg(None));
        }
        let mut rec = current.unwrap_or(crate::catalog::alerts::SummaryRecord {
            v: 1,
            at: "07:00".into(),
            timezone: self.state.default_policy.timezone.clone(),
            ..Default::default()
        });
        if !m.at.is_empty() {
            let ok = m.at.len() == 5 && chrono::NaiveTime::parse_from_str(&m.at, "%H:%M").is_ok();
            if !ok {
                return Err(Status::invalid_argument(format!(
                    "--at {:?}: a local time HH:MM, e.g. 07:00",
                    m.at
                )));
            }
            rec.at = m.at.clone();
        }
        if !m.timezone.is_empty() {
            m.timezone.parse::<chrono_tz::Tz>().map_err(|_| {
                Status::invalid_argument(format!(
                    "--timezone {:?}: not a time zone name, e.g. Europe/Bratislava",
                    m.timezone
                ))
            })?;
            rec.timezone = m.timezone.clone();
        }
        match m.weekly_day.as_str() {
            "" => {}
            "off" => rec.weekly_day = None,
            d => {
                let Some(i) = DAYS.iter().position(|x| *x == d) else {
                    return Err(Status::invalid_argument(format!(
                        "--weekly {d:?}: one of mon, tue, wed, thu, fri, sat, sun, off"
                    )));
                };
                rec.weekly_day = Some(i as u8);
            }
        }
        a.put_summary(Some(&rec)).await.map_err(catalog_status)?;
        let out = summary_msg(Some(&rec));
        self.audit(
            "",
            "",
            "summary schedule set",
            format!(
                "daily at {} {}, weekly {}",
                out.at, out.timezone, out.weekly_day
            ),
        )
        .await?;
        Ok(out)
    }

    pub(super) async fn send_summary_impl(
        &self,
        r: pb::SendSummaryRequest,
    ) -> Result<pb::SendSummaryResponse, Status> {
        let n = crate::alerts::summary::enqueue(&self.state, now_ms(), r.weekly)
            .await
            .map_err(catalog_status)?;
        if n == 0 {
            return Err(Status::failed_precondition(
                "no e-mail channel to send the summary to (nex-backup notify add-email)",
            ));
        }
        Ok(pb::SendSummaryResponse { queued: n as u32 })
    }
}
