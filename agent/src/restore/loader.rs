//! One loading connection of the parallel restore: the pieces handed to it
//! (`super::spread`) become one `COPY ... FROM STDIN` per run of a table's pieces, and
//! large objects are written into the objects the schema step created, one transaction
//! per large-objects block.

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
    Copy(Arc<TableCopy>, Sink),
    /// A transaction writing large objects; `Some` while one is open: its oid and fd.
    Objects(Option<(u32, i32)>),
}

/// Load the pieces sent to one connection; the rows each COPY loaded, by table.
pub async fn run(
    client: Client,
    mut rx: mpsc::Receiver<Piece>,
) -> Result<Vec<(i64, u64)>, AgentError> {
    let mut rows = Vec::new();
    let mut open = Open::Nothing;
    while let Some(p) = rx.recv().await {
        match p {
            Piece::Rows { table, data } => {
                let same = matches!(&open, Open::Copy(t, _) if t.dump_id == table.dump_id);
                if !same {
                    finish(
                        &client,
                        std::mem::replace(&mut open, Open::Nothing),
                        &mut rows,
                    )
                    .await?;
                    let sink = client
                        .copy_in::<str, Bytes>(table.stmt.as_str())
                        .await
                        .map_err(|e| failed(&table, &e))?;
                    open = Open::Copy(table, Box::pin(sink));
                }
                if let Open::Copy(t, sink) = &mut open {
                    sink.send(data).await.map_err(|e| failed(t, &e))?;
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
async fn finish(client: &Client, open: Open, rows: &mut Vec<(i64, u64)>) -> Result<(), AgentError> {
    match open {
        Open::Nothing => Ok(()),
        Open::Copy(t, mut sink) => {
            let n = sink.as_mut().finish().await.map_err(|e| failed(&t, &e))?;
            rows.push((t.dump_id, n));
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

fn failed(t: &TableCopy, e: &tokio_postgres::Error) -> AgentError {
    AgentError::from(format!("load table {}: {}", t.name, pg::db_error_text(e)))
}

fn lo_failed(oid: u32, e: &tokio_postgres::Error) -> AgentError {
    AgentError::from(format!(
        "write large object {oid}: {}",
        pg::db_error_text(e)
    ))
}
