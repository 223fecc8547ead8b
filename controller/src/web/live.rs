//! `GET /api/v1/events`: the event bus as server-sent events, for pages that follow the
//! fleet live (the jobs page refreshes when a job starts or ends). Only events about
//! sites in the viewer's scope are sent, and only their kind, site, target and job.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event as Sse_, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio_stream::StreamExt;

use super::Web;
use super::routes::Viewer;
use crate::events::Event;

/// The event as the page sees it, if it is about one site: (name, site, JSON).
fn shown(e: &Event) -> Option<(&'static str, &str, serde_json::Value)> {
    Some(match e {
        Event::JobStarted { job, trigger } => (
            "job-started",
            &job.site,
            json!({"site": job.site, "target": job.target, "job_id": job.job_id, "kind": job.kind.as_str(), "trigger": trigger}),
        ),
        Event::JobFinished { job, outcome, .. } => (
            "job-finished",
            &job.site,
            json!({"site": job.site, "target": job.target, "job_id": job.job_id, "outcome": outcome.as_str()}),
        ),
        Event::SnapshotCommitted {
            site,
            target,
            snapshot_id,
            ..
        } => (
            "snapshot",
            site,
            json!({"site": site, "target": target, "snapshot_id": snapshot_id}),
        ),
        Event::RpoChanged {
            site, target, to, ..
        } => (
            "rpo",
            site,
            json!({"site": site, "target": target, "state": to.label()}),
        ),
        _ => return None,
    })
}

pub async fn events(State(web): State<Arc<Web>>, v: Viewer) -> Response {
    let scope = v.scope();
    let rx = web.state.events.subscribe();
    let stream = tokio_stream::wrappers::BroadcastStream::new(rx).filter_map(move |e| {
        let e = e.ok()?;
        let (name, site, data) = shown(&e)?;
        scope.sees(site).then(|| {
            Ok::<_, std::convert::Infallible>(Sse_::default().event(name).data(data.to_string()))
        })
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}
