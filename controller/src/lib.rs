//! NEX Backup controller library: everything behind the `nex-backup` binary.
//!
//! Module map:
//! - [`server`]: `nex-backup serve`: opens state, binds, serves gRPC until shutdown.
//! - [`service`]: the gRPC services: [`service::agent`] (agent sessions, chunk upload and
//!   download, atomic commit) and [`service::admin`] (operator calls).
//! - [`hub`]: live sessions, job watchers and upload counters shared by the services.
//! - [`catalog`]: the [`catalog::Catalog`] trait, the sled backend and its conformance suite.
//! - [`store`]: the [`store::BlobStore`] trait, the file backend and its conformance suite.
//! - [`datadir`]: the private data directory (0700, 0600 files, refused if shared).
//! - [`pki`]: the controller CA, server certificate, agent certificate issuance.
//! - [`auth`]: who is calling: the admin credential, and agents by client certificate.
//! - [`tls_listener`]: TLS 1.3 accept loop that hands tonic connections with peer identity.
//! - [`policy`]: per-target policies (schedule, RPO/RTO, retention, drills), the keep set,
//!   and per-site settings (backup window, upload bandwidth, drill agent).
//! - [`prune`]: retention and garbage collection; the effective policy lookups.
//! - [`scheduler`]: starts scheduled backups and drills, retries, fails and cancels
//!   stalled jobs, rotates, records RPO state changes.
//! - [`standing`]: how far each snapshot is trusted (verified, good, suspicious), from
//!   the controller's own records.
//! - [`anomaly`]: anomaly holds: a snapshot that looks wrong freezes its target's rotation.
//! - [`rpo`]: RPO states and compliance over a window.
//! - [`cli`]: the operator CLI (`status`, `snapshots`, `backup`, `restore`, `policy`,
//!   `prune`, `jobs`, `rpo`, `drill`, trust commands).

pub mod anomaly;
pub mod auth;
pub mod catalog;
pub mod cli;
pub mod datadir;
pub mod hub;
pub mod pki;
pub mod policy;
pub mod prune;
pub mod rpo;
pub mod scheduler;
pub mod server;
pub mod service;
pub mod standing;
pub mod store;
pub mod tls_listener;
