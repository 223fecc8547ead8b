//! Versioned schema migrations of the PostgreSQL catalog. Each step runs once, in its own
//! transaction, in order; `nexb_schema` records the version reached. Replicas starting at
//! the same time take a session advisory lock first, so one migrates and the others then
//! find the schema current. A catalog newer than this controller is refused.

use super::{CatalogError, Result, pg_err};

/// The advisory lock key migrations are serialized by ("nexbschm").
const MIGRATION_LOCK: i64 = 0x6e65_7862_7363_686d;

/// The migrations, in order: version `i + 1` is `MIGRATIONS[i]`. Never edit a released
/// step; add a new one.
pub const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    r#"
    CREATE TABLE chunks (
        site text COLLATE "C" NOT NULL,
        id bytea NOT NULL,
        len integer NOT NULL,
        sha bytea,
        PRIMARY KEY (site, id)
    );
    CREATE TABLE snapshots (
        site text COLLATE "C" NOT NULL,
        snapshot_id text COLLATE "C" NOT NULL,
        target text COLLATE "C" NOT NULL,
        created bigint NOT NULL,
        rec jsonb NOT NULL,
        manifest bytea NOT NULL,
        PRIMARY KEY (site, snapshot_id)
    );
    CREATE INDEX snapshots_by_target ON snapshots (site, target, created);
    CREATE TABLE snapshot_chunks (
        site text COLLATE "C" NOT NULL,
        snapshot_id text COLLATE "C" NOT NULL,
        chunk bytea NOT NULL,
        PRIMARY KEY (site, snapshot_id, chunk)
    );
    CREATE INDEX snapshot_chunks_by_chunk ON snapshot_chunks (site, chunk);
    CREATE TABLE site_seq (
        site text COLLATE "C" PRIMARY KEY,
        seq bigint NOT NULL
    );
    CREATE TABLE docs (
        kind text COLLATE "C" NOT NULL,
        k text COLLATE "C" NOT NULL,
        site text COLLATE "C",
        rec jsonb NOT NULL,
        PRIMARY KEY (kind, k)
    );
    CREATE INDEX docs_by_site ON docs (kind, site, k);
    CREATE TABLE sealed_keys (
        site text COLLATE "C" NOT NULL,
        epoch bigint NOT NULL,
        recipient bytea NOT NULL,
        key_id bytea NOT NULL,
        blob bytea NOT NULL,
        PRIMARY KEY (site, epoch, recipient)
    );
    CREATE TABLE rpo_events (
        site text COLLATE "C" NOT NULL,
        target text COLLATE "C" NOT NULL,
        at bigint NOT NULL,
        rec jsonb NOT NULL,
        PRIMARY KEY (site, target, at)
    );
    CREATE TABLE audit (
        id bigserial PRIMARY KEY,
        at bigint NOT NULL,
        site text COLLATE "C" NOT NULL,
        rec jsonb NOT NULL
    );
    CREATE INDEX audit_by_time ON audit (at);
    CREATE SEQUENCE nexb_ids;
    "#,
    // 2: several replicas: deletion tombstones, where each agent's session lives, and
    // commands relayed to the replica holding it.
    r#"
    ALTER TABLE chunks ADD COLUMN deleting boolean NOT NULL DEFAULT false;
    CREATE TABLE sessions (
        site text COLLATE "C" NOT NULL,
        agent_id text COLLATE "C" NOT NULL,
        replica text NOT NULL,
        conn bigint NOT NULL,
        targets jsonb NOT NULL,
        seen bigint NOT NULL,
        PRIMARY KEY (site, agent_id)
    );
    CREATE TABLE relay_commands (
        id bigserial PRIMARY KEY,
        dest text NOT NULL,
        site text NOT NULL,
        agent_id text NOT NULL,
        payload bytea NOT NULL,
        created bigint NOT NULL
    );
    CREATE INDEX relay_commands_by_dest ON relay_commands (dest, id);
    "#,
    // 3: job listings in pages, newest first, over everything or one site.
    r#"
    CREATE INDEX docs_jobs_by_start ON docs
        (((rec->>'started_unix_ms')::bigint) DESC, k DESC) WHERE kind = 'job';
    CREATE INDEX docs_jobs_by_site_start ON docs
        (site, ((rec->>'started_unix_ms')::bigint) DESC, k DESC) WHERE kind = 'job';
    "#,
    // 4: the jobs of a snapshot (its backup, drills, verifications), for its standing.
    r#"
    CREATE INDEX docs_jobs_by_snapshot ON docs (site, (rec->>'snapshot_id')) WHERE kind = 'job';
    "#,
];

/// Bring the schema to the newest version.
pub async fn migrate(client: &mut tokio_postgres::Client) -> Result<()> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg_err)?;
    let r = migrate_locked(client).await;
    let unlock = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg_err);
    r.and(unlock.map(|_| ()))
}

async fn migrate_locked(client: &mut tokio_postgres::Client) -> Result<()> {
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS nexb_schema (version integer NOT NULL)")
        .await
        .map_err(pg_err)?;
    let row = client
        .query_opt("SELECT max(version) FROM nexb_schema", &[])
        .await
        .map_err(pg_err)?;
    let current = row.and_then(|r| r.get::<_, Option<i32>>(0)).unwrap_or(0) as usize;
    if current > MIGRATIONS.len() {
        return Err(CatalogError::Storage(format!(
            "the catalog's schema is version {current}, newer than this controller knows ({}); upgrade the controller",
            MIGRATIONS.len()
        )));
    }
    for (i, step) in MIGRATIONS.iter().enumerate().skip(current) {
        let version = (i + 1) as i32;
        let tx = client.transaction().await.map_err(pg_err)?;
        tx.batch_execute(step).await.map_err(|e| {
            CatalogError::Storage(format!("catalog migration {version}: {}", pg_err(e)))
        })?;
        tx.execute("INSERT INTO nexb_schema (version) VALUES ($1)", &[&version])
            .await
            .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
        tracing::info!(version, "catalog schema migrated");
    }
    Ok(())
}
