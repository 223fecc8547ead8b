//! A database restore over several connections, instead of one single-transaction
//! `pg_restore` that loads every table in turn on one server process.
//!
//! The stream is fetched and verified once, in order, as before ([`feed`]: chunk tags,
//! the stream digest). It is read as an archive (`crate::pgarchive`) on a thread:
//! 1. the header and TOC are kept in a temporary file, a TOC-only archive; from it
//!    `pg_restore --section=pre-data` creates the schema;
//! 2. each table's COPY text goes in pieces of about 256 KiB (`super::spread`) to one of
//!    `jobs` connections, each loading with `COPY ... FROM STDIN`, so tables load side
//!    by side (a table of more than one piece frozen, `super::loader`); with
//!    `restore_split_tables` a big table's pieces (cut at row ends) are spread over
//!    several connections at once, and its rows are then stored in another physical
//!    order than in the source (off by default: a plain dump of the restored database
//!    then equals the source's);
//! 3. once every row is in, `pg_restore -j jobs` restores everything else from the TOC
//!    file (sequence values, then indexes, constraints, triggers, grants...) in parallel.
//!
//! Each COPY's command tag says how many rows the server stored; summed by table, they
//! are the restored row counts checked against the manifest ([`Stored`]), so the check
//! costs no second scan of the restored data (a `count(*)` of every table, with hint bits
//! to write on every page of a freshly loaded table).
//!
//! Each COPY commits on its own: a restore into a new database does not need one
//! transaction, since a failed one is discarded whole (`super::swap::discard`; drills are
//! dropped).
//!
//! Large objects are written on one connection per large-objects block, into the objects
//! the schema step created (`super::loader`). An archive this cannot take apart (another
//! encoding than UTF8, data of another kind, an archive format it does not read) goes,
//! whole, to one `pg_restore --single-transaction`: the TOC bytes already read are
//! replayed first.

use std::collections::{HashMap, HashSet};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::sync::Arc;

use nex_backup_shared::chunk::ChunkCodec;
use nex_backup_shared::manifest::StreamEntry;
use tokio::io::{AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tokio_util::io::SyncIoBridge;
use tokio_util::task::AbortOnDropHandle;
use tracing::{info, warn};

use super::feed::{ChunkSource, FeedError, feed};
use super::loader;
use super::spread::{Blocks, QUEUE, TableCopy, demux};
use crate::backup::dump;
use crate::config::{RestoreTuning, TargetConfig};
use crate::error::AgentError;
use crate::pg::quote_ident;
use crate::pgarchive::{Entry, Reader};
use crate::{pg, pgtools};

/// What the workers' sessions set, as `pg_restore` does for its own: no timeouts from
/// the role's defaults, `xmloption` for XML values, row security that errs instead of
/// filtering, and the empty search path pg_dump's data were written under.
const SESSION: &str = "SET statement_timeout = 0; SET lock_timeout = 0; \
     SET idle_in_transaction_session_timeout = 0; SET xmloption = content; \
     SET client_min_messages = warning; SET row_security = off; \
     SET synchronous_commit = off; SELECT pg_catalog.set_config('search_path', '', false);";

/// Where and how a database stream is restored.
pub struct Load<'a> {
    pub t: &'a TargetConfig,
    pub db: &'a str,
    pub no_owner: bool,
    /// Leave out grants and revokes (`--no-privileges`).
    pub no_privileges: bool,
    /// Create everything in the database's default tablespace (`--no-tablespaces`).
    pub no_tablespaces: bool,
    /// Connections for table data (and `pg_restore -j` after); may a table be split.
    pub tuning: RestoreTuning,
    pub password: Option<String>,
    pub pg_restore: pgtools::Tool,
}

impl Load<'_> {
    fn args(&self, extra: &[&str], archive: Option<&Path>) -> Vec<String> {
        let mut args = dump::conn_args(self.t, self.db);
        args.extend(extra.iter().map(|s| s.to_string()));
        if self.no_owner {
            args.push("--no-owner".into());
        }
        if self.no_privileges {
            args.push("--no-privileges".into());
        }
        if self.no_tablespaces {
            args.push("--no-tablespaces".into());
        }
        if let Some(a) = archive {
            args.push(a.display().to_string());
        }
        args
    }

    /// One `pg_restore --single-transaction` reading the archive from its stdin.
    pub fn serial_args(&self) -> Vec<String> {
        self.args(&["--single-transaction"], None)
    }

    /// Run pg_restore on the TOC file with `extra` arguments.
    async fn pg_restore(&self, extra: &[&str], toc: &Path) -> Result<(), AgentError> {
        let args = self.args(extra, Some(toc));
        let proc = dump::spawn(
            &self.pg_restore,
            &args,
            self.password.as_deref(),
            false,
            false,
        )?;
        proc.finish().await.map(|_| ())
    }
}

/// How the TOC lets the stream be restored: its data blocks, and the entries left to
/// `pg_restore` after the data.
struct Plan {
    blocks: Arc<Blocks>,
    rest: Vec<i64>,
}

/// Why an archive is restored by one pg_restore instead.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct NotParallel(String);

impl Plan {
    fn new(entries: &[Entry]) -> Result<Plan, NotParallel> {
        let mut blocks = Blocks {
            tables: HashMap::new(),
            blobs: HashSet::new(),
        };
        let mut rest = Vec::new();
        let mut tables = Vec::new();
        for e in entries {
            match e.desc.as_str() {
                "ENCODING" if !e.defn.contains("'UTF8'") => {
                    return Err(NotParallel(format!("the dump's {}", e.defn.trim())));
                }
                "TABLE DATA" => {
                    let stmt = e.copy_stmt.as_deref().unwrap_or_default().trim_end();
                    let stmt = stmt.strip_suffix(';').unwrap_or(stmt);
                    if !(stmt.starts_with("COPY ") && stmt.ends_with(" FROM stdin")) {
                        return Err(NotParallel(format!(
                            "table data of {} without a COPY statement",
                            e.tag
                        )));
                    }
                    tables.push(TableCopy {
                        dump_id: e.dump_id,
                        name: format!("{}.{}", e.namespace, e.tag),
                        key: format!("{}.{}", quote_ident(&e.namespace), quote_ident(&e.tag)),
                        stmt: stmt.to_string(),
                        sole_target: None,
                    });
                }
                "BLOBS" | "LARGE OBJECTS" if e.had_dumper => {
                    blocks.blobs.insert(e.dump_id);
                }
                _ if e.had_dumper => {
                    return Err(NotParallel(format!("the dump has {} data", e.desc)));
                }
                _ => rest.push(e.dump_id),
            }
        }
        loader::mark_sole_targets(&mut tables);
        blocks.tables = (tables.into_iter())
            .map(|t| (t.dump_id, Arc::new(t)))
            .collect();
        Ok(Plan {
            blocks: Arc::new(blocks),
            rest,
        })
    }
}

/// The archive's bytes, read from the fed stream; the first ones also written to the
/// TOC file.
struct Recording {
    inner: SyncIoBridge<DuplexStream>,
    out: Option<BufWriter<std::fs::File>>,
}

impl Read for Recording {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(out) = &mut self.out {
            out.write_all(&buf[..n])?;
        }
        Ok(n)
    }
}

type Archive = Reader<BufReader<Recording>>;

/// Read the header and TOC (recording them into `out`) and judge them. On a plan the
/// TOC file is cut to exactly the header and TOC; otherwise it holds every byte read.
fn read_toc(
    r: DuplexStream,
    out: std::fs::File,
) -> (Archive, Result<Plan, NotParallel>, std::io::Result<()>) {
    let rec = Recording {
        inner: SyncIoBridge::new(r),
        out: Some(BufWriter::new(out)),
    };
    let mut rd = Reader::new(BufReader::with_capacity(64 << 10, rec));
    let plan = match rd.toc() {
        Ok(entries) => Plan::new(&entries),
        Err(e) => Err(NotParallel(e.to_string())),
    };
    let consumed = rd.consumed();
    let saved = match rd.get_mut().get_mut().out.take() {
        Some(out) => out
            .into_inner()
            .map_err(|e| e.into_error())
            .and_then(|f| match plan {
                Ok(_) => f.set_len(consumed),
                Err(_) => Ok(()),
            }),
        None => Ok(()),
    };
    (rd, plan, saved)
}

/// Each table's rows as the server counted them while storing them (COPY's command tag),
/// by the name the manifest's row counts use.
pub type Stored = HashMap<String, i64>;

/// Restore the database stream `s` as [`Load`] says. Returns what each table stored,
/// unless the stream went whole to one pg_restore.
pub async fn load<S: ChunkSource>(
    src: &Arc<S>,
    codec: &ChunkCodec,
    job_id: &str,
    s: &StreamEntry,
    l: &Load<'_>,
) -> Result<Option<Stored>, AgentError> {
    let (w, r) = tokio::io::duplex(256 << 10);
    let feeder = {
        let (src, codec, job_id, s) = (src.clone(), codec.clone(), job_id.to_string(), s.clone());
        AbortOnDropHandle::new(tokio::spawn(async move {
            feed(&src, &codec, &job_id, &s, w).await
        }))
    };
    let toc = tempfile::Builder::new()
        .prefix("nexb-toc-")
        .tempfile()
        .map_err(|e| temp_error("the archive's TOC", &e))?;
    let out = toc
        .reopen()
        .map_err(|e| format!("open {}: {e}", toc.path().display()))?;
    let (rd, plan, saved) = tokio::task::spawn_blocking(move || read_toc(r, out))
        .await
        .map_err(|e| format!("archive reader: {e}"))?;
    saved.map_err(|e| format!("write {}: {e}", toc.path().display()))?;
    let plan = match plan {
        Ok(plan) => plan,
        Err(why) => {
            info!(database = %l.db, reason = %why, "restoring with one pg_restore");
            return serial(rd, toc.path(), feeder, l).await.map(|()| None);
        }
    };
    let pre = l
        .pg_restore(&["--section=pre-data", "--exit-on-error"], toc.path())
        .await;
    if let Err(e) = pre {
        drop(rd);
        return Err(first_cause(feeder, e).await);
    }
    let loaded = load_tables(rd, &plan, feeder, l).await?;
    let rows = &loaded.rows;
    info!(
        database = %l.db,
        tables = rows.len(),
        rows = rows.values().map(|r| r.0).sum::<u64>(),
        split = rows.values().filter(|r| r.1 > 1).count(),
        frozen = loaded.frozen,
        connections = loaded.loaders,
        "table data loaded"
    );
    let stored = (plan.blocks.tables.values())
        .filter(|t| loaded.ended.contains(&t.dump_id))
        .map(|t| {
            (
                t.key.clone(),
                rows.get(&t.dump_id).map_or(0, |r| r.0) as i64,
            )
        })
        .collect();
    src.progress(
        job_id,
        "restore indexes",
        s.length,
        0,
        "indexes, constraints and the rest".into(),
    );
    let list = tempfile::Builder::new()
        .prefix("nexb-list-")
        .tempfile()
        .map_err(|e| temp_error("pg_restore's list", &e))?;
    let text: String = plan.rest.iter().map(|id| format!("{id};\n")).collect();
    std::fs::write(list.path(), text)
        .map_err(|e| format!("write {}: {e}", list.path().display()))?;
    let jobs = loaded.post_jobs.to_string();
    let list_arg = list.path().display().to_string();
    let post = [
        "--section=data",
        "--section=post-data",
        "--exit-on-error",
        "-j",
        &jobs,
        "-L",
        &list_arg,
    ];
    l.pg_restore(&post, toc.path()).await?;
    Ok(Some(stored))
}

type Feeder = AbortOnDropHandle<Result<(), FeedError>>;

/// A temporary file could not be made: say where, and how to choose another place.
fn temp_error(what: &str, e: &std::io::Error) -> AgentError {
    let dir = std::env::temp_dir();
    format!(
        "create a temporary file for {what} in {}: {e} (set TMPDIR, or TEMP on Windows, to a writable directory)",
        dir.display()
    )
    .into()
}

/// How the feed ended: `Err(Some(e))` with the fetched data's own failure (a step that
/// failed after it only saw its effect), `Err(None)` when its reader hung up early.
async fn fed(feeder: Feeder) -> Result<(), Option<AgentError>> {
    match feeder.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(FeedError::Write(_))) => Err(None),
        Ok(Err(FeedError::Data(d) | FeedError::Damaged(d))) => Err(Some(d.into())),
        Err(e) => Err(Some(format!("fetch task: {e}").into())),
    }
}

/// The error to report when a step failed with `e`: the data's own failure first.
async fn first_cause(feeder: Feeder, e: AgentError) -> AgentError {
    fed(feeder).await.err().flatten().unwrap_or(e)
}

/// What a table received: rows, and over how many connections.
type Received = (u64, usize);

/// What the data step did: each table's rows, over how many connections; the tables
/// whose data the archive ended; how many jobs the server leaves `pg_restore -j` after.
struct Loaded {
    rows: HashMap<i64, Received>,
    /// Tables loaded frozen (`super::loader`).
    frozen: usize,
    ended: HashSet<i64>,
    loaders: usize,
    post_jobs: usize,
}

/// Load every table's rows over up to `l.tuning.jobs` connections; what each table
/// received, and how many jobs the server leaves `pg_restore -j` after.
async fn load_tables(
    rd: Archive,
    plan: &Plan,
    feeder: Feeder,
    l: &Load<'_>,
) -> Result<Loaded, AgentError> {
    // One more than the loaders: `pg_restore -j N` after them needs N + 1. A server or
    // role short of connections (max_connections, CONNECTION LIMIT) still gets its
    // restore, over the connections it gave.
    let mut clients = Vec::with_capacity(l.tuning.jobs + 1);
    for _ in 0..=l.tuning.jobs {
        let connected = async {
            let c = pg::connect(l.t, l.db).await?;
            c.batch_execute(SESSION)
                .await
                .map_err(|e| AgentError::from(pg::db_error_text(&e)))?;
            Ok::<_, AgentError>(c)
        }
        .await;
        match connected {
            Ok(c) => clients.push(c),
            Err(e) if !clients.is_empty() => {
                warn!(database = %l.db, connections = clients.len(), error = %e, "fewer connections than restore_jobs + 1");
                break;
            }
            Err(e) => {
                drop(rd);
                return Err(first_cause(feeder, e).await);
            }
        }
    }
    // What pg_restore -j may use after the loaders are gone.
    let post_jobs = clients.len().saturating_sub(1).max(1);
    clients.truncate(l.tuning.jobs);
    let loaders = clients.len();
    let (senders, workers): (Vec<_>, Vec<_>) = clients
        .into_iter()
        .map(|c| {
            let (tx, rx) = mpsc::channel(QUEUE);
            (tx, AbortOnDropHandle::new(tokio::spawn(loader::run(c, rx))))
        })
        .collect();
    let blocks = plan.blocks.clone();
    let split = l.tuning.split_tables;
    let demuxed = tokio::task::spawn_blocking(move || demux(rd, &blocks, senders, split));
    let demuxed = demuxed.await.map_err(|e| format!("archive reader: {e}"))?;
    let mut rows: HashMap<i64, Received> = HashMap::new();
    let mut frozen = 0;
    let mut worker_error = None;
    for w in workers {
        match w.await.map_err(|e| format!("loader: {e}"))? {
            Ok(got) => {
                let mine: HashSet<i64> = got.iter().map(|c| c.dump_id).collect();
                frozen += got.iter().filter(|c| c.frozen).count();
                got.into_iter()
                    .for_each(|c| rows.entry(c.dump_id).or_default().0 += c.rows);
                mine.into_iter()
                    .for_each(|id| rows.entry(id).or_default().1 += 1);
            }
            Err(e) => worker_error = worker_error.or(Some(e)),
        }
    }
    let fed = fed(feeder).await;
    if let Err(Some(e)) = fed {
        return Err(e);
    }
    if let Some(e) = worker_error {
        return Err(e);
    }
    let ended = demuxed.map_err(|e| format!("read the archive: {e}"))?;
    if fed.is_err() {
        return Err("the archive reader stopped before the stream's end".into());
    }
    Ok(Loaded {
        rows,
        frozen,
        ended,
        loaders,
        post_jobs,
    })
}

/// Restore the whole stream with one `pg_restore --single-transaction`: the bytes the
/// TOC reader took first (recorded in `recorded`), then the rest.
async fn serial(
    rd: Archive,
    recorded: &Path,
    feeder: Feeder,
    l: &Load<'_>,
) -> Result<(), AgentError> {
    let rest = rd.into_inner().into_inner().inner.into_inner();
    let mut proc = dump::spawn(
        &l.pg_restore,
        &l.serial_args(),
        l.password.as_deref(),
        true,
        false,
    )?;
    let mut stdin = proc.child.stdin.take().expect("stdin piped");
    let written = async {
        let mut first = tokio::fs::File::open(recorded).await?;
        tokio::io::copy(&mut first, &mut stdin).await?;
        let mut rest = rest;
        tokio::io::copy(&mut rest, &mut stdin).await?;
        stdin.shutdown().await
    }
    .await;
    if let Err(Some(e)) = fed(feeder).await {
        let _ = proc.child.start_kill();
        return Err(e);
    }
    match written {
        Ok(()) => proc.finish().await.map(|_| ()),
        Err(e) => Err(proc
            .finish()
            .await
            .err()
            .unwrap_or_else(|| format!("write to pg_restore: {e}").into())),
    }
}
