//! The catalog on PostgreSQL (`serve --catalog postgres://...`), for several controller
//! replicas sharing one catalog. The engine's own guarantees do the work: every write is
//! a committed transaction (durable when it returns; `flush` has nothing left to do),
//! read-modify-write records are updated under `SELECT ... FOR UPDATE`, uniqueness is a
//! primary key, and a commit and a garbage-collection pass are serialized by the site's
//! row in `site_seq` (both lock it before they look at chunk records).
//!
//! Modules: [`schema`] (versioned migrations, applied under an advisory lock so replicas
//! starting together do not race), `core` (the [`super::Catalog`] trait), `areas` (the
//! alert and integrity traits), `history` (keyset pages and history retention), [`tls`]
//! (the connection, with TLS when the URL asks for it). Records whose shape the engine does not query are kept
//! as JSON in one `docs` table keyed by kind and key; chunks, snapshots and their
//! references have tables of their own, because GC and find-missing query them.

mod areas;
mod core;
mod history;
pub mod schema;
pub mod tls;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_postgres::error::SqlState;

use super::{CatalogError, Result};

/// Connections one controller keeps to the catalog.
const POOL_SIZE: usize = 16;
/// Separates the parts of a compound document key (sorts before every printable byte).
pub(crate) const SEP: char = '\u{1f}';

/// See module docs.
#[derive(Clone)]
pub struct PgCatalog {
    pool: Pool,
}

/// A catalog URL that cannot be used; never carries the password.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://…{}", &url[..s], &url[at..]),
        _ => url.split('?').next().unwrap_or(url).to_string(),
    }
}

pub(crate) fn pg_err(e: tokio_postgres::Error) -> CatalogError {
    if e.code() == Some(&SqlState::DISK_FULL) {
        return CatalogError::DiskFull(e.to_string());
    }
    match e.as_db_error() {
        Some(db) => CatalogError::Storage(format!("postgres: {}", db.message())),
        None => CatalogError::Storage(format!("postgres: {e}")),
    }
}

pub(crate) fn pool_err(e: deadpool_postgres::PoolError) -> CatalogError {
    CatalogError::Storage(format!("postgres connection: {e}"))
}

pub(crate) fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
}

pub(crate) fn to_json<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).expect("catalog records serialize")
}

pub(crate) fn from_json<T: DeserializeOwned>(key: &str, v: serde_json::Value) -> Result<T> {
    serde_json::from_value(v).map_err(|e| CatalogError::Corrupt {
        key: key.into(),
        reason: e.to_string(),
    })
}

/// A compound document key.
pub(crate) fn dkey(parts: &[&str]) -> String {
    parts.join(&SEP.to_string())
}

impl PgCatalog {
    /// Connect to `url` (`postgres://user:password@host:port/db`), and bring the schema
    /// up to date. Errors name the server, never the password.
    pub async fn connect(url: &str) -> Result<Self> {
        let (cfg, tls) = tls::parse(url)?;
        let mgr = Manager::from_config(
            cfg,
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(POOL_SIZE)
            .build()
            .map_err(|e| CatalogError::Storage(format!("--catalog {}: {e}", redact(url))))?;
        let cat = PgCatalog { pool };
        let mut client = cat
            .client()
            .await
            .map_err(|e| CatalogError::Storage(format!("--catalog {}: {e}", redact(url))))?;
        schema::migrate(&mut client).await?;
        Ok(cat)
    }

    /// Make the id sequence hand out ids above `max` (after records were copied in).
    pub async fn advance_ids(&self, max: u64) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "SELECT setval('nexb_ids', GREATEST($1, (SELECT last_value FROM nexb_ids)))",
            &[&(max.max(1) as i64)],
        )
        .await
        .map_err(pg_err)?;
        Ok(())
    }

    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(pool_err)
    }

    /// Insert or replace a document.
    pub(crate) async fn put_doc<T: Serialize>(
        &self,
        kind: &str,
        key: &str,
        site: Option<&str>,
        rec: &T,
    ) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO docs (kind, k, site, rec) VALUES ($1, $2, $3, $4)
             ON CONFLICT (kind, k) DO UPDATE SET rec = EXCLUDED.rec, site = EXCLUDED.site",
            &[&kind, &key, &site, &to_json(rec)],
        )
        .await
        .map_err(pg_err)?;
        Ok(())
    }

    pub(crate) async fn get_doc<T: DeserializeOwned>(
        &self,
        kind: &str,
        key: &str,
    ) -> Result<Option<T>> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT rec FROM docs WHERE kind = $1 AND k = $2",
                &[&kind, &key],
            )
            .await
            .map_err(pg_err)?;
        row.map(|r| from_json(key, r.get(0))).transpose()
    }

    /// Every document of `kind` (of `site`, if given), in key order.
    pub(crate) async fn docs<T: DeserializeOwned>(
        &self,
        kind: &str,
        site: Option<&str>,
    ) -> Result<Vec<T>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT k, rec FROM docs WHERE kind = $1 AND ($2::text IS NULL OR site = $2)
                 ORDER BY k",
                &[&kind, &site],
            )
            .await
            .map_err(pg_err)?;
        rows.into_iter()
            .map(|r| from_json(r.get::<_, &str>(0), r.get(1)))
            .collect()
    }

    /// Delete a document, returning it.
    pub(crate) async fn take_doc<T: DeserializeOwned>(
        &self,
        kind: &str,
        key: &str,
    ) -> Result<Option<T>> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "DELETE FROM docs WHERE kind = $1 AND k = $2 RETURNING rec",
                &[&kind, &key],
            )
            .await
            .map_err(pg_err)?;
        row.map(|r| from_json(key, r.get(0))).transpose()
    }

    /// Read-modify-write a document under its row lock: `f` gets the record and returns
    /// what to write instead (`None`: leave it) and what to answer. `None` when there is
    /// no such document.
    pub(crate) async fn update_doc<T, R>(
        &self,
        kind: &str,
        key: &str,
        f: impl FnOnce(T) -> (Option<T>, R),
    ) -> Result<Option<R>>
    where
        T: Serialize + DeserializeOwned,
    {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        let row = tx
            .query_opt(
                "SELECT rec FROM docs WHERE kind = $1 AND k = $2 FOR UPDATE",
                &[&kind, &key],
            )
            .await
            .map_err(pg_err)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let (new, out) = f(from_json::<T>(key, row.get(0))?);
        if let Some(new) = new {
            tx.execute(
                "UPDATE docs SET rec = $3 WHERE kind = $1 AND k = $2",
                &[&kind, &key, &to_json(&new)],
            )
            .await
            .map_err(pg_err)?;
        }
        tx.commit().await.map_err(pg_err)?;
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_catalog_url_is_shown_without_its_password() {
        let r = super::redact("postgres://nex:s3cret@db.example:5432/nex?sslmode=disable");
        assert!(!r.contains("s3cret"), "{r}");
        assert!(r.contains("db.example"), "{r}");
    }
}
