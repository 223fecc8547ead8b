//! The dashboard's actions on a target: back up now, a restore drill, and a restore
//! into a new database (confirmed on a second page). Each goes through the same admin
//! call the CLI makes, in process, under the account's name: the same checks, the same
//! error texts, the same audit entry ("admin dashboard:NAME"). Live progress comes from
//! the job's updates as server-sent events; every action also works without JavaScript
//! (a redirect back to the target page, which lists the running job).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Form;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use futures::Stream;
use maud::html;
use nex_backup_shared::pb;
use nex_backup_shared::pb::admin_service_server::AdminService;
use nex_backup_shared::pb::job_update::Update;
use serde::Deserialize;
use serde_json::json;
use tokio_stream::StreamExt;

use super::Web;
use super::pages;
use super::routes::Viewer;

/// What an action asks for, as the forms and the API send it.
#[derive(Debug, Default, Deserialize)]
pub struct ActionForm {
    #[serde(default)]
    pub outside_window: Option<String>,
    #[serde(default)]
    pub snapshot: Option<String>,
    #[serde(default)]
    pub to_database: Option<String>,
    /// A file or environment set: the directory on the agent's host to restore into
    /// (existing files are never replaced: the restore fails instead).
    #[serde(default)]
    pub to_dir: Option<String>,
    /// The restore's second step.
    #[serde(default)]
    pub confirm: Option<String>,
}

/// An action refused: the status and the admin call's own words.
pub struct Refused(pub StatusCode, pub String);

fn refused(s: tonic::Status) -> Refused {
    let code = match s.code() {
        tonic::Code::NotFound => StatusCode::NOT_FOUND,
        tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
        tonic::Code::FailedPrecondition | tonic::Code::AlreadyExists => StatusCode::CONFLICT,
        tonic::Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_GATEWAY,
    };
    Refused(code, s.message().to_string())
}

/// Start `what` on (site, target) as the viewer: the job's id.
pub async fn start(
    web: &Web,
    v: &Viewer,
    site: &str,
    target: &str,
    what: &str,
    f: &ActionForm,
) -> Result<String, Refused> {
    let scope = v.scope();
    if !scope.sees(site) {
        return Err(Refused(StatusCode::NOT_FOUND, "not found".into()));
    }
    if !scope.can_act() {
        return Err(Refused(
            StatusCode::FORBIDDEN,
            format!("a {} account cannot start jobs", v.account.role.name()),
        ));
    }
    let (api, who) = v.admin_api(web);
    let stream = match what {
        "backup" => {
            let mut req = tonic::Request::new(pb::RunBackupRequest {
                site: site.into(),
                target: target.into(),
                outside_window: f.outside_window.is_some(),
            });
            req.extensions_mut().insert(who);
            api.run_backup(req).await.map_err(refused)?.into_inner()
        }
        "drill" | "restore" => {
            let mut req = tonic::Request::new(pb::RunRestoreRequest {
                site: site.into(),
                target: target.into(),
                snapshot_id: f.snapshot.clone().unwrap_or_default(),
                to_database: f.to_database.clone().unwrap_or_default().trim().to_string(),
                to_dir: f.to_dir.clone().unwrap_or_default().trim().to_string(),
                drill: what == "drill",
                ..Default::default()
            });
            req.extensions_mut().insert(who);
            api.run_restore(req).await.map_err(refused)?.into_inner()
        }
        _ => return Err(Refused(StatusCode::NOT_FOUND, "no such action".into())),
    };
    let mut stream = Box::pin(stream);
    match stream.next().await {
        Some(Ok(u)) => Ok(u.job_id),
        Some(Err(s)) => Err(refused(s)),
        None => Err(Refused(
            StatusCode::BAD_GATEWAY,
            "the job was not started".into(),
        )),
    }
}

fn target_url(site: &str, target: &str) -> String {
    format!("/sites/{site}/targets/{target}")
}

/// The HTML form posts: `/sites/{site}/targets/{target}/{backup|drill|restore}`.
pub async fn form(
    State(web): State<Arc<Web>>,
    v: Viewer,
    Path((site, target, what)): Path<(String, String, String)>,
    Form(f): Form<ActionForm>,
) -> Response {
    if what == "restore" && f.confirm.as_deref() != Some("yes") {
        return confirm_restore(&v, &site, &target, &f);
    }
    match start(&web, &v, &site, &target, &what, &f).await {
        Ok(job) => {
            Redirect::to(&format!("{}?job={job}", target_url(&site, &target))).into_response()
        }
        Err(Refused(code, msg)) => {
            let c = v.chrome();
            let body = html! {
                h1 { "Not started" }
                p.error role="alert" { (msg) }
                p { a href=(target_url(&site, &target)) { "Back to " (site) " / " (target) } }
            };
            (
                code,
                Html(pages::layout("Not started", Some(&c), body).into_string()),
            )
                .into_response()
        }
    }
}

/// The restore's confirmation page: what will be restored where, and a button.
fn confirm_restore(v: &Viewer, site: &str, target: &str, f: &ActionForm) -> Response {
    let c = v.chrome();
    let db = f.to_database.clone().unwrap_or_default();
    let dir = f.to_dir.clone().filter(|d| !d.trim().is_empty());
    let snap = f
        .snapshot
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "latest".into());
    let body = html! {
        h1 { "Confirm the restore" }
        @if let Some(dir) = &dir {
            p { "Restore snapshot " strong.mono { (snap) } " of " strong { (site) " / " (target) }
                " into the directory " strong.mono { (dir) } " on the agent's host. Existing files are never replaced: the restore fails instead." }
        } @else {
            p { "Restore snapshot " strong.mono { (snap) } " of " strong { (site) " / " (target) }
                " into the new database " strong { (db) } " on the site's server. An existing database of that name is never overwritten: the restore fails instead." }
        }
        form.confirm method="post" action=(format!("{}/restore", target_url(site, target))) {
            input type="hidden" name="csrf" value=(c.csrf);
            input type="hidden" name="snapshot" value=(snap);
            @if let Some(dir) = &dir {
                input type="hidden" name="to_dir" value=(dir);
            } @else {
                input type="hidden" name="to_database" value=(db);
            }
            input type="hidden" name="confirm" value="yes";
            button type="submit" { "Restore into " (dir.as_deref().unwrap_or(&db)) }
            " "
            a href=(target_url(site, target)) { "Cancel" }
        }
    };
    Html(pages::layout("Confirm the restore", Some(&c), body).into_string()).into_response()
}

/// The JSON twin: `POST /api/v1/sites/{site}/targets/{target}/{action}` with
/// `X-CSRF-Token`; answers `{"job_id": ...}`.
pub async fn api(
    State(web): State<Arc<Web>>,
    v: Viewer,
    Path((site, target, what)): Path<(String, String, String)>,
    Form(f): Form<ActionForm>,
) -> Response {
    match start(&web, &v, &site, &target, &what, &f).await {
        Ok(job) => axum::Json(json!({ "job_id": job })).into_response(),
        Err(Refused(code, msg)) => (code, axum::Json(json!({ "error": msg }))).into_response(),
    }
}

/// `GET /api/v1/jobs/{id}/events`: the job's progress and outcome as server-sent
/// events (`progress`, then one `outcome`), for a job in the viewer's scope.
pub async fn events(
    State(web): State<Arc<Web>>,
    v: Viewer,
    Path(job_id): Path<String>,
) -> Response {
    let st = &web.state;
    let in_scope = |j: &crate::catalog::JobRecord| v.scope().sees(&j.site);
    match st.catalog.job(&job_id).await {
        Ok(Some(j)) if in_scope(&j) => {}
        Ok(_) => {
            return (
                StatusCode::NOT_FOUND,
                axum::Json(json!({"error": "not found"})),
            )
                .into_response();
        }
        Err(e) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({"error": e.to_string()})),
            )
                .into_response();
        }
    }
    // Watch, then read the record again: an outcome between the two is not missed.
    let mut updates = Some(st.hub.watch(&job_id));
    let job = match st.catalog.job(&job_id).await {
        Ok(Some(j)) => j,
        _ => {
            return (
                StatusCode::NOT_FOUND,
                axum::Json(json!({"error": "not found"})),
            )
                .into_response();
        }
    };
    let finished = (job.state != crate::catalog::JobState::Running).then(|| {
        json!({
            "ok": job.state == crate::catalog::JobState::Succeeded,
            "error": job.error, "snapshot_id": job.snapshot_id,
            "logical_bytes": job.logical_bytes,
            "duration_ms": job.ended_unix_ms.unwrap_or(job.started_unix_ms).saturating_sub(job.started_unix_ms),
        })
    });
    if finished.is_some() {
        // Finished already: no outcome will come to close the watch; drop it now.
        updates = None;
        st.hub.unwatch_if_idle(&job_id);
    }
    Sse::new(job_stream(finished, updates))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// The events of one job: its outcome at once if it is finished, else its updates
/// until the outcome.
fn job_stream(
    finished: Option<serde_json::Value>,
    updates: Option<tokio::sync::broadcast::Receiver<pb::JobUpdate>>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(16);
    tokio::spawn(async move {
        let (Some(mut updates), None) = (updates, finished.as_ref()) else {
            if let Some(o) = finished {
                let _ = tx
                    .send(Event::default().event("outcome").data(o.to_string()))
                    .await;
            }
            return;
        };
        loop {
            let u = match updates.recv().await {
                Ok(u) => u,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return,
            };
            let (ev, last) = match u.update {
                Some(Update::Progress(p)) => (
                    Event::default().event("progress").data(
                        json!({"phase": p.phase, "bytes_done": p.bytes_done, "chunks_done": p.chunks_done, "detail": p.detail}).to_string(),
                    ),
                    false,
                ),
                Some(Update::Outcome(o)) => (
                    Event::default().event("outcome").data(
                        json!({"ok": o.ok, "error": o.error, "snapshot_id": o.snapshot_id,
                            "logical_bytes": o.logical_bytes, "duration_ms": o.duration_ms}).to_string(),
                    ),
                    true,
                ),
                None => continue,
            };
            if tx.send(ev).await.is_err() || last {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok)
}
