//! The audit log page and the accounts page of the dashboard.
//!
//! The audit log: staff see every entry; a customer sees the entries about its own
//! sites only. Accounts (admins only; any other account gets a 404, as for a page that
//! does not exist): list, create (a password is generated and shown once, or given),
//! disable, enable, unlock; each through the same admin call as `nex-backup account`,
//! audited under the admin's name.

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
use crate::catalog::trust::Role;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditRow {
    pub unix_ms: u64,
    pub site: String,
    pub target: String,
    pub action: String,
    pub detail: String,
    pub actor: String,
    pub outcome: String,
}

/// The newest `limit` audit entries in scope, newest first.
pub async fn audit_rows(web: &Web, v: &Viewer, limit: usize) -> anyhow::Result<Vec<AuditRow>> {
    let scope = v.scope();
    let mut rows: Vec<AuditRow> = vec![];
    let sites: Vec<Option<String>> = match &scope.sites {
        None => vec![None],
        Some(s) => s.iter().cloned().map(Some).collect(),
    };
    for site in sites {
        for e in web.state.catalog.audit(site.as_deref(), 0, limit).await? {
            if scope.sites.is_some() && e.site.is_empty() {
                continue;
            }
            rows.push(AuditRow {
                unix_ms: e.unix_ms,
                site: e.site,
                target: e.target,
                action: e.action,
                detail: e.detail,
                actor: e.actor,
                outcome: e.outcome,
            });
        }
    }
    rows.sort_by_key(|r| std::cmp::Reverse(r.unix_ms));
    rows.truncate(limit);
    Ok(rows)
}

fn audit_page(c: &Chrome, rows: &[AuditRow]) -> Markup {
    pages::layout(
        "Audit log",
        Some(c),
        html! {
            h1 { "Audit log" }
            div.scroll tabindex="0" role="region" aria-label="Audit log" { table.audit {
                thead { tr { th { "Time" } th { "Who" } th { "Action" } th { "Site / target" } th { "Detail" } th { "Outcome" } } }
                tbody { @for r in rows { tr {
                    td { (pages::time(r.unix_ms)) }
                    td { (r.actor) }
                    td { (r.action) }
                    td { (r.site) @if !r.target.is_empty() { " / " (r.target) } }
                    td.mono { (r.detail) }
                    td { (r.outcome) }
                } } }
            } }
        },
    )
}

pub async fn audit(State(web): State<Arc<Web>>, v: Viewer) -> Response {
    match audit_rows(&web, &v, 500).await {
        Ok(rows) => Html(audit_page(&v.chrome(), &rows).into_string()).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "dashboard audit page");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the catalog cannot be read; try again shortly",
            )
                .into_response()
        }
    }
}

pub async fn audit_api(State(web): State<Arc<Web>>, v: Viewer) -> Response {
    match audit_rows(&web, &v, 1000).await {
        Ok(rows) => axum::Json(rows).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"error": e.to_string()})),
        )
            .into_response(),
    }
}

fn not_for_you(v: &Viewer) -> Response {
    let c = v.chrome();
    (
        StatusCode::NOT_FOUND,
        Html(pages::not_found(Some(&c)).into_string()),
    )
        .into_response()
}

fn accounts_page(c: &Chrome, list: &[pb::AccountInfo], note: Option<Markup>) -> Markup {
    pages::layout(
        "Accounts",
        Some(c),
        html! {
            h1 { "Accounts" }
            @if let Some(n) = note { div #note role="status" { (n) } }
            div.scroll tabindex="0" role="region" aria-label="Accounts" { table.accounts {
                thead { tr { th { "Name" } th { "Role" } th { "Sites" } th { "State" } th { "" } } }
                tbody { @for a in list { tr data-account=(a.name) {
                    td { (a.name) }
                    td { (a.role) }
                    td { (a.sites.join(", ")) }
                    td { @if a.disabled_unix_ms > 0 { "disabled" } @else if a.locked_until_unix_ms > nex_backup_shared::clock::now_ms() { "locked" } @else { "active" } }
                    td {
                        @for (op, label) in [("disable", "Disable"), ("enable", "Enable"), ("unlock", "Unlock")] {
                            form.inline method="post" action=(format!("/accounts/{}/{op}", a.name)) {
                                input type="hidden" name="csrf" value=(c.csrf);
                                button type="submit" { (label) }
                            }
                        }
                    }
                } } }
            } }
            h2 { "New account" }
            form.newaccount method="post" action="/accounts" {
                input type="hidden" name="csrf" value=(c.csrf);
                label { "Name " input name="name" required pattern="[A-Za-z0-9._-]{1,64}"; }
                label { "Role "
                    select name="role" {
                        @for r in [Role::Viewer, Role::Operator, Role::Admin, Role::Customer] { option value=(r.name()) { (r.name()) } }
                    }
                }
                label { "Sites (customers; comma-separated) " input name="sites"; }
                button type="submit" { "Create" }
            }
            p { "A password is generated and shown once; give it to that person only." }
        },
    )
}

async fn list(web: &Web, v: &Viewer) -> Result<Vec<pb::AccountInfo>, tonic::Status> {
    let (api, who) = v.admin_api(web);
    let mut req = tonic::Request::new(pb::ListAccountsRequest {});
    req.extensions_mut().insert(who);
    Ok(api.list_accounts(req).await?.into_inner().accounts)
}

pub async fn accounts(State(web): State<Arc<Web>>, v: Viewer) -> Response {
    if v.account.role != Role::Admin {
        return not_for_you(&v);
    }
    match list(&web, &v).await {
        Ok(l) => Html(accounts_page(&v.chrome(), &l, None).into_string()).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.message().to_string()).into_response(),
    }
}

#[derive(Deserialize)]
pub struct NewAccount {
    name: String,
    role: String,
    #[serde(default)]
    sites: String,
}

/// Create an account; the page again with the generated password, shown once.
pub async fn create(State(web): State<Arc<Web>>, v: Viewer, Form(f): Form<NewAccount>) -> Response {
    if v.account.role != Role::Admin {
        return not_for_you(&v);
    }
    let (api, who) = v.admin_api(&web);
    let sites: Vec<String> = f
        .sites
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let mut req = tonic::Request::new(pb::SetAccountRequest {
        name: f.name.trim().to_string(),
        create: true,
        role: f.role,
        set_sites: true,
        sites,
        new_password: true,
        ..Default::default()
    });
    req.extensions_mut().insert(who);
    let (code, note) = match api.set_account(req).await {
        Ok(r) => {
            let a = r.into_inner();
            (
                StatusCode::OK,
                html! { "Account " strong { (a.name) } " (" (a.role) ") created. Password, shown once: " code #new-password { (a.password) } },
            )
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            html! { span.error { "Not created: " (e.message()) } },
        ),
    };
    let l = list(&web, &v).await.unwrap_or_default();
    (
        code,
        Html(accounts_page(&v.chrome(), &l, Some(note)).into_string()),
    )
        .into_response()
}

/// Disable, enable or unlock an account.
pub async fn change(
    State(web): State<Arc<Web>>,
    v: Viewer,
    Path((name, op)): Path<(String, String)>,
) -> Response {
    if v.account.role != Role::Admin {
        return not_for_you(&v);
    }
    let mut r = pb::SetAccountRequest {
        name,
        ..Default::default()
    };
    match op.as_str() {
        "disable" => r.disable = true,
        "enable" => r.enable = true,
        "unlock" => r.unlock = true,
        _ => return not_for_you(&v),
    }
    let (api, who) = v.admin_api(&web);
    let mut req = tonic::Request::new(r);
    req.extensions_mut().insert(who);
    match api.set_account(req).await {
        Ok(_) => Redirect::to("/accounts").into_response(),
        Err(e) => v.refused(StatusCode::BAD_REQUEST, e.message()),
    }
}
