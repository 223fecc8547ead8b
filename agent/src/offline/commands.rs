//! The offline commands behind `nex-backup-agent snapshots` and `restore --store`: what
//! they take and what they print.

use std::path::PathBuf;

use nex_backup_shared::ids::SiteId;
use nex_backup_shared::pb;

use super::{StoreCopy, list, read_secret, to_database, to_file, unlock};
use crate::config::{AgentConfig, TargetConfig};
use crate::error::AgentError;

/// Where an offline restore goes.
#[derive(Debug, Clone)]
pub enum Destination {
    /// A new database (or, with `clean`, a verified replacement of an existing one).
    Database {
        name: String,
        clean: bool,
        restore_globals: bool,
        no_owner: bool,
        no_privileges: bool,
        no_tablespaces: bool,
    },
    /// The pg_dump archive at this path, `globals.sql` beside it.
    File(PathBuf),
    /// A file or environment set into this directory (only `paths` if any; existing
    /// files replaced only with `overwrite`).
    Dir {
        dir: PathBuf,
        paths: Vec<String>,
        overwrite: bool,
    },
}

/// How to reach the PostgreSQL server restored into.
#[derive(Debug, Clone, Default)]
pub struct Server {
    /// Take the connection of target `--target` from this agent config.
    pub config: Option<PathBuf>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub password_env: Option<String>,
    pub pg_bin_dir: Option<PathBuf>,
}

/// `nex-backup-agent restore --store …`.
#[derive(Debug, Clone)]
pub struct RestoreArgs {
    /// A directory or an `s3://` URL.
    pub store: String,
    pub recovery_key: PathBuf,
    pub site: String,
    pub target: String,
    pub snapshot: String,
    pub to: Destination,
    pub server: Server,
}

fn site_id(s: &str) -> Result<SiteId, AgentError> {
    SiteId::try_from(s).map_err(|e| AgentError::from(e.to_string()))
}

fn utc(ms: u64) -> String {
    crate::files::inspect::utc((ms / 1000) as i64) + "Z"
}

/// List the snapshots of a store copy, one line each.
pub async fn snapshots(
    store: &str,
    recovery_key: &std::path::Path,
    site: Option<&str>,
) -> Result<String, AgentError> {
    let store = StoreCopy::open(store).await?;
    let secret = read_secret(recovery_key)?;
    let site = site.map(site_id).transpose()?;
    let listed = list(&store, &secret, site.as_ref()).await?;
    let mut out = format!(
        "{:<16} {:<20} {:<27} {:<20} {:>14}  STREAMS\n",
        "SITE", "TARGET", "SNAPSHOT", "CREATED (UTC)", "BYTES"
    );
    for l in &listed {
        match &l.manifest {
            Ok(m) => out.push_str(&format!(
                "{:<16} {:<20} {:<27} {:<20} {:>14}  {}\n",
                l.site,
                m.target,
                l.snapshot,
                utc(m.created_unix_ms),
                m.logical_bytes(),
                m.streams
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            )),
            Err(e) => out.push_str(&format!(
                "{:<16} {:<20} {:<27} does not open: {e}\n",
                l.site, "?", l.snapshot
            )),
        }
    }
    out.push_str(&format!(
        "{} snapshot(s) in {}; the store does not record which were verified by drills: \
         prefer the newest snapshot from before the incident",
        listed.len(),
        store.shown()
    ));
    Ok(out)
}

/// The server to restore into: target `target` of the agent config, then the flags.
fn server_config(s: &Server, target: &str) -> Result<TargetConfig, AgentError> {
    let mut t = match &s.config {
        Some(path) => {
            let cfg = AgentConfig::load(path).map_err(|e| format!("{e:#}"))?;
            cfg.target(target)
                .cloned()
                .ok_or_else(|| format!("agent config {} has no target {target}", path.display()))?
        }
        None => TargetConfig {
            name: target.into(),
            kind: "postgres".into(),
            host: "127.0.0.1".into(),
            port: 5432,
            user: "postgres".into(),
            dbname: "postgres".into(),
            password_env: None,
            passfile: None,
            pg_bin_dir: None,
            include_role_passwords: false,
        },
    };
    if let Some(h) = &s.host {
        t.host = h.clone();
    }
    if let Some(p) = s.port {
        t.port = p;
    }
    if let Some(u) = &s.user {
        t.user = u.clone();
    }
    if s.password_env.is_some() {
        t.password_env = s.password_env.clone();
    }
    if s.pg_bin_dir.is_some() {
        t.pg_bin_dir = s.pg_bin_dir.clone();
    }
    Ok(t)
}

/// Restore one snapshot from a store copy. Returns what was restored and verified.
pub async fn restore(a: &RestoreArgs) -> Result<String, AgentError> {
    let store = StoreCopy::open(&a.store).await?;
    let secret = read_secret(&a.recovery_key)?;
    let u = unlock(&store, &site_id(&a.site)?, &secret).await?;
    let (m, codec) = u.pick(&a.target, &a.snapshot).await?;
    let what = format!(
        "snapshot {} of {}/{} (taken {})",
        m.snapshot_id,
        a.site,
        a.target,
        utc(m.created_unix_ms)
    );
    match &a.to {
        Destination::File(out) => {
            let note = to_file(&u, &m, &codec, out).await?;
            Ok(format!("{what}: {note}"))
        }
        Destination::Dir {
            dir,
            paths,
            overwrite,
        } => {
            let note = super::to_dir(&u, &m, &codec, dir, paths, *overwrite).await?;
            Ok(format!("{what}: {note}"))
        }
        Destination::Database {
            name,
            clean,
            restore_globals,
            no_owner,
            no_privileges,
            no_tablespaces,
        } => {
            let t = server_config(&a.server, &a.target)?;
            let cmd = pb::RestoreCommand {
                target: a.target.clone(),
                snapshot_id: m.snapshot_id.clone(),
                to_database: name.clone(),
                clean: *clean,
                restore_globals: *restore_globals,
                no_owner: *no_owner,
                no_privileges: *no_privileges,
                no_tablespaces: *no_tablespaces,
                drill: false,
                drop_old: false,
                ..Default::default()
            };
            let r = to_database(&u, &m, &codec, &t, &cmd).await;
            if !r.ok {
                return Err(format!("{what}: {}", r.error).into());
            }
            let mut out = format!(
                "{what} restored into database {name} and verified: every chunk and the stream digest matched, {} table(s) with the recorded row counts, {} ms",
                r.tables.len(),
                r.duration_ms
            );
            if !r.note.is_empty() {
                out.push_str(&format!("; {}", r.note));
            }
            Ok(out)
        }
    }
}
