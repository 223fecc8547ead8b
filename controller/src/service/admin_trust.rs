//! Admin calls about trust: enrollment tokens, the agent list, revocation.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use nex_backup_shared::pb;
use tonic::Status;
use tracing::{info, warn};

use super::admin::AdminApi;
use super::enroll::token_hash;
use super::{catalog_status, now_ms, parse_site};
use crate::catalog::TokenRecord;

/// Prefix of enrollment tokens (recognisable in a secret scan).
pub const TOKEN_PREFIX: &str = "nexb-enroll-";
const DEFAULT_TTL_SECS: u64 = 24 * 3600;
const MAX_TTL_SECS: u64 = 30 * 24 * 3600;

impl AdminApi {
    pub(super) async fn create_token_impl(
        &self,
        req: pb::CreateTokenRequest,
    ) -> Result<pb::CreateTokenResponse, Status> {
        parse_site(&req.site)?;
        if !req.replace_agent.is_empty() {
            super::parse_agent(&req.replace_agent)?;
        }
        let ttl = if req.ttl_secs == 0 {
            DEFAULT_TTL_SECS
        } else {
            req.ttl_secs
        };
        if ttl > MAX_TTL_SECS {
            return Err(Status::invalid_argument(format!(
                "token lifetime {ttl} s is longer than the maximum of 30 days"
            )));
        }
        let token = format!(
            "{TOKEN_PREFIX}{}",
            URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
        );
        let now = now_ms();
        let rec = TokenRecord {
            v: 1,
            hash: token_hash(&token),
            site: req.site.clone(),
            created_unix_ms: now,
            expires_unix_ms: now + ttl * 1000,
            used_unix_ms: None,
            used_by: None,
            replace_agent: (!req.replace_agent.is_empty()).then(|| req.replace_agent.clone()),
        };
        self.state
            .catalog
            .put_token(&rec)
            .await
            .map_err(catalog_status)?;
        super::durable(&self.state).await?;
        info!(site = %req.site, token = rec.handle(), ttl_secs = ttl, replace_agent = ?rec.replace_agent, "enrollment token created");
        Ok(pb::CreateTokenResponse {
            token,
            expires_unix_ms: rec.expires_unix_ms,
        })
    }

    pub(super) async fn list_agents_impl(&self) -> Result<pb::ListAgentsResponse, Status> {
        let cat = &self.state.catalog;
        let seen = cat.agents().await.map_err(catalog_status)?;
        let mut agents = vec![];
        for id in cat.identities().await.map_err(catalog_status)? {
            let last = seen
                .iter()
                .find(|a| a.site == id.site && a.agent_id == id.agent_id);
            let online = self.state.hub.session(&id.site, &id.agent_id).is_some();
            agents.push(pb::AgentInfo {
                site: id.site.clone(),
                agent_id: id.agent_id.clone(),
                version: last.map(|a| a.version.clone()).unwrap_or_default(),
                last_seen_unix_ms: last.map_or(0, |a| a.last_seen_unix_ms),
                cert_not_after_unix: id.not_after_unix,
                cert_serial: id.serial.clone(),
                revoked: id.revoked_unix_ms.is_some(),
                online,
                enrolled_unix_ms: id.enrolled_unix_ms,
                health: self
                    .state
                    .health
                    .latest(&id.site, &id.agent_id)
                    .map(|h| h.to_pb()),
            });
        }
        Ok(pb::ListAgentsResponse { agents })
    }

    pub(super) async fn revoke_agent_impl(
        &self,
        req: pb::RevokeAgentRequest,
    ) -> Result<pb::RevokeAgentResponse, Status> {
        super::parse_agent(&req.agent_id)?;
        let cat = &self.state.catalog;
        let matches: Vec<_> = cat
            .identities()
            .await
            .map_err(catalog_status)?
            .into_iter()
            .filter(|i| i.agent_id == req.agent_id && (req.site.is_empty() || i.site == req.site))
            .collect();
        let site = match matches.as_slice() {
            [] => {
                return Err(Status::not_found(format!(
                    "no enrolled agent {}",
                    req.agent_id
                )));
            }
            [one] => one.site.clone(),
            many => {
                let sites: Vec<&str> = many.iter().map(|i| i.site.as_str()).collect();
                return Err(Status::failed_precondition(format!(
                    "agent id {} is enrolled at sites {}; pass --site",
                    req.agent_id,
                    sites.join(", ")
                )));
            }
        };
        cat.revoke_identity(&site, &req.agent_id, now_ms())
            .await
            .map_err(catalog_status)?;
        super::durable(&self.state).await?;
        let cut = self.state.hub.cut(&site, &req.agent_id);
        // A revoked host's health no longer counts (no low-disk incident for it).
        self.state.health.forget(&site, &req.agent_id);
        warn!(%site, agent = %req.agent_id, session_cut = cut, "agent revoked");
        Ok(pb::RevokeAgentResponse {
            site,
            agent_id: req.agent_id,
        })
    }
}
