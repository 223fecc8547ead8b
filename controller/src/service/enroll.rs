//! `EnrollService`: a single-use token and a certificate request buy a client certificate.
//! Everything is checked before the token is spent, so a malformed request does not burn
//! it; every attempt, good or bad, is logged with the remote address and the token's
//! public handle (never the token).

use std::sync::Arc;

use nex_backup_shared::ids::AgentId;
use nex_backup_shared::pb::enroll_service_server::EnrollService;
use nex_backup_shared::pb::{self};
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use super::{State, bad_input, catalog_status, now_ms};
use crate::catalog::{IdentityRecord, TokenUse};
use crate::pki::Pki;
use crate::tls_listener::PeerInfo;

/// The enrollment service.
pub struct EnrollApi {
    pub state: Arc<State>,
}

/// Hex SHA-256 of a token: how tokens are stored and looked up.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.trim().as_bytes()))
}

#[tonic::async_trait]
impl EnrollService for EnrollApi {
    async fn enroll(
        &self,
        request: Request<pb::EnrollRequest>,
    ) -> Result<Response<pb::EnrollResponse>, Status> {
        let remote = request.extensions().get::<PeerInfo>().map(|p| p.remote);
        let req = request.into_inner();
        let refuse = |why: &str, status: Status| {
            warn!(?remote, agent = %req.agent_id.escape_debug(), reason = why, "enrollment refused");
            status
        };
        AgentId::try_from(req.agent_id.as_str())
            .map_err(|e| refuse("bad agent id", bad_input(e)))?;
        if req.token.len() > 256 || req.version.len() > 64 {
            return Err(refuse(
                "oversized field",
                Status::invalid_argument("token or version too long"),
            ));
        }
        let csr = Pki::check_csr(&req.csr_der).map_err(|e| {
            refuse(
                "bad certificate request",
                Status::invalid_argument(e.to_string()),
            )
        })?;
        let st = &self.state;
        if st.recovery_keys.is_empty() {
            return Err(refuse(
                "no recovery key configured",
                Status::failed_precondition(
                    "the controller has no recovery public key configured (serve --recovery-key); \
                     it refuses to enroll agents whose keys could not be recovered",
                ),
            ));
        }
        let hash = token_hash(&req.token);
        let token = match st
            .catalog
            .consume_token(&hash, now_ms(), &req.agent_id)
            .await
            .map_err(catalog_status)?
        {
            TokenUse::Accepted(t) => t,
            TokenUse::Unknown => {
                return Err(refuse(
                    "unknown token",
                    Status::permission_denied("enrollment token is not valid"),
                ));
            }
            TokenUse::AlreadyUsed(t) => {
                warn!(?remote, token = t.handle(), site = %t.site, used_by = ?t.used_by, "replayed enrollment token");
                return Err(refuse(
                    "token already used",
                    Status::permission_denied("enrollment token was already used"),
                ));
            }
            TokenUse::Expired(t) => {
                warn!(?remote, token = t.handle(), site = %t.site, "expired enrollment token");
                return Err(refuse(
                    "token expired",
                    Status::permission_denied("enrollment token has expired"),
                ));
            }
        };
        // An agent id that is taken stays with its agent: a customer-side user holding a
        // token cannot cut off the real agent by enrolling under its id. Only a token
        // created for that purpose (token create --replace-agent ID) may take it over.
        let taken = st
            .catalog
            .identity(&token.site, &req.agent_id)
            .await
            .map_err(catalog_status)?
            .is_some();
        if taken && token.replace_agent.as_deref() != Some(req.agent_id.as_str()) {
            warn!(?remote, token = token.handle(), site = %token.site, agent = %req.agent_id,
                "enrollment under an existing agent id refused");
            return Err(refuse(
                "agent id taken",
                Status::already_exists(format!(
                    "agent id {} is already enrolled at site {}; choose another id, or have an operator create a token with --replace-agent {}",
                    req.agent_id, token.site, req.agent_id
                )),
            ));
        }
        let issued = st
            .pki
            .issue(csr, &token.site, &req.agent_id, st.agent_cert_lifetime)
            .map_err(|e| {
                tracing::error!(error = %e, "issue agent certificate");
                Status::internal("could not issue the certificate")
            })?;
        let id = &issued.identity;
        st.catalog
            .put_identity(&IdentityRecord {
                v: 1,
                site: id.site.clone(),
                agent_id: id.agent_id.clone(),
                serial: id.serial.clone(),
                prev_serial: None,
                prev_not_after_unix: 0,
                not_after_unix: id.not_after_unix,
                enrolled_unix_ms: now_ms(),
                revoked_unix_ms: None,
                key_sha256: id.key_sha256.clone(),
                prev_key_sha256: String::new(),
            })
            .await
            .map_err(catalog_status)?;
        st.audit_trust(
            &id.site,
            "agent enrolled",
            format!(
                "agent {} serial {} token {}",
                id.agent_id,
                id.serial,
                token.handle()
            ),
            format!(
                "agent {} from {}",
                id.agent_id,
                remote.map_or("-".into(), |r| r.to_string())
            ),
        )
        .await;
        super::durable(st).await?;
        info!(?remote, site = %id.site, agent = %id.agent_id, serial = %id.serial,
            token = token.handle(), version = %req.version.escape_debug(), "agent enrolled");
        Ok(Response::new(pb::EnrollResponse {
            site: id.site.clone(),
            agent_id: id.agent_id.clone(),
            chain_der: issued.chain_der,
            not_after_unix: id.not_after_unix,
            custody: Some(super::keys::custody(st, &id.site).await?),
        }))
    }
}
