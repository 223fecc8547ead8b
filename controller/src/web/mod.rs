//! The dashboard (`serve --http-listen ADDR`): HTML pages rendered on the server and the
//! same data as JSON under `/api/v1/`, over HTTPS with the controller's server
//! certificate.
//!
//! - [`session`]: signed session cookies, CSRF tokens, the login rate limit.
//! - [`data`], [`detail`]: what each page shows, narrowed to the viewer's scope; the
//!   pages and the API render the same values.
//! - [`pages`]: the HTML (maud); [`routes`]: the handlers; [`api`]: the JSON twins.
//! - [`policy`], [`site_settings`]: a target's policy and a site's settings, shown and
//!   changed through the same admin calls as the CLI.
//! - [`actions`]: back up, drill and restore from a page, and a job's live progress;
//!   [`live`]: the event bus as server-sent events; [`admin`]: audit log and accounts;
//!   [`fleetcache`]: the fleet's figures, kept fresh while anyone looks; [`charts`]: SVG.
//!
//! Every response carries a Content-Security-Policy without `unsafe-inline`, and
//! frames, sniffing and referrers are refused. Pages and API calls need a session; a
//! customer account sees only its sites, and any other site answers 404, as one that
//! does not exist.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use tokio_stream::StreamExt;

use crate::state::State;

pub mod actions;
pub mod admin;
pub mod api;
pub mod charts;
pub mod data;
pub mod detail;
pub mod fleetcache;
pub mod live;
pub mod pages;
pub mod policy;
pub mod routes;
pub mod session;
pub mod site_settings;

/// How the dashboard is served.
#[derive(Debug, Clone, Copy)]
pub struct WebConfig {
    pub listen: SocketAddr,
    pub lifetimes: session::Lifetimes,
}

/// What every handler shares.
pub struct Web {
    pub state: Arc<State>,
    pub secret: [u8; 32],
    pub lifetimes: session::Lifetimes,
    pub limiter: session::LoginLimiter,
    pub fleet: Arc<fleetcache::FleetCache>,
}

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    resp
}

fn router(web: Arc<Web>) -> Router {
    Router::new()
        .route("/", get(routes::home))
        .route("/login", get(routes::login_page).post(routes::login))
        .route("/logout", post(routes::logout))
        .route("/fleet", get(routes::fleet))
        .route("/jobs", get(routes::jobs))
        .route("/incidents", get(routes::incidents))
        .route("/incidents/{id}/ack", post(routes::ack))
        .route("/sites/{site}", get(routes::site))
        .route(
            "/sites/{site}/settings",
            get(site_settings::show).post(site_settings::save),
        )
        .route("/sites/{site}/targets/{target}", get(routes::target))
        .route(
            "/sites/{site}/targets/{target}/policy",
            get(policy::show).post(policy::save),
        )
        .route(
            "/sites/{site}/targets/{target}/{action}",
            post(actions::form),
        )
        .route("/audit", get(admin::audit))
        .route("/accounts", get(admin::accounts).post(admin::create))
        .route("/accounts/{name}/{op}", post(admin::change))
        .route("/static/app.css", get(routes::css))
        .route("/static/app.js", get(routes::js))
        .merge(api::router())
        .fallback(routes::not_found)
        .layer(axum::middleware::from_fn_with_state(
            web.clone(),
            routes::session_layer,
        ))
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(web)
}

/// Accepted TLS connections as axum takes them.
struct TlsListener {
    conns: tokio_stream::wrappers::ReceiverStream<std::io::Result<crate::tls_listener::TlsConn>>,
    addr: SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = crate::tls_listener::TlsConn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.conns.next().await {
                Some(Ok(c)) => {
                    let remote = c.peer().remote;
                    return (c, remote);
                }
                Some(Err(e)) => tracing::debug!(error = %e, "dashboard connection"),
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.addr)
    }
}

/// The client's address, as handlers see it.
#[derive(Debug, Clone, Copy)]
pub struct Remote(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>>
    for Remote
{
    fn connect_info(s: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        Remote(*s.remote_addr())
    }
}

/// Bind the dashboard and serve it until the controller stops; the bound address.
pub async fn spawn(state: &Arc<State>, cfg: WebConfig) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| anyhow::anyhow!("--http-listen {}: {e}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let tls = state.pki.web_config()?;
    let web = Arc::new(Web {
        state: state.clone(),
        secret: state.pki.session_secret,
        lifetimes: cfg.lifetimes,
        limiter: Default::default(),
        fleet: Default::default(),
    });
    web.fleet.spawn_refresher(state);
    let app = router(web).into_make_service_with_connect_info::<Remote>();
    let conns = crate::tls_listener::incoming(listener, tls);
    let stop = state.workers.stop_token();
    state.workers.spawn("dashboard", move |ctx| async move {
        let serve =
            axum::serve(TlsListener { conns, addr }, app).with_graceful_shutdown(async move {
                tokio::select! { _ = ctx.stop.cancelled() => {}, _ = stop.cancelled() => {} }
            });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "dashboard listener failed");
        }
    });
    tracing::info!(%addr, "dashboard at https://{addr}/");
    Ok(addr)
}
