//! A target's policy on the dashboard: shown to everyone who sees the site, changed by
//! operators and admins through the same admin call as `nex-backup policy set`, with
//! the same parsing of durations and the same errors, naming the field as the CLI's
//! flag (`--rpo: "24": a duration needs a unit ...`).

use std::sync::Arc;

use axum::Form;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::{Markup, html};
use nex_backup_shared::pb;
use nex_backup_shared::pb::admin_service_server::AdminService;
use serde::Deserialize;

use super::Web;
use super::pages::{self, Chrome};
use super::routes::Viewer;
use crate::policy::durations::{BadValue, parse_duration, parse_duration_or_zero};
use crate::policy::human_secs;

async fn current(
    web: &Web,
    v: &Viewer,
    site: &str,
    target: &str,
) -> Result<pb::PolicyInfo, tonic::Status> {
    let (api, who) = v.admin_api(web);
    let mut req = tonic::Request::new(pb::GetPolicyRequest {
        site: site.into(),
        target: target.into(),
    });
    req.extensions_mut().insert(who);
    Ok(api.get_policy(req).await?.into_inner())
}

fn secs(s: u64) -> String {
    if s == 0 { "0".into() } else { human_secs(s) }
}

fn page(
    c: &Chrome,
    site: &str,
    target: &str,
    p: &pb::PolicyMsg,
    is_default: bool,
    note: Option<Markup>,
) -> Markup {
    let kv = |k: u32| k.to_string();
    let verified = p.keep_verified.unwrap_or(3);
    pages::layout(
        "Policy",
        Some(c),
        html! {
            h1 { a href=(format!("/sites/{site}")) { (site) } " / " a href=(format!("/sites/{site}/targets/{target}")) { (target) } ": policy" }
            @if is_default { p { "This target uses the controller's default policy." } }
            @if let Some(n) = note { div #note role="alert" { (n) } }
            @if c.can_act {
                form.policy method="post" action=(format!("/sites/{site}/targets/{target}/policy")) {
                    input type="hidden" name="csrf" value=(c.csrf);
                    label { "Schedule (cron) " input name="schedule" value=(p.schedule); }
                    label { "Time zone " input name="timezone" value=(p.timezone); }
                    label { "RPO " input name="rpo" value=(secs(p.rpo_secs)); }
                    label { "RTO " input name="rto" value=(secs(p.rto_secs)); }
                    label { "Keep last " input name="keep_last" value=(kv(p.keep_last)) inputmode="numeric"; }
                    label { "Keep daily " input name="keep_daily" value=(kv(p.keep_daily)) inputmode="numeric"; }
                    label { "Keep weekly " input name="keep_weekly" value=(kv(p.keep_weekly)) inputmode="numeric"; }
                    label { "Keep monthly " input name="keep_monthly" value=(kv(p.keep_monthly)) inputmode="numeric"; }
                    label { "Keep drill-verified " input name="keep_verified" value=(kv(verified)) inputmode="numeric"; }
                    label { "Drill every (0: never) " input name="drill_every" value=(secs(p.drill_every_secs)); }
                    label.check { input type="checkbox" name="force" value="1"; " accept an RPO shorter than the schedule's interval" }
                    button type="submit" { "Save" }
                }
            } @else {
                table.policy { tbody {
                    tr { th { "Schedule" } td { (p.schedule) " (" (p.timezone) ")" } }
                    tr { th { "RPO / RTO" } td { (secs(p.rpo_secs)) " / " (secs(p.rto_secs)) } }
                    tr { th { "Keep" } td { "last " (p.keep_last) ", daily " (p.keep_daily) ", weekly " (p.keep_weekly) ", monthly " (p.keep_monthly) ", verified " (verified) } }
                    tr { th { "Drills" } td { @if p.drill_every_secs == 0 { "never" } @else { "every " (secs(p.drill_every_secs)) } } }
                } }
            }
        },
    )
}

pub async fn show(
    State(web): State<Arc<Web>>,
    v: Viewer,
    Path((site, target)): Path<(String, String)>,
) -> Response {
    if !v.scope().sees(&site) {
        return v.refused(StatusCode::NOT_FOUND, "not found");
    }
    match current(&web, &v, &site, &target).await {
        Ok(info) => {
            let p = info.policy.unwrap_or_default();
            Html(page(&v.chrome(), &site, &target, &p, info.is_default, None).into_string())
                .into_response()
        }
        Err(e) if e.code() == tonic::Code::NotFound || e.code() == tonic::Code::InvalidArgument => {
            v.refused(StatusCode::NOT_FOUND, "not found")
        }
        Err(e) => v.refused(StatusCode::SERVICE_UNAVAILABLE, e.message()),
    }
}

#[derive(Deserialize)]
pub struct PolicyForm {
    schedule: String,
    timezone: String,
    rpo: String,
    rto: String,
    keep_last: String,
    keep_daily: String,
    keep_weekly: String,
    keep_monthly: String,
    keep_verified: String,
    drill_every: String,
    #[serde(default)]
    force: Option<String>,
}

/// The form as a policy, or the first field's error as the CLI would word it.
fn parse(f: &PolicyForm) -> Result<pb::PolicyMsg, BadValue> {
    let dur = |flag: &str, s: &str| {
        parse_duration(s)
            .map(|d| d.as_secs())
            .map_err(|e| e.about(&format!("--{flag}")))
    };
    let count = |flag: &str, s: &str| {
        s.trim().parse::<u32>().map_err(|_| {
            BadValue(format!(
                "--{flag}: {:?}: expected a whole number, e.g. 7",
                s.trim()
            ))
        })
    };
    Ok(pb::PolicyMsg {
        schedule: f.schedule.trim().to_string(),
        timezone: f.timezone.trim().to_string(),
        rpo_secs: dur("rpo", &f.rpo)?,
        rto_secs: dur("rto", &f.rto)?,
        keep_last: count("keep-last", &f.keep_last)?,
        keep_daily: count("keep-daily", &f.keep_daily)?,
        keep_weekly: count("keep-weekly", &f.keep_weekly)?,
        keep_monthly: count("keep-monthly", &f.keep_monthly)?,
        keep_verified: Some(count("keep-verified", &f.keep_verified)?),
        drill_every_secs: parse_duration_or_zero(&f.drill_every)
            .map(|d| d.as_secs())
            .map_err(|e| e.about("--drill-every"))?,
    })
}

pub async fn save(
    State(web): State<Arc<Web>>,
    v: Viewer,
    Path((site, target)): Path<(String, String)>,
    Form(f): Form<PolicyForm>,
) -> Response {
    if !v.scope().sees(&site) {
        return v.refused(StatusCode::NOT_FOUND, "not found");
    }
    if !v.scope().can_act() {
        return v.refused(
            StatusCode::FORBIDDEN,
            &format!("a {} account cannot change policies", v.account.role.name()),
        );
    }
    let again = |code: StatusCode, msg: String, p: pb::PolicyMsg| {
        let note = html! { span.error { "Not saved: " (msg) } };
        (
            code,
            Html(page(&v.chrome(), &site, &target, &p, false, Some(note)).into_string()),
        )
            .into_response()
    };
    let policy = match parse(&f) {
        Ok(p) => p,
        Err(msg) => {
            let p = current(&web, &v, &site, &target)
                .await
                .ok()
                .and_then(|i| i.policy)
                .unwrap_or_default();
            return again(StatusCode::BAD_REQUEST, msg.to_string(), p);
        }
    };
    let (api, who) = v.admin_api(&web);
    let mut req = tonic::Request::new(pb::SetPolicyRequest {
        site: site.clone(),
        target: target.clone(),
        policy: Some(policy.clone()),
        force: f.force.is_some(),
        create: false,
    });
    req.extensions_mut().insert(who);
    match api.set_policy(req).await {
        Ok(_) => Redirect::to(&format!("/sites/{site}/targets/{target}/policy")).into_response(),
        Err(e) => again(StatusCode::BAD_REQUEST, e.message().to_string(), policy),
    }
}
