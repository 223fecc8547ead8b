//! The daily (and weekly) summary: per site, each target's state and newest good
//! snapshot; the backups of the period with sizes and durations; failures; RPO
//! compliance; drill RTOs against targets; disk space. Sites in trouble come first.
//! Rendered as plain text and as HTML (escaped, well formed), sent to e-mail channels:
//! global channels get every site, a site's channel only its site.

use std::collections::BTreeMap;

use crate::alerts::notice::{html_escape, utc};
use crate::catalog::{CatalogError, JobState};
use crate::fleet::view::View;
use crate::policy::{human_bytes, human_secs};
use crate::rpo::RpoState;
use crate::state::State;

/// One target's line.
#[derive(Debug, Clone)]
struct TargetLine {
    target: String,
    state: RpoState,
    newest_good_ms: Option<u64>,
    rpo_ms: u64,
    compliance_pct: f64,
    backups_ok: u32,
    backups_failed: u32,
    logical: u64,
    new: u64,
    longest_ms: u64,
    drill: Option<(u64, bool)>,
    rto_ms: u64,
    failures: Vec<String>,
}

/// One site's part.
#[derive(Debug, Clone, Default)]
struct SitePart {
    targets: Vec<TargetLine>,
    /// (agent, tightest volume role, free, total)
    disks: Vec<(String, String, u64, u64)>,
}

impl SitePart {
    fn in_trouble(&self) -> bool {
        self.targets.iter().any(|t| {
            !matches!(t.state, RpoState::Ok)
                || t.backups_failed > 0
                || t.drill
                    .is_some_and(|(took, ok)| !ok || (t.rto_ms > 0 && took > t.rto_ms))
        })
    }
}

/// A rendered summary.
#[derive(Debug, Clone)]
pub struct Summary {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// The summary of the `period_ms` before `now` for `site` (or every site).
pub async fn build(
    state: &State,
    now: u64,
    period_ms: u64,
    site: Option<&str>,
    weekly: bool,
) -> Result<Summary, CatalogError> {
    let view = View::load(state).await?;
    let from = now.saturating_sub(period_ms);
    let events = state.catalog.rpo_events(site).await?;
    let mut sites: BTreeMap<String, SitePart> = BTreeMap::new();
    for t in crate::fleet::compliance::evaluate_all(state, &view, now) {
        if site.is_some_and(|s| s != t.site) {
            continue;
        }
        let (pct, _) = t.compliance(&events, from, now);
        let mut line = TargetLine {
            target: t.target.clone(),
            state: t.state,
            newest_good_ms: t.newest_good_ms,
            rpo_ms: t.rpo_ms,
            compliance_pct: pct,
            backups_ok: 0,
            backups_failed: 0,
            logical: 0,
            new: 0,
            longest_ms: 0,
            drill: t.last_drill,
            rto_ms: t.rto_ms,
            failures: vec![],
        };
        for j in view.jobs.iter().filter(|j| {
            j.site == t.site
                && j.target == t.target
                && j.kind == crate::catalog::JobKind::Backup
                && j.started_unix_ms >= from
        }) {
            match j.state {
                JobState::Succeeded => {
                    line.backups_ok += 1;
                    line.logical += j.logical_bytes;
                    line.new += j.new_bytes;
                    line.longest_ms = line.longest_ms.max(
                        j.ended_unix_ms
                            .unwrap_or(j.started_unix_ms)
                            .saturating_sub(j.started_unix_ms),
                    );
                }
                JobState::Failed => {
                    line.backups_failed += 1;
                    let err = j.error_line().to_string();
                    if line.failures.len() < 5 {
                        line.failures
                            .push(format!("{} {}", utc(j.started_unix_ms), err));
                    }
                }
                JobState::Running => {}
            }
        }
        sites.entry(t.site.clone()).or_default().targets.push(line);
    }
    for a in &view.agents {
        if let Some(part) = sites.get_mut(&a.site)
            && let Some(h) = state.health.latest(&a.site, &a.agent_id)
            && let Some(v) = h.tightest()
        {
            part.disks.push((
                a.agent_id.clone(),
                v.role.clone(),
                v.free_bytes,
                v.total_bytes,
            ));
        }
    }
    let mut order: Vec<(&String, &SitePart)> = sites.iter().collect();
    order.sort_by_key(|(name, part)| (!part.in_trouble(), (*name).clone()));
    let trouble = order.iter().filter(|(_, p)| p.in_trouble()).count();
    let kind = if weekly {
        "Weekly report"
    } else {
        "Daily summary"
    };
    let subject = format!(
        "[NEX Backup] {kind}: {trouble} of {} site(s) need attention",
        order.len()
    );
    let store_free = state.store.free_bytes().await.ok().flatten();
    Ok(Summary {
        text: text(&subject, &order, now, period_ms, store_free),
        html: html(&subject, &order, now, period_ms, store_free),
        subject,
    })
}

fn newest(t: &TargetLine, now: u64) -> String {
    match t.newest_good_ms {
        Some(g) => format!(
            "{} ({} ago, RPO {})",
            utc(g),
            human_secs(now.saturating_sub(g) / 1000),
            human_secs(t.rpo_ms / 1000)
        ),
        None => "none".into(),
    }
}

fn drill(t: &TargetLine) -> String {
    match t.drill {
        None => "not drilled".into(),
        Some((took, ok)) => format!(
            "{} in {} (RTO {})",
            if ok { "passed" } else { "FAILED" },
            human_secs(took / 1000),
            if t.rto_ms > 0 {
                human_secs(t.rto_ms / 1000)
            } else {
                "-".into()
            }
        ),
    }
}

fn backups(t: &TargetLine) -> String {
    format!(
        "{} ok, {} failed; {} read, {} new, longest {}",
        t.backups_ok,
        t.backups_failed,
        human_bytes(t.logical),
        human_bytes(t.new),
        human_secs(t.longest_ms / 1000)
    )
}

fn text(
    subject: &str,
    order: &[(&String, &SitePart)],
    now: u64,
    period_ms: u64,
    store_free: Option<u64>,
) -> String {
    let mut out = vec![
        subject.to_string(),
        format!(
            "Period: the {} up to {}",
            human_secs(period_ms / 1000),
            utc(now)
        ),
        String::new(),
    ];
    for (site, part) in order {
        out.push(format!(
            "== {site}{}",
            if part.in_trouble() {
                " — NEEDS ATTENTION"
            } else {
                ""
            }
        ));
        for t in &part.targets {
            out.push(format!("  {}: {}", t.target, t.state.label()));
            out.push(format!("    newest good: {}", newest(t, now)));
            out.push(format!("    backups: {}", backups(t)));
            out.push(format!("    RPO compliance: {:.1}%", t.compliance_pct));
            out.push(format!("    drill: {}", drill(t)));
            for f in &t.failures {
                out.push(format!("    failed: {f}"));
            }
        }
        for (agent, role, free, total) in &part.disks {
            out.push(format!(
                "  disk {agent} ({role}): {} free of {}",
                human_bytes(*free),
                human_bytes(*total)
            ));
        }
        out.push(String::new());
    }
    if let Some(f) = store_free {
        out.push(format!("Controller store: {} free", human_bytes(f)));
    }
    out.join("\n")
}

fn html(
    subject: &str,
    order: &[(&String, &SitePart)],
    now: u64,
    period_ms: u64,
    store_free: Option<u64>,
) -> String {
    let e = |s: &str| html_escape(s);
    let mut h = format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{t}</title></head><body><h1>{t}</h1><p>Period: the {p} up to {n}</p>",
        t = e(subject),
        p = human_secs(period_ms / 1000),
        n = utc(now)
    );
    for (site, part) in order {
        h.push_str(&format!("<h2>{}{}</h2><table><thead><tr><th>Target</th><th>State</th><th>Newest good</th><th>Backups</th><th>RPO compliance</th><th>Drill</th></tr></thead><tbody>", e(site), if part.in_trouble() { " — NEEDS ATTENTION" } else { "" }));
        for t in &part.targets {
            h.push_str(&format!(
                "<tr><td>{}</td><td><strong>{}</strong></td><td>{}</td><td>{}</td><td>{:.1}%</td><td>{}</td></tr>",
                e(&t.target), t.state.label(), e(&newest(t, now)), e(&backups(t)), t.compliance_pct, e(&drill(t))
            ));
        }
        h.push_str("</tbody></table>");
        let fails: Vec<String> = part
            .targets
            .iter()
            .flat_map(|t| {
                t.failures
                    .iter()
                    .map(move |f| format!("<li>{}: {}</li>", e(&t.target), e(f)))
            })
            .collect();
        if !fails.is_empty() {
            h.push_str(&format!("<p>Failures:</p><ul>{}</ul>", fails.concat()));
        }
        for (agent, role, free, total) in &part.disks {
            h.push_str(&format!(
                "<p>Disk {} ({}): {} free of {}</p>",
                e(agent),
                e(role),
                human_bytes(*free),
                human_bytes(*total)
            ));
        }
    }
    if let Some(f) = store_free {
        h.push_str(&format!("<p>Controller store: {} free</p>", human_bytes(f)));
    }
    h.push_str("</body></html>");
    h
}

/// Queue the summary to every e-mail channel (a site's channel gets its site only).
/// Returns how many notices were queued.
pub async fn enqueue(state: &State, now: u64, weekly: bool) -> Result<usize, CatalogError> {
    use crate::catalog::alerts::ChannelKind;
    let period = if weekly { 7 * 86_400_000 } else { 86_400_000 };
    let mut n = 0;
    for ch in state.alerts.channels().await? {
        if !matches!(ch.kind, ChannelKind::Email { .. }) {
            continue;
        }
        let site = (!ch.site.is_empty()).then_some(ch.site.as_str());
        let s = build(state, now, period, site, weekly).await?;
        let id = state.alerts.next_id().await?;
        let kind = if weekly { "weekly" } else { "summary" };
        state
            .alerts
            .enqueue(&crate::catalog::alerts::OutboxEntry {
                v: 1,
                id,
                channel: ch.name.clone(),
                incident_id: 0,
                kind: kind.into(),
                message_id: format!("nexb.{kind}.{id}@{}", state.host),
                subject: s.subject,
                text: s.text,
                html: s.html,
                json: "{}".into(),
                created_unix_ms: now,
                attempts: 0,
                next_attempt_unix_ms: now,
                last_error: String::new(),
            })
            .await?;
        n += 1;
    }
    state.outbox_wake.notify_one();
    Ok(n)
}

/// The summary worker's pass: send the daily summary once the set local time has
/// passed today, and the weekly report on its day.
pub async fn tick(state: &State) -> Result<(), CatalogError> {
    let Some(mut rec) = state.alerts.summary().await? else {
        return Ok(());
    };
    let Ok(tz) = rec.timezone.parse::<chrono_tz::Tz>() else {
        return Err(CatalogError::Storage(format!(
            "summary time zone {:?} is unknown",
            rec.timezone
        )));
    };
    let now = nex_backup_shared::clock::now_ms();
    let local = chrono::DateTime::from_timestamp_millis(now as i64)
        .unwrap_or_default()
        .with_timezone(&tz);
    let today = local.format("%Y-%m-%d").to_string();
    if local.format("%H:%M").to_string() < rec.at {
        return Ok(());
    }
    if rec.last_daily != today {
        rec.last_daily = today.clone();
        state.alerts.put_summary(Some(&rec)).await?;
        enqueue(state, now, false).await?;
    }
    use chrono::Datelike;
    let weekday = local.weekday().num_days_from_monday() as u8;
    if rec.weekly_day == Some(weekday) && rec.last_weekly != today {
        rec.last_weekly = today;
        state.alerts.put_summary(Some(&rec)).await?;
        enqueue(state, now, true).await?;
    }
    Ok(())
}
