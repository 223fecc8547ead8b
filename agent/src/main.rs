//! `nex-backup-agent`: parse arguments, set up logging, run the agent until Ctrl-C/SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use nex_backup_agent::config::AgentConfig;
use nex_backup_agent::trust::{self, EnrollArgs};
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
    /// Check a config file and exit: syntax, then what can be checked here (controller,
    /// targets, password sources, pg_bin_dir, state dir); with --online also each
    /// database and the controller.
    CheckConfig {
        #[arg(long, env = "NEX_AGENT_CONFIG")]
        config: PathBuf,
        /// Also connect to each database and to the controller.
        #[arg(long)]
        online: bool,
    },
    /// Enroll this host with a controller: generate the agent key here, spend a
    /// single-use token for a certificate, and (first agent of a site) the site key.
    Enroll {
        #[arg(long, env = "NEX_AGENT_CONFIG")]
        config: PathBuf,
        /// Controller URL (default: `controller` from the config).
        #[arg(long)]
        controller: Option<String>,
        /// Enrollment token from `nex-backup token create`.
        #[arg(long, env = "NEX_ENROLL_TOKEN", hide_env_values = true)]
        token: String,
        /// Controller CA fingerprint from `nex-backup ca show` (SHA256:…).
        #[arg(long)]
        ca_fingerprint: String,
    },
    /// Unseal the site's keys with an offline recovery key (disaster restore).
    Recover {
        #[arg(long, env = "NEX_AGENT_CONFIG")]
        config: PathBuf,
        /// The recovery private key file from `nex-backup recovery-key create`.
        #[arg(long)]
        recovery_key: PathBuf,
    },
    /// Start a new key epoch for new snapshots; old snapshots stay restorable.
    RotateKey {
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
        // Colour only on a terminal: a log file or journald gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::CheckConfig { config, online } => check_config(&config, online),
        Command::Run { config } => run(&config),
        Command::Enroll {
            config,
            controller,
            token,
            ca_fingerprint,
        } => one_shot(&config, |cfg| async move {
            let controller = controller.or(cfg.controller.clone()).ok_or_else(|| {
                anyhow::anyhow!(
                    "no controller URL: pass --controller or set `controller` in the config"
                )
            })?;
            let args = EnrollArgs {
                state_dir: cfg.state_dir.clone(),
                controller,
                token,
                ca_fingerprint,
                agent_id: cfg.agent_id(),
            };
            trust::enroll(&args).await
        }),
        Command::Recover {
            config,
            recovery_key,
        } => one_shot(&config, |cfg| async move {
            trust::recover(&cfg.state_dir, &recovery_key).await
        }),
        Command::RotateKey { config } => one_shot(&config, |cfg| async move {
            trust::rotate_key(&cfg.state_dir).await
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Run one async operation with the config and print its summary.
fn check_config(config: &std::path::Path, online: bool) -> anyhow::Result<()> {
    use nex_backup_agent::checkup;
    let cfg = AgentConfig::load(config)?;
    let text = std::fs::read_to_string(config)?;
    let mut findings = checkup::offline(&cfg, &text);
    if online {
        let rt = tokio::runtime::Runtime::new()?;
        findings.extend(rt.block_on(checkup::online(&cfg, &text)));
    }
    if !checkup::report(&findings) {
        anyhow::bail!("config {} has errors (above)", config.display());
    }
    println!(
        "config {} is valid{}",
        config.display(),
        if online {
            " and its servers answer"
        } else {
            ""
        }
    );
    Ok(())
}

fn one_shot<F, Fut>(config: &std::path::Path, f: F) -> anyhow::Result<()>
where
    F: FnOnce(AgentConfig) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<String>>,
{
    let cfg = AgentConfig::load(config)?;
    let rt = tokio::runtime::Runtime::new()?;
    let summary = rt.block_on(f(cfg))?;
    println!("{summary}");
    Ok(())
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
            nex_backup_shared::clock::shutdown_signal().await;
            s.cancel();
        });
        nex_backup_agent::run(cfg, shutdown).await
    })
}
