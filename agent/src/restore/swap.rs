//! Replacing an existing database without ever being without one. `restore --clean`
//! restores under a staging name, verifies it, and only then swaps the names in one
//! transaction; the replaced database is kept under a dated name (dropped only when the
//! operator asked, after the swap). A restore that fails leaves the existing database
//! exactly as it was.

use tracing::{info, warn};

use crate::config::TargetConfig;
use crate::error::AgentError;
use crate::pg;

/// PostgreSQL's identifier limit.
const MAX_IDENT: usize = 63;

/// `base` cut (on a character boundary) so that `base + suffix` fits an identifier.
fn fit(base: &str, suffix: &str) -> String {
    let room = MAX_IDENT.saturating_sub(suffix.len());
    let mut cut = base.len().min(room);
    while !base.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{suffix}", &base[..cut])
}

/// The staging name a replacement is restored under.
pub fn staging_name(db: &str, job_id: &str) -> String {
    let tag: String = job_id
        .chars()
        .rev()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(8)
        .collect::<String>()
        .to_lowercase();
    fit(db, &format!("_nexb_new_{tag}"))
}

/// The name the replaced database is kept under.
pub fn old_name(db: &str, unix_ms: u64) -> String {
    let t = jiff::Timestamp::from_millisecond(unix_ms as i64)
        .map(|t| t.strftime("%Y%m%d_%H%M%S").to_string())
        .unwrap_or_default();
    fit(db, &format!("_old_{t}"))
}

pub(super) async fn drop_db(
    admin: &tokio_postgres::Client,
    db: &str,
    server_num: i32,
) -> Result<(), AgentError> {
    let force = if server_num >= 130_000 {
        " WITH (FORCE)"
    } else {
        ""
    };
    admin
        .batch_execute(&format!(
            "DROP DATABASE IF EXISTS {}{force}",
            pg::quote_ident(db)
        ))
        .await
        .map_err(|e| AgentError::from(format!("drop database {db}: {}", pg::db_error_text(&e))))
}

/// Swap the verified `staging` database in as `db`; the old one becomes `old` (and is
/// dropped if `drop_old`). Sessions on `db` are ended first (a rename needs it free); the
/// renames run in one transaction, so either both happen or neither. Returns a note for
/// the operator.
pub async fn swap_in(
    t: &TargetConfig,
    db: &str,
    staging: &str,
    old: &str,
    drop_old: bool,
    server_num: i32,
) -> Result<String, AgentError> {
    let admin = pg::connect_admin(t, &[db, staging, old]).await?;
    let (q_db, q_new, q_old) = (
        pg::quote_ident(db),
        pg::quote_ident(staging),
        pg::quote_ident(old),
    );
    let mut last = String::new();
    for attempt in 1..=5 {
        // New sessions may arrive between the termination and the rename: try again.
        let _ = admin
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&db],
            )
            .await;
        let renames = format!(
            "BEGIN; ALTER DATABASE {q_db} RENAME TO {q_old}; ALTER DATABASE {q_new} RENAME TO {q_db}; COMMIT;"
        );
        match admin.batch_execute(&renames).await {
            Ok(()) => {
                info!(database = %db, kept = %old, "verified restore swapped in");
                if drop_old {
                    drop_db(&admin, old, server_num).await?;
                    return Ok(format!(
                        "database {db} replaced after verification; the old one was dropped (--drop-old)"
                    ));
                }
                return Ok(format!(
                    "database {db} replaced after verification; the old one is kept as {old} (drop it when no longer needed)"
                ));
            }
            Err(e) => {
                let _ = admin.batch_execute("ROLLBACK").await;
                last = pg::db_error_text(&e);
                warn!(database = %db, attempt, error = %last, "swap in the restored database");
                tokio::time::sleep(std::time::Duration::from_millis(200 * attempt)).await;
            }
        }
    }
    Err(format!(
        "the restore into {staging} was verified, but swapping it in as {db} failed: {last}; {db} is unchanged and the verified copy stays as {staging}"
    ).into())
}

/// Drop the database a failed restore created (a new one, or the staging copy beside
/// an existing one, which stays untouched).
pub async fn discard(t: &TargetConfig, created: &str, server_num: i32) -> String {
    match pg::connect_admin(t, &[created]).await {
        Ok(admin) => match drop_db(&admin, created, server_num).await {
            Ok(()) => format!("the new database was dropped ({created})"),
            Err(e) => format!("the new database {created} could not be dropped: {e}"),
        },
        Err(e) => format!("the new database {created} could not be dropped: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_postgres_identifiers() {
        let long = "é".repeat(40);
        for n in [
            staging_name(&long, "job-20261130T070000Z-abcdef12"),
            old_name(&long, 1_795_000_000_000),
            staging_name("shop", "job-1"),
        ] {
            assert!(n.len() <= MAX_IDENT, "{n}");
        }
        assert_eq!(
            old_name("shop", 1_795_000_000_000),
            "shop_old_20261118_110640"
        );
        assert!(staging_name("shop", "job-x-abcdef12").starts_with("shop_nexb_new_"));
    }
}
