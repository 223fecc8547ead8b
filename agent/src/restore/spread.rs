//! Taking a custom-format archive's data blocks apart for the parallel restore: each
//! table's COPY text in pieces of about [`PIECE`] (cut at row ends), each large object in
//! parts, handed to the loading connections (`super::loader`) through bounded queues.

use std::collections::{HashMap, HashSet};
use std::io::BufRead;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

use crate::pgarchive::{ArchiveError, BLOCK_BLOBS, BLOCK_DATA, COPY_END, Reader};

/// Table data is cut into pieces of about this size, at row ends. Small enough that
/// what waits for the connections stays a few MiB (the agent's memory is bounded), large
/// enough that handing over a piece costs nothing next to loading it.
pub const PIECE: usize = 256 << 10;
/// Pieces waiting per connection.
pub const QUEUE: usize = 4;
/// A single row longer than this goes to its connection in parts.
const LONG_ROW: usize = 4 << 20;

/// One table's data: its COPY statement, a name for errors, and its name as the
/// manifest's row counts have it (quoted schema and table).
pub struct TableCopy {
    pub dump_id: i64,
    pub name: String,
    pub key: String,
    pub stmt: String,
    /// The table the COPY loads into, as the statement names it, when no other table
    /// data of the archive loads into it too (see `super::loader`'s frozen loads).
    pub sole_target: Option<String>,
}

/// What one connection is handed.
pub enum Piece {
    /// Rows of a table: whole rows, unless [`Spread`] keeps a long row's parts on one
    /// connection. `sole`: this connection gets every row of the table, and more pieces
    /// follow (read on a table's first piece: a table of more than one piece).
    Rows {
        table: Arc<TableCopy>,
        data: Bytes,
        sole: bool,
    },
    /// Bytes of large object `oid`, in order; `end` with its last part.
    Lo { oid: u32, data: Bytes, end: bool },
    /// A large-objects block is complete: commit its objects.
    LoCommit,
}

/// The data blocks the TOC announced: tables, and large-objects entries.
pub struct Blocks {
    pub tables: HashMap<i64, Arc<TableCopy>>,
    pub blobs: HashSet<i64>,
}

/// Read the data blocks and spread them over `out`; the tables whose data ended.
pub fn demux<R: BufRead>(
    mut rd: Reader<R>,
    blocks: &Blocks,
    out: Vec<mpsc::Sender<Piece>>,
    split: bool,
) -> Result<HashSet<i64>, ArchiveError> {
    let mut ended = HashSet::new();
    let mut spread = Spread {
        out,
        split,
        sticky: None,
        next: 0,
    };
    let mut acc = BytesMut::new();
    while let Some((kind, dump_id)) = rd.next_block()? {
        match kind {
            BLOCK_DATA => {
                let table = blocks.tables.get(&dump_id).ok_or_else(|| {
                    ArchiveError::Unsupported(format!("data of entry {dump_id}, not a table"))
                })?;
                table_data(&mut rd, table, &mut acc, &mut spread)?;
                ended.insert(dump_id);
            }
            BLOCK_BLOBS if blocks.blobs.contains(&dump_id) => {
                large_objects(&mut rd, &mut spread)?;
            }
            _ => {
                return Err(ArchiveError::Unsupported(format!(
                    "a data block of type {kind} for entry {dump_id}"
                )));
            }
        }
    }
    Ok(ended)
}

/// One table's COPY text, up to its end marker (which is not sent).
fn table_data<R: BufRead>(
    rd: &mut Reader<R>,
    table: &Arc<TableCopy>,
    acc: &mut BytesMut,
    spread: &mut Spread,
) -> Result<(), ArchiveError> {
    read_pieces(rd, acc, |acc| spread.rows(table, acc, false))?;
    if !acc.ends_with(COPY_END) {
        return Err(ArchiveError::Unsupported(format!(
            "table data of {} not ended by \\.",
            table.name
        )));
    }
    acc.truncate(acc.len() - COPY_END.len());
    spread.rows(table, acc, true)
}

/// Read pieces into `acc` up to the end of a block (or of a large object), handing it to
/// `full` whenever it holds a [`PIECE`] or more.
fn read_pieces<R: BufRead>(
    rd: &mut Reader<R>,
    acc: &mut BytesMut,
    mut full: impl FnMut(&mut BytesMut) -> Result<(), ArchiveError>,
) -> Result<(), ArchiveError> {
    while let Some(mut left) = rd.piece_len()? {
        while left > 0 {
            let n = left.min(PIECE as u64) as usize;
            let start = acc.len();
            acc.resize(start + n, 0);
            rd.read_exact(&mut acc[start..])?;
            left -= n as u64;
            if acc.len() >= PIECE {
                full(acc)?;
            }
        }
    }
    Ok(())
}

/// A large-objects block: per object its oid and its bytes, up to a zero oid.
fn large_objects<R: BufRead>(rd: &mut Reader<R>, spread: &mut Spread) -> Result<(), ArchiveError> {
    loop {
        let oid = rd.int()?;
        if oid == 0 {
            return spread.send(Piece::LoCommit, false);
        }
        let oid = u32::try_from(oid)
            .map_err(|_| ArchiveError::Unsupported(format!("large object oid {oid}")))?;
        let mut acc = BytesMut::new();
        read_pieces(rd, &mut acc, |acc| {
            let data = acc.split().freeze();
            spread.send(
                Piece::Lo {
                    oid,
                    data,
                    end: false,
                },
                true,
            )
        })?;
        let data = acc.split().freeze();
        spread.send(
            Piece::Lo {
                oid,
                data,
                end: true,
            },
            true,
        )?;
    }
}

/// Hands pieces to the connection with the most room; the parts of one long row all
/// go to the same one, as do a large-objects block's and (unless `split`) a table's.
struct Spread {
    out: Vec<mpsc::Sender<Piece>>,
    split: bool,
    /// The connection holding an unfinished row, table or large-objects block.
    sticky: Option<usize>,
    next: usize,
}

impl Spread {
    /// Send the whole rows of `acc` (all of it when `last`), keeping the rest.
    fn rows(
        &mut self,
        table: &Arc<TableCopy>,
        acc: &mut BytesMut,
        last: bool,
    ) -> Result<(), ArchiveError> {
        // Mid-table, the end marker may be arriving: never send its first bytes.
        let limit = if last {
            acc.len()
        } else {
            acc.len().saturating_sub(COPY_END.len())
        };
        let cut = acc[..limit]
            .iter()
            .rposition(|&b| b == b'\n')
            .map(|i| i + 1);
        let piece = |data, sole| Piece::Rows {
            table: table.clone(),
            data,
            sole,
        };
        match cut {
            // Unless tables may be split, a table stays with its connection to its end
            // (its last piece always ends a row).
            Some(cut) => {
                let keep = !self.split && !last;
                self.send(piece(acc.split_to(cut).freeze(), keep), keep)
            }
            None if last && !acc.is_empty() => Err(ArchiveError::Unsupported(format!(
                "table data of {} ends inside a row",
                table.name
            ))),
            None if limit >= LONG_ROW => {
                let part = piece(acc.split_to(limit).freeze(), !self.split);
                self.send(part, true)
            }
            None if last => {
                self.sticky = None; // an empty table: nothing to load
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Send `piece`; `keep`: what follows goes to the same connection.
    fn send(&mut self, piece: Piece, keep: bool) -> Result<(), ArchiveError> {
        let stopped = || ArchiveError::Io(std::io::Error::other("a loading connection stopped"));
        if self.out.iter().any(|o| o.is_closed()) {
            return Err(stopped());
        }
        let n = self.out.len();
        let w = self.sticky.unwrap_or_else(|| {
            let start = self.next;
            self.next = (self.next + 1) % n;
            (0..n)
                .map(|i| (start + i) % n)
                .min_by_key(|&w| std::cmp::Reverse(self.out[w].capacity()))
                .unwrap_or(0)
        });
        self.sticky = keep.then_some(w);
        self.out[w].blocking_send(piece).map_err(|_| stopped())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pgarchive::testing::archive;

    /// Demux `a` over `n` connections; what each received, drained as it comes.
    fn run(
        a: Vec<u8>,
        n: usize,
        split: bool,
    ) -> (Result<HashSet<i64>, ArchiveError>, Vec<Vec<Piece>>) {
        let table = Arc::new(TableCopy {
            dump_id: 5,
            name: "sch.t".into(),
            key: "sch.t".into(),
            stmt: "COPY ...".into(),
            sole_target: None,
        });
        let blocks = Blocks {
            tables: HashMap::from([(5, table)]),
            blobs: HashSet::from([6]),
        };
        let (txs, mut rxs): (Vec<_>, Vec<_>) = (0..n).map(|_| mpsc::channel(QUEUE)).unzip();
        let demuxed = std::thread::spawn(move || {
            let mut rd = Reader::new(&a[..]);
            rd.toc()?;
            demux(rd, &blocks, txs, split)
        });
        let mut got: Vec<Vec<Piece>> = (0..n).map(|_| vec![]).collect();
        loop {
            let mut open = false;
            for (i, rx) in rxs.iter_mut().enumerate() {
                match rx.try_recv() {
                    Ok(p) => {
                        got[i].push(p);
                        open = true;
                    }
                    Err(mpsc::error::TryRecvError::Empty) => open = true,
                    Err(mpsc::error::TryRecvError::Disconnected) => {}
                }
            }
            if !open {
                break;
            }
        }
        (demuxed.join().unwrap(), got)
    }

    #[test]
    fn an_empty_table_ends_without_rows() {
        let (r, got) = run(archive(COPY_END, 4096, b""), 2, false);
        assert_eq!(r.unwrap(), HashSet::from([5]));
        assert!(got.iter().all(|g| rows_of(g).is_empty()), "no rows sent");
    }

    fn rows_of(pieces: &[Piece]) -> Vec<u8> {
        let mut all = vec![];
        for p in pieces {
            if let Piece::Rows { data, .. } = p {
                assert!(data.ends_with(b"\n"), "pieces end at a row end");
                all.extend_from_slice(data);
            }
        }
        all
    }

    /// Whether the first rows sent to a connection came as the sole loader of their table.
    fn sole(pieces: &[Piece]) -> Option<bool> {
        pieces.iter().find_map(|p| match p {
            Piece::Rows { sole, .. } => Some(*sole),
            _ => None,
        })
    }

    fn table(rows: usize) -> Vec<u8> {
        (0..rows)
            .map(|i| format!("{i}\t{}\\n{i}\n", "x".repeat(100)))
            .collect::<String>()
            .into_bytes()
    }

    #[test]
    fn a_table_stays_on_one_connection_in_order_unless_split() {
        let rows = table(30_000); // about 3.2 MiB
        let data = [rows.clone(), COPY_END.to_vec()].concat();
        let (r, got) = run(archive(&data, 4096, b"large object"), 2, false);
        assert_eq!(r.unwrap(), HashSet::from([5]), "the table's data ended");
        let with_rows: Vec<_> = got.iter().filter(|g| !rows_of(g).is_empty()).collect();
        assert_eq!(with_rows.len(), 1, "one connection");
        assert_eq!(
            rows_of(with_rows[0]),
            rows,
            "in order, without the end marker"
        );
        assert_eq!(
            sole(with_rows[0]),
            Some(true),
            "a table of many pieces, alone"
        );
        let one = [table(3), COPY_END.to_vec()].concat();
        let (_, got) = run(archive(&one, 4096, b""), 2, false);
        let first = got.iter().find_map(|g| sole(g));
        assert_eq!(first, Some(false), "a table of one piece");

        let (r, got) = run(archive(&data, 4096, b""), 2, true);
        r.unwrap();
        assert!(
            got.iter()
                .flatten()
                .all(|p| !matches!(p, Piece::Rows { sole: true, .. })),
            "a split table is never loaded alone"
        );
        let (a, b) = (rows_of(&got[0]), rows_of(&got[1]));
        assert!(!a.is_empty() && !b.is_empty(), "split over both");
        let mut all: Vec<&[u8]> = a.split_inclusive(|&c| c == b'\n').collect();
        all.extend(b.split_inclusive(|&c| c == b'\n'));
        all.sort();
        let mut want: Vec<&[u8]> = rows.split_inclusive(|&c| c == b'\n').collect();
        want.sort();
        assert_eq!(all, want, "every row once, cut only at row ends");
    }

    #[test]
    fn a_large_object_goes_in_parts_to_one_connection_then_commits() {
        let lo: Vec<u8> = (0..(3 * PIECE)).map(|i| (i % 251) as u8).collect();
        let data = [table(3), COPY_END.to_vec()].concat();
        let (r, got) = run(archive(&data, 16384, &lo), 2, true);
        r.unwrap();
        let mine: Vec<&Piece> = got
            .iter()
            .flatten()
            .filter(|p| !matches!(p, Piece::Rows { .. }))
            .collect();
        let on: Vec<usize> = (0..2)
            .filter(|&i| got[i].iter().any(|p| !matches!(p, Piece::Rows { .. })))
            .collect();
        assert_eq!(on.len(), 1, "one connection");
        let mut bytes = vec![];
        for (i, p) in mine.iter().enumerate() {
            match p {
                Piece::Lo { oid, data, end } => {
                    assert_eq!(*oid, 16385);
                    assert_eq!(*end, i == mine.len() - 2);
                    bytes.extend_from_slice(data);
                }
                Piece::LoCommit => assert_eq!(i, mine.len() - 1),
                Piece::Rows { .. } => unreachable!(),
            }
        }
        assert_eq!(bytes, lo);
    }

    #[test]
    fn broken_table_data_is_refused() {
        let (r, _) = run(archive(b"1\tno end marker\n", 7, b""), 2, false);
        assert!(matches!(r, Err(ArchiveError::Unsupported(_))), "{r:?}");
        let inside = [b"1\tcut".to_vec(), COPY_END.to_vec()].concat();
        let (r, _) = run(archive(&inside, 7, b""), 2, false);
        assert!(r.is_err());
        let a = archive(&[table(10), COPY_END.to_vec()].concat(), 7, b"");
        let (r, _) = run(a[..a.len() - 20].to_vec(), 2, false);
        assert!(matches!(r, Err(ArchiveError::Io(_))), "{r:?}");
    }
}
