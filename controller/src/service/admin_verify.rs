//! Admin calls about the store's integrity: run a verification (`nex-backup verify`) and
//! list the snapshots found damaged.

use nex_backup_shared::pb;
use tonic::Status;

use super::admin::AdminApi;
use super::{catalog_status, parse_site};
use crate::verify::{Report, Scope};

fn response(r: Report) -> pb::VerifyStoreResponse {
    pb::VerifyStoreResponse {
        objects: r.objects,
        bytes: r.bytes,
        findings: r
            .findings
            .into_iter()
            .map(|f| pb::VerifyFinding {
                site: f.site,
                key: f.object.key,
                problem: f.object.problem,
                chunk: f.object.chunk.unwrap_or_default(),
                snapshots: f
                    .snapshots
                    .into_iter()
                    .map(|(t, s)| format!("{t}/{s}"))
                    .collect(),
                repaired: f.repaired,
            })
            .collect(),
        marked: r
            .marked
            .into_iter()
            .map(|(s, t, id)| format!("{s}/{t}/{id}"))
            .collect(),
        healed: r
            .healed
            .into_iter()
            .map(|(s, id)| format!("{s}/{id}"))
            .collect(),
        complete: r.complete,
        duration_ms: r.duration_ms,
        sites: r.sites,
    }
}

impl AdminApi {
    pub(super) async fn verify_store_impl(
        &self,
        req: pb::VerifyStoreRequest,
    ) -> Result<pb::VerifyStoreResponse, Status> {
        let site = if req.site.is_empty() {
            None
        } else {
            Some(parse_site(&req.site)?.to_string())
        };
        let scope = Scope {
            site,
            max_objects: (req.max_objects > 0).then_some(req.max_objects),
            rate_bytes_per_sec: (req.rate_bytes_per_sec > 0).then_some(req.rate_bytes_per_sec),
            resume: req.resume,
        };
        // The run stops with the controller (its cursor is kept) or when the caller leaves.
        let cancel = self.state.workers.stop_token().child_token();
        let _guard = cancel.clone().drop_guard();
        crate::verify::run(&self.state, &scope, &cancel)
            .await
            .map(response)
            .map_err(|e| {
                tracing::error!(error = %format!("{e:#}"), "store verification");
                Status::unavailable(format!("store verification stopped: {e:#}"))
            })
    }

    pub(super) async fn list_damaged_impl(
        &self,
        req: pb::ListDamagedRequest,
    ) -> Result<pb::ListDamagedResponse, Status> {
        if !req.site.is_empty() {
            parse_site(&req.site)?;
        }
        let site = (!req.site.is_empty()).then_some(req.site.as_str());
        let recs = self
            .state
            .integrity
            .damages(site)
            .await
            .map_err(catalog_status)?;
        Ok(pb::ListDamagedResponse {
            snapshots: recs
                .into_iter()
                .map(|d| pb::DamagedSnapshot {
                    site: d.site,
                    target: d.target,
                    snapshot_id: d.snapshot_id,
                    found_unix_ms: d.found_unix_ms,
                    source: match d.source {
                        crate::catalog::integrity::DamageSource::Store => "store".into(),
                        crate::catalog::integrity::DamageSource::Deep => "deep".into(),
                    },
                    objects: d
                        .objects
                        .into_iter()
                        .map(|o| format!("{}: {}", o.key, o.problem))
                        .collect(),
                })
                .collect(),
        })
    }
}
