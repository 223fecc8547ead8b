//! gRPC services. Generated types stop here: requests are validated into domain values
//! on receipt, and every failure becomes a `tonic::Status` that names the object.

pub mod admin;
mod admin_accounts;
mod admin_admins;
mod admin_alerts;
mod admin_policy;
mod admin_restore;
mod admin_rpo;
mod admin_safety;
mod admin_site;
mod admin_trust;
mod admin_verify;
pub mod agent;
mod audit;
pub mod auth;
mod commit;
pub mod enroll;
pub mod keys;
mod paging;
mod results;
mod upload;

use nex_backup_shared::error::FormatError;
use nex_backup_shared::ids::{AgentId, ChunkId, SiteId, SnapshotId, TargetName};
use tonic::Status;

use crate::catalog::CatalogError;
use crate::store::StoreError;

pub use crate::state::State;

pub(crate) use nex_backup_shared::clock::now_ms;

pub(crate) fn bad_input(e: FormatError) -> Status {
    Status::invalid_argument(e.to_string())
}

/// Make every catalog write so far durable before answering: an acknowledgement (chunk
/// stored, snapshot committed, key held, agent enrolled) must survive a crash.
pub(crate) async fn durable(state: &State) -> Result<(), Status> {
    state.catalog.flush().await.map_err(catalog_status)
}

pub(crate) fn catalog_status(e: CatalogError) -> Status {
    match e {
        CatalogError::ChunkBeingDeleted { .. } => Status::unavailable(e.to_string()),
        CatalogError::MissingChunks { .. } | CatalogError::JobNotRunning { .. } => {
            Status::failed_precondition(e.to_string())
        }
        CatalogError::Conflict { .. } | CatalogError::KeyEpochConflict { .. } => {
            Status::already_exists(e.to_string())
        }
        CatalogError::DiskFull(_) => {
            tracing::error!(error = %e, "catalog disk full");
            Status::resource_exhausted(format!(
                "the controller's catalog disk is full ({e}); uploads are refused until space is freed (nex-backup prune) or the disk is grown"
            ))
        }
        other => {
            tracing::error!(error = %other, "catalog failure");
            Status::internal(other.to_string())
        }
    }
}

pub(crate) fn store_status(e: StoreError) -> Status {
    tracing::error!(error = %e, "blob store failure");
    match &e {
        StoreError::Io { source, .. } if crate::store::is_disk_full(source) => {
            Status::resource_exhausted(format!(
                "the controller's blob store is full ({e}); uploads are refused until space is freed (nex-backup prune) or the store is grown"
            ))
        }
        _ if e.is_transient() => Status::unavailable(format!(
            "the controller's blob store is unavailable ({e}); try again"
        )),
        _ => Status::internal(e.to_string()),
    }
}

impl From<crate::dispatch::DispatchError> for Status {
    fn from(e: crate::dispatch::DispatchError) -> Self {
        use crate::dispatch::DispatchError as D;
        match e {
            D::NoAgent(m) => Status::failed_precondition(m),
            D::Undeliverable(m) => Status::unavailable(m.to_string()),
            D::Catalog(c) => catalog_status(c),
        }
    }
}

/// The store is below its reserve: refused at once, naming the controller's store.
impl From<crate::store::StoreFull> for Status {
    fn from(e: crate::store::StoreFull) -> Self {
        tracing::warn!(error = %e, "upload refused: blob store below its reserve");
        Status::resource_exhausted(e.to_string())
    }
}

/// A site name from a request, validated once (`InvalidArgument` naming it if not).
pub(crate) fn parse_site(site: &str) -> Result<SiteId, Status> {
    SiteId::try_from(site).map_err(bad_input)
}

/// A target name from a request.
pub(crate) fn parse_target(target: &str) -> Result<TargetName, Status> {
    TargetName::try_from(target).map_err(bad_input)
}

/// An agent id from a request.
pub(crate) fn parse_agent(agent: &str) -> Result<AgentId, Status> {
    AgentId::try_from(agent).map_err(bad_input)
}

/// A snapshot id from a request.
pub(crate) fn parse_snapshot(id: &str) -> Result<SnapshotId, Status> {
    SnapshotId::try_from(id).map_err(bad_input)
}

pub(crate) fn chunk_ids(raw: &[Vec<u8>], limit: usize) -> Result<Vec<ChunkId>, Status> {
    if raw.len() > limit {
        return Err(Status::invalid_argument(format!(
            "{} ids in one request, at most {limit}",
            raw.len()
        )));
    }
    raw.iter()
        .map(|b| ChunkId::try_from(b.as_slice()).map_err(bad_input))
        .collect()
}
