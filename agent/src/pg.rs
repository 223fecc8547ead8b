//! Talking to the PostgreSQL server of a target: connecting (password from env or a
//! pgpass file), and exact per-table row counts.

use std::path::Path;

use tokio_postgres::{Client, NoTls};

use crate::config::TargetConfig;
use crate::error::AgentError;

/// The password for a target, if one is configured. Never logged.
pub fn password(t: &TargetConfig, dbname: &str) -> Result<Option<String>, AgentError> {
    if let Some(var) = &t.password_env {
        return std::env::var(var).map(Some).map_err(|_| {
            format!(
                "target {}: environment variable {var} (password_env) is not set",
                t.name
            )
            .into()
        });
    }
    if let Some(file) = &t.passfile {
        return pgpass_lookup(file, &t.host, t.port, dbname, &t.user).map_err(|e| {
            AgentError::from(format!(
                "target {}: passfile {}: {e}",
                t.name,
                file.display()
            ))
        });
    }
    Ok(None)
}

/// Look up a password in a pgpass-format file (`host:port:db:user:password`, `*` wildcards).
pub fn pgpass_lookup(
    file: &Path,
    host: &str,
    port: u16,
    db: &str,
    user: &str,
) -> Result<Option<String>, AgentError> {
    let text = std::fs::read_to_string(file).map_err(|e| e.to_string())?;
    for line in text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
    {
        let fields = split_pgpass(line);
        if fields.len() != 5 {
            continue;
        }
        let port_s = port.to_string();
        let wanted = [host, port_s.as_str(), db, user];
        if fields[..4]
            .iter()
            .zip(wanted)
            .all(|(f, w)| f == "*" || f == w)
        {
            return Ok(Some(fields[4].clone()));
        }
    }
    Ok(None)
}

fn split_pgpass(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.last_mut().expect("non-empty").extend(chars.next()),
            ':' if out.len() < 5 => out.push(String::new()),
            _ => out.last_mut().expect("non-empty").push(c),
        }
    }
    out
}

/// Connect to `dbname` on the target's server. Errors name the target and quote the server.
/// A connection for creating, renaming and dropping `databases`: to the target's own
/// database unless it is one of them (a database cannot be renamed or dropped by its own
/// session), else to `postgres`, else `template1`.
pub async fn connect_admin(t: &TargetConfig, databases: &[&str]) -> Result<Client, AgentError> {
    if !databases.contains(&t.dbname.as_str()) {
        return connect(t, &t.dbname).await;
    }
    match connect(t, "postgres").await {
        Ok(c) => Ok(c),
        Err(first) => connect(t, "template1").await.map_err(|_| first),
    }
}

pub async fn connect(t: &TargetConfig, dbname: &str) -> Result<Client, AgentError> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(&t.host)
        .port(t.port)
        .user(&t.user)
        .dbname(dbname)
        .application_name("nex-backup-agent");
    cfg.connect_timeout(std::time::Duration::from_secs(15));
    if let Some(pw) = password(t, dbname)? {
        cfg.password(pw);
    }
    let (client, conn) = cfg.connect(NoTls).await.map_err(|e| {
        format!(
            "target {}: connect to PostgreSQL at {}:{} database {dbname} as {}: {}",
            t.name,
            t.host,
            t.port,
            t.user,
            db_error_text(&e)
        )
    })?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "postgres connection closed");
        }
    });
    Ok(client)
}

/// The server's message for a database error, or the client error text.
pub fn db_error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(c) = src {
                s = format!("{s}: {c}");
                src = c.source();
            }
            s
        }
    }
}

/// The server's version as (`server_version_num`, `server_version`), e.g. (150018, "15.18").
pub async fn server_version(client: &Client) -> Result<(i32, String), AgentError> {
    let row = client
        .query_one(
            "SELECT current_setting('server_version_num')::int, current_setting('server_version')",
            &[],
        )
        .await
        .map_err(|e| AgentError::from(format!("read server version: {}", db_error_text(&e))))?;
    Ok((row.get(0), row.get(1)))
}

/// Quote an identifier for SQL.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Exact row counts of every ordinary table (partitions included), keyed by
/// `"schema"."table"`. Runs in whatever transaction the client is in.
/// Whether the connected role is a superuser.
pub async fn is_superuser(client: &Client) -> Result<bool, AgentError> {
    let row = client
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .map_err(|e| AgentError::from(format!("read the role's rights: {}", db_error_text(&e))))?;
    Ok(row.get(0))
}

/// What the connected role may do that backups, restores and drills need: (superuser,
/// may create databases, may read all data).
pub async fn rights(client: &Client) -> Result<(bool, bool, bool), AgentError> {
    let row = client
        .query_one(
            "SELECT rolsuper, rolcreatedb, \
             rolsuper OR pg_has_role(current_user, 'pg_read_all_data', 'MEMBER') \
             FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .map_err(|e| AgentError::from(format!("read the role's rights: {}", db_error_text(&e))))?;
    Ok((row.get(0), row.get(1), row.get(2)))
}

/// With `own_rows_only`, each table's own rows (`FROM ONLY`: an inheritance parent
/// without its children), as a dump carries them.
pub async fn row_counts(
    client: &Client,
    own_rows_only: bool,
) -> Result<Vec<(String, i64)>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
             AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' ORDER BY 1, 2",
            &[],
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let name = format!("{}.{}", quote_ident(r.get(0)), quote_ident(r.get(1)));
        let n: i64 = client
            .query_one(
                &format!(
                    "SELECT count(*) FROM {}{name}",
                    if own_rows_only { "ONLY " } else { "" }
                ),
                &[],
            )
            .await?
            .get(0);
        out.push((name, n));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgpass_matching() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pgpass");
        std::fs::write(
            &p,
            "# comment\nother:5432:*:*:nope\n127.0.0.1:5433:*:app:s3cr\\:et\n*:*:*:*:fallback\n",
        )
        .unwrap();
        assert_eq!(
            pgpass_lookup(&p, "127.0.0.1", 5433, "x", "app")
                .unwrap()
                .as_deref(),
            Some("s3cr:et")
        );
        assert_eq!(
            pgpass_lookup(&p, "db", 1, "x", "y").unwrap().as_deref(),
            Some("fallback")
        );
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
    }
}
