//! NEX Backup agent library: everything behind the `nex-backup-agent` binary.
//!
//! Module map:
//! - [`config`]: the TOML config (what this host can back up); errors name file and key.
//! - [`ctx`]: shared context: keys, controller channel, job outbox, retry policy.
//! - [`session`]: the dial-out session: hello, heartbeats, commands, reconnect with backoff.
//! - [`backup`]: the PostgreSQL backup job; [`backup::pipeline`] chunks, dedupes, seals
//!   and uploads a stream with bounded memory; [`backup::dump`] runs client tools.
//! - [`restore`]: the restore job; [`restore::feed`] streams verified chunks into a tool.
//! - [`pg`]: connecting to PostgreSQL, passwords, row counts.
//! - [`pgtools`]: locating pg_dump & co. of a suitable version on Linux and Windows.

pub mod backup;
pub mod config;
pub mod ctx;
pub mod pg;
pub mod pgtools;
pub mod restore;
pub mod session;

use std::sync::Arc;

use anyhow::Context;
use nex_backup_shared::chunk::ChunkCodec;
use nex_backup_shared::keys::load_or_create_key_file;
use tokio_util::sync::CancellationToken;

/// Start the agent with `cfg` and run until `shutdown` is cancelled.
pub async fn run(cfg: config::AgentConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let key_path = cfg.key_file();
    let (key, created) = load_or_create_key_file(&key_path).context("load site key")?;
    if created {
        tracing::warn!(path = %key_path.display(), "created a new site master key; back it up: without it no snapshot can be restored");
    }
    let codec = ChunkCodec::new(key.derive(), cfg.zstd_level);
    let channel = tonic::transport::Endpoint::from_shared(cfg.controller.clone())
        .with_context(|| format!("controller URL {:?}", cfg.controller))?
        .connect_timeout(std::time::Duration::from_secs(10))
        .http2_keep_alive_interval(std::time::Duration::from_secs(15))
        .keep_alive_timeout(std::time::Duration::from_secs(10))
        .keep_alive_while_idle(true)
        .connect_lazy();
    let ctx = Arc::new(ctx::Ctx::new(cfg, codec, channel, shutdown));
    session::run(ctx).await;
    Ok(())
}
