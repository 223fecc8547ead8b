//! The audit log of admin calls: every call leaves exactly one entry with its time,
//! the named admin credential and address behind it, the method, the site and target
//! it is about, its parameters (secrets removed, bounded) and its outcome. A call that
//! records a more telling entry itself ([`AdminApi::audit`], e.g. "retention lock
//! shortened", written durably before the change takes effect) leaves that one instead.
//! No call edits or deletes entries.

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use nex_backup_shared::pb;
use nex_backup_shared::text::clean;
use tonic::{Request, Response, Status};
use tracing::warn;

use super::admin::AdminApi;
use super::auth::AdminIdentity;
use crate::catalog::safety::AuditEntry;
use crate::tls_listener::PeerInfo;

/// Most bytes of parameters kept per entry.
const MAX_PARAMS: usize = 1000;
/// Field names whose values never reach the log.
const SECRET_FIELDS: [&str; 4] = ["token", "password", "secret", "admin_token"];

tokio::task_local! {
    static CALL: CallCtx;
}

/// The admin call in progress on this task.
#[derive(Clone)]
struct CallCtx {
    actor: String,
    method: String,
    written: Arc<AtomicBool>,
}

/// The site and target a request is about, for the audit entry.
pub trait Scope {
    fn scope(&self) -> (&str, &str) {
        ("", "")
    }
}

macro_rules! scope {
    (site, target: $($t:ident),*) => { $(impl Scope for pb::$t { fn scope(&self) -> (&str, &str) { (&self.site, &self.target) } })* };
    (site: $($t:ident),*) => { $(impl Scope for pb::$t { fn scope(&self) -> (&str, &str) { (&self.site, "") } })* };
    (none: $($t:ident),*) => { $(impl Scope for pb::$t {})* };
}

scope!(site, target: ListSnapshotsRequest, RunBackupRequest, RunRestoreRequest, SetPolicyRequest,
    GetPolicyRequest, PruneRequest, ListJobsRequest, DeletePolicyRequest, ReleaseHoldRequest);
scope!(site: CreateTokenRequest, RevokeAgentRequest, SetSitePolicyRequest, GetSitePolicyRequest,
    RpoRequest, ListHoldsRequest, ListAuditRequest, ChannelMsg, AlertRuleMsg, ListAlertRulesRequest,
    ListIncidentsRequest, VerifyStoreRequest, ListDamagedRequest);
scope!(none: StatusRequest, ListAgentsRequest, ListPoliciesRequest, CancelJobRequest,
    ListChannelsRequest, DeleteChannelRequest, TestChannelRequest, AckIncidentRequest,
    CreateAdminRequest, ListAdminsRequest, RevokeAdminRequest, SummaryMsg, SendSummaryRequest,
    SetAccountRequest, ListAccountsRequest);

/// Who calls: the named credential and the address it came from.
fn actor_of<T>(req: &Request<T>) -> String {
    let name = req
        .extensions()
        .get::<AdminIdentity>()
        .map_or("(unknown credential)".to_string(), |a| a.name.clone());
    match req.extensions().get::<PeerInfo>() {
        Some(p) => format!("admin {name} from {}", p.remote),
        None => format!("admin {name}"),
    }
}

/// A request's debug text with the values of secret fields replaced, bounded.
pub fn redact(debug: &str) -> String {
    let mut out = debug.to_string();
    for f in SECRET_FIELDS {
        let key = format!("{f}: \"");
        let mut from = 0;
        while let Some(i) = out[from..].find(&key) {
            let start = from + i + key.len();
            // Only a whole field name: preceded by a space, a brace or a comma.
            let before = out[..from + i].chars().last();
            let end = out[start..].find('"').map_or(out.len(), |e| start + e);
            if matches!(before, Some(' ' | '{' | ',')) && end > start {
                out.replace_range(start..end, "(removed)");
                from = start + "(removed)".len();
            } else {
                from = end.min(out.len());
            }
            if from >= out.len() {
                break;
            }
        }
    }
    clean(&out, MAX_PARAMS)
}

impl AdminApi {
    /// Run one admin call and leave its audit entry (see module docs).
    pub(super) async fn audited<Req, T, F, Fut>(
        &self,
        method: &str,
        request: Request<Req>,
        f: F,
    ) -> Result<Response<T>, Status>
    where
        Req: Debug + Scope,
        F: FnOnce(Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let actor = actor_of(&request);
        let (site, target) = {
            let (s, t) = request.get_ref().scope();
            (clean(s, 64), clean(t, 64))
        };
        let params = redact(&format!("{:?}", request.get_ref()));
        let ctx = CallCtx {
            actor: actor.clone(),
            method: method.to_string(),
            written: Arc::new(AtomicBool::new(false)),
        };
        let written = ctx.written.clone();
        let r = CALL.scope(ctx, f(request)).await;
        if !written.load(Ordering::Acquire) {
            let outcome = match &r {
                Ok(_) => "ok".to_string(),
                Err(s) => format!("refused: {:?}: {}", s.code(), clean(s.message(), 300)),
            };
            let e = AuditEntry {
                v: 2,
                unix_ms: nex_backup_shared::clock::now_ms(),
                site,
                target,
                action: method.to_string(),
                detail: params,
                actor,
                outcome,
            };
            // The call has taken effect; its caller is answered as it would be, and
            // the missing entry is an error for whoever watches the log.
            if let Err(err) = self.state.catalog.put_audit(&e).await {
                tracing::error!(method, actor = %e.actor, error = %err, "audit entry not written");
            }
        }
        r
    }

    /// Who calls, for records that name the operator (an acknowledged incident).
    pub(super) fn actor(&self) -> String {
        CALL.try_with(|c| c.actor.clone())
            .unwrap_or_else(|_| "operator (admin credential)".into())
    }

    /// Record the call's action durably now, with a telling name and detail; the call
    /// then leaves no second entry.
    pub(super) async fn audit(
        &self,
        site: &str,
        target: &str,
        action: &str,
        detail: String,
    ) -> Result<(), Status> {
        let method = CALL.try_with(|c| c.method.clone()).unwrap_or_default();
        let e = AuditEntry {
            v: 2,
            unix_ms: nex_backup_shared::clock::now_ms(),
            site: site.into(),
            target: target.into(),
            action: action.into(),
            detail: if method.is_empty() {
                detail
            } else {
                format!("{detail} ({method})")
            },
            actor: self.actor(),
            outcome: "ok".into(),
        };
        self.state
            .catalog
            .put_audit(&e)
            .await
            .map_err(super::catalog_status)?;
        super::durable(&self.state).await?;
        let _ = CALL.try_with(|c| c.written.store(true, Ordering::Release));
        warn!(site, target, action, detail = %e.detail, actor = %e.actor, "audit: operator action");
        Ok(())
    }
}
