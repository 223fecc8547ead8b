//! The JSON API under `/api/v1/`: the same data as the pages (the same functions of
//! [`super::data`] and [`super::detail`]), for the company's own tools. A session
//! cookie authenticates it; a POST also needs the session's CSRF token in
//! `X-CSRF-Token`. Out-of-scope and unknown sites both answer 404.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use super::data::{FleetFilter, JobsFilter};
use super::routes::Viewer;
use super::{Web, detail};
use nex_backup_shared::clock::now_ms;

pub fn router() -> Router<Arc<Web>> {
    Router::new()
        .route("/api/v1/fleet", get(fleet))
        .route("/api/v1/jobs", get(jobs))
        .route("/api/v1/incidents", get(incidents))
        .route("/api/v1/incidents/{id}/ack", post(ack))
        .route("/api/v1/sites/{site}", get(site))
        .route("/api/v1/sites/{site}/targets/{target}", get(target))
        .route("/api/v1/me", get(me))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/events", get(super::live::events))
        .route("/api/v1/audit", get(super::admin::audit_api))
        .route(
            "/api/v1/sites/{site}/targets/{target}/{action}",
            post(super::actions::api),
        )
        .route("/api/v1/jobs/{id}/events", get(super::actions::events))
}

fn error(code: StatusCode, msg: &str) -> Response {
    (code, Json(json!({ "error": msg }))).into_response()
}

fn unavailable(e: anyhow::Error) -> Response {
    tracing::error!(error = %e, "dashboard API");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "the catalog cannot be read; try again shortly",
    )
}

fn answer<T: serde::Serialize>(r: anyhow::Result<Option<T>>) -> Response {
    match r {
        Ok(Some(v)) => Json(v).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, "not found"),
        Err(e) => unavailable(e),
    }
}

/// The account behind the session, and its CSRF token for POSTs.
#[utoipa::path(get, path = "/api/v1/me", tag = "session",
    responses((status = 200, description = "name, role, sites, csrf"), (status = 401, description = "no session")))]
async fn me(v: Viewer) -> Response {
    Json(json!({
        "name": v.account.name,
        "role": v.account.role.name(),
        "sites": v.account.sites,
        "csrf": v.csrf,
    }))
    .into_response()
}

/// Counts, totals and every target's state in scope, the worst first.
#[utoipa::path(get, path = "/api/v1/fleet", tag = "fleet", params(FleetFilter),
    responses((status = 200, body = super::data::Fleet), (status = 401, description = "no session")))]
async fn fleet(State(web): State<Arc<Web>>, v: Viewer, Query(f): Query<FleetFilter>) -> Response {
    answer(
        super::data::fleet(&web.state, &web.fleet, &v.scope(), &f, now_ms())
            .await
            .map(Some),
    )
}

#[derive(serde::Deserialize)]
struct Limit {
    limit: Option<usize>,
}

/// Jobs in scope, newest first.
#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs",
    params(JobsFilter, ("limit" = Option<usize>, Query, description = "at most this many (1-1000, default 100)")),
    responses((status = 200, body = Vec<super::data::JobRow>), (status = 401, description = "no session")))]
async fn jobs(
    State(web): State<Arc<Web>>,
    v: Viewer,
    Query(f): Query<JobsFilter>,
    Query(l): Query<Limit>,
) -> Response {
    let limit = l.limit.unwrap_or(100).clamp(1, 1000);
    answer(
        super::data::jobs(&web.state, &v.scope(), &f, limit)
            .await
            .map(Some),
    )
}

/// Incidents in scope, newest first.
#[utoipa::path(get, path = "/api/v1/incidents", tag = "incidents",
    responses((status = 200, body = Vec<detail::IncidentRow>), (status = 401, description = "no session")))]
async fn incidents(State(web): State<Arc<Web>>, v: Viewer) -> Response {
    answer(
        detail::incidents(&web.state, &v.scope(), None, false)
            .await
            .map(Some),
    )
}

/// One site: agents, targets, incidents, recent jobs.
#[utoipa::path(get, path = "/api/v1/sites/{site}", tag = "fleet", params(("site" = String, Path)),
    responses((status = 200, body = detail::Site), (status = 404, description = "no such site in scope")))]
async fn site(State(web): State<Arc<Web>>, v: Viewer, Path(site): Path<String>) -> Response {
    answer(detail::site(&web.state, &web.fleet, &v.scope(), &site, now_ms()).await)
}

/// One target: status, snapshots with their standing, recent jobs, chart series.
#[utoipa::path(get, path = "/api/v1/sites/{site}/targets/{target}", tag = "fleet",
    params(("site" = String, Path), ("target" = String, Path)),
    responses((status = 200, body = detail::Target), (status = 404, description = "no such target in scope")))]
async fn target(
    State(web): State<Arc<Web>>,
    v: Viewer,
    Path((site, target)): Path<(String, String)>,
) -> Response {
    answer(detail::target(&web.state, &web.fleet, &v.scope(), &site, &target, now_ms()).await)
}

/// Acknowledge an open incident (operators and admins; `X-CSRF-Token`).
#[utoipa::path(post, path = "/api/v1/incidents/{id}/ack", tag = "incidents", params(("id" = u64, Path)),
    responses((status = 200, body = detail::IncidentRow), (status = 403, description = "the role may not act, or no CSRF token"),
        (status = 404, description = "no such incident in scope"), (status = 409, description = "already resolved")))]
async fn ack(State(web): State<Arc<Web>>, v: Viewer, Path(id): Path<u64>) -> Response {
    match ack_incident(&web, &v, id).await {
        Ok(row) => Json(row).into_response(),
        Err((code, msg)) => error(code, &msg),
    }
}

/// Acknowledge incident `id` as `v` (operators and admins; a customer's or viewer's
/// attempt is refused, and an incident of a site out of scope is "not found").
pub async fn ack_incident(
    web: &Web,
    v: &Viewer,
    id: u64,
) -> Result<detail::IncidentRow, (StatusCode, String)> {
    let scope = v.scope();
    if !scope.can_act() {
        return Err((
            StatusCode::FORBIDDEN,
            format!(
                "a {} account cannot acknowledge incidents",
                v.account.role.name()
            ),
        ));
    }
    // Scope first (another site's incident reads as a missing one), then the same
    // admin call as `nex-backup ack`: its checks, its record of who, its audit entry.
    let seen = web
        .state
        .alerts
        .incident(id)
        .await
        .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?
        .is_some_and(|i| scope.sees(&i.site));
    if !seen {
        return Err((StatusCode::NOT_FOUND, format!("no incident #{id}")));
    }
    let (api, who) = v.admin_api(web);
    let mut req = tonic::Request::new(nex_backup_shared::pb::AckIncidentRequest { id });
    req.extensions_mut().insert(who);
    use nex_backup_shared::pb::admin_service_server::AdminService;
    api.ack_incident(req).await.map_err(|e| {
        let code = match e.code() {
            tonic::Code::NotFound => StatusCode::NOT_FOUND,
            tonic::Code::FailedPrecondition => StatusCode::CONFLICT,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        (code, e.message().to_string())
    })?;
    let inc = web
        .state
        .alerts
        .incident(id)
        .await
        .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?
        .ok_or((StatusCode::NOT_FOUND, format!("no incident #{id}")))?;
    Ok(detail::IncidentRow::from(&inc))
}

/// Starts a backup, a drill or a restore (see `super::actions::api`).
#[utoipa::path(post, path = "/api/v1/sites/{site}/targets/{target}/{action}", tag = "actions",
    params(("site" = String, Path), ("target" = String, Path),
        ("action" = String, Path, description = "backup, drill or restore"),
        ("outside_window" = Option<String>, Query, description = "backup: run outside the site's window (form field)"),
        ("snapshot" = Option<String>, Query, description = "restore: an id or latest (form field)"),
        ("to_database" = Option<String>, Query, description = "restore: the new database (form field)")),
    responses((status = 200, description = "{\"job_id\": ...}"), (status = 403, description = "the role may not act, or no CSRF token"),
        (status = 409, description = "refused by the controller, with the CLI's words")))]
#[allow(dead_code)]
fn action_doc() {}

/// A job's progress and outcome as server-sent events (`progress`, then `outcome`).
#[utoipa::path(get, path = "/api/v1/jobs/{id}/events", tag = "jobs", params(("id" = String, Path)),
    responses((status = 200, description = "text/event-stream"), (status = 404, description = "no such job in scope")))]
#[allow(dead_code)]
fn job_events_doc() {}

/// The audit log in scope, newest first.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit",
    responses((status = 200, body = Vec<super::admin::AuditRow>)))]
#[allow(dead_code)]
fn audit_doc() {}

/// New and finished jobs, snapshots and RPO changes in scope, as server-sent events.
#[utoipa::path(get, path = "/api/v1/events", tag = "jobs",
    responses((status = 200, description = "text/event-stream: job-started, job-finished, snapshot, rpo")))]
#[allow(dead_code)]
fn events_doc() {}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "NEX Backup dashboard API",
        description = "The dashboard's data as JSON. Log in with POST /login (form: name, password, code) and keep the nexb_session cookie; POSTs carry X-CSRF-Token from /api/v1/me. A site outside the account's scope answers 404."
    ),
    paths(
        me,
        fleet,
        jobs,
        incidents,
        site,
        target,
        ack,
        action_doc,
        job_events_doc,
        audit_doc,
        events_doc
    )
)]
pub struct ApiDoc;

/// `GET /api/v1/openapi.json`: this API's OpenAPI description.
async fn openapi() -> Response {
    Json(<ApiDoc as utoipa::OpenApi>::openapi()).into_response()
}
