//! One loading connection of the parallel restore: the pieces handed to it
//! (`super::spread`) become one `COPY ... FROM STDIN` per run of a table's pieces, and
//! large objects are written into the objects the schema step created, one transaction
//! per large-objects block.
//!
//! A table this connection loads alone, in more than one piece, is loaded frozen:
//! `BEGIN; TRUNCATE ONLY t; COPY t ... FROM STDIN WITH (FREEZE); COMMIT`. The table was
//! created moments before in the database the restore created, no other data entry of
//! the archive loads into it ([`mark_sole_targets`]), and it is truncated only when,
//! locked, it holds no row ([`begin_frozen`]), so the truncate removes nothing; it is
//! what lets the server write the rows already frozen and their pages all-visible. The
//! restored database then needs no pass that sets hint bits and freezes every page again
//! (the index builds after the data read clean pages, and the first vacuum has nothing
//! to do), and the load itself writes a little less. Only an ordinary table (`relkind`
//! r) is loaded so; when it cannot be, its rows load as they would otherwise.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures::SinkExt;
use tokio::sync::mpsc;
use tokio_postgres::{Client, CopyInSink};

use super::spread::{Piece, TableCopy};
use crate::error::AgentError;
use crate::pg;

type Sink = Pin<Box<CopyInSink<Bytes>>>;

/// `INV_WRITE` of `libpq/libpq-fs.h`.
const INV_WRITE: i32 = 0x20000;

/// What a connection is in the middle of.
enum Open {
    Nothing,
    /// A COPY; `frozen` when it runs in a transaction of its own to commit after it.
    Copy {
        table: Arc<TableCopy>,
        sink: Sink,
        frozen: bool,
    },
    /// A transaction writing large objects; `Some` while one is open: its oid and fd.
    Objects(Option<(u32, i32)>),
}

/// What one COPY loaded: the table's dump id, the rows the server stored, and whether
/// they were loaded frozen.
pub struct Copied {
    pub dump_id: i64,
    pub rows: u64,
    pub frozen: bool,
}

/// Load the pieces sent to one connection; what each COPY loaded.
pub async fn run(client: Client, mut rx: mpsc::Receiver<Piece>) -> Result<Vec<Copied>, AgentError> {
    let mut rows = Vec::new();
    let mut open = Open::Nothing;
    while let Some(p) = rx.recv().await {
        match p {
            Piece::Rows { table, data, sole } => {
                let same =
                    matches!(&open, Open::Copy { table: t, .. } if t.dump_id == table.dump_id);
                if !same {
                    finish(
                        &client,
                        std::mem::replace(&mut open, Open::Nothing),
                        &mut rows,
                    )
                    .await?;
                    open = start_copy(&client, table, sole).await?;
                }
                if let Open::Copy { table, sink, .. } = &mut open {
                    sink.send(data).await.map_err(|e| failed(table, &e))?;
                }
            }
            Piece::Lo { oid, data, end } => {
                if !matches!(open, Open::Objects(_)) {
                    finish(
                        &client,
                        std::mem::replace(&mut open, Open::Nothing),
                        &mut rows,
                    )
                    .await?;
                    client
                        .batch_execute("BEGIN")
                        .await
                        .map_err(|e| lo_failed(oid, &e))?;
                    open = Open::Objects(None);
                }
                if let Open::Objects(cur) = &mut open {
                    write_object(&client, cur, oid, &data, end).await?;
                }
            }
            Piece::LoCommit => {
                finish(
                    &client,
                    std::mem::replace(&mut open, Open::Nothing),
                    &mut rows,
                )
                .await?;
            }
        }
    }
    finish(&client, open, &mut rows).await?;
    Ok(rows)
}

/// Append `data` to large object `oid` (opening it first), closing it at its `end`.
async fn write_object(
    client: &Client,
    cur: &mut Option<(u32, i32)>,
    oid: u32,
    data: &[u8],
    end: bool,
) -> Result<(), AgentError> {
    let fd = match *cur {
        Some((o, fd)) if o == oid => fd,
        Some((o, _)) => return Err(format!("large object {o} left unfinished").into()),
        None => {
            let row = client
                .query_one("SELECT pg_catalog.lo_open($1, $2)", &[&oid, &INV_WRITE])
                .await
                .map_err(|e| lo_failed(oid, &e))?;
            let fd: i32 = row.get(0);
            *cur = Some((oid, fd));
            fd
        }
    };
    if !data.is_empty() {
        client
            .execute("SELECT pg_catalog.lowrite($1, $2)", &[&fd, &data])
            .await
            .map_err(|e| lo_failed(oid, &e))?;
    }
    if end {
        client
            .execute("SELECT pg_catalog.lo_close($1)", &[&fd])
            .await
            .map_err(|e| lo_failed(oid, &e))?;
        *cur = None;
    }
    Ok(())
}

/// End what the connection is in the middle of: finish a COPY (recording its rows),
/// commit a large-objects transaction.
async fn finish(client: &Client, open: Open, rows: &mut Vec<Copied>) -> Result<(), AgentError> {
    match open {
        Open::Nothing => Ok(()),
        Open::Copy {
            table,
            mut sink,
            frozen,
        } => {
            let n = sink
                .as_mut()
                .finish()
                .await
                .map_err(|e| failed(&table, &e))?;
            if frozen {
                client
                    .batch_execute("COMMIT")
                    .await
                    .map_err(|e| failed(&table, &e))?;
            }
            rows.push(Copied {
                dump_id: table.dump_id,
                rows: n,
                frozen,
            });
            Ok(())
        }
        Open::Objects(Some((oid, _))) => {
            Err(format!("the archive ended inside large object {oid}").into())
        }
        Open::Objects(None) => client.batch_execute("COMMIT").await.map_err(|e| {
            AgentError::from(format!("commit large objects: {}", pg::db_error_text(&e)))
        }),
    }
}

/// Start the COPY of `table`: frozen when this connection loads it `sole`ly (see the
/// module's documentation), plain otherwise.
async fn start_copy(
    client: &Client,
    table: Arc<TableCopy>,
    sole: bool,
) -> Result<Open, AgentError> {
    let target = table.sole_target.as_deref().filter(|_| sole);
    let frozen = match target {
        Some(target) => begin_frozen(client, target).await,
        None => false,
    };
    let stmt = if frozen {
        format!("{} WITH (FREEZE)", table.stmt)
    } else {
        table.stmt.clone()
    };
    let sink = client
        .copy_in::<str, Bytes>(stmt.as_str())
        .await
        .map_err(|e| failed(&table, &e))?;
    Ok(Open::Copy {
        table,
        sink: Box::pin(sink),
        frozen,
    })
}

/// Open the transaction of a frozen load into `target`, an ordinary table, and empty
/// it; false (no transaction left open) when it cannot be done. The table is emptied
/// only if it holds no row: locked first, then looked at. A table can hold rows before
/// its data loads: an extension's configuration table (`pg_extension_config_dump`)
/// gets the rows the extension ships from `CREATE EXTENSION`, and the dump holds only
/// those added later, so a truncate would lose the shipped ones while every count still
/// matched.
async fn begin_frozen(client: &Client, target: &str) -> bool {
    let kind = client
        .query_opt(
            "SELECT c.relkind::text FROM pg_catalog.pg_class c WHERE c.oid = pg_catalog.to_regclass($1)",
            &[&target],
        )
        .await;
    match kind {
        Ok(Some(row)) if row.get::<_, String>(0) == "r" => {}
        // A partitioned or foreign table: COPY FREEZE does not apply (and a foreign
        // table is not to be scanned for rows).
        Ok(_) => return false,
        Err(e) => return not_frozen(target, &e),
    }
    let emptied = async {
        client
            .batch_execute(&format!(
                "BEGIN; LOCK TABLE ONLY {target} IN ACCESS EXCLUSIVE MODE"
            ))
            .await?;
        // A simple query: it leaves no portal open, which FREEZE would refuse.
        let any = client
            .simple_query(&format!("SELECT 1 FROM ONLY {target} LIMIT 1"))
            .await?;
        let empty = !any
            .iter()
            .any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)));
        if empty {
            client
                .batch_execute(&format!("TRUNCATE ONLY {target}"))
                .await?;
        }
        Ok::<_, tokio_postgres::Error>(empty)
    };
    match emptied.await {
        Ok(true) => true,
        Ok(false) => {
            tracing::info!(table = %target, "table holds rows before its data loads (an extension's?): loading without FREEZE");
            let _ = client.batch_execute("ROLLBACK").await;
            false
        }
        Err(e) => {
            let _ = client.batch_execute("ROLLBACK").await;
            not_frozen(target, &e)
        }
    }
}

/// A frozen load refused by the server (say, a role without TRUNCATE on the table): the
/// rows load as they would otherwise; the reason is logged.
fn not_frozen(target: &str, e: &tokio_postgres::Error) -> bool {
    tracing::info!(table = %target, error = %pg::db_error_text(e), "loading without FREEZE");
    false
}

/// Set each table's [`TableCopy::sole_target`]: the table its COPY statement loads into,
/// unless another table's data loads into it too (pg_dump's
/// `--load-via-partition-root` loads every partition's rows through the root).
pub fn mark_sole_targets(tables: &mut [TableCopy]) {
    for t in tables.iter_mut() {
        t.sole_target = copy_target(&t.stmt).map(str::to_string);
    }
    let mut loads: HashMap<String, usize> = HashMap::new();
    for target in tables.iter().filter_map(|t| t.sole_target.clone()) {
        *loads.entry(target).or_default() += 1;
    }
    for t in tables.iter_mut() {
        t.sole_target = t.sole_target.take().filter(|target| loads[target] == 1);
    }
}

/// The table `COPY <table> [(columns)] FROM stdin` names, as written (quotes kept).
fn copy_target(stmt: &str) -> Option<&str> {
    let rest = stmt.strip_prefix("COPY ")?;
    let mut quoted = false;
    let end = rest
        .char_indices()
        .find(|&(_, c)| {
            if c == '"' {
                quoted = !quoted;
            }
            !quoted && c == ' '
        })
        .map(|(i, _)| i)?;
    Some(&rest[..end]).filter(|t| !t.is_empty())
}

fn failed(t: &TableCopy, e: &tokio_postgres::Error) -> AgentError {
    AgentError::from(format!("load table {}: {}", t.name, pg::db_error_text(e)))
}

fn lo_failed(oid: u32, e: &tokio_postgres::Error) -> AgentError {
    AgentError::from(format!(
        "write large object {oid}: {}",
        pg::db_error_text(e)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(id: i64, stmt: &str) -> TableCopy {
        TableCopy {
            dump_id: id,
            name: format!("t{id}"),
            key: format!("t{id}"),
            stmt: stmt.into(),
            sole_target: None,
        }
    }

    #[test]
    fn the_copy_target_is_read_with_its_quotes() {
        let t = |s| copy_target(s);
        assert_eq!(t("COPY public.t (a, b) FROM stdin"), Some("public.t"));
        assert_eq!(t("COPY public.t FROM stdin"), Some("public.t"));
        let odd = r#"COPY "my schema"."a ""b"" (c" (x) FROM stdin"#;
        assert_eq!(t(odd), Some(r#""my schema"."a ""b"" (c""#));
        assert_eq!(t("COPY  FROM stdin"), None);
        assert_eq!(t("SELECT 1"), None);
    }

    #[test]
    fn a_table_loaded_by_several_entries_is_nobodys_sole_target() {
        let mut tables = vec![
            copy(1, "COPY public.root (a) FROM stdin"),
            copy(2, "COPY public.root (a) FROM stdin"),
            copy(3, "COPY public.leaf (a) FROM stdin"),
            copy(4, "COPY ... FROM stdin"),
        ];
        mark_sole_targets(&mut tables);
        let got: Vec<_> = tables.iter().map(|t| t.sole_target.as_deref()).collect();
        assert_eq!(got, [None, None, Some("public.leaf"), Some("...")]);
    }
}
