//! `nex-backup serve`: open state, bind, serve until shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use nex_backup_shared::MAX_MESSAGE_BYTES;
use nex_backup_shared::pb::admin_service_server::AdminServiceServer;
use nex_backup_shared::pb::agent_service_server::AgentServiceServer;
use nex_backup_shared::pb::enroll_service_server::EnrollServiceServer;
use nex_backup_shared::recovery::RecoveryPublicKey;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::pki::{Pki, ServerCertSource};
use crate::service::auth::{AdminGuard, admin_token_path, load_or_create_admin};
use crate::service::enroll::EnrollApi;

use crate::catalog::JobState;
use crate::catalog::sled_catalog::SledCatalog;
use crate::hub::Hub;
use crate::service::admin::AdminApi;
use crate::service::agent::AgentApi;
use crate::state::State;
use crate::store::fs::FsStore;

/// Controller configuration.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// Server certificate: generated for these names, or operator-provided.
    pub tls: ServerCertSource,
    /// Offline recovery public keys every site key is sealed to.
    pub recovery_keys: Vec<RecoveryPublicKey>,
    /// Lifetime of agent certificates.
    pub agent_cert_lifetime: Duration,
    /// Policy of targets without their own.
    pub default_policy: crate::policy::Policy,
    /// Garbage-collection grace (see [`State::gc_grace_ms`]).
    pub gc_grace: Duration,
    /// The scheduler's tunables; `None` runs no scheduler (jobs start only by hand).
    pub scheduler: Option<crate::scheduler::decide::SchedConfig>,
    /// Free bytes the blob store keeps; uploads are refused below it.
    pub store_reserve: u64,
    /// Alert rule evaluation and notice delivery.
    pub alerts: crate::alerts::AlertConfig,
    /// Where `/metrics` is served (plain HTTP), if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// Where the dashboard is served (HTTPS), if anywhere.
    pub web: Option<crate::web::WebConfig>,
    /// The scheduled store verification.
    pub verify: crate::verify::worker::VerifyConfig,
    /// How often the controller writes a sealed copy of its state into the store.
    pub state_copy_every: Duration,
    /// The blob store (`--store URL`); `None`: files under `data_dir/blobs`.
    pub store_url: Option<String>,
    /// The catalog (`--catalog postgres://...`); `None`: sled under `data_dir/catalog`.
    pub catalog_url: Option<String>,
    /// Off-site copies (`--copy-to URL`), their retention and how often they run.
    pub copy_to: Vec<String>,
    pub copy_keep: crate::offsite::CopyKeep,
    pub copy_every: Duration,
    /// S3 Object Lock on the copies (`--copy-lock PERIOD`): every copied object stays
    /// locked at least this long, and as long as the copy's retention keeps it.
    pub copy_lock: Option<(crate::store::objectlock::LockMode, Duration)>,
    /// Timeouts, retries (and in tests, injected faults) of the blob store.
    pub store_layers: crate::store::layers::StackOptions,
    /// How long finished jobs and RPO events are kept (zero: forever); see
    /// [`crate::catalog::history`].
    pub history_keep: Duration,
}

/// How long a stopping controller waits for connections to close before it drops them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

impl ServeConfig {
    /// Defaults for everything but the data dir and listen address.
    pub fn new(data_dir: PathBuf, listen: SocketAddr) -> Self {
        ServeConfig {
            data_dir,
            listen,
            tls: ServerCertSource::default(),
            recovery_keys: vec![],
            agent_cert_lifetime: Duration::from_secs(30 * 24 * 3600),
            default_policy: crate::policy::Policy::default(),
            gc_grace: Duration::from_secs(6 * 3600),
            scheduler: Some(Default::default()),
            store_reserve: 256 * 1024 * 1024,
            alerts: Default::default(),
            metrics_listen: None,
            web: None,
            verify: Default::default(),
            state_copy_every: Duration::from_secs(3600),
            store_url: None,
            catalog_url: None,
            copy_to: vec![],
            copy_keep: Default::default(),
            copy_every: Duration::from_secs(900),
            copy_lock: None,
            store_layers: Default::default(),
            history_keep: Duration::from_secs(400 * 24 * 3600),
        }
    }
}

/// The catalog's three areas, on one engine.
type Catalogs = (
    Arc<dyn crate::catalog::Catalog>,
    Arc<dyn crate::catalog::alerts::AlertCatalog>,
    Arc<dyn crate::catalog::integrity::IntegrityCatalog>,
);

/// Open the catalog: PostgreSQL with `--catalog`, else the embedded one in `data_dir`.
async fn open_catalog(
    cfg: &ServeConfig,
    shared: Option<&crate::catalog::pg::PgCatalog>,
) -> anyhow::Result<Catalogs> {
    if let Some(pg) = shared {
        let pg = Arc::new(pg.clone());
        return Ok((pg.clone(), pg.clone(), pg));
    }
    let catalog = SledCatalog::open(&cfg.data_dir.join("catalog")).context("open catalog")?;
    let alerts = catalog.alerts().context("open alert records")?;
    let integrity = catalog.integrity().context("open integrity records")?;
    Ok((Arc::new(catalog), Arc::new(alerts), Arc::new(integrity)))
}

/// Open the catalog and blob store.
pub async fn open_state(
    cfg: &ServeConfig,
    pki: Arc<Pki>,
    shared: Option<&crate::catalog::pg::PgCatalog>,
) -> anyhow::Result<State> {
    let data_dir = &cfg.data_dir;
    crate::datadir::prepare(data_dir)?;
    let (catalog, alerts, integrity) = open_catalog(cfg, shared).await?;
    let backend: Arc<dyn crate::store::BlobStore> = match &cfg.store_url {
        Some(url) => crate::store::url::open(url)?,
        None => Arc::new(FsStore::open(&data_dir.join("blobs")).context("open blob store")?),
    };
    let (store, store_meter) = crate::store::layers::stack(backend, &cfg.store_layers);
    Ok(State {
        catalog,
        store,
        store_meter,
        copy_lag: Default::default(),
        hub: Hub::default(),
        pki,
        recovery_keys: cfg.recovery_keys.clone(),
        agent_cert_lifetime: cfg.agent_cert_lifetime,
        default_policy: cfg.default_policy.clone(),
        gc_grace_ms: cfg.gc_grace.as_millis() as u64,
        started_ms: nex_backup_shared::clock::now_ms(),
        reserve: crate::store::Reserve {
            min_free_bytes: cfg.store_reserve,
        },
        ballast: {
            let b = crate::ballast::Ballast::new(data_dir);
            b.lay();
            b
        },
        events: Default::default(),
        workers: Default::default(),
        health: Default::default(),
        alerts,
        integrity,
        outbox_wake: Default::default(),
        host: Some(gethostname_lossy())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "nex-backup".into()),
        admins: Default::default(),
        views: Default::default(),
    })
}

/// A controller bound to its address, ready to serve.
pub struct Bound {
    state: Arc<State>,
    scheduler: Option<crate::scheduler::decide::SchedConfig>,
    alerts: crate::alerts::AlertConfig,
    metrics_listen: Option<SocketAddr>,
    web: Option<crate::web::WebConfig>,
    verify: crate::verify::worker::VerifyConfig,
    state_copy_every: Duration,
    copies: Vec<crate::offsite::Destination>,
    copy_every: Duration,
    history_keep: Duration,
    data_dir: std::path::PathBuf,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    admin: AdminGuard,
    pub addr: SocketAddr,
    /// SHA-256 fingerprint agents and the CLI pin.
    pub ca_fingerprint: String,
    /// The CLI config written for operators on this host.
    pub cli_config: PathBuf,
}

/// Open state and bind the listener (`--listen 127.0.0.1:0` picks a free port).
pub async fn bind(cfg: &ServeConfig) -> anyhow::Result<Bound> {
    crate::datadir::prepare(&cfg.data_dir)?;
    let mut tls_src = cfg.tls.clone();
    if tls_src.names.is_empty() {
        tls_src.names = default_names(cfg.listen);
    } else if tls_src.cert_file.is_none() {
        // Names given for remote agents keep the loopback names, so the CLI on the
        // controller's own host (cli.toml says 127.0.0.1) still verifies.
        for n in ["localhost", "127.0.0.1", "::1"] {
            if !tls_src.names.iter().any(|x| x == n) {
                tls_src.names.push(n.into());
            }
        }
    }
    // Replicas on a shared catalog share one CA: the first publishes it, the others
    // import it before they would make their own.
    let shared = match &cfg.catalog_url {
        Some(url) => {
            let pg = crate::catalog::pg::PgCatalog::connect(url).await?;
            crate::cluster::ca::import(&pg, &cfg.data_dir).await?;
            Some(pg)
        }
        None => None,
    };
    let pki = Arc::new(Pki::load_or_create(&cfg.data_dir, &tls_src).context("load PKI")?);
    if let Some(pg) = &shared {
        crate::cluster::ca::publish(pg, &cfg.data_dir).await?;
    }
    let first_admin = load_or_create_admin(&cfg.data_dir)?;
    let tls = pki.server_config()?;
    let ca_fingerprint = pki.pin_fingerprint.clone();
    let state = Arc::new(open_state(cfg, pki, shared.as_ref()).await?);
    load_admins(&state, first_admin, shared.is_some())
        .await
        .context("load admin credentials")?;
    if let (Some(pg), Some(url)) = (shared, &cfg.catalog_url) {
        crate::cluster::spawn(&state, pg, url);
    }
    let admin = AdminGuard {
        book: state.admins.clone(),
    };
    note_running_jobs(&state)
        .await
        .context("recover job records")?;
    crate::service::keys::copy_all_to_store(&state)
        .await
        .context("copy sealed keys into the blob store")?;
    let listener = TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("bind {}", cfg.listen))?;
    let addr = listener.local_addr().context("local address")?;
    let cli_config = write_cli_config(cfg, addr, &tls_src.names, &ca_fingerprint)?;
    if cfg.recovery_keys.is_empty() {
        warn!(
            "no recovery public key configured (--recovery-key): enrollment is refused until one is"
        );
    }
    info!(%addr, data_dir = %cfg.data_dir.display(), ca_fingerprint = %ca_fingerprint,
        recovery_keys = cfg.recovery_keys.len(), "controller listening (mutual TLS 1.3)");
    Ok(Bound {
        state,
        scheduler: cfg.scheduler.clone(),
        alerts: cfg.alerts.clone(),
        metrics_listen: cfg.metrics_listen,
        web: cfg.web,
        verify: cfg.verify,
        state_copy_every: cfg.state_copy_every,
        copies: open_copies(cfg).await?,
        copy_every: cfg.copy_every,
        history_keep: cfg.history_keep,
        data_dir: cfg.data_dir.clone(),
        listener,
        tls,
        admin,
        addr,
        ca_fingerprint,
        cli_config,
    })
}

/// The off-site copy destinations, each behind the same retry and timeout layers. Under
/// `--copy-lock`, each must be an S3 bucket with Object Lock enabled: a bucket that
/// answers it has none stops the start; one that cannot be reached is checked again
/// before every copy pass, which writes nothing until the check passes.
async fn open_copies(cfg: &ServeConfig) -> anyhow::Result<Vec<crate::offsite::Destination>> {
    let mut out = vec![];
    for url in &cfg.copy_to {
        let backend = crate::store::url::open(url)?;
        let (store, _) = crate::store::layers::stack(backend, &cfg.store_layers);
        let lock = match cfg.copy_lock {
            None => None,
            Some(_) if !url.starts_with("s3://") => anyhow::bail!(
                "--copy-lock: the copy {} is not in S3; Object Lock needs an s3:// copy with Object Lock enabled",
                store.location()
            ),
            Some((mode, period)) => {
                if period < Duration::from_secs(24 * 3600) {
                    tracing::warn!(
                        ?period,
                        "--copy-lock is shorter than a day: the copy is locked, but only briefly"
                    );
                }
                let l = crate::store::objectlock::ObjectLock::open(url, mode, period)?;
                match l.check_bucket().await {
                    Ok(()) => {}
                    Err(e @ crate::store::objectlock::LockError::NotEnabled { .. }) => {
                        return Err(e.into());
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not check the off-site copy's Object Lock; every copy pass checks it again first")
                    }
                }
                Some(Arc::new(l))
            }
        };
        out.push(crate::offsite::Destination {
            store,
            keep: cfg.copy_keep,
            lock,
        });
    }
    Ok(out)
}

/// Names for a generated server certificate: this host's name, localhost and the
/// listen address (or every loopback address when listening on all interfaces).
fn default_names(listen: SocketAddr) -> Vec<String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    let host = gethostname_lossy();
    if !host.is_empty() && !names.contains(&host) {
        names.push(host);
    }
    if !listen.ip().is_unspecified() && !names.contains(&listen.ip().to_string()) {
        names.push(listen.ip().to_string());
    }
    names
}

fn gethostname_lossy() -> String {
    Some(
        gethostname::gethostname()
            .to_string_lossy()
            .trim()
            .to_string(),
    )
    .filter(|h| {
        h.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    })
    .unwrap_or_default()
}

/// `cli.toml` (0600) in the data dir: what the operator CLI on this host needs.
fn write_cli_config(
    cfg: &ServeConfig,
    addr: SocketAddr,
    names: &[String],
    fingerprint: &str,
) -> anyhow::Result<PathBuf> {
    let host = if addr.ip().is_unspecified() || addr.ip().is_loopback() {
        names
            .iter()
            .find(|n| n.as_str() == "127.0.0.1" || n.as_str() == "localhost")
            .cloned()
            .unwrap_or_else(|| names[0].clone())
    } else {
        addr.ip().to_string()
    };
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    let path = cfg.data_dir.join("cli.toml");
    let text = format!(
        "# Written by `nex-backup serve`. Use with: export NEX_CONFIG={}\n\
         controller = \"https://{host}:{}\"\n\
         ca_fingerprint = \"{fingerprint}\"\n\
         admin_token_file = \"{}\"\n",
        path.display(),
        addr.port(),
        admin_token_path(&cfg.data_dir).display()
    );
    nex_backup_shared::keyring::write_private_file(&path, text.as_bytes())
        .with_context(|| format!("write {}", path.display()))?;
    Ok(path)
}

/// Load the admin credentials; at the first start the credential in `admin.token`
/// becomes the first one, named `admin`.
///
/// On a shared catalog, a replica's own `admin.token` (made at its first start) is added
/// as `admin-<host>` unless it is known already (even revoked): the CLI on each replica's
/// host then works with the `cli.toml` written there.
async fn load_admins(state: &State, first: [u8; 32], shared: bool) -> anyhow::Result<()> {
    let mut records = state.catalog.admins().await?;
    let known = records.iter().any(|r| r.hash == hex::encode(first));
    if records.is_empty() || (shared && !known) {
        let name = if records.is_empty() {
            "admin".to_string()
        } else {
            format!("admin-{}", gethostname_lossy())
        };
        let rec = crate::catalog::trust::AdminRecord {
            v: 1,
            name,
            hash: hex::encode(first),
            created_unix_ms: nex_backup_shared::clock::now_ms(),
            revoked_unix_ms: None,
        };
        state.catalog.put_admin(&rec).await?;
        state.durable().await?;
        records.push(rec);
    }
    state.admins.load(&records);
    Ok(())
}

/// Jobs still `running` in the catalog may well still be running: the agent keeps a job
/// through a controller restart and re-sends its result until acknowledged. They stay
/// running; the agent's next hello fails those it does not know (lost with an agent
/// restart), and the scheduler fails a backup that makes no progress as stalled.
async fn note_running_jobs(state: &State) -> anyhow::Result<()> {
    for job in state.catalog.jobs().await? {
        if job.state == JobState::Running {
            info!(job = %job.job_id, site = %job.site, target = %job.target, agent = %job.agent_id,
                "job was running before the restart; waiting for its agent to report");
        }
    }
    Ok(())
}

/// The leader forgets history older than `keep` every six hours (zero: never).
fn spawn_history(state: &Arc<State>, keep: Duration) {
    if keep.is_zero() {
        return;
    }
    let st = state.clone();
    let every = Duration::from_secs(6 * 3600);
    state.workers.periodic("history", every, None, move || {
        let st = st.clone();
        async move {
            let now = nex_backup_shared::clock::now_ms();
            let before = now.saturating_sub(keep.as_millis() as u64);
            let gone = st.catalog.forget_history(before).await?;
            st.catalog.flush().await?;
            if gone.jobs + gone.rpo_events > 0 {
                info!(
                    jobs = gone.jobs,
                    rpo_events = gone.rpo_events,
                    "history retention"
                );
            }
            Ok::<_, crate::catalog::CatalogError>(())
        }
    });
}

impl Bound {
    /// The controller's shared state (for in-process tests that drive a scheduler).
    pub fn state(&self) -> Arc<State> {
        self.state.clone()
    }

    /// Serve until `shutdown` resolves, then flush the catalog.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let state = self.state;
        let agent = AgentServiceServer::new(AgentApi {
            state: state.clone(),
        })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let admin = AdminServiceServer::with_interceptor(
            AdminApi {
                state: state.clone(),
            },
            self.admin,
        );
        let enroll = EnrollServiceServer::new(EnrollApi {
            state: state.clone(),
        })
        .max_decoding_message_size(1024 * 1024);
        let incoming = crate::tls_listener::incoming(self.listener, self.tls);
        if let Some(cfg) = self.scheduler {
            let s = crate::scheduler::Scheduler::new(
                state.clone(),
                Arc::new(crate::scheduler::SystemClock),
                cfg,
            );
            state.workers.spawn("scheduler", |w| s.run(w));
        }
        crate::watch::spawn_all(&state);
        crate::verify::worker::spawn(&state, self.verify);
        crate::dr::spawn(&state, &self.data_dir, self.state_copy_every);
        crate::offsite::spawn(&state, self.copies, self.copy_every, state.copy_lag.clone());
        crate::alerts::spawn(&state, self.alerts);
        spawn_history(&state, self.history_keep);
        if let Some(web) = self.web {
            let bound = crate::web::spawn(&state, web).await?;
            println!("dashboard on https://{bound}/");
        }
        if let Some(addr) = self.metrics_listen {
            let bound = crate::metrics::spawn(&state, addr).await?;
            println!("metrics on http://{bound}/metrics");
        }
        // On shutdown: stop the workers, tell every agent and end its session (an agent
        // session never ends by itself, so a graceful stop would wait forever), then give
        // the remaining calls a short grace before dropping them.
        let stopping = tokio_util::sync::CancellationToken::new();
        let (st, stop) = (state.clone(), stopping.clone());
        let signal = async move {
            shutdown.await;
            info!("shutting down: stopping workers, ending agent sessions");
            st.workers.stop_token().cancel();
            st.hub
                .close_all("the controller is shutting down; reconnect later");
            stop.cancel();
        };
        // Adaptive HTTP/2 flow control: the windows grow to the link's bandwidth-delay
        // product, so a far agent's uploads are not held to one window per round trip.
        let server = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(20)))
            .http2_adaptive_window(Some(true))
            .add_service(agent)
            .add_service(admin)
            .add_service(enroll)
            .serve_with_incoming_shutdown(incoming, signal);
        tokio::select! {
            r = server => r.context("serve gRPC")?,
            _ = async { stopping.cancelled().await; tokio::time::sleep(SHUTDOWN_GRACE).await } => {
                warn!(grace = ?SHUTDOWN_GRACE, "connections still open after the shutdown grace; dropped");
            }
        }
        if !state.workers.shutdown(SHUTDOWN_GRACE).await {
            warn!(grace = ?SHUTDOWN_GRACE, "workers still running after the shutdown grace; abandoned");
        }
        state.catalog.flush().await.context("flush catalog")?;
        info!("controller stopped");
        Ok(())
    }
}

/// Run the controller until `shutdown` resolves. Prints `listening on ADDR` once bound.
pub async fn run(
    cfg: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let bound = bind(&cfg).await?;
    println!("CA fingerprint {}", bound.ca_fingerprint);
    println!("CLI config {}", bound.cli_config.display());
    println!("listening on {}", bound.addr);
    bound.serve(shutdown).await
}
