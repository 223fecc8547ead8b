//! NEX Backup controller library: everything behind the `nex-backup` binary.
//!
//! Modules in layers; each uses only the layers below it:
//!
//! 1. **Domain** (no I/O): [`policy`] (per-target policies, the keep set, site settings),
//!    [`rpo`] (RPO states and compliance over a window), [`job`] (job kinds and
//!    triggers), [`events`] (the domain events).
//! 2. **Storage**: [`catalog`] (the [`catalog::Catalog`] trait, the alert and integrity
//!    traits, the sled backend, the PostgreSQL backend [`catalog::pg`], and their
//!    conformance suites), [`store`] (the [`store::BlobStore`] trait, the file and object
//!    store backends, the retry/metering/fault layers), [`datadir`] (the private data
//!    directory), [`ballast`] (room kept for GC on a full disk), [`pki`] (the controller
//!    CA).
//! 3. **Application**: [`admins`] (the admin credentials in force), [`accounts`]
//!    (dashboard accounts: password hashes, the login rule), [`state`] (what every handler and worker shares, and the effective
//!    policy lookups), [`hub`] (live sessions and job watchers), [`fleet`] (the catalog
//!    view, RPO compliance, drills, snapshot standing), [`dispatch`] (recording and
//!    sending a job), [`prune`] (retention and GC), [`anomaly`] (anomaly holds),
//!    [`scheduler`] (scheduled backups and drills), [`workers`] (named background
//!    workers under one shutdown tree), [`alerts`] (incident rules, the outbox and its
//!    delivery by e-mail and webhook), [`verify`] (store verification against the
//!    recorded checksums, damaged snapshots, the scheduled share), [`dr`] (the sealed
//!    state copy, `restore-controller`, `migrate`), [`sweep`] (orphaned store objects),
//!    [`cluster`] (replicas: leader election, the relay between replicas, the shared CA),
//!    [`offsite`] (off-site copies and their retention).
//! 4. **Edges**: [`service`] (the gRPC services and who may call them), [`metrics`]
//!    (Prometheus `/metrics`), [`web`] (the dashboard and its JSON API over HTTPS),
//!    [`tls_listener`] (TLS 1.3 accept loop).
//! 5. **Binaries**: [`server`] (`nex-backup serve`) and [`cli`] (the operator CLI).

pub mod accounts;
pub mod admins;
pub mod alerts;
pub mod anomaly;
pub mod ballast;
pub mod catalog;
pub mod cli;
pub mod cluster;
pub mod datadir;
pub mod dispatch;
pub mod dr;
pub mod events;
pub mod fleet;
pub mod health;
pub mod hub;
pub mod job;
pub mod metrics;
pub mod offsite;
pub mod pki;
pub mod policy;
pub mod prune;
pub mod rpo;
pub mod scheduler;
pub mod server;
pub mod service;
pub mod state;
pub mod store;
pub mod sweep;
pub mod tls_listener;
pub mod verify;
pub mod watch;
pub mod web;
pub mod workers;
