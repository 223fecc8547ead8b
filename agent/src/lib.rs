//! NEX Backup agent library: everything behind the `nex-backup-agent` binary.
//!
//! Module map:
//! - [`checkup`]: `check-config` beyond syntax, offline and (`--online`) against the servers.
//! - [`config`]: the TOML config (what this host can back up); errors name file and key.
//! - [`enrollment`]: identity files in the state dir (key + certificate, pinned CA, key ring).
//! - [`trust`]: enroll, seal keys to recovery keys, recover, rotate keys, renew certificates.
//! - [`ctx`]: shared context: keys, controller channel, job outbox, retry policy.
//! - [`custody`]: sealing the site key to the recovery keys before a backup uses it.
//! - [`session`]: the dial-out session: hello, heartbeats, commands, reconnect with backoff.
//! - [`backup`]: the PostgreSQL backup job; [`backup::pipeline`] chunks, dedupes, seals
//!   and uploads a stream with bounded memory; [`backup::dump`] runs client tools.
//! - [`restore`]: the restore job; [`restore::feed`] streams verified chunks into a tool;
//!   [`restore::parallel`] loads a database's tables over several connections, once the
//!   roles and tablespaces its TOC names are found on the server (`restore::requires`);
//!   the database is created as the source was and gets its own settings, comment and
//!   grants back (`restore::database`).
//! - [`files`]: file and environment sets: archive, restore into a directory, ls, diff.
//! - [`error`]: the agent's typed errors (a controller refusal keeps its gRPC code).
//! - [`health`]: the host's health (load, memory, volumes, versions) for heartbeats.
//! - [`offline`]: restore without the controller, from a copy of its blob store and a
//!   recovery key (`snapshots`, `restore --store`).
//! - [`pg`]: connecting to PostgreSQL, passwords, row counts.
//! - [`pgarchive`]: reading pg_dump's custom-format archive as it streams past.
//! - [`pgtools`]: locating pg_dump & co. of a suitable version on Linux and Windows.
//! - [`priority`]: `low_priority`: the agent and its tools at a lower CPU and I/O priority.

pub mod backup;
pub mod checkup;
pub mod config;
pub mod ctx;
pub mod custody;
pub mod enrollment;
pub mod error;
pub mod files;
pub mod health;
pub mod offline;
pub mod pg;
pub mod pgarchive;
pub mod pgtools;
pub mod priority;
pub mod restore;
pub mod session;
pub mod trust;

use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

/// Start the agent with `cfg` and run until `shutdown` is cancelled.
pub async fn run(cfg: config::AgentConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let e = enrollment::Enrollment::load(&cfg.state_dir)?;
    if let Some(site) = &cfg.site
        && *site != e.site
    {
        anyhow::bail!(
            "config says site {site}, but this agent is enrolled for site {}",
            e.site
        );
    }
    let url = cfg
        .controller
        .clone()
        .unwrap_or_else(|| e.controller.clone());
    let channel = nex_backup_shared::tls::channel(&url, e.tls(&cfg.state_dir)?)
        .context("controller channel")?;
    tracing::info!(site = %e.site, agent = %e.agent_id, controller = %url, "agent starting");
    let ctx = Arc::new(ctx::Ctx::new(cfg, e, channel, shutdown));
    session::run(ctx).await;
    Ok(())
}
