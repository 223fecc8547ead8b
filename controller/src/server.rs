//! `nex-backup serve`: open state, bind, serve until shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use nex_backup_shared::MAX_MESSAGE_BYTES;
use nex_backup_shared::pb::admin_service_server::AdminServiceServer;
use nex_backup_shared::pb::agent_service_server::AgentServiceServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tracing::{info, warn};

use crate::catalog::JobState;
use crate::catalog::sled_catalog::SledCatalog;
use crate::hub::Hub;
use crate::service::State;
use crate::service::admin::AdminApi;
use crate::service::agent::AgentApi;
use crate::store::fs::FsStore;

/// Controller configuration.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
}

/// Open the embedded catalog and blob store under `data_dir`.
pub fn open_state(data_dir: &std::path::Path) -> anyhow::Result<State> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("create data dir {}", data_dir.display()))?;
    let catalog = SledCatalog::open(&data_dir.join("catalog")).context("open catalog")?;
    let store = FsStore::open(&data_dir.join("blobs")).context("open blob store")?;
    Ok(State {
        catalog: Arc::new(catalog),
        store: Arc::new(store),
        hub: Hub::default(),
    })
}

/// A controller bound to its address, ready to serve.
pub struct Bound {
    state: Arc<State>,
    listener: TcpListener,
    pub addr: SocketAddr,
}

/// Open state and bind the listener (`--listen 127.0.0.1:0` picks a free port).
pub async fn bind(cfg: &ServeConfig) -> anyhow::Result<Bound> {
    let state = Arc::new(open_state(&cfg.data_dir)?);
    mark_interrupted_jobs(&state)
        .await
        .context("recover job records")?;
    let listener = TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("bind {}", cfg.listen))?;
    let addr = listener.local_addr().context("local address")?;
    info!(%addr, data_dir = %cfg.data_dir.display(), "controller listening");
    Ok(Bound {
        state,
        listener,
        addr,
    })
}

/// Jobs still `running` in the catalog were cut off by a crash or restart. Their agent
/// may still report a result (it is kept until acknowledged), which then replaces this.
async fn mark_interrupted_jobs(state: &State) -> anyhow::Result<()> {
    for mut job in state.catalog.jobs().await? {
        if job.state == JobState::Running {
            job.state = JobState::Failed;
            job.error = Some(
                "interrupted by a controller restart; the agent may still report its outcome"
                    .into(),
            );
            job.ended_unix_ms = Some(crate::service::now_ms());
            warn!(job = %job.job_id, site = %job.site, target = %job.target, "job interrupted by restart");
            state.catalog.put_job(&job).await?;
        }
    }
    Ok(())
}

impl Bound {
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
        let admin = AdminServiceServer::new(AdminApi {
            state: state.clone(),
        });
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(std::time::Duration::from_secs(20)))
            .add_service(agent)
            .add_service(admin)
            .serve_with_incoming_shutdown(TcpListenerStream::new(self.listener), shutdown)
            .await
            .context("serve gRPC")?;
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
    println!("listening on {}", bound.addr);
    bound.serve(shutdown).await
}
