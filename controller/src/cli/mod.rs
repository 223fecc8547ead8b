//! The `nex-backup` command line: `serve` runs the controller, everything else is an
//! operator command talking to a controller over gRPC.

mod format;
mod ops;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::server::{self, ServeConfig};

/// NEX Backup controller and operator CLI.
#[derive(Debug, Parser)]
#[command(name = "nex-backup", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Where the operator CLI finds the controller.
#[derive(Debug, Args, Clone)]
pub struct ClientOpts {
    /// Controller URL.
    #[arg(
        long,
        env = "NEX_CONTROLLER",
        default_value = "http://127.0.0.1:7420",
        global = true
    )]
    pub controller: String,
    /// Print JSON for scripts instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controller.
    Serve(ServeArgs),
    /// Sites, agents, targets and each target's newest snapshot.
    Status(ClientOnly),
    /// List snapshots.
    Snapshots(SnapshotsArgs),
    /// Back up a target now and wait for the result.
    Backup(BackupArgs),
    /// Restore a snapshot into a database through the site's agent, and verify it.
    Restore(RestoreArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Directory for the catalog and the blob store.
    #[arg(long, env = "NEX_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Address to listen on for agents and operators.
    #[arg(long, default_value = "127.0.0.1:7420")]
    pub listen: SocketAddr,
}

#[derive(Debug, Args)]
pub struct ClientOnly {
    #[command(flatten)]
    pub client: ClientOpts,
}

#[derive(Debug, Args)]
pub struct SnapshotsArgs {
    #[arg(long)]
    pub site: Option<String>,
    #[arg(long)]
    pub target: Option<String>,
    #[command(flatten)]
    pub client: ClientOpts,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    #[arg(long)]
    pub site: String,
    #[arg(long)]
    pub target: String,
    #[command(flatten)]
    pub client: ClientOpts,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    #[arg(long)]
    pub site: String,
    #[arg(long)]
    pub target: String,
    /// Snapshot id, or `latest`.
    #[arg(long, default_value = "latest")]
    pub snapshot: String,
    /// Database to restore into (created; must not exist unless --clean).
    #[arg(long)]
    pub to_database: String,
    /// Drop and recreate the database if it exists.
    #[arg(long)]
    pub clean: bool,
    /// Also restore cluster globals (roles, tablespaces) first.
    #[arg(long)]
    pub globals: bool,
    #[command(flatten)]
    pub client: ClientOpts,
}

/// Run a parsed command. Returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(a) => {
            let cfg = ServeConfig {
                data_dir: a.data_dir,
                listen: a.listen,
            };
            server::run(cfg, shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status(a) => ops::status(&a.client).await,
        Command::Snapshots(a) => ops::snapshots(&a).await,
        Command::Backup(a) => ops::backup(&a).await,
        Command::Restore(a) => ops::restore(&a).await,
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return ctrl_c.await.unwrap_or(()),
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
