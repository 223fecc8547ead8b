//! Who is calling. Operators present the admin credential (`authorization: Bearer …`)
//! on every admin call; agents are known by their client certificate, checked against
//! the catalog on every call so that revocation and renewal take effect at once.

use std::path::{Path, PathBuf};

use anyhow::Context;
use nex_backup_shared::identity::AgentIdentity;
use nex_backup_shared::keyring::write_private_file;
use sha2::{Digest, Sha256};
use tonic::Status;
use tonic::service::Interceptor;
use tracing::warn;

use crate::state::State;
use crate::tls_listener::PeerInfo;
use nex_backup_shared::clock::unix_now;

pub use crate::admins::ADMIN_TOKEN_PREFIX;

/// The admin credential file in the data dir.
pub fn admin_token_path(data_dir: &Path) -> PathBuf {
    data_dir.join("admin.token")
}

/// Load the admin credential, creating it (0600) at first start. Returns its SHA-256.
pub fn load_or_create_admin(data_dir: &Path) -> anyhow::Result<[u8; 32]> {
    let path = admin_token_path(data_dir);
    let token = match std::fs::read_to_string(&path) {
        Ok(t) => t.trim().to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let t = crate::admins::new_admin_token();
            write_private_file(&path, format!("{t}\n").as_bytes())
                .with_context(|| format!("write {}", path.display()))?;
            tracing::info!(path = %path.display(), "created the admin credential");
            t
        }
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    anyhow::ensure!(
        token.starts_with(ADMIN_TOKEN_PREFIX),
        "{}: not an admin credential",
        path.display()
    );
    Ok(Sha256::digest(token.as_bytes()).into())
}

/// The named admin credential behind an admin call (a request extension).
#[derive(Debug, Clone)]
pub struct AdminIdentity {
    pub name: String,
}

/// Interceptor guarding the admin service.
#[derive(Clone)]
pub struct AdminGuard {
    pub book: std::sync::Arc<crate::admins::AdminBook>,
}

impl Interceptor for AdminGuard {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        let remote = req.extensions().get::<PeerInfo>().map(|p| p.remote);
        let presented = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match presented {
            None => {
                warn!(?remote, "admin call without credential refused");
                Err(Status::unauthenticated(
                    "admin credential required (set NEX_ADMIN_TOKEN or admin_token_file in the CLI config)",
                ))
            }
            Some(t) => match self.book.who(&Sha256::digest(t.trim().as_bytes())) {
                Some(name) => {
                    req.extensions_mut().insert(AdminIdentity { name });
                    Ok(req)
                }
                None => {
                    warn!(
                        ?remote,
                        "admin call with a wrong or revoked credential refused"
                    );
                    Err(Status::unauthenticated("admin credential rejected"))
                }
            },
        }
    }
}

/// The verified identity behind an agent call, re-checked against the catalog.
pub async fn agent_identity(
    state: &State,
    ext: &tonic::Extensions,
) -> Result<AgentIdentity, Status> {
    let peer = ext.get::<PeerInfo>();
    let Some(who) = peer.and_then(|p| p.identity.clone()) else {
        warn!(remote = ?peer.map(|p| p.remote), "agent call without client certificate refused");
        return Err(Status::unauthenticated(
            "a client certificate is required: enroll this agent first (nex-backup-agent enroll)",
        ));
    };
    let rec = state
        .catalog
        .identity(&who.site, &who.agent_id)
        .await
        .map_err(super::catalog_status)?;
    // Expiry is checked on every call, not only at the handshake: a connection opened
    // with a certificate that has since expired is refused from then on.
    if who.not_after_unix <= unix_now() {
        warn!(site = %who.site, agent = %who.agent_id, serial = %who.serial,
            "agent certificate expired; call refused");
        return Err(Status::permission_denied(format!(
            "the certificate of agent {} has expired; re-enroll the agent",
            who.agent_id
        )));
    }
    // The key must be the one recorded at enrollment or renewal: a certificate minted
    // with the CA key (a stolen disk) for a real serial but another key is refused.
    if let Some(r) = &rec
        && !r.key_matches(&who.serial, &who.key_sha256)
    {
        warn!(site = %who.site, agent = %who.agent_id, serial = %who.serial,
            "agent certificate key differs from the enrolled key; call refused");
        return Err(Status::permission_denied(format!(
            "the certificate of agent {} does not carry its enrolled key",
            who.agent_id
        )));
    }
    if !rec.is_some_and(|r| r.accepts(&who.serial, unix_now())) {
        warn!(site = %who.site, agent = %who.agent_id, serial = %who.serial,
            "agent certificate revoked or superseded; call refused");
        return Err(Status::permission_denied(format!(
            "the certificate of agent {} is revoked or superseded",
            who.agent_id
        )));
    }
    Ok(who)
}

/// Refuse a request about a site other than the caller's, without saying whether it exists.
pub fn require_site(who: &AgentIdentity, site: &str) -> Result<(), Status> {
    if who.site == site {
        return Ok(());
    }
    warn!(site = %who.site, agent = %who.agent_id, asked = %site.escape_debug(),
        "agent asked about another site; refused");
    Err(Status::permission_denied(
        "not permitted: an agent may only use its own site",
    ))
}
