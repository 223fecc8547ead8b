//! A restore job: fetch and open the manifest, create the target database, optionally
//! replay globals, stream the dump into `pg_restore`, then compare row counts.

mod database;
pub mod feed;
mod loader;
pub mod parallel;
mod requires;
mod spread;
pub mod swap;
pub mod verify;

use std::sync::Arc;
use std::time::Instant;

use nex_backup_shared::chunk::ChunkCodec;
use nex_backup_shared::manifest::{Manifest, STREAM_DATABASE, STREAM_GLOBALS, StreamEntry};
use nex_backup_shared::pb;
use nex_backup_shared::seal::Header;
use tracing::info;

use self::feed::{ChunkSource, FeedError, feed};
use crate::backup::dump;
use crate::config::TargetConfig;
use crate::ctx::Ctx;
use crate::error::AgentError;
use crate::{pg, pgtools};

/// Run a restore command to completion and describe the outcome.
pub async fn run(ctx: Arc<Ctx>, job_id: String, cmd: pb::RestoreCommand) -> pb::JobResult {
    let started = Instant::now();
    let mut result = pb::JobResult {
        snapshot_id: cmd.snapshot_id.clone(),
        ..Default::default()
    };
    if cmd.verify_only {
        return verify::run(&ctx, &job_id, &cmd).await;
    }
    let files = cmd.list_only
        || !cmd.diff_against.is_empty()
        || !cmd.to_dir.is_empty()
        || ctx.cfg.set(&cmd.target).is_some();
    if files {
        return crate::files::jobs::run(&ctx, &job_id, &cmd).await;
    }
    let t = if cmd.drill {
        ctx.cfg.drill_target(&cmd.target)
    } else {
        ctx.cfg.target(&cmd.target).cloned()
    };
    let outcome = match &t {
        Some(t) => restore(&ctx, &job_id, t, &cmd, &mut result).await,
        None if cmd.drill => Err(format!(
            "unknown target {} and no [drill] server configured on this agent",
            cmd.target
        )
        .into()),
        None => Err(format!("unknown target {}", cmd.target).into()),
    };
    result.duration_ms = started.elapsed().as_millis() as u64;
    conclude(&mut result, outcome, &cmd.snapshot_id);
    result
}

/// Judge a finished restore: it is good only if the stream hash matched and every
/// table's row count did; otherwise `error` says why.
pub fn conclude(result: &mut pb::JobResult, outcome: Result<(), AgentError>, snapshot_id: &str) {
    match outcome {
        Ok(()) => result.ok = result.stream_hash_ok && result.tables.iter().all(|t| t.ok),
        Err(e) => result.error = format!("restore snapshot {snapshot_id}: {e}"),
    }
    if result.error.is_empty() && !result.ok {
        let bad: Vec<_> = result
            .tables
            .iter()
            .filter(|t| !t.ok)
            .map(|t| t.table.clone())
            .collect();
        result.error = format!("row counts differ in {}", bad.join(", "));
    }
}

async fn restore(
    ctx: &Arc<Ctx>,
    job_id: &str,
    t: &TargetConfig,
    cmd: &pb::RestoreCommand,
    result: &mut pb::JobResult,
) -> Result<(), AgentError> {
    let db = &cmd.to_database;
    if cmd.drill && !db.starts_with("nexb_drill_") {
        return Err(format!(
            "drill into {db:?} refused: drills restore only into nexb_drill_ databases"
        )
        .into());
    }
    let (m, codec) = fetch_manifest(ctx, cmd).await.map_err(|e| e.to_string())?;
    restore_into(ctx, &codec, &m, job_id, t, cmd, result).await
}

/// Restore the opened manifest `m` with chunks from `src` into the database `cmd` names
/// on server `t`: a new database, or (`--clean`) a verified copy swapped in. Drills drop
/// what they restored.
pub async fn restore_into<S: ChunkSource>(
    src: &Arc<S>,
    codec: &ChunkCodec,
    m: &Manifest,
    job_id: &str,
    t: &TargetConfig,
    cmd: &pb::RestoreCommand,
    result: &mut pb::JobResult,
) -> Result<(), AgentError> {
    let db = &cmd.to_database;
    result.logical_bytes = m.logical_bytes();
    let admin = pg::connect_admin(t, &[db]).await?;
    let (server_num, _) = pg::server_version(&admin).await?;
    // A drill by a role that is not a superuser cannot give objects to their owners;
    // it checks the data, so it restores them as its own.
    let no_owner = cmd.no_owner || (cmd.drill && !pg::is_superuser(&admin).await?);
    let exists = database_exists(&admin, db).await?;
    if exists && !cmd.clean {
        return Err(format!(
            "database {db} already exists; pass --clean to replace it (after verification, keeping the old one)"
        ).into());
    }
    // An existing database is replaced only by a verified copy restored beside it.
    let into = if exists {
        swap::staging_name(db, job_id)
    } else {
        db.clone()
    };
    let mut into_cmd = cmd.clone();
    into_cmd.to_database = into.clone();
    into_cmd.no_owner = no_owner;
    let ahead = Ahead {
        src,
        codec,
        m,
        job_id,
        t,
        server_num,
    };
    let (source, mut notes) = ahead.prepare(&admin, &mut into_cmd).await?;
    drop(admin);
    let verified = ahead.load_and_verify(&into_cmd, result).await;
    if let (Ok(_), Some(source), false) = (&verified, &source, cmd.drill) {
        let client = pg::connect(t, &into).await?;
        let (no_owner, no_privileges) = (into_cmd.no_owner, into_cmd.no_privileges);
        notes.extend(database::apply(&client, &into, source, no_owner, no_privileges).await);
    }
    if cmd.drill {
        drop_drill_database(t, &into, server_num).await?;
        result.tables = verified?;
        result.note = notes.join("; ");
        return Ok(());
    }
    let target = Restored {
        t,
        cmd,
        into: &into,
        replaces: exists,
        server_num,
    };
    let settled = target.settle(verified, result).await;
    if !notes.is_empty() {
        notes.extend((!result.note.is_empty()).then(|| result.note.clone()));
        result.note = notes.join("; ");
    }
    settled
}

/// What a restore works from: the snapshot, where its chunks come from, the server.
struct Ahead<'a, S> {
    src: &'a Arc<S>,
    codec: &'a ChunkCodec,
    m: &'a Manifest,
    job_id: &'a str,
    t: &'a TargetConfig,
    server_num: i32,
}

impl<S: ChunkSource> Ahead<'_, S> {
    /// Before anything is loaded: read the TOC ahead, replay the globals if asked, check
    /// the roles and tablespaces the restore needs (a drill leaves out what is missing),
    /// and create the database as the source was. Returns the source database and notes.
    async fn prepare(
        &self,
        admin: &tokio_postgres::Client,
        cmd: &mut pb::RestoreCommand,
    ) -> Result<(Option<database::Source>, Vec<String>), AgentError> {
        let (m, into) = (self.m, cmd.to_database.clone());
        let toc = match m.stream(STREAM_DATABASE) {
            Some(s) => database::peek(self.src, self.codec, self.job_id, s).await,
            None => None,
        };
        let mut notes = vec![];
        let server_major = (self.server_num / 10000) as u32;
        if let Some(dumped) = dump_major(m).filter(|&d| d > server_major) {
            let note = format!(
                "the snapshot was dumped by pg_dump {dumped} and is restored onto PostgreSQL \
                 {server_major}: PostgreSQL does not support restoring into an older server, \
                 and a statement it does not know fails the restore"
            );
            notes.push(noted(&into, note));
        }
        // Roles first: they may be what the check below looks for.
        if cmd.restore_globals {
            let (src, codec, job_id, t) = (self.src, self.codec, self.job_id, self.t);
            replay_globals(src, codec, job_id, t, m, &into, self.server_num).await?;
        }
        if let Some(entries) = &toc {
            let refs = requires::Referenced::of(entries);
            match requires::missing(admin, &refs, cmd).await? {
                None => {}
                Some(lacking) if cmd.drill => {
                    requires::leave_out(cmd, &lacking);
                    let note = format!(
                        "the drill left out what this server lacks ({}): it checks the data",
                        lacking.list()
                    );
                    notes.push(noted(&into, note));
                }
                Some(lacking) => return Err(lacking.to_string().into()),
            }
        } else {
            let note = "the archive's TOC could not be read ahead: the database was created \
                        with the server's defaults, without the source's settings";
            notes.push(noted(&into, note.to_string()));
        }
        let source = toc.as_deref().and_then(database::Source::of);
        notes.extend(database::create(admin, &into, source.as_ref()).await?);
        Ok((source, notes))
    }

    /// Load the database stream into `cmd.to_database` and check its row counts.
    async fn load_and_verify(
        &self,
        cmd: &pb::RestoreCommand,
        result: &mut pb::JobResult,
    ) -> Result<Vec<pb::TableCheck>, AgentError> {
        let (src, m, t, into) = (self.src, self.m, self.t, &cmd.to_database);
        let stored = load(
            src,
            self.codec,
            self.job_id,
            t,
            cmd,
            m,
            self.server_num,
            result,
        )
        .await
        .map_err(requires::hint)?;
        info!(snapshot = %m.snapshot_id, database = %into, "pg_restore finished; verifying row counts");
        let bytes = m.logical_bytes();
        src.progress(
            self.job_id,
            "verify",
            bytes,
            0,
            "checking row counts".into(),
        );
        verify_counts(t, into, m, stored).await
    }
}

/// A note for the restore's result, logged as a warning about database `db`.
fn noted(db: &str, note: String) -> String {
    tracing::warn!(database = %db, "{note}");
    note
}

/// The major version of the pg_dump that wrote the snapshot ("15.18" → 15), if recorded.
fn dump_major(m: &Manifest) -> Option<u32> {
    let v = m.source.pg_dump_version.trim();
    let digits: String = v.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Where a (non-drill) restore went, and what to do with it once verified.
struct Restored<'a> {
    t: &'a TargetConfig,
    cmd: &'a pb::RestoreCommand,
    /// The database restored into: the asked name, or a staging name beside it.
    into: &'a str,
    /// An existing database of the asked name is to be replaced.
    replaces: bool,
    server_num: i32,
}

impl Restored<'_> {
    /// A failed or unverified restore is discarded (an existing database stays as it
    /// was); a verified replacement is swapped in.
    async fn settle(
        &self,
        verified: Result<Vec<pb::TableCheck>, AgentError>,
        result: &mut pb::JobResult,
    ) -> Result<(), AgentError> {
        let (db, t) = (&self.cmd.to_database, self.t);
        let untouched = if self.replaces {
            format!("; {db} is untouched")
        } else {
            String::new()
        };
        let tables = match verified {
            Ok(tables) => tables,
            Err(e) => {
                let note = swap::discard(t, self.into, self.server_num).await;
                return Err(format!("{e} ({note}{untouched})").into());
            }
        };
        let all_ok = result.stream_hash_ok && tables.iter().all(|t| t.ok);
        result.tables = tables;
        if !self.replaces {
            return Ok(());
        }
        if !all_ok {
            let note = swap::discard(t, self.into, self.server_num).await;
            result.note = format!("verification failed{untouched} ({note})");
            return Ok(());
        }
        let old = swap::old_name(db, crate::backup::now_ms());
        result.note =
            swap::swap_in(t, db, self.into, &old, self.cmd.drop_old, self.server_num).await?;
        Ok(())
    }
}

/// A drill leaves nothing behind, whatever its outcome.
async fn drop_drill_database(
    t: &TargetConfig,
    db: &str,
    server_num: i32,
) -> Result<(), AgentError> {
    let admin = pg::connect_admin(t, &[db]).await?;
    swap::drop_db(&admin, db, server_num).await?;
    info!(database = %db, "drill database dropped");
    Ok(())
}

/// Replay the snapshot's globals (roles, tablespaces) through `psql`, connected to the
/// target's maintenance database (`db` is not created yet); errors (a role that exists)
/// do not stop it.
#[allow(clippy::too_many_arguments)]
async fn replay_globals<S: ChunkSource>(
    ctx: &Arc<S>,
    codec: &ChunkCodec,
    job_id: &str,
    t: &TargetConfig,
    m: &Manifest,
    db: &str,
    server_num: i32,
) -> Result<(), AgentError> {
    let Some(g) = m.stream(STREAM_GLOBALS) else {
        return Ok(());
    };
    let maintenance = if t.dbname != db {
        t.dbname.as_str()
    } else {
        "postgres"
    };
    let password = pg::password(t, maintenance)?;
    let psql = pgtools::find("psql", t.pg_bin_dir.as_deref(), (server_num / 10000) as u32).await?;
    let mut args = dump::conn_args(t, maintenance);
    args.extend(["-X", "-q", "-v", "ON_ERROR_STOP=0", "-f", "-"].map(String::from));
    pipe_into(ctx, codec, job_id, &psql, args, password.as_deref(), g).await
}

/// The database stream into the freshly created database.
#[allow(clippy::too_many_arguments)]
async fn load<S: ChunkSource>(
    ctx: &Arc<S>,
    codec: &ChunkCodec,
    job_id: &str,
    t: &TargetConfig,
    cmd: &pb::RestoreCommand,
    m: &Manifest,
    server_num: i32,
    result: &mut pb::JobResult,
) -> Result<Option<parallel::Stored>, AgentError> {
    let db = &cmd.to_database;
    let dir = t.pg_bin_dir.as_deref();
    let major = (server_num / 10000) as u32;
    let password = pg::password(t, db)?;
    let stream = m
        .stream(STREAM_DATABASE)
        .ok_or("manifest has no database stream")?;
    // pg_restore reads archives of its own version and older ones only.
    let at_least = major.max(dump_major(m).unwrap_or(0));
    let pg_restore = pgtools::find("pg_restore", dir, at_least).await?;
    let l = parallel::Load {
        t,
        db,
        no_owner: cmd.no_owner,
        no_privileges: cmd.no_privileges,
        no_tablespaces: cmd.no_tablespaces,
        tuning: ctx.restore_tuning(),
        password,
        pg_restore,
    };
    let stored = if l.tuning.jobs > 1 {
        parallel::load(ctx, codec, job_id, stream, &l).await?
    } else {
        let (tool, pw) = (&l.pg_restore, l.password.as_deref());
        pipe_into(ctx, codec, job_id, tool, l.serial_args(), pw, stream).await?;
        None
    };
    result.stream_hash_ok = true;
    Ok(stored)
}

/// Fetch and open the manifest; it must belong to this site, snapshot and target.
/// Returns the codec of the key epoch the snapshot was sealed with.
pub(crate) async fn fetch_manifest(
    ctx: &Arc<Ctx>,
    cmd: &pb::RestoreCommand,
) -> Result<(Manifest, ChunkCodec), AgentError> {
    let blob = manifest_blob(ctx, &cmd.snapshot_id).await?;
    let what = format!("manifest of snapshot {}", cmd.snapshot_id);
    let header = Header::parse(&blob, &what).map_err(|e| e.to_string())?;
    let codec = ctx.codec_for(header.key_id)?;
    let m = Manifest::open(codec.keys(), ctx.site(), &cmd.snapshot_id, &blob)
        .map_err(|e| e.to_string())?;
    if m.target != cmd.target {
        return Err(format!(
            "snapshot belongs to target {}, not {}",
            m.target, cmd.target
        )
        .into());
    }
    Ok((m, codec))
}

/// The sealed manifest of `snapshot_id`, from the controller.
pub(crate) async fn manifest_blob(
    ctx: &Arc<Ctx>,
    snapshot_id: &str,
) -> Result<Vec<u8>, AgentError> {
    let req = pb::GetManifestRequest {
        site: ctx.site().into(),
        snapshot_id: snapshot_id.into(),
    };
    Ok(ctx
        .retry("get manifest", || {
            let (mut c, r) = (ctx.client(), req.clone());
            async move { c.get_manifest(r).await }
        })
        .await?
        .into_inner()
        .manifest)
}

async fn database_exists(admin: &tokio_postgres::Client, db: &str) -> Result<bool, AgentError> {
    Ok(admin
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&db])
        .await
        .map_err(|e| pg::db_error_text(&e))?
        .is_some())
}

/// Run `tool` and feed stream `s` into its stdin; a tool failure is quoted.
async fn pipe_into<S: ChunkSource>(
    ctx: &Arc<S>,
    codec: &ChunkCodec,
    job_id: &str,
    tool: &pgtools::Tool,
    args: Vec<String>,
    password: Option<&str>,
    s: &StreamEntry,
) -> Result<(), AgentError> {
    let mut proc = dump::spawn(tool, &args, password, true, false)?;
    let stdin = proc.child.stdin.take().expect("stdin piped");
    match feed(ctx, codec, job_id, s, stdin).await {
        Ok(()) => proc.finish().await.map(|_| ()),
        // The tool stopped reading: its own error says why.
        Err(FeedError::Write(e)) => Err(proc
            .finish()
            .await
            .err()
            .unwrap_or_else(|| format!("write to {}: {e}", proc_name(tool)).into())),
        Err(FeedError::Data(e) | FeedError::Damaged(e)) => {
            let _ = proc.child.start_kill();
            Err(e.into())
        }
    }
}

fn proc_name(tool: &pgtools::Tool) -> String {
    tool.path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Each table's restored rows against the manifest's: as the server stored them
/// (`stored`, when the manifest's counts are the dump's own rows per table, as a COPY
/// loads them), or else counted in the restored database.
async fn verify_counts(
    t: &TargetConfig,
    db: &str,
    m: &Manifest,
    stored: Option<parallel::Stored>,
) -> Result<Vec<pb::TableCheck>, AgentError> {
    let actual = match stored {
        Some(stored) if m.row_counts_from_dump => {
            info!(database = %db, tables = stored.len(), "row counts as the server stored them");
            stored
        }
        _ => {
            info!(database = %db, "counting the restored rows");
            let client = pg::connect(t, db).await?;
            pg::row_counts(&client, m.row_counts_from_dump)
                .await
                .map_err(|e| {
                    AgentError::from(format!("count rows in {db}: {}", pg::db_error_text(&e)))
                })?
                .into_iter()
                .collect()
        }
    };
    Ok(compare(&m.row_counts, &actual))
}

/// The manifest's row counts against `actual`; a table missing there counts -1.
fn compare(
    expected: &[(String, i64)],
    actual: &std::collections::HashMap<String, i64>,
) -> Vec<pb::TableCheck> {
    expected
        .iter()
        .map(|(table, expected)| {
            let got = actual.get(table).copied().unwrap_or(-1);
            pb::TableCheck {
                table: table.clone(),
                expected_rows: *expected,
                actual_rows: got,
                ok: got == *expected,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_missing_or_short_of_rows_fails_its_check() {
        let expected = [("a".to_string(), 3), ("b".into(), 0), ("c".into(), 5)];
        let actual = std::collections::HashMap::from([("a".to_string(), 3), ("c".into(), 4)]);
        let checks = compare(&expected, &actual);
        let got: Vec<_> = checks.iter().map(|c| (c.actual_rows, c.ok)).collect();
        assert_eq!(got, vec![(3, true), (-1, false), (4, false)]);
    }

    #[test]
    fn the_dumps_major_version_comes_from_the_manifest() {
        let with = |v: &str| Manifest {
            site: "s".into(),
            target: "t".into(),
            snapshot_id: "x".into(),
            created_unix_ms: 1,
            streams: vec![],
            row_counts: vec![],
            row_counts_from_dump: true,
            source: nex_backup_shared::manifest::SourceInfo {
                pg_dump_version: v.into(),
                ..Default::default()
            },
            duration_ms: 1,
            files: vec![],
        };
        assert_eq!(dump_major(&with("15.18")), Some(15));
        assert_eq!(dump_major(&with("9.6.24")), Some(9));
        assert_eq!(dump_major(&with("17beta1")), Some(17));
        assert_eq!(dump_major(&with("")), None);
    }
}
