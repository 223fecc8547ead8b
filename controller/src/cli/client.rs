//! How the operator CLI reaches the controller: URL, pinned CA fingerprint and admin
//! credential, from flags, the environment, or a config file (`NEX_CONFIG`; `serve`
//! writes one to `<data dir>/cli.toml`). Flags and environment win over the file.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use nex_backup_shared::pb::admin_service_client::AdminServiceClient;
use nex_backup_shared::tls::{client_config, endpoint, parse_fingerprint};
use serde::Deserialize;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use super::ClientOpts;

/// The admin client the CLI uses.
pub type AdminClient = AdminServiceClient<InterceptedService<Channel, BearerAuth>>;

/// Adds the admin credential to every call.
#[derive(Clone)]
pub struct BearerAuth(MetadataValue<Ascii>);

impl Interceptor for BearerAuth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    controller: Option<String>,
    ca_fingerprint: Option<String>,
    admin_token_file: Option<PathBuf>,
}

/// Resolved connection settings.
struct Resolved {
    controller: String,
    fingerprint: String,
    token: String,
}

fn default_config_path() -> Option<PathBuf> {
    let dir = std::env::var_os("NEX_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/nex-backup"));
    let p = dir.join("cli.toml");
    p.exists().then_some(p)
}

fn read_token(path: &Path) -> anyhow::Result<String> {
    let t = std::fs::read_to_string(path)
        .with_context(|| format!("read admin credential {}", path.display()))?;
    Ok(t.trim().to_string())
}

fn resolve(opts: &ClientOpts) -> anyhow::Result<Resolved> {
    let file_path = opts.config.clone().or_else(default_config_path);
    let file: FileConfig = match &file_path {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("read CLI config {}", p.display()))?;
            toml::from_str(&text)
                .map_err(|e| anyhow!("CLI config {}: {}", p.display(), e.message()))?
        }
        None => FileConfig::default(),
    };
    let controller = opts
        .controller
        .clone()
        .or(file.controller)
        .unwrap_or_else(|| "https://127.0.0.1:7420".into());
    let fingerprint = opts.ca_fingerprint.clone().or(file.ca_fingerprint).ok_or_else(|| {
        anyhow!("no CA fingerprint: pass --ca-fingerprint (see `nex-backup ca show`) or set NEX_CONFIG to the controller's cli.toml")
    })?;
    let token = match (
        &opts.admin_token,
        &opts.admin_token_file,
        &file.admin_token_file,
    ) {
        (Some(t), _, _) => t.trim().to_string(),
        (None, Some(p), _) | (None, None, Some(p)) => read_token(p)?,
        (None, None, None) => {
            return Err(anyhow!(
                "no admin credential: set NEX_ADMIN_TOKEN, --admin-token-file, or NEX_CONFIG to the controller's cli.toml"
            ));
        }
    };
    Ok(Resolved {
        controller,
        fingerprint,
        token,
    })
}

/// Connect to the controller over TLS pinned to its CA, with the admin credential.
pub async fn connect(opts: &ClientOpts) -> anyhow::Result<AdminClient> {
    let r = resolve(opts)?;
    let pin = parse_fingerprint(&r.fingerprint)?;
    let tls = client_config(pin, None)?;
    let (ep, dialer) = endpoint(&r.controller, tls)?;
    let ch = ep.connect_with_connector(dialer).await.map_err(|e| {
        anyhow!(
            "cannot reach controller at {}: {}",
            r.controller,
            nex_backup_shared::tls::error_chain(&e)
        )
    })?;
    let value: MetadataValue<Ascii> = format!("Bearer {}", r.token)
        .parse()
        .map_err(|_| anyhow!("the admin credential contains characters not allowed in a header"))?;
    Ok(AdminServiceClient::with_interceptor(ch, BearerAuth(value))
        .max_decoding_message_size(nex_backup_shared::MAX_MESSAGE_BYTES))
}

/// An operator-facing error from a refused call: the controller's message alone.
pub(super) fn status(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", s.message())
}
