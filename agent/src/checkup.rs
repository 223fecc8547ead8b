//! `nex-backup-agent check-config`: what can be checked of a config beyond its syntax.
//! Offline: a controller to talk to, targets to back up, password sources that exist
//! (the variable is set, the passfile is readable), a `pg_bin_dir` that holds pg_dump,
//! a usable state dir. With `--online`: each database answers, and the controller
//! accepts this agent's certificate. Each finding names the key and its line.

use std::time::Duration;

use nex_backup_shared::pb;

use crate::config::AgentConfig;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Error,
    Warning,
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub level: Level,
    pub key: String,
    pub line: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lvl = match self.level {
            Level::Error => "error",
            Level::Warning => "warning",
        };
        match self.line {
            Some(l) => write!(f, "{lvl}: line {l}: {}: {}", self.key, self.message),
            None => write!(f, "{lvl}: {}: {}", self.key, self.message),
        }
    }
}

/// The line (1-based) of `key` in the `index`-th `[[targets]]` table, or at top level.
fn line_of(text: &str, target: Option<usize>, key: &str) -> Option<usize> {
    let mut table: Option<usize> = None;
    let mut count = 0;
    let mut header_line = None;
    for (i, l) in text.lines().enumerate() {
        let t = l.trim();
        if t.starts_with('[') {
            table = if t == "[[targets]]" {
                count += 1;
                Some(count - 1)
            } else {
                Some(usize::MAX)
            };
            if table == target && target.is_some() {
                header_line = Some(i + 1);
            }
            continue;
        }
        let here = match target {
            Some(_) => table == target,
            None => table.is_none(),
        };
        if here && t.split('=').next().map(str::trim) == Some(key) {
            return Some(i + 1);
        }
    }
    header_line
}

/// Offline checks of a config that parsed.
pub fn offline(cfg: &AgentConfig, text: &str) -> Vec<Finding> {
    let mut out = vec![];
    let mut push = |level, key: String, line, message: String| {
        out.push(Finding {
            level,
            key,
            line,
            message,
        })
    };
    let enrolled = crate::enrollment::Enrollment::load(&cfg.state_dir).ok();
    if cfg.controller.is_none() && enrolled.is_none() {
        push(Level::Error, "controller".into(), None, "no controller URL and this agent is not enrolled yet: add controller = \"https://backup.example.net:7420\"".into());
    }
    if cfg.declared().is_empty() {
        push(
            Level::Error,
            "targets".into(),
            None,
            "no [[targets]], [[file_sets]] or [[env_sets]]: this agent has nothing to back up"
                .into(),
        );
    }
    match std::fs::metadata(&cfg.state_dir) {
        Ok(m) if !m.is_dir() => push(
            Level::Error,
            "state_dir".into(),
            line_of(text, None, "state_dir"),
            format!("{} is not a directory", cfg.state_dir.display()),
        ),
        Ok(_) => {}
        Err(_) => push(
            Level::Warning,
            "state_dir".into(),
            line_of(text, None, "state_dir"),
            format!(
                "{} does not exist yet (enroll creates it)",
                cfg.state_dir.display()
            ),
        ),
    }
    for (i, t) in cfg.targets.iter().enumerate() {
        let key = |k: &str| format!("targets[{i}] ({}).{k}", t.name);
        match (&t.password_env, &t.passfile) {
            (Some(var), _) if std::env::var_os(var).is_none() => push(Level::Error, key("password_env"), line_of(text, Some(i), "password_env"), format!("the environment variable {var} is not set here; set it in the agent service's environment")),
            (_, Some(f)) if std::fs::File::open(f).is_err() => push(Level::Error, key("passfile"), line_of(text, Some(i), "passfile"), format!("{} cannot be read", f.display())),
            (None, None) => push(Level::Warning, key("password_env"), line_of(text, Some(i), "name"), "no password_env or passfile: the server must trust this host, or ~/.pgpass must hold the password".into()),
            _ => {}
        }
        if let Some(dir) = &t.pg_bin_dir {
            let exe = if cfg!(windows) {
                "pg_dump.exe"
            } else {
                "pg_dump"
            };
            if !dir.join(exe).is_file() {
                push(
                    Level::Error,
                    key("pg_bin_dir"),
                    line_of(text, Some(i), "pg_bin_dir"),
                    format!("{} holds no {exe}", dir.display()),
                );
            }
        }
    }
    out
}

/// What a role lacks for backups, restores and drills (`docs/operations.md`, least
/// privilege), from (superuser, CREATEDB, may read all data).
pub fn rights_findings(
    user: &str,
    (superuser, createdb, read_all): (bool, bool, bool),
) -> Vec<String> {
    let mut out = vec![];
    if !read_all {
        out.push(format!(
            "role {user} may not read all data: a backup fails on the first table it cannot read; \
             GRANT pg_read_all_data TO {user} (PostgreSQL 14+; older: SELECT on every table and sequence)"
        ));
    }
    if !superuser && !createdb {
        out.push(format!(
            "role {user} cannot create databases: restores and drills on this server fail; ALTER ROLE {user} CREATEDB"
        ));
    }
    if !superuser {
        out.push(format!(
            "role {user} is not a superuser: a restore that gives objects to their owners needs \
             membership in each owning role (GRANT owner TO {user}); otherwise restore with --no-owner \
             (drills do so on their own)"
        ));
    }
    out
}

/// Online checks: each database answers; the controller accepts this agent.
pub async fn online(cfg: &AgentConfig, text: &str) -> Vec<Finding> {
    let mut out = vec![];
    for (i, t) in cfg.targets.iter().enumerate() {
        let line = line_of(text, Some(i), "host");
        let key = format!("targets[{i}] ({})", t.name);
        let probe = async {
            let c = crate::pg::connect(t, &t.dbname).await?;
            let v = crate::pg::server_version(&c).await?.1;
            Ok::<_, crate::error::AgentError>((v, crate::pg::rights(&c).await?))
        };
        match tokio::time::timeout(Duration::from_secs(15), probe).await {
            Ok(Ok((v, rights))) => {
                println!(
                    "ok: {key}: PostgreSQL {v} at {}:{} database {}",
                    t.host, t.port, t.dbname
                );
                for message in rights_findings(&t.user, rights) {
                    out.push(Finding {
                        level: Level::Warning,
                        key: key.clone(),
                        line,
                        message,
                    });
                }
            }
            Ok(Err(e)) => out.push(Finding {
                level: Level::Error,
                key,
                line,
                message: e.to_string(),
            }),
            Err(_) => out.push(Finding {
                level: Level::Error,
                key,
                line,
                message: format!("no answer from {}:{} within 15 s", t.host, t.port),
            }),
        }
    }
    match controller(cfg).await {
        Ok(msg) => println!("ok: controller: {msg}"),
        Err(e) => out.push(Finding {
            level: Level::Error,
            key: "controller".into(),
            line: line_of(text, None, "controller"),
            message: format!("{e:#}"),
        }),
    }
    out
}

async fn controller(cfg: &AgentConfig) -> anyhow::Result<String> {
    let e = crate::enrollment::Enrollment::load(&cfg.state_dir)?;
    let url = cfg
        .controller
        .clone()
        .unwrap_or_else(|| e.controller.clone());
    let channel = nex_backup_shared::tls::channel(&url, e.tls(&cfg.state_dir)?)?;
    let mut client = pb::agent_service_client::AgentServiceClient::new(channel);
    let req = pb::GetSealedKeysRequest {
        site: e.site.clone(),
    };
    tokio::time::timeout(Duration::from_secs(15), client.get_sealed_keys(req))
        .await
        .map_err(|_| anyhow::anyhow!("{url}: no answer within 15 s"))?
        .map_err(|s| anyhow::anyhow!("{url}: {}", s.message()))?;
    Ok(format!(
        "{url} accepts agent {} of site {}",
        e.agent_id, e.site
    ))
}

/// Run the checks and print the findings; true when there is no error.
pub fn report(findings: &[Finding]) -> bool {
    for f in findings {
        println!("{f}");
    }
    !findings.iter().any(|f| f.level == Level::Error)
}
