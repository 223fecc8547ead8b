//! An in-process controller on port 0 with a recovery key, plus helpers that enroll
//! agents over the real enrollment RPC and build mutual-TLS clients from their
//! certificates. Used by the gRPC edge and attack tests.

use nex_backup::server::{ServeConfig, bind};
use nex_backup_shared::keys::MasterKey;
use nex_backup_shared::pb::{
    self, admin_service_client::AdminServiceClient, agent_service_client::AgentServiceClient,
    enroll_service_client::EnrollServiceClient,
};
use nex_backup_shared::recovery::{RecoverySecret, seal_master_key};
use nex_backup_shared::tls::{channel, client_config, parse_fingerprint};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tonic::transport::Channel;

/// A running in-process controller.
pub struct InProc {
    pub addr: std::net::SocketAddr,
    pub fingerprint: String,
    pub recovery: RecoverySecret,
    pub dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// An enrolled agent identity: its key and certificate chain.
pub struct Identity {
    pub site: String,
    pub agent_id: String,
    pub key_der: Vec<u8>,
    pub chain_der: Vec<Vec<u8>>,
}

impl Identity {
    pub fn tls_identity(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        (
            self.chain_der
                .iter()
                .map(|c| CertificateDer::from(c.clone()))
                .collect(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone())),
        )
    }
}

/// Start a controller with `cfg` adjusted by `f` (data dir and recovery key preset).
pub async fn start_with(f: impl FnOnce(&mut ServeConfig)) -> InProc {
    let dir = tempfile::tempdir().unwrap();
    let recovery = RecoverySecret::generate();
    let mut cfg = ServeConfig::new(dir.path().join("data"), "127.0.0.1:0".parse().unwrap());
    cfg.recovery_keys = vec![recovery.public()];
    // Deterministic by default: jobs start only when a test starts them.
    cfg.scheduler = None;
    f(&mut cfg);
    let bound = bind(&cfg).await.unwrap();
    let (addr, fingerprint) = (bound.addr, bound.ca_fingerprint.clone());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        bound
            .serve(async {
                let _ = rx.await;
            })
            .await
    });
    InProc {
        addr,
        fingerprint,
        recovery,
        dir,
        stop: Some(tx),
        task,
    }
}

pub async fn start() -> InProc {
    start_with(|_| {}).await
}

impl InProc {
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// A channel presenting `identity` (or no certificate).
    pub fn channel(&self, identity: Option<&Identity>) -> Channel {
        let tls = client_config(
            parse_fingerprint(&self.fingerprint).unwrap(),
            identity.map(Identity::tls_identity),
        )
        .unwrap();
        channel(&self.url(), tls).unwrap()
    }

    pub fn agent(&self, identity: &Identity) -> AgentServiceClient<Channel> {
        AgentServiceClient::new(self.channel(Some(identity))).max_encoding_message_size(usize::MAX)
    }

    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("data/admin.token"))
            .unwrap()
            .trim()
            .to_string()
    }

    /// Admin call with the credential attached.
    pub fn admin_request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", self.admin_token()).parse().unwrap(),
        );
        r
    }

    pub fn admin(&self) -> AdminServiceClient<Channel> {
        AdminServiceClient::new(self.channel(None))
    }

    pub async fn token(&self, site: &str, ttl_secs: u64) -> String {
        self.admin()
            .create_token(self.admin_request(pb::CreateTokenRequest {
                site: site.into(),
                ttl_secs,
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner()
            .token
    }

    /// Enroll with `token`; the raw result.
    pub async fn enroll_with(
        &self,
        token: &str,
        agent_id: &str,
    ) -> Result<(Identity, pb::EnrollResponse), tonic::Status> {
        let key = rcgen::KeyPair::generate().unwrap();
        let csr = rcgen::CertificateParams::default()
            .serialize_request(&key)
            .unwrap();
        let resp = EnrollServiceClient::new(self.channel(None))
            .enroll(pb::EnrollRequest {
                token: token.into(),
                csr_der: csr.der().to_vec(),
                agent_id: agent_id.into(),
                version: "test".into(),
            })
            .await?
            .into_inner();
        let id = Identity {
            site: resp.site.clone(),
            agent_id: resp.agent_id.clone(),
            key_der: key.serialize_der(),
            chain_der: resp.chain_der.clone(),
        };
        Ok((id, resp))
    }

    /// Enroll a new agent of `site`.
    pub async fn enroll(&self, site: &str, agent_id: &str) -> Identity {
        let token = self.token(site, 600).await;
        self.enroll_with(&token, agent_id).await.unwrap().0
    }

    /// Register `key` as epoch `epoch` of the identity's site (sealed to the recovery key),
    /// as an enrolling agent does; only then does the controller accept objects under it.
    pub async fn register_key(&self, id: &Identity, epoch: u32, key: &MasterKey) {
        self.agent(id)
            .put_sealed_keys(pb::PutSealedKeysRequest {
                site: id.site.clone(),
                sealed: vec![seal_master_key(
                    &id.site,
                    epoch,
                    key,
                    &self.recovery.public(),
                )],
            })
            .await
            .unwrap();
    }

    /// Upload `chunks` to `site` as `id`, the way an agent does.
    pub async fn put(
        &self,
        id: &Identity,
        site: &str,
        chunks: &[&nex_backup_shared::chunk::SealedChunk],
    ) -> Result<pb::PutChunksResponse, tonic::Status> {
        let reqs: Vec<_> = chunks
            .iter()
            .map(|c| pb::PutChunkRequest {
                site: site.into(),
                snapshot_id: String::new(),
                id: c.id.0.to_vec(),
                blob: c.blob.clone(),
            })
            .collect();
        self.agent(id)
            .put_chunks(tokio_stream::iter(reqs))
            .await
            .map(|r| r.into_inner())
    }

    /// The controller's log lines are not captured in process; the data dir is.
    pub fn data_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    pub async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }
}
