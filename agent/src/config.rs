//! The agent's configuration file (TOML). It says what this host *can* back up; the
//! controller says when. Credentials stay here: passwords come from an environment
//! variable or a pgpass-format file, never from the config itself.
//!
//! Every error names the file and the key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nex_backup_shared::chunker::ChunkerConfig;
use nex_backup_shared::ids::{AgentId, SiteId, TargetName};
use serde::Deserialize;

mod sets;
pub use sets::{BadGlob, BadSet, EnvSetConfig, FileSetConfig, SetSpec};

/// A configuration problem, naming the file and key.
#[derive(Debug, thiserror::Error)]
#[error("config {file}: {key}: {reason}")]
pub struct ConfigError {
    pub file: String,
    pub key: String,
    pub reason: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Site this agent backs up for. Optional: enrollment decides; if given it must match.
    #[serde(default)]
    pub site: Option<String>,
    /// This agent's id at enrollment; defaults to the host name.
    #[serde(default)]
    pub agent_id: Option<String>,
    /// Controller URL, e.g. `https://backup.example.net:7420`, or several replicas as a
    /// comma-separated list (`https://a:7420, https://b:7420`): the agent tries them in
    /// turn and stays with the one that answers. Optional after enrollment.
    #[serde(default)]
    pub controller: Option<String>,
    /// Where the agent keeps its state: identity, certificate, key ring.
    pub state_dir: PathBuf,
    #[serde(default = "default_zstd")]
    pub zstd_level: i32,
    /// Run the agent and the tools it starts at a lower CPU and I/O priority (nice 10
    /// and the lowest best-effort I/O level on Linux; below-normal on Windows).
    #[serde(default)]
    pub low_priority: bool,
    /// Connections a database restore loads table data over (and `pg_restore -j` builds
    /// indexes and constraints with). 1: one `pg_restore --single-transaction`.
    /// Default: the host's cores, at most 4.
    #[serde(default = "default_restore_jobs")]
    pub restore_jobs: usize,
    /// Let a big table's rows be loaded over several connections at once: faster on a
    /// database dominated by one table, but its rows are then stored in another physical
    /// order than in the source (a plain dump lists them differently). Off by default:
    /// each table is loaded by one connection, in order.
    #[serde(default)]
    pub restore_split_tables: bool,
    /// Fail a dump that produces no bytes for this long.
    #[serde(default = "default_stall")]
    pub stall_timeout_secs: u64,
    /// How long transient network errors are retried within one job.
    #[serde(default = "default_retry")]
    pub retry_budget_secs: u64,
    #[serde(default)]
    pub chunking: Option<ChunkingConfig>,
    #[serde(default)]
    pub targets: Vec<TargetConfig>,
    /// File sets: configuration files and directories, each a target.
    #[serde(default)]
    pub file_sets: Vec<FileSetConfig>,
    /// Environment sets: variables of this agent's environment and `.env` files.
    #[serde(default)]
    pub env_sets: Vec<EnvSetConfig>,
    /// A PostgreSQL server for restore drills. With it, this agent rehearses restores of
    /// any target there (an operator may make it the site's drill agent); without it,
    /// drills of a target restore into that target's own server.
    #[serde(default)]
    pub drill: Option<DrillConfig>,
}

/// Where restore drills run (scratch `nexb_drill_` databases, always dropped).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillConfig {
    #[serde(default = "default_host")]
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    pub user: String,
    /// A database to connect to for creating and dropping the scratch databases.
    #[serde(default = "default_drill_db")]
    pub dbname: String,
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default)]
    pub passfile: Option<PathBuf>,
    #[serde(default)]
    pub pg_bin_dir: Option<PathBuf>,
}

fn default_drill_db() -> String {
    "postgres".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkingConfig {
    pub min_kib: u32,
    pub avg_kib: u32,
    pub max_kib: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    pub name: String,
    #[serde(default = "default_kind")]
    pub kind: String,
    #[serde(default = "default_host")]
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    pub user: String,
    pub dbname: String,
    /// Name of the environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// A pgpass-format file (`host:port:db:user:password`).
    #[serde(default)]
    pub passfile: Option<PathBuf>,
    /// Directory holding pg_dump, pg_dumpall, pg_restore and psql. Discovered if absent.
    #[serde(default)]
    pub pg_bin_dir: Option<PathBuf>,
    /// Include role password hashes in the globals dump.
    #[serde(default)]
    pub include_role_passwords: bool,
}

fn default_zstd() -> i32 {
    nex_backup_shared::chunk::DEFAULT_ZSTD_LEVEL
}
/// How a database restore spreads its work (`restore_jobs`, `restore_split_tables`).
#[derive(Debug, Clone, Copy)]
pub struct RestoreTuning {
    pub jobs: usize,
    pub split_tables: bool,
}

impl Default for RestoreTuning {
    fn default() -> Self {
        RestoreTuning {
            jobs: default_restore_jobs(),
            split_tables: false,
        }
    }
}

/// Restore connections when the config says nothing: the host's cores, at most 4.
pub fn default_restore_jobs() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().min(4))
}
fn default_stall() -> u64 {
    300
}
fn default_retry() -> u64 {
    600
}
fn default_kind() -> String {
    "postgres".into()
}
fn default_host() -> String {
    "127.0.0.1".into()
}
fn default_port() -> u16 {
    5432
}

impl AgentConfig {
    /// `restore_jobs` and `restore_split_tables` together.
    pub fn restore_tuning(&self) -> RestoreTuning {
        RestoreTuning {
            jobs: self.restore_jobs,
            split_tables: self.restore_split_tables,
        }
    }

    /// Read, parse and validate a config file.
    pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            key: "(file)".into(),
            reason: e.to_string(),
        })?;
        Self::parse(&file, &text)
    }

    /// Parse and validate config text; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<AgentConfig, ConfigError> {
        let mut cfg: AgentConfig = toml::from_str(text).map_err(|e| ConfigError {
            file: file.into(),
            key: syntax_key(text, &e),
            reason: e.message().to_string(),
        })?;
        let err = |key: &str, reason: String| ConfigError {
            file: file.into(),
            key: key.into(),
            reason,
        };
        if let Some(site) = &cfg.site {
            SiteId::try_from(site.as_str()).map_err(|e| err("site", e.to_string()))?;
        }
        let agent_id = cfg.agent_id.clone().unwrap_or_else(default_agent_id);
        AgentId::try_from(agent_id.as_str()).map_err(|e| err("agent_id", e.to_string()))?;
        cfg.agent_id = Some(agent_id);
        if let Some(urls) = &cfg.controller {
            for url in nex_backup_shared::tls::url_list(urls) {
                nex_backup_shared::tls::host_port(url)
                    .map_err(|e| err("controller", e.to_string()))?;
            }
        }
        if !(1..=19).contains(&cfg.zstd_level) {
            return Err(err(
                "zstd_level",
                format!("{} is outside 1..=19", cfg.zstd_level),
            ));
        }
        if !(1..=32).contains(&cfg.restore_jobs) {
            return Err(err(
                "restore_jobs",
                format!("{} is outside 1..=32", cfg.restore_jobs),
            ));
        }
        if cfg.stall_timeout_secs == 0 {
            return Err(err("stall_timeout_secs", "must be at least 1".into()));
        }
        cfg.chunker()
            .validate()
            .map_err(|e| err("chunking", e.to_string()))?;
        let mut seen = std::collections::HashSet::new();
        for (i, t) in cfg.targets.iter().enumerate() {
            let key = |k: &str| format!("targets[{i}].{k}");
            TargetName::try_from(t.name.as_str()).map_err(|e| err(&key("name"), e.to_string()))?;
            if !seen.insert(t.name.clone()) {
                return Err(err(
                    &key("name"),
                    format!("duplicate target name {:?}", t.name),
                ));
            }
            if t.kind != "postgres" {
                return Err(err(
                    &key("kind"),
                    format!("unknown kind {:?} (supported: postgres)", t.kind),
                ));
            }
            if t.password_env.is_some() && t.passfile.is_some() {
                return Err(err(
                    &key("password_env"),
                    "give password_env or passfile, not both".into(),
                ));
            }
        }
        for (i, f) in cfg.file_sets.iter().enumerate() {
            let key = |k: &str| format!("file_sets[{i}].{k}");
            TargetName::try_from(f.name.as_str()).map_err(|e| err(&key("name"), e.to_string()))?;
            if !seen.insert(f.name.clone()) {
                return Err(err(
                    &key("name"),
                    format!("duplicate target name {:?}", f.name),
                ));
            }
            f.check().map_err(|(k, r)| err(&key(k), r))?;
        }
        for (i, e) in cfg.env_sets.iter().enumerate() {
            let key = |k: &str| format!("env_sets[{i}].{k}");
            TargetName::try_from(e.name.as_str())
                .map_err(|er| err(&key("name"), er.to_string()))?;
            if !seen.insert(e.name.clone()) {
                return Err(err(
                    &key("name"),
                    format!("duplicate target name {:?}", e.name),
                ));
            }
            e.check().map_err(|(k, r)| err(&key(k), r))?;
        }
        if let Some(d) = &cfg.drill
            && d.password_env.is_some()
            && d.passfile.is_some()
        {
            return Err(err(
                "drill.password_env",
                "give password_env or passfile, not both".into(),
            ));
        }
        Ok(cfg)
    }

    /// The agent id to enroll with.
    pub fn agent_id(&self) -> String {
        self.agent_id.clone().unwrap_or_else(default_agent_id)
    }

    pub fn stall_timeout(&self) -> Duration {
        Duration::from_secs(self.stall_timeout_secs)
    }

    pub fn chunker(&self) -> ChunkerConfig {
        match &self.chunking {
            Some(c) => ChunkerConfig {
                min: c.min_kib * 1024,
                avg: c.avg_kib * 1024,
                max: c.max_kib * 1024,
            },
            None => ChunkerConfig::default(),
        }
    }

    /// The file or environment set `name`, ready to back up.
    pub fn set(&self, name: &str) -> Option<Result<SetSpec, BadSet>> {
        if let Some(f) = self.file_sets.iter().find(|f| f.name == name) {
            return Some(f.spec().map_err(|source| BadSet {
                name: name.into(),
                source,
            }));
        }
        self.env_sets
            .iter()
            .find(|e| e.name == name)
            .map(|e| Ok(e.spec()))
    }

    /// Every target this agent declares: (name, kind).
    pub fn declared(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .targets
            .iter()
            .map(|t| (t.name.clone(), t.kind.clone()))
            .collect();
        out.extend(
            self.file_sets
                .iter()
                .map(|f| (f.name.clone(), "files".into())),
        );
        out.extend(self.env_sets.iter().map(|e| (e.name.clone(), "env".into())));
        out
    }

    pub fn target(&self, name: &str) -> Option<&TargetConfig> {
        self.targets.iter().find(|t| t.name == name)
    }

    /// Where a restore drill of target `name` runs: the `[drill]` server if configured,
    /// else the target's own server.
    pub fn drill_target(&self, name: &str) -> Option<TargetConfig> {
        let Some(d) = &self.drill else {
            return self.target(name).cloned();
        };
        Some(TargetConfig {
            name: name.into(),
            kind: default_kind(),
            host: d.host.clone(),
            port: d.port,
            user: d.user.clone(),
            dbname: d.dbname.clone(),
            password_env: d.password_env.clone(),
            passfile: d.passfile.clone(),
            pg_bin_dir: d.pg_bin_dir.clone(),
            include_role_passwords: false,
        })
    }
}

/// The host name, reduced to the characters ids allow.
fn default_agent_id() -> String {
    let raw = gethostname::gethostname().to_string_lossy().into_owned();
    let id: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if id.is_empty() { "agent".into() } else { id }
}

/// Where a TOML error is: the key path (with the missing key, for a missing field) and
/// the line, e.g. `targets.user (line 7)`.
fn syntax_key(text: &str, e: &toml::de::Error) -> String {
    let Some(span) = e.span() else {
        return "(syntax)".into();
    };
    let at = span.start.min(text.len());
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line_text = text[line_start..].lines().next().unwrap_or("").trim();
    let mut key = match line_text.strip_prefix('[') {
        // The span is a table (a missing key is reported on its header).
        Some(h) => h.trim_start_matches('[').trim_end_matches(']').to_string(),
        None => key_at(text, span.start),
    };
    if let Some(missing) = e
        .message()
        .strip_prefix("missing field `")
        .and_then(|m| m.split('`').next())
    {
        key = if key == "(top level)" {
            missing.to_string()
        } else {
            format!("{key}.{missing}")
        };
    }
    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
    format!("{key} (line {line})")
}

/// The dotted key path at a byte offset, best effort: the nearest `[table]` header plus
/// the key on that line.
fn key_at(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let line = before.rsplit('\n').next().unwrap_or("");
    let full_line = text[before.len() - line.len()..]
        .lines()
        .next()
        .unwrap_or("");
    let key = full_line.split('=').next().unwrap_or("").trim();
    let table = before.lines().rev().find_map(|l| {
        l.trim()
            .strip_prefix('[')
            .map(|h| h.trim_end_matches(']').trim_matches('[').to_string())
    });
    match (table, key.is_empty() || key.starts_with('[')) {
        (Some(t), false) => format!("{t}.{key}"),
        (Some(t), true) => t,
        (None, false) => key.to_string(),
        (None, true) => "(top level)".into(),
    }
}

#[cfg(test)]
mod tests;
