//! NEX Backup controller library: everything behind the `nex-backup` binary.
//!
//! Module map:
//! - [`server`]: `nex-backup serve`: opens state, binds, serves gRPC until shutdown.
//! - [`service`]: the gRPC services: [`service::agent`] (agent sessions, chunk upload and
//!   download, atomic commit) and [`service::admin`] (operator calls).
//! - [`hub`]: live sessions, job watchers and upload counters shared by the services.
//! - [`catalog`]: the [`catalog::Catalog`] trait, the sled backend and its conformance suite.
//! - [`store`]: the [`store::BlobStore`] trait, the file backend and its conformance suite.
//! - [`cli`]: the operator CLI (`status`, `snapshots`, `backup`, `restore`).

pub mod catalog;
pub mod cli;
pub mod hub;
pub mod server;
pub mod service;
pub mod store;
