//! `nex-backup-agent`: parse arguments, set up logging, run the agent until Ctrl-C/SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use nex_backup_agent::config::AgentConfig;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(name = "nex-backup-agent", version, about = "NEX Backup agent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Connect to the controller and serve its commands.
    Run {
        #[arg(long, env = "NEX_AGENT_CONFIG")]
        config: PathBuf,
    },
    /// Check a config file and exit.
    CheckConfig {
        #[arg(long, env = "NEX_AGENT_CONFIG")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("NEX_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::CheckConfig { config } => AgentConfig::load(&config)
            .map(|_| println!("config {} is valid", config.display()))
            .map_err(anyhow::Error::from),
        Command::Run { config } => run(&config),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: &std::path::Path) -> anyhow::Result<()> {
    let cfg = AgentConfig::load(config)?;
    // Few blocking threads: hashing and sealing are CPU-bound, more threads than cores only
    // add allocator arenas and zstd contexts, i.e. memory.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(cores + 2)
        .build()?;
    rt.block_on(async {
        let shutdown = CancellationToken::new();
        let s = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            s.cancel();
        });
        nex_backup_agent::run(cfg, shutdown).await
    })
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
