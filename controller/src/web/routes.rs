//! The dashboard's HTML handlers, the login and the session layer.
//!
//! The session layer reads the cookie, checks it against the account (its epoch, its
//! state), puts the [`Viewer`] into the request, refuses a POST whose CSRF token is not
//! the session's or that a browser marks cross-site, and renews the cookie's idle time
//! on the way out.

use std::sync::Arc;

use axum::Form;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::data::{FleetFilter, JobsFilter, Scope};
use super::pages::{self, Chrome};
use super::session::{Session, cookie_value, set_cookie};
use super::{Remote, Web, detail};
use crate::catalog::safety::AuditEntry;
use crate::catalog::trust::AccountRecord;
use nex_backup_shared::clock::now_ms;

/// Who is looking, once the session layer accepted the session.
#[derive(Clone)]
pub struct Viewer {
    pub account: AccountRecord,
    pub session: Session,
    pub csrf: String,
}

impl Viewer {
    pub fn scope(&self) -> Scope {
        Scope::of(&self.account)
    }

    pub fn chrome(&self) -> Chrome<'_> {
        Chrome {
            account: &self.account.name,
            role: self.account.role.name(),
            csrf: &self.csrf,
            can_act: self.scope().can_act(),
        }
    }

    /// The admin service in process, acting as `dashboard:NAME`: what the CLI calls, with
    /// its checks, its errors and its audit entries.
    pub fn admin_api(
        &self,
        web: &Web,
    ) -> (
        crate::service::admin::AdminApi,
        crate::service::auth::AdminIdentity,
    ) {
        (
            crate::service::admin::AdminApi {
                state: web.state.clone(),
            },
            crate::service::auth::AdminIdentity {
                name: format!("dashboard:{}", self.account.name),
            },
        )
    }

    /// A page that says an action was refused, and why.
    pub fn refused(&self, code: StatusCode, msg: &str) -> Response {
        let body = maud::html! { h1 { "Refused" } p.error { (msg) } };
        let page = pages::layout("Refused", Some(&self.chrome()), body);
        (code, Html(page.into_string())).into_response()
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        if let Some(v) = parts.extensions.get::<Viewer>() {
            return Ok(v.clone());
        }
        let uri = parts.uri.clone();
        if uri.path().starts_with("/api/") {
            return Err((
                StatusCode::UNAUTHORIZED,
                axum::Json(serde_json::json!({"error": "log in first (POST /login)"})),
            )
                .into_response());
        }
        let next = uri.path_and_query().map_or("/fleet", |p| p.as_str());
        let to = format!("/login?next={}", urlencode(next));
        Err(Redirect::to(&to).into_response())
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'/' | b'-' | b'_' | b'.' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The account behind a cookie, if its session holds. A catalog that cannot answer is
/// an error, not a missing session: nobody is sent to log in again for it.
async fn resolve(
    web: &Web,
    headers: &HeaderMap,
    now: u64,
) -> Result<Option<Viewer>, crate::catalog::CatalogError> {
    let Some(s) = headers
        .get(header::COOKIE)
        .and_then(|c| c.to_str().ok())
        .and_then(cookie_value)
        .and_then(|c| Session::decode(c, &web.secret, web.lifetimes, now))
    else {
        return Ok(None);
    };
    let Some(account) = web.state.catalog.account(&s.account).await? else {
        return Ok(None);
    };
    if account.epoch != s.epoch || account.disabled_unix_ms.is_some() {
        return Ok(None);
    }
    Ok(Some(Viewer {
        csrf: s.csrf(&web.secret),
        account,
        session: s,
    }))
}

/// Whether a POST carries the session's CSRF token (form field or header), and no
/// browser says it comes from another site.
fn csrf_ok(v: Option<&Viewer>, headers: &HeaderMap, form_token: Option<&str>) -> bool {
    let cross = headers
        .get("sec-fetch-site")
        .and_then(|h| h.to_str().ok())
        .is_some_and(|s| s == "cross-site");
    let token = form_token.or_else(|| headers.get("x-csrf-token").and_then(|h| h.to_str().ok()));
    !cross
        && v.is_some_and(|v| {
            token.is_some_and(|t| {
                bool::from(subtle::ConstantTimeEq::ct_eq(
                    t.as_bytes(),
                    v.csrf.as_bytes(),
                ))
            })
        })
}

/// See module docs.
pub async fn session_layer(State(web): State<Arc<Web>>, mut req: Request, next: Next) -> Response {
    let now = now_ms();
    let viewer = match resolve(&web, req.headers(), now).await {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(error = %e, "dashboard: the catalog did not answer for a session");
            let body = maud::html! { h1 { "Unavailable" } p { "The controller's catalog did not answer; try again in a moment. If it persists, check the controller's log and its catalog." } };
            let page = pages::layout("Unavailable", None, body).into_string();
            return (StatusCode::SERVICE_UNAVAILABLE, Html(page)).into_response();
        }
    };
    let path = req.uri().path().to_string();
    if req.method() == axum::http::Method::POST && path != "/login" {
        // The token comes in the form body: read it (bounded), then hand the body on.
        let (parts, body) = req.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, 64 * 1024).await else {
            return (StatusCode::PAYLOAD_TOO_LARGE, "request too large").into_response();
        };
        let token = form_field(&bytes, "csrf");
        if !csrf_ok(viewer.as_ref(), &parts.headers, token.as_deref()) {
            return (StatusCode::FORBIDDEN, Html(pages::layout("Refused", None, maud::html! { h1 { "Refused" } p { "This action needs a session and its form token; log in and use the page's own button." } }).into_string())).into_response();
        }
        req = Request::from_parts(parts, axum::body::Body::from(bytes));
    }
    let renewed = viewer.as_ref().map(|v| {
        let mut s = v.session.clone();
        s.seen_ms = now;
        s.encode(&web.secret)
    });
    if let Some(v) = viewer {
        req.extensions_mut().insert(v);
    }
    let mut resp = next.run(req).await;
    if let Some(c) = renewed
        && !resp.headers().contains_key(header::SET_COOKIE)
        && let Ok(h) = set_cookie(&c, web.lifetimes).parse()
    {
        resp.headers_mut().insert(header::SET_COOKIE, h);
    }
    resp
}

/// A field of a url-encoded form body.
fn form_field(body: &[u8], name: &str) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body).ok()?;
    pairs.into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

pub async fn audit(web: &Web, who: &str, site: &str, action: &str, detail: String) {
    let e = AuditEntry {
        v: 2,
        unix_ms: now_ms(),
        site: site.to_string(),
        target: String::new(),
        action: action.to_string(),
        detail,
        actor: format!("dashboard {who}"),
        outcome: "ok".into(),
    };
    if let Err(err) = web.state.catalog.put_audit(&e).await {
        tracing::error!(error = %err, action, "audit entry not written");
    }
}

pub async fn home() -> Redirect {
    Redirect::to("/fleet")
}

#[derive(Deserialize, Default)]
pub struct NextQuery {
    next: Option<String>,
}

/// Only a local path is a place to go after the login.
fn safe_next(n: Option<&str>) -> String {
    n.filter(|n| n.starts_with('/') && !n.starts_with("//") && !n.contains('\\'))
        .unwrap_or("/fleet")
        .to_string()
}

pub async fn login_page(Query(q): Query<NextQuery>) -> Html<String> {
    Html(pages::login(None, &safe_next(q.next.as_deref())).into_string())
}

#[derive(Deserialize)]
pub struct LoginForm {
    name: String,
    password: String,
    #[serde(default)]
    code: String,
    next: Option<String>,
}

pub async fn login(
    State(web): State<Arc<Web>>,
    ConnectInfo(Remote(remote)): ConnectInfo<Remote>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    let next = safe_next(f.next.as_deref());
    let refuse = |code: StatusCode, msg: &str| {
        (code, Html(pages::login(Some(msg), &next).into_string())).into_response()
    };
    if headers.get("sec-fetch-site").and_then(|h| h.to_str().ok()) == Some("cross-site") {
        return refuse(
            StatusCode::FORBIDDEN,
            "A login from another site is refused.",
        );
    }
    let now = now_ms();
    if !web.limiter.allow(remote.ip(), now) {
        return refuse(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many login attempts from this address; wait a minute.",
        );
    }
    match crate::accounts::login(
        &*web.state.catalog,
        f.name.trim(),
        &f.password,
        &f.code,
        now,
    )
    .await
    {
        Ok(acc) => {
            let s = Session::new(&acc.name, acc.epoch, now);
            audit(
                &web,
                &acc.name,
                "",
                "dashboard login",
                format!("from {remote}"),
            )
            .await;
            let mut resp = Redirect::to(&next).into_response();
            if let Ok(h) = set_cookie(&s.encode(&web.secret), web.lifetimes).parse() {
                resp.headers_mut().insert(header::SET_COOKIE, h);
            }
            resp
        }
        Err(e @ crate::accounts::AccountError::Catalog(_)) => {
            tracing::error!(error = %e, "dashboard login");
            refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "The catalog cannot be read; try again shortly.",
            )
        }
        Err(e) => {
            let name: String = f
                .name
                .chars()
                .filter(|c| c.is_ascii_graphic())
                .take(64)
                .collect();
            audit(
                &web,
                &name,
                "",
                "dashboard login refused",
                format!("from {remote}: {e}"),
            )
            .await;
            refuse(StatusCode::UNAUTHORIZED, &e.to_string())
        }
    }
}

/// Log out: this account's sessions end everywhere (its epoch moves on).
pub async fn logout(State(web): State<Arc<Web>>, v: Viewer) -> Response {
    let mut acc = v.account.clone();
    acc.epoch = acc.epoch.wrapping_add(1);
    if let Err(e) = web.state.catalog.put_account(&acc).await {
        tracing::error!(error = %e, "dashboard logout");
    }
    audit(&web, &acc.name, "", "dashboard logout", String::new()).await;
    let mut resp = Redirect::to("/login").into_response();
    if let Ok(h) = set_cookie("", web.lifetimes).parse() {
        resp.headers_mut().insert(header::SET_COOKIE, h);
    }
    resp
}

fn page(m: maud::Markup) -> Response {
    Html(m.into_string()).into_response()
}

fn failed(e: anyhow::Error) -> Response {
    tracing::error!(error = %e, "dashboard page");
    (StatusCode::SERVICE_UNAVAILABLE, Html(pages::layout("Unavailable", None, maud::html! { h1 { "Unavailable" } p { "The controller could not read its catalog; try again shortly." } }).into_string())).into_response()
}

pub async fn fleet(
    State(web): State<Arc<Web>>,
    v: Viewer,
    Query(f): Query<FleetFilter>,
) -> Response {
    match super::data::fleet(&web.state, &web.fleet, &v.scope(), &f, now_ms()).await {
        Ok(fl) => page(pages::fleet(
            &v.chrome(),
            &fl,
            f.state.as_deref().unwrap_or(""),
            f.q.as_deref().unwrap_or(""),
        )),
        Err(e) => failed(e),
    }
}

pub async fn jobs(
    State(web): State<Arc<Web>>,
    v: Viewer,
    Query(mut f): Query<JobsFilter>,
) -> Response {
    // A site out of scope is not even echoed back into the form.
    if f.site.as_deref().is_some_and(|s| !v.scope().sees(s.trim())) {
        f.site = None;
        f.target = None;
        let rows = vec![];
        return page(pages::jobs(&v.chrome(), &rows, &f));
    }
    match super::data::jobs(&web.state, &v.scope(), &f, 200).await {
        Ok(rows) => page(pages::jobs(&v.chrome(), &rows, &f)),
        Err(e) => failed(e),
    }
}

pub async fn incidents(State(web): State<Arc<Web>>, v: Viewer) -> Response {
    match detail::incidents(&web.state, &v.scope(), None, false).await {
        Ok(rows) => page(pages::incidents(&v.chrome(), &rows)),
        Err(e) => failed(e),
    }
}

pub async fn site(State(web): State<Arc<Web>>, v: Viewer, Path(site): Path<String>) -> Response {
    match detail::site(&web.state, &web.fleet, &v.scope(), &site, now_ms()).await {
        Ok(Some(s)) => page(pages::site(&v.chrome(), &s)),
        Ok(None) => not_found_for(Some(&v)),
        Err(e) => failed(e),
    }
}

#[derive(Deserialize, Default)]
pub struct JobQuery {
    job: Option<String>,
}

pub async fn target(
    State(web): State<Arc<Web>>,
    v: Viewer,
    Path((site, target)): Path<(String, String)>,
    Query(q): Query<JobQuery>,
) -> Response {
    // Only a job id's own characters are echoed into the page.
    let job = q
        .job
        .filter(|j| j.len() <= 80 && j.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    match detail::target(&web.state, &web.fleet, &v.scope(), &site, &target, now_ms()).await {
        Ok(Some(t)) => page(pages::target(&v.chrome(), &t, job.as_deref())),
        Ok(None) => not_found_for(Some(&v)),
        Err(e) => failed(e),
    }
}

/// Acknowledge an open incident (operator and admin).
pub async fn ack(State(web): State<Arc<Web>>, v: Viewer, Path(id): Path<u64>) -> Response {
    match super::api::ack_incident(&web, &v, id).await {
        Ok(_) => Redirect::to("/incidents").into_response(),
        Err((code, msg)) => v.refused(code, &msg),
    }
}

fn not_found_for(v: Option<&Viewer>) -> Response {
    let c = v.map(|v| v.chrome());
    (
        StatusCode::NOT_FOUND,
        Html(pages::not_found(c.as_ref()).into_string()),
    )
        .into_response()
}

pub async fn not_found(req: Request) -> Response {
    if req.uri().path().starts_with("/api/") {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({"error": "not found"})),
        )
            .into_response();
    }
    let v = req.extensions().get::<Viewer>().cloned();
    not_found_for(v.as_ref())
}

pub async fn css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        include_str!("assets/app.css"),
    )
}

pub async fn js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        include_str!("assets/app.js"),
    )
}
