//! The `nex-backup` command line: `serve` runs the controller, everything else is an
//! operator command talking to a controller over gRPC.

mod accounts;
mod client;
mod dr;
mod files;
mod format;
mod jobs;
mod notify;
mod ops;
mod policy;
mod policy_args;
mod safety;
mod site_policy;
mod trust;
mod verify;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use nex_backup_shared::recovery::RecoveryPublicKey;

use crate::pki::ServerCertSource;
use crate::server::{self, ServeConfig};

/// NEX Backup controller and operator CLI.
#[derive(Debug, Parser)]
#[command(name = "nex-backup", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Where the operator CLI finds the controller and how it proves it is an operator.
#[derive(Debug, Args, Clone)]
pub struct ClientOpts {
    /// CLI config file (`serve` writes one to <data dir>/cli.toml).
    #[arg(long, env = "NEX_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Controller URL, e.g. https://backup.example.net:7420.
    #[arg(long, env = "NEX_CONTROLLER", global = true)]
    pub controller: Option<String>,
    /// SHA-256 fingerprint of the controller CA (`nex-backup ca show`).
    #[arg(long, env = "NEX_CA_FINGERPRINT", global = true)]
    pub ca_fingerprint: Option<String>,
    /// The admin credential itself (prefer the file or the config).
    #[arg(long, env = "NEX_ADMIN_TOKEN", hide_env_values = true, global = true)]
    pub admin_token: Option<String>,
    /// File holding the admin credential (<data dir>/admin.token).
    #[arg(long, env = "NEX_ADMIN_TOKEN_FILE", global = true)]
    pub admin_token_file: Option<PathBuf>,
    /// Print JSON for scripts instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controller.
    Serve(Box<ServeArgs>),
    /// Alert channels (e-mail, webhooks), rules, and a test message.
    #[command(subcommand)]
    Notify(notify::NotifyCommand),
    /// Incidents (newest first); `incidents ack ID` stops an open one's reminders.
    Incidents(notify::IncidentsArgs),
    /// Sites, agents, targets and each target's newest snapshot.
    Status(ClientOnly),
    /// List snapshots.
    Snapshots(SnapshotsArgs),
    /// Back up a target now and wait for the result.
    Backup(BackupArgs),
    /// Restore a snapshot into a database (or a file set into a directory) through the
    /// site's agent, and verify it.
    Restore(RestoreArgs),
    /// List the files of a file or environment set snapshot.
    Ls(files::LsArgs),
    /// Compare two snapshots of a file or environment set: files added, removed and
    /// changed, and the keys of `.env` files and environments (values masked).
    Diff(files::DiffArgs),
    /// The controller CA (what agents and the CLI pin).
    #[command(subcommand)]
    Ca(trust::CaCommand),
    /// Enrollment tokens.
    #[command(subcommand)]
    Token(trust::TokenCommand),
    /// Enrolled agents: list, revoke.
    #[command(subcommand)]
    Agents(trust::AgentsCommand),
    /// Offline recovery keys.
    #[command(subcommand, name = "recovery-key")]
    RecoveryKey(trust::RecoveryKeyCommand),
    /// Backup policies: schedule, RPO/RTO, retention, drill cadence.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Apply retention and free unreferenced chunks (`--dry-run` shows the plan).
    Prune(policy::PruneArgs),
    /// Job history: start, end, outcome, error, bytes and duration of each job.
    Jobs(jobs::JobsArgs),
    /// RPO compliance per target and site: state, newest age, % in compliance, violations.
    Rpo(jobs::RpoArgs),
    /// Rehearse a restore now: into a scratch nexb_drill_ database, verified, dropped;
    /// prints the measured RTO against the target's.
    Drill(DrillArgs),
    /// Anomaly holds: targets whose rotation is frozen until an operator releases them.
    #[command(subcommand)]
    Hold(safety::HoldCommand),
    /// The audit log: every admin call (who, what, about which site and target, the
    /// outcome) and every action that weakened protection.
    Audit(safety::AuditArgs),
    /// Named admin credentials: create (shown once), list, revoke.
    #[command(subcommand)]
    Admin(safety::AdminCommand),
    /// Dashboard accounts (admin, operator, viewer, customer): add, list, set, passwd,
    /// disable, enable, unlock.
    #[command(subcommand)]
    Account(accounts::AccountCommand),
    /// Check the stored data: every chunk against the checksum recorded when it was
    /// stored (no keys needed), or with --deep one snapshot decrypted by its agent;
    /// --damaged lists the snapshots marked damaged.
    Verify(verify::VerifyArgs),
    /// Build a new controller data dir from a copy of the blob store and a recovery key:
    /// the newest state copy (CA, admins, policies, ...) and the snapshot and chunk
    /// records rebuilt from the store. Agents reconnect with their certificates.
    RestoreController(dr::RestoreControllerArgs),
    /// Move a stopped embedded controller (sled catalog, local blobs) onto a PostgreSQL
    /// catalog and an object store, for replicas. Reads the old data, never changes it.
    Migrate(dr::MigrateArgs),
}

#[derive(Debug, Args)]
pub struct DrillArgs {
    /// The customer site, e.g. acme.
    #[arg(long)]
    pub site: String,
    /// The target (a database the site's agent backs up), e.g. invoices.
    #[arg(long)]
    pub target: String,
    /// Snapshot id, a unique prefix of it (8+ characters), or `latest`.
    #[arg(long, default_value = "latest")]
    pub snapshot: String,
    #[command(flatten)]
    pub client: ClientOpts,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Directory for the catalog and the blob store.
    #[arg(long, env = "NEX_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Address to listen on for agents and operators.
    #[arg(long, default_value = "127.0.0.1:7420")]
    pub listen: SocketAddr,
    /// Recovery public key (`nexb-rk1:…`) every site key is sealed to; repeatable.
    #[arg(
        long = "recovery-key",
        env = "NEX_RECOVERY_KEYS",
        value_delimiter = ','
    )]
    pub recovery_keys: Vec<String>,
    /// DNS name or IP the generated server certificate is valid for; repeatable.
    /// Default: localhost, 127.0.0.1, ::1, this host's name and the listen address.
    #[arg(long = "tls-name")]
    pub tls_names: Vec<String>,
    /// Operator-provided server certificate chain (PEM) instead of a generated one.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Lifetime of agent certificates, e.g. 30d, 12h, 90s.
    #[arg(long, default_value = "30d", value_parser = trust::parse_duration)]
    pub agent_cert_lifetime: std::time::Duration,
    /// Default schedule (cron) of targets without a policy of their own.
    #[arg(long, default_value = "0 1 * * *")]
    pub default_schedule: String,
    /// Default time zone of targets without a policy of their own.
    #[arg(long, default_value = "UTC")]
    pub default_timezone: String,
    /// How long chunks an agent was told about stay safe from garbage collection.
    #[arg(long, default_value = "6h", value_parser = trust::parse_duration)]
    pub gc_grace: std::time::Duration,
    /// How long finished jobs and RPO events are kept ("0" keeps them forever). A job
    /// whose snapshot is still held is kept however old it is.
    #[arg(long, default_value = "400d", value_parser = trust::parse_history_keep)]
    pub history_keep: std::time::Duration,
    /// Run no scheduler: jobs start only by hand.
    #[arg(long)]
    pub no_scheduler: bool,
    /// Fail a running job that reports no progress for this long.
    #[arg(long, default_value = "30m", value_parser = trust::parse_duration)]
    pub stall_limit: std::time::Duration,
    /// First retry delay of a failed scheduled job (doubles each time, 3 retries).
    #[arg(long, default_value = "1m", value_parser = trust::parse_duration)]
    pub retry_base: std::time::Duration,
    /// Free space the blob store keeps: below it, uploads are refused at once with an
    /// error naming the store (e.g. 1GiB, 256MiB; 0 = no reserve).
    #[arg(long, default_value = "256MiB", value_parser = policy_args::parse_rate)]
    pub store_reserve: u64,
    /// How often the alert rules are evaluated (also after every event).
    #[arg(long, default_value = "10s", value_parser = trust::parse_duration)]
    pub alert_interval: std::time::Duration,
    /// The longest wait between two delivery attempts of a notice.
    #[arg(long, default_value = "5m", value_parser = trust::parse_duration)]
    pub notify_retry_max: std::time::Duration,
    /// Serve Prometheus metrics (plain HTTP) at http://ADDR/metrics, e.g. 127.0.0.1:9420.
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,
    /// Serve the dashboard and its JSON API over HTTPS here (e.g. 0.0.0.0:7443), with
    /// the controller's server certificate. Accounts: `nex-backup account add`.
    #[arg(long, env = "NEX_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,
    /// A dashboard session ends after this long without a request...
    #[arg(long, default_value = "30m", value_parser = trust::parse_duration)]
    pub http_session_idle: std::time::Duration,
    /// ...and this long after its login, however active.
    #[arg(long, default_value = "12h", value_parser = trust::parse_duration)]
    pub http_session_max: std::time::Duration,
    /// The scheduled store verification re-reads the whole store once per this period
    /// (0 = never).
    #[arg(long, default_value = "30d", value_parser = trust::parse_duration)]
    pub verify_period: std::time::Duration,
    /// How often the scheduled verification checks its next share of the store.
    #[arg(long, default_value = "1h", value_parser = trust::parse_duration)]
    pub verify_every: std::time::Duration,
    /// Read rate of the scheduled verification (e.g. 50MiB; 0 = unlimited).
    #[arg(long, default_value = "50MiB", value_parser = policy_args::parse_rate)]
    pub verify_rate: u64,
    /// Where the blobs go: `s3://bucket/prefix?endpoint=https://...&region=...`
    /// (credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY), or `file:///path`.
    /// Default: files under <data dir>/blobs.
    #[arg(long, env = "NEX_STORE")]
    pub store: Option<String>,
    /// The catalog on PostgreSQL: `postgres://user:password@host:port/db` (the schema
    /// is created or migrated at start). Default: the embedded catalog under the data dir.
    #[arg(long, env = "NEX_CATALOG", hide_env_values = true)]
    pub catalog: Option<String>,
    /// An off-site copy of every site's sealed objects (repeatable): another bucket
    /// (s3://...), another provider, or a directory (file:///...). No key is needed.
    #[arg(long = "copy-to", env = "NEX_COPY_TO", value_delimiter = ',')]
    pub copy_to: Vec<String>,
    /// Snapshots each off-site copy keeps: the newest N of each target...
    #[arg(long, default_value_t = 3)]
    pub copy_keep_last: usize,
    /// ...and the newest of each of the last N months.
    #[arg(long, default_value_t = 12)]
    pub copy_keep_monthly: usize,
    /// S3 Object Lock on the off-site copies: every copied object is written locked for
    /// at least this long (e.g. 400d), and kept locked while the copy's retention keeps
    /// its snapshot. Each copy must be an s3:// bucket created with Object Lock enabled.
    #[arg(long, env = "NEX_COPY_LOCK", value_parser = trust::parse_duration)]
    pub copy_lock: Option<std::time::Duration>,
    /// The Object Lock mode: compliance (no one can shorten it) or governance.
    #[arg(long, default_value = "compliance")]
    pub copy_lock_mode: crate::store::objectlock::LockMode,
    /// How often the off-site copies catch up.
    #[arg(long, default_value = "15m", value_parser = trust::parse_duration)]
    pub copy_every: std::time::Duration,
    /// How long one blob store request may take before it is retried.
    #[arg(long, default_value = "60s", value_parser = trust::parse_duration)]
    pub store_timeout: std::time::Duration,
    /// Tests only: fail this share of blob store requests on purpose (0..1).
    #[arg(long, default_value_t = 0.0, hide = true)]
    pub inject_store_faults: f64,
    /// How often the controller writes a copy of its own state (CA, admins, policies,
    /// ...) into the store, sealed to the recovery keys, for `restore-controller` (0 = never).
    #[arg(long, default_value = "1h", value_parser = trust::parse_duration)]
    pub state_copy_every: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct ClientOnly {
    #[command(flatten)]
    pub client: ClientOpts,
}

#[derive(Debug, Args)]
pub struct SnapshotsArgs {
    /// The customer site, e.g. acme.
    #[arg(long)]
    pub site: Option<String>,
    /// The target (a database the site's agent backs up), e.g. invoices.
    #[arg(long)]
    pub target: Option<String>,
    #[command(flatten)]
    pub client: ClientOpts,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The customer site, e.g. acme.
    #[arg(long)]
    pub site: String,
    /// The target (a database the site's agent backs up), e.g. invoices.
    #[arg(long)]
    pub target: String,
    /// Back up now even if the site's backup window is closed.
    #[arg(long)]
    pub outside_window: bool,
    #[command(flatten)]
    pub client: ClientOpts,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("into").required(true).args(["to_database", "to_dir"])))]
pub struct RestoreArgs {
    /// The customer site, e.g. acme.
    #[arg(long)]
    pub site: String,
    /// The target (a database the site's agent backs up), e.g. invoices.
    #[arg(long)]
    pub target: String,
    /// Snapshot id, a unique prefix of it (8+ characters), or `latest`.
    #[arg(long, default_value = "latest")]
    pub snapshot: String,
    /// Database to restore into (created; must not exist unless --clean).
    #[arg(long)]
    pub to_database: Option<String>,
    /// File and environment sets: the directory (absolute, on the agent's host) to
    /// restore into; existing files are kept unless --overwrite.
    #[arg(long)]
    pub to_dir: Option<String>,
    /// With --to-dir: only these archive paths or globs (e.g. etc/app/config.yaml,
    /// 'etc/app/*.env'); repeatable.
    #[arg(long = "path", requires = "to_dir")]
    pub paths: Vec<String>,
    /// With --to-dir: replace files that exist.
    #[arg(long, requires = "to_dir")]
    pub overwrite: bool,
    /// Replace the database if it exists: the snapshot is restored under a temporary
    /// name and verified, then the two are swapped in one step; the old database is kept
    /// as <name>_old_<time> (a failed restore leaves the existing one untouched).
    #[arg(long)]
    pub clean: bool,
    /// With --clean: drop the replaced database after the verified swap.
    #[arg(long, requires = "clean")]
    pub drop_old: bool,
    /// Also restore cluster globals (roles, tablespaces) first.
    #[arg(long)]
    pub globals: bool,
    /// Do not give objects to their original owners: the agent's role owns what it
    /// restores (for a restore without those roles, or by a role that is no member of them).
    #[arg(long)]
    pub no_owner: bool,
    /// Leave out grants and revokes (for a restore onto a server without the roles that
    /// held privileges, when --globals cannot create them).
    #[arg(long)]
    pub no_privileges: bool,
    /// Create everything in the database's default tablespace (for a restore onto a
    /// server without the snapshot's tablespaces).
    #[arg(long)]
    pub no_tablespaces: bool,
    #[command(flatten)]
    pub client: ClientOpts,
}

/// Run a parsed command. Returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(a) => {
            let mut cfg = ServeConfig::new(a.data_dir, a.listen);
            for k in &a.recovery_keys {
                cfg.recovery_keys.push(
                    RecoveryPublicKey::parse(k)
                        .map_err(|e| anyhow::anyhow!("--recovery-key {k:?}: {e}"))?,
                );
            }
            cfg.tls = ServerCertSource {
                names: a.tls_names,
                cert_file: a.tls_cert,
                key_file: a.tls_key,
            };
            cfg.agent_cert_lifetime = a.agent_cert_lifetime;
            cfg.gc_grace = a.gc_grace;
            cfg.history_keep = a.history_keep;
            cfg.store_reserve = a.store_reserve;
            cfg.metrics_listen = a.metrics_listen;
            cfg.web = a.http_listen.map(|listen| crate::web::WebConfig {
                listen,
                lifetimes: crate::web::session::Lifetimes {
                    idle_ms: u64::try_from(a.http_session_idle.as_millis()).unwrap_or(u64::MAX),
                    max_ms: u64::try_from(a.http_session_max.as_millis()).unwrap_or(u64::MAX),
                },
            });
            cfg.state_copy_every = a.state_copy_every;
            cfg.store_url = a.store;
            cfg.catalog_url = a.catalog;
            cfg.copy_to = a.copy_to;
            cfg.copy_keep = crate::offsite::CopyKeep {
                last: a.copy_keep_last,
                monthly: a.copy_keep_monthly,
            };
            cfg.copy_every = a.copy_every;
            cfg.copy_lock = a.copy_lock.map(|p| (a.copy_lock_mode, p));
            cfg.store_layers = crate::store::layers::StackOptions {
                timeout: a.store_timeout,
                fault_rate: a.inject_store_faults,
                ..Default::default()
            };
            cfg.verify = crate::verify::worker::VerifyConfig {
                period: a.verify_period,
                every: a.verify_every,
                rate_bytes_per_sec: a.verify_rate,
            };
            cfg.alerts = crate::alerts::AlertConfig {
                every: a.alert_interval,
                retry_max: a.notify_retry_max,
            };
            cfg.scheduler = (!a.no_scheduler).then(|| crate::scheduler::decide::SchedConfig {
                stall_limit_ms: a.stall_limit.as_millis() as u64,
                retry_base_ms: a.retry_base.as_millis() as u64,
                ..Default::default()
            });
            cfg.default_policy.schedule = a.default_schedule;
            cfg.default_policy.timezone = a.default_timezone;
            cfg.default_policy
                .validate(nex_backup_shared::clock::now_ms(), false)
                .map_err(|e| anyhow::anyhow!("default {e}"))?;
            server::run(cfg, nex_backup_shared::clock::shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Notify(c) => notify::notify(c).await,
        Command::Incidents(a) => notify::incidents(a).await,
        Command::Ca(c) => trust::ca(c),
        Command::Token(c) => trust::token(c).await,
        Command::Agents(c) => trust::agents(c).await,
        Command::RecoveryKey(c) => trust::recovery_key(c),
        Command::Policy(c) => policy::policy(c).await,
        Command::Prune(a) => policy::prune(a).await,
        Command::Jobs(a) => jobs::jobs(a).await,
        Command::Rpo(a) => jobs::rpo(a).await,
        Command::Drill(a) => ops::drill(&a).await,
        Command::Hold(c) => safety::hold(c).await,
        Command::Audit(a) => safety::audit(a).await,
        Command::Admin(c) => safety::admin(c).await,
        Command::Account(c) => accounts::account(c).await,
        Command::Verify(a) => verify::verify(a).await,
        Command::RestoreController(a) => dr::restore_controller(a).await,
        Command::Migrate(a) => dr::migrate(a).await,
        Command::Status(a) => ops::status(&a.client).await,
        Command::Snapshots(a) => ops::snapshots(&a).await,
        Command::Backup(a) => ops::backup(&a).await,
        Command::Restore(a) => ops::restore(&a).await,
        Command::Ls(a) => files::ls(&a).await,
        Command::Diff(a) => files::diff(&a).await,
    }
}
