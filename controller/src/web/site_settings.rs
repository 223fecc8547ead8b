//! A site's own settings on the dashboard (the backup window, the upload bandwidth
//! limit, the drill agent, the retention lock): shown on the site's page and in its API
//! answer to everyone who sees the site, changed by operators and admins on
//! `/sites/{site}/settings` through the same admin call as `nex-backup policy set
//! --site` (without `--target`), with the same parsing and errors naming the CLI's flags.

use std::sync::Arc;

use axum::Form;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::{Markup, html};
use nex_backup_shared::pb;
use nex_backup_shared::pb::admin_service_server::AdminService;
use serde::{Deserialize, Serialize};

use super::Web;
use super::pages::{self, Chrome};
use super::routes::Viewer;
use crate::policy::durations::{BadValue, parse_duration_or_zero, parse_rate};
use crate::policy::human_secs;
use crate::state::State as Controller;

/// A site's settings as the dashboard shows them.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SiteSettings {
    /// Daily backup window, "HH:MM-HH:MM" in `timezone`; none: backups at any time.
    pub window: Option<String>,
    pub timezone: String,
    /// Whether backups may run now (always, without a window).
    pub window_open: bool,
    /// When the window next opens or closes (0: there is no window).
    pub window_changes_unix_ms: u64,
    /// Upload limit of each of the site's agents, bytes per second; 0: none.
    pub bandwidth_bytes_per_sec: u64,
    /// The agent that runs the site's restore drills; none: each target's own agent.
    pub drill_agent: Option<String>,
    /// No snapshot of the site is deleted before this age.
    pub retention_lock_secs: u64,
    /// When scheduled drills may start, "HH:MM-HH:MM" in `timezone`; none: any time.
    pub drill_hours: Option<String>,
    /// The site has no settings of its own (the controller's defaults apply).
    pub is_default: bool,
}

/// The settings of `site` now.
pub async fn of(st: &Controller, site: &str, now: u64) -> anyhow::Result<SiteSettings> {
    let own = crate::state::own_site_policy(st, site).await?;
    let is_default = own.is_none();
    let p = own.unwrap_or_else(|| crate::state::default_site_policy(st));
    let (window_open, window_changes_unix_ms) = p.window_state(now);
    Ok(SiteSettings {
        window_open,
        window_changes_unix_ms,
        is_default,
        window: p.window,
        timezone: p.timezone,
        bandwidth_bytes_per_sec: p.bandwidth_bytes_per_sec,
        drill_agent: p.drill_agent,
        retention_lock_secs: p.retention_lock_secs,
        drill_hours: p.drill_hours,
    })
}

fn rate(b: u64) -> String {
    if b == 0 {
        "none".into()
    } else {
        format!("{}/s", crate::policy::human_bytes(b))
    }
}

/// A rate as the form shows it, exactly as [`parse_rate`] reads it back.
fn exact_rate(b: u64) -> String {
    match b {
        0 => "0".into(),
        b if b % (1 << 30) == 0 => format!("{}GiB", b >> 30),
        b if b % (1 << 20) == 0 => format!("{}MiB", b >> 20),
        b if b % (1 << 10) == 0 => format!("{}KiB", b >> 10),
        b => b.to_string(),
    }
}

fn secs(s: u64) -> String {
    if s == 0 { "0".into() } else { human_secs(s) }
}

/// The settings as a table (the site's page, and viewers' settings page).
pub fn table(site: &str, s: &SiteSettings) -> Markup {
    html! {
        table.policy { tbody {
            tr { th { "Backup window" } td {
                @match &s.window {
                    Some(w) => {
                        (w) " (" (s.timezone) "), "
                        @if s.window_open { "open now, closes " } @else { "closed now, opens " }
                        (pages::time(s.window_changes_unix_ms))
                    }
                    None => { "none: backups at any time" }
                }
            } }
            tr { th { "Upload bandwidth" } td { (rate(s.bandwidth_bytes_per_sec)) " per agent" } }
            tr { th { "Drill agent" } td {
                @match &s.drill_agent { Some(a) => { (a) }, None => { "each target's own agent" } }
            } }
            tr { th { "Scheduled drills start" } td {
                @match &s.drill_hours { Some(h) => { (h) " (" (s.timezone) ")" }, None => { "at any time in the window" } }
            } }
            tr { th { "Retention lock" } td { "nothing deleted before " (secs(s.retention_lock_secs)) } }
        } }
        p { a href=(format!("/sites/{site}/settings")) { "Site settings" }
            @if s.is_default { " (the controller's defaults)" } }
    }
}

fn page(
    c: &Chrome,
    site: &str,
    s: &SiteSettings,
    f: &SettingsForm,
    note: Option<Markup>,
) -> Markup {
    pages::layout(
        "Site settings",
        Some(c),
        html! {
            h1 { a href=(format!("/sites/{site}")) { (site) } ": settings" }
            @if let Some(n) = note { div #note role="alert" { (n) } }
            @if c.can_act {
                form.policy method="post" action=(format!("/sites/{site}/settings")) {
                    input type="hidden" name="csrf" value=(c.csrf);
                    label { "Backup window (e.g. 22:00-06:00; empty: none) " input name="window" value=(f.window); }
                    label { "Time zone " input name="timezone" value=(f.timezone); }
                    label { "Upload bandwidth per agent (e.g. 2MiB; 0: none) " input name="bandwidth" value=(f.bandwidth); }
                    label { "Drill agent (empty: each target's own) " input name="drill_agent" value=(f.drill_agent); }
                    label { "Scheduled drills start (e.g. 01:00-05:00; any) " input name="drill_hours" value=(f.drill_hours.as_deref().unwrap_or("")); }
                    label { "Retention lock (e.g. 7d) " input name="retention_lock" value=(f.retention_lock); }
                    button type="submit" { "Save" }
                }
            } @else {
                (table(site, s))
            }
        },
    )
}

/// The settings form, as text the way the CLI's flags take it.
#[derive(Deserialize)]
pub struct SettingsForm {
    window: String,
    timezone: String,
    bandwidth: String,
    drill_agent: String,
    retention_lock: String,
    #[serde(default)]
    drill_hours: Option<String>,
}

impl From<&SiteSettings> for SettingsForm {
    fn from(s: &SiteSettings) -> Self {
        SettingsForm {
            window: s.window.clone().unwrap_or_default(),
            timezone: s.timezone.clone(),
            bandwidth: exact_rate(s.bandwidth_bytes_per_sec),
            drill_agent: s.drill_agent.clone().unwrap_or_default(),
            retention_lock: secs(s.retention_lock_secs),
            drill_hours: Some(s.drill_hours.clone().unwrap_or_else(|| "any".into())),
        }
    }
}

/// The form as settings, or the first field's error as the CLI would word it.
fn parse(f: &SettingsForm) -> Result<pb::SitePolicyMsg, BadValue> {
    let none_is_empty = |s: &str| {
        let t = s.trim();
        if t == "none" {
            String::new()
        } else {
            t.to_string()
        }
    };
    Ok(pb::SitePolicyMsg {
        window: none_is_empty(&f.window),
        timezone: f.timezone.trim().to_string(),
        bandwidth_bytes_per_sec: parse_rate(&f.bandwidth).map_err(|e| e.about("--bandwidth"))?,
        drill_agent: none_is_empty(&f.drill_agent),
        retention_lock_secs: Some(
            parse_duration_or_zero(&f.retention_lock)
                .map_err(|e| e.about("--retention-lock"))?
                .as_secs(),
        ),
        // Unset (a form without the field) keeps the current hours.
        drill_hours: f.drill_hours.as_ref().map(|h| h.trim().to_string()),
    })
}

pub async fn show(State(web): State<Arc<Web>>, v: Viewer, Path(site): Path<String>) -> Response {
    if !v.scope().sees(&site)
        || !super::detail::known(&web.state, &site)
            .await
            .unwrap_or(false)
    {
        return v.refused(StatusCode::NOT_FOUND, "not found");
    }
    match of(&web.state, &site, nex_backup_shared::clock::now_ms()).await {
        Ok(s) => Html(page(&v.chrome(), &site, &s, &SettingsForm::from(&s), None).into_string())
            .into_response(),
        Err(e) => v.refused(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

pub async fn save(
    State(web): State<Arc<Web>>,
    v: Viewer,
    Path(site): Path<String>,
    Form(f): Form<SettingsForm>,
) -> Response {
    if !v.scope().sees(&site) {
        return v.refused(StatusCode::NOT_FOUND, "not found");
    }
    if !v.scope().can_act() {
        let msg = format!("a {} account cannot change settings", v.account.role.name());
        return v.refused(StatusCode::FORBIDDEN, &msg);
    }
    let current = match of(&web.state, &site, nex_backup_shared::clock::now_ms()).await {
        Ok(s) => s,
        Err(e) => return v.refused(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    let again = |msg: String| {
        let note = html! { span.error { "Not saved: " (msg) } };
        let body = page(&v.chrome(), &site, &current, &f, Some(note));
        (StatusCode::BAD_REQUEST, Html(body.into_string())).into_response()
    };
    let policy = match parse(&f) {
        Ok(p) => p,
        Err(msg) => return again(msg.to_string()),
    };
    let (api, who) = v.admin_api(&web);
    let mut req = tonic::Request::new(pb::SetSitePolicyRequest {
        site: site.clone(),
        policy: Some(policy),
        create: false,
    });
    req.extensions_mut().insert(who);
    match api.set_site_policy(req).await {
        Ok(_) => Redirect::to(&format!("/sites/{site}")).into_response(),
        Err(e) if e.code() == tonic::Code::NotFound => {
            v.refused(StatusCode::NOT_FOUND, "not found")
        }
        Err(e) => again(e.message().to_string()),
    }
}
