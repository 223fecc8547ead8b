//! `nex-backup-agent`: parse arguments, set up logging, run the agent until Ctrl-C/SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use nex_backup_agent::config::AgentConfig;
use nex_backup_agent::offline::commands as offline;
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
    /// List the snapshots in a copy of the controller's blob store (no controller needed).
    Snapshots {
        /// The copy of the controller's blob store: its `blobs` directory (or data
        /// directory), or an object store, `s3://bucket/prefix?endpoint=...`.
        #[arg(long)]
        store: String,
        /// The recovery private key file from `nex-backup recovery-key create`.
        #[arg(long)]
        recovery_key: PathBuf,
        /// Only this site.
        #[arg(long)]
        site: Option<String>,
    },
    /// Restore a snapshot from a copy of the controller's blob store, without the
    /// controller, on any host: into a database (verified), or as pg_dump files.
    Restore(Box<RestoreCli>),
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("to").required(true).args(["to_database", "to_file", "to_dir"])))]
struct RestoreCli {
    /// The copy of the controller's blob store: its `blobs` directory (or data
    /// directory), or an object store, `s3://bucket/prefix?endpoint=...` (credentials
    /// from the AWS environment or `credentials_file=`).
    #[arg(long)]
    store: String,
    /// The recovery private key file from `nex-backup recovery-key create`.
    #[arg(long)]
    recovery_key: PathBuf,
    #[arg(long)]
    site: String,
    #[arg(long)]
    target: String,
    /// A snapshot id, or `latest` (the newest of the target in the store).
    #[arg(long)]
    snapshot: String,
    /// Restore into this database (a new one; an existing one only with --clean).
    #[arg(long)]
    to_database: Option<String>,
    /// Write the pg_dump custom archive here, and OUT.globals.sql beside it.
    #[arg(long, value_name = "OUT")]
    to_file: Option<PathBuf>,
    /// File and environment sets: restore into this directory.
    #[arg(long)]
    to_dir: Option<PathBuf>,
    /// With --to-dir: only these archive paths or globs; repeatable.
    #[arg(long = "path", requires = "to_dir")]
    paths: Vec<String>,
    /// With --to-dir: replace files that exist.
    #[arg(long, requires = "to_dir")]
    overwrite: bool,
    /// Replace an existing database, only once the restored copy is verified; the old
    /// one is kept renamed.
    #[arg(long, requires = "to_database")]
    clean: bool,
    /// Also replay globals.sql (roles, tablespaces) before the database.
    #[arg(long, requires = "to_database")]
    restore_globals: bool,
    /// pg_restore --no-owner: the connecting role owns what is restored.
    #[arg(long, requires = "to_database")]
    no_owner: bool,
    /// pg_restore --no-privileges: no grants or revokes are restored.
    #[arg(long, requires = "to_database")]
    no_privileges: bool,
    /// pg_restore --no-tablespaces: everything in the database's default tablespace.
    #[arg(long, requires = "to_database")]
    no_tablespaces: bool,
    /// Take the server connection of --target from this agent config.
    #[arg(long)]
    config: Option<PathBuf>,
    /// PostgreSQL host (default 127.0.0.1, or the config's).
    #[arg(long)]
    pg_host: Option<String>,
    #[arg(long)]
    pg_port: Option<u16>,
    /// PostgreSQL user (default postgres, or the config's).
    #[arg(long)]
    pg_user: Option<String>,
    /// Name of the environment variable holding the password.
    #[arg(long)]
    pg_password_env: Option<String>,
    /// Directory of pg_restore and psql (discovered if absent).
    #[arg(long)]
    pg_bin_dir: Option<PathBuf>,
}

impl RestoreCli {
    fn into_args(self) -> offline::RestoreArgs {
        let to = match (self.to_database, self.to_file, self.to_dir) {
            (Some(name), _, _) => offline::Destination::Database {
                name,
                clean: self.clean,
                restore_globals: self.restore_globals,
                no_owner: self.no_owner,
                no_privileges: self.no_privileges,
                no_tablespaces: self.no_tablespaces,
            },
            (None, Some(out), _) => offline::Destination::File(out),
            (None, None, Some(dir)) => offline::Destination::Dir {
                dir,
                paths: self.paths,
                overwrite: self.overwrite,
            },
            (None, None, None) => unreachable!("clap requires one destination"),
        };
        offline::RestoreArgs {
            store: self.store,
            recovery_key: self.recovery_key,
            site: self.site,
            target: self.target,
            snapshot: self.snapshot,
            to,
            server: offline::Server {
                config: self.config,
                host: self.pg_host,
                port: self.pg_port,
                user: self.pg_user,
                password_env: self.pg_password_env,
                pg_bin_dir: self.pg_bin_dir,
            },
        }
    }
}

/// glibc gives each thread that allocates under contention an arena of its own (up to 8
/// per core) and keeps what they freed, so a long-running agent's memory grew job after
/// job (restore peaks 43, 47, 50 MiB over three restores; 35 to 37 MiB with two arenas).
/// The setting is read when the process starts: the agent re-executes itself once with
/// it (same pid, same arguments).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("MALLOC_ARENA_MAX", "2")
        .exec();
    eprintln!(
        "nex-backup-agent: could not re-execute with MALLOC_ARENA_MAX=2 ({err}); going on with glibc's default arenas"
    );
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Run { .. }) {
        limit_malloc_arenas();
    }
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
        Command::Snapshots {
            store,
            recovery_key,
            site,
        } => tokio::runtime::Runtime::new()
            .map_err(anyhow::Error::from)
            .and_then(|rt| {
                rt.block_on(offline::snapshots(&store, &recovery_key, site.as_deref()))
                    .map_err(anyhow::Error::from)
            })
            .map(|out| println!("{out}")),
        Command::Restore(r) => restore_offline((*r).into_args()),
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

fn restore_offline(args: offline::RestoreArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    let summary = rt.block_on(offline::restore(&args))?;
    println!("{summary}");
    Ok(())
}

fn run(config: &std::path::Path) -> anyhow::Result<()> {
    let cfg = AgentConfig::load(config)?;
    // Before any other thread exists, so that all of them inherit it.
    let priority_notes = if cfg.low_priority {
        nex_backup_agent::priority::lower()
    } else {
        vec![]
    };
    // Few blocking threads: hashing and sealing are CPU-bound, more threads than cores only
    // add allocator arenas and zstd contexts, i.e. memory.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(cores + 2)
        .build()?;
    rt.block_on(async {
        if cfg.low_priority {
            tracing::info!(notes = ?priority_notes, "running at a lower CPU and I/O priority");
        }
        let shutdown = CancellationToken::new();
        let s = shutdown.clone();
        tokio::spawn(async move {
            nex_backup_shared::clock::shutdown_signal().await;
            s.cancel();
        });
        nex_backup_agent::run(cfg, shutdown).await
    })
}
