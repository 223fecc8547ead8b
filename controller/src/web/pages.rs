//! The dashboard's HTML, rendered on the server (maud). Every page works without
//! JavaScript; no inline script or style (the Content-Security-Policy forbids them).
//! State is shown by a word and a shape, never by colour alone.

use maud::{DOCTYPE, Markup, html};

use super::data::{Cell, Fleet, JobRow, STATE_ORDER, state_key};
use super::detail::{IncidentRow, Site, Target};
use crate::policy::{human_bytes as bytes, human_secs as ago};

/// A time in UTC, to the minute (the page is the same for every reader).
pub fn time(unix_ms: u64) -> String {
    match jiff::Timestamp::from_millisecond(i64::try_from(unix_ms).unwrap_or(0)) {
        Ok(t) if unix_ms > 0 => t.strftime("%Y-%m-%d %H:%M UTC").to_string(),
        _ => "-".into(),
    }
}

/// What the layout needs of the viewer.
pub struct Chrome<'a> {
    pub account: &'a str,
    pub role: &'a str,
    pub csrf: &'a str,
    pub can_act: bool,
}

fn shape(state: &str) -> &'static str {
    match state {
        "VIOLATED" => "✖",
        "AT RISK" => "▲",
        "AGENT OFFLINE" => "◆",
        "NEVER BACKED UP" => "○",
        _ => "✔",
    }
}

pub fn layout(title: &str, c: Option<&Chrome>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · NEX Backup" }
                link rel="stylesheet" href="/static/app.css";
                script src="/static/app.js" defer {}
            }
            body {
                header {
                    a.brand href="/fleet" { "NEX Backup" }
                    @if let Some(c) = c {
                        nav {
                            a href="/fleet" { "Fleet" }
                            a href="/jobs" { "Jobs" }
                            a href="/incidents" { "Incidents" }
                            a href="/audit" { "Audit log" }
                            @if c.role == "admin" { a href="/accounts" { "Accounts" } }
                        }
                        form.logout method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(c.csrf);
                            span.who { (c.account) " (" (c.role) ")" }
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

pub fn login(error: Option<&str>, next: &str) -> Markup {
    layout(
        "Log in",
        None,
        html! {
            h1 { "Log in" }
            @if let Some(e) = error { p.error role="alert" { (e) } }
            form.login method="post" action="/login" {
                input type="hidden" name="next" value=(next);
                label { "Name" input name="name" autocomplete="username" required; }
                label { "Password" input name="password" type="password" autocomplete="current-password" required; }
                label { "One-time code (if your account has a second factor)" input name="code" inputmode="numeric" autocomplete="one-time-code" maxlength="8"; }
                button type="submit" { "Log in" }
            }
        },
    )
}

fn age(ms: Option<u64>) -> String {
    ms.map_or("never".into(), |m| ago(m / 1000))
}

fn cell(c: &Cell) -> Markup {
    html! {
        a.cell.(format!("st-{}", c.state_key)) href=(format!("/sites/{}/targets/{}", c.site, c.target)) data-state=(c.state) {
            span.state { (shape(c.state)) " " (c.state) }
            span.name { (c.site) " / " (c.target) }
            span.age title=(c.reason) { (age(c.age_ms)) " / RPO " (ago(c.rpo_ms / 1000)) }
        }
    }
}

/// Above this many targets, the fleet grid shows targets in order one cell per site.
const COMPACT_ABOVE: usize = 300;

/// The targets in `state` by site: (site, how many, the oldest newest-good age).
fn by_site(cells: &[Cell], state: &str) -> Vec<(String, usize, Option<u64>)> {
    let mut m: std::collections::BTreeMap<&str, (usize, Option<u64>)> = Default::default();
    for c in cells.iter().filter(|c| c.state == state) {
        let e = m.entry(c.site.as_str()).or_default();
        e.0 += 1;
        e.1 = e.1.max(c.age_ms);
    }
    m.into_iter()
        .map(|(s, (n, a))| (s.to_string(), n, a))
        .collect()
}

pub fn fleet(c: &Chrome, f: &Fleet, state: &str, q: &str) -> Markup {
    layout(
        "Fleet",
        Some(c),
        html! {
            h1 { "Fleet" }
            section.summary {
                @for s in &f.counts {
                    a.count.(format!("st-{}", s.state_key)) href=(format!("/fleet?state={}", s.state_key)) {
                        span.n { (s.targets) } " " (shape(s.state)) " " (s.state)
                    }
                }
                span.count { span.n { (f.open_incidents) } " open incidents" }
                span.count { span.n { (f.backups_24h_ok) } " backups ok, " (f.backups_24h_failed) " failed (24 h)" }
                span.count { (bytes(f.stored_bytes)) " stored for " (bytes(f.logical_bytes)) " (" (format!("{:.1}", f.dedup_ratio)) "×)" }
            }
            form.filters method="get" action="/fleet" {
                label { "State "
                    select name="state" {
                        option value="" { "any" }
                        @for s in STATE_ORDER {
                            @let k = state_key(s);
                            option value=(k) selected[k == state] { (s.label()) }
                        }
                    }
                }
                label { "Site " input name="q" value=(q) type="search"; }
                button type="submit" { "Filter" }
            }
            section.grid id="fleet-grid" {
                @if f.cells.len() > COMPACT_ABOVE {
                    // A large fleet: the targets that need attention each on its own,
                    // in their order; an offline agent's targets and the ones in order
                    // one cell per site.
                    @for st in ["VIOLATED", "AT RISK", "AGENT OFFLINE", "NEVER BACKED UP", "OK"] {
                        @if matches!(st, "AGENT OFFLINE" | "OK") {
                            @for (site, n, oldest) in by_site(&f.cells, st) {
                                a.cell.(format!("st-{}", st.to_ascii_lowercase().replace(' ', "-"))) href=(format!("/sites/{site}")) data-state=(st) {
                                    span.state { (shape(st)) " " (st) }
                                    span.name { (site) " · " (n) " target" @if n > 1 { "s" } }
                                    span.age { "oldest " (age(oldest)) }
                                }
                            }
                        } @else {
                            @for x in f.cells.iter().filter(|c| c.state == st) { (cell(x)) }
                        }
                    }
                } @else {
                    @for x in &f.cells { (cell(x)) }
                }
                @if f.cells.is_empty() { p { "No targets match." } }
            }
        },
    )
}

pub fn jobs_table(jobs: &[JobRow]) -> Markup {
    html! {
        div.scroll tabindex="0" role="region" aria-label="Jobs" { table.jobs {
            thead { tr { th { "Started" } th { "Site / target" } th { "Kind" } th { "Trigger" } th { "Outcome" } th { "Bytes" } } }
            tbody {
                @for j in jobs {
                    tr.(format!("job-{}", j.state)) data-job=(j.job_id) {
                        td { (time(j.started_unix_ms)) }
                        td { a href=(format!("/sites/{}/targets/{}", j.site, j.target)) { (j.site) " / " (j.target) } }
                        td { (j.kind) }
                        td { (j.trigger) }
                        td.outcome { span.phase { (j.state) } @if let Some(e) = &j.error { div.error { (e) } } }
                        td { (bytes(j.logical_bytes)) }
                    }
                }
            }
        } }
    }
}

pub fn jobs(c: &Chrome, rows: &[JobRow], f: &super::data::JobsFilter) -> Markup {
    let v = |o: &Option<String>| o.clone().unwrap_or_default();
    layout(
        "Jobs",
        Some(c),
        html! {
            h1 { "Jobs" }
            form.filters method="get" action="/jobs" {
                label { "Site " input name="site" value=(v(&f.site)); }
                label { "Target " input name="target" value=(v(&f.target)); }
                label { "Kind " input name="kind" value=(v(&f.kind)) placeholder="backup, restore"; }
                label { "Trigger " input name="trigger" value=(v(&f.trigger)) placeholder="manual, schedule, drill"; }
                label { "Outcome " input name="outcome" value=(v(&f.outcome)) placeholder="succeeded, failed, running"; }
                button type="submit" { "Filter" }
            }
            div #jobs data-live="1" { (jobs_table(rows)) }
        },
    )
}

pub fn incidents_table(c: &Chrome, rows: &[IncidentRow]) -> Markup {
    html! {
        div.scroll tabindex="0" role="region" aria-label="Incidents" { table.incidents {
            thead { tr { th { "#" } th { "Site" } th { "What" } th { "Opened" } th { "State" } } }
            tbody {
                @for i in rows {
                    tr data-incident=(i.id) {
                        td { (i.id) }
                        td { a href=(format!("/sites/{}", i.site)) { (i.site) } }
                        td { strong { (i.subject) } div { (i.summary) } }
                        td { (time(i.opened_unix_ms)) }
                        td {
                            @if i.resolved_unix_ms.is_some() { "resolved" }
                            @else if let Some(by) = &i.acked_by { "acknowledged by " (by) }
                            @else {
                                "open"
                                @if c.can_act {
                                    form.inline method="post" action=(format!("/incidents/{}/ack", i.id)) {
                                        input type="hidden" name="csrf" value=(c.csrf);
                                        button type="submit" { "Acknowledge" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        } }
    }
}

pub fn incidents(c: &Chrome, rows: &[IncidentRow]) -> Markup {
    layout(
        "Incidents",
        Some(c),
        html! { h1 { "Incidents" } (incidents_table(c, rows)) },
    )
}

pub fn site(c: &Chrome, s: &Site) -> Markup {
    layout(
        &s.site,
        Some(c),
        html! {
            h1 { "Site " (s.site) }
            h2 { "Agents" }
            div.scroll tabindex="0" role="region" aria-label="Agents" { table.agents {
                thead { tr { th { "Agent" } th { "State" } th { "Version" } th { "Last seen" } th { "Certificate until" } th { "Host (last 10 minutes)" } } }
                tbody { @for a in &s.agents { tr {
                    td { (a.agent_id) }
                    td { @if a.online { "● online" } @else { "○ offline" } }
                    td { (a.version) }
                    td { (time(a.last_seen_unix_ms)) }
                    td { (a.cert_not_after_unix.map_or("-".into(), |t| time(u64::try_from(t).unwrap_or(0) * 1000))) }
                    td.health {
                        @if let Some(h) = &a.health {
                            (super::charts::sparkline("CPU", &h.cpu_pct))
                            (super::charts::sparkline("memory", &h.mem_pct))
                            (super::charts::sparkline(&format!("disk {}", h.disk_path), &h.disk_pct))
                        } @else { "no report here yet" }
                    }
                } } }
            } }
            h2 { "Settings" }
            (super::site_settings::table(&s.site, &s.settings))
            h2 { "Targets" }
            section.grid { @for x in &s.targets { (cell(x)) } }
            h2 { "Incidents" }
            (incidents_table(c, &s.incidents))
            h2 { "Recent jobs" }
            (jobs_table(&s.jobs))
        },
    )
}

/// The actions on a target (operators and admins), and the live region a job's
/// progress appears in.
fn target_actions(c: &Chrome, t: &Target, job: Option<&str>) -> Markup {
    let base = format!("/sites/{}/targets/{}", t.site, t.target);
    let rto = t.status.as_ref().map_or(0, |s| s.rto_ms);
    html! {
        @if c.can_act {
            section.actions aria-label="Actions" {
                form.action method="post" action=(format!("{base}/backup")) data-action="backup" {
                    input type="hidden" name="csrf" value=(c.csrf);
                    button type="submit" { "Back up now" }
                    label.check { input type="checkbox" name="outside_window" value="1"; " even outside the site's window" }
                }
                form.action method="post" action=(format!("{base}/drill")) data-action="drill" {
                    input type="hidden" name="csrf" value=(c.csrf);
                    button type="submit" { "Drill now" }
                }
                form.action method="post" action=(format!("{base}/restore")) data-action="restore" {
                    input type="hidden" name="csrf" value=(c.csrf);
                    label { "Snapshot "
                        select name="snapshot" {
                            option value="latest" { "the newest good one" }
                            @for s in &t.snapshots { option value=(s.snapshot_id) { (s.snapshot_id) } }
                        }
                    }
                    @if t.kind == "postgres" {
                        label { "New database " input name="to_database" required pattern="[A-Za-z0-9_]{1,63}" placeholder="restored_db"; }
                    } @else {
                        label { "Into directory on the agent's host " input name="to_dir" required placeholder="/srv/restored"; }
                    }
                    button type="submit" { "Restore…" }
                }
            }
        }
        div #live role="status" aria-live="polite" data-job=[job] data-rto=(rto) {
            @if let Some(j) = job { "Job " (j) " started." }
        }
    }
}

fn secs_fmt(v: f64) -> String {
    ago((v / 1000.0) as u64)
}

fn bytes_fmt(v: f64) -> String {
    bytes(v as u64)
}

/// The target's charts: the newest good snapshot's age against the RPO, the compliance
/// calendar, snapshot sizes and backup durations, drill RTOs against the RTO.
fn target_charts(t: &Target) -> Markup {
    use super::charts::{Series, Style, calendar, chart};
    let (rpo, rto) = t.status.as_ref().map_or((0, 0), |s| (s.rpo_ms, s.rto_ms));
    let oldest_first: Vec<_> = t.snapshots.iter().rev().collect();
    html! {
        h2 { "Charts" }
        div.charts {
            (chart(&Series { title: "Age of the newest good snapshot, 30 days", points: t.age_30d.clone(),
                threshold: Some((rpo as f64, format!("RPO {}", ago(rpo / 1000)))), fmt: &secs_fmt, style: Style::Line }))
            (calendar(&t.calendar_30d))
            (chart(&Series { title: "Snapshot size (logical)", points: oldest_first.iter().map(|s| (s.created_unix_ms, s.logical_bytes as f64)).collect(),
                threshold: None, fmt: &bytes_fmt, style: Style::Bars }))
            (chart(&Series { title: "Backup duration", points: oldest_first.iter().map(|s| (s.created_unix_ms, s.duration_ms as f64)).collect(),
                threshold: None, fmt: &secs_fmt, style: Style::Bars }))
            (chart(&Series { title: "Restore drill RTO", points: t.drills.iter().map(|d| (d.0, d.1 as f64)).collect(),
                threshold: Some((rto as f64, format!("RTO {}", ago(rto / 1000)))), fmt: &secs_fmt, style: Style::Bars }))
        }
    }
}

pub fn target(c: &Chrome, t: &Target, job: Option<&str>) -> Markup {
    layout(
        &format!("{} / {}", t.site, t.target),
        Some(c),
        html! {
            h1 { a href=(format!("/sites/{}", t.site)) { (t.site) } " / " (t.target) }
            @if let Some(s) = &t.status {
                p.status.(format!("st-{}", s.state_key)) { (shape(s.state)) " " (s.state) ": " (s.reason) }
            }
            p { a href=(format!("/sites/{}/targets/{}/policy", t.site, t.target)) { "Policy: schedule, RPO, RTO, retention, drills" } }
            (target_actions(c, t, job))
            (target_charts(t))
            h2 { "Snapshots" }
            div #snapshots .scroll tabindex="0" role="region" aria-label="Snapshots" { table.snapshots {
                thead { tr { th { "Time" } th { "Snapshot" } th { "Logical" } th { "Stored" } th { "New" } th { "Duration" } th { "Standing" } } }
                tbody { @for s in &t.snapshots { tr data-snapshot=(s.snapshot_id) {
                    td { (time(s.created_unix_ms)) }
                    td.mono { (s.snapshot_id) }
                    td { (bytes(s.logical_bytes)) }
                    td { (bytes(s.stored_bytes)) }
                    td { (bytes(s.new_bytes)) }
                    td { (format!("{:.1} s", s.duration_ms as f64 / 1000.0)) }
                    td { (s.standing) }
                } } }
            } }
            h2 { "Recent jobs" }
            div #jobs data-live="1" { (jobs_table(&t.jobs)) }
        },
    )
}

pub fn not_found(c: Option<&Chrome>) -> Markup {
    layout(
        "Not found",
        c,
        html! { h1 { "Not found" } p { "There is no such page." } },
    )
}
