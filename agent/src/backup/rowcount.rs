//! Row counts from the dump itself, as it streams past: no second scan of the customer's
//! data. `pg_dump -Fc -Z0` writes a custom-format archive whose table data are the
//! tables' COPY text, one row per line (a newline inside a value is written `\n`), so
//! counting the newlines of each `TABLE DATA` entry's blocks (less the three of the
//! `\.` end line pg_dump adds) counts the rows that were actually dumped, a stronger
//! check than a `count(*)` beside the dump.
//!
//! The archive's format: `crate::pgarchive`.
//!
//! An archive it cannot read (another version, compression, a truncated stream) makes
//! the counter give up: the caller then counts with `count(*)` as before, never with a guess.
//! Tables loaded through their partition root (`-- load via partition root`) are left
//! out: their rows land wherever the root routes them.

use std::collections::HashMap;
use std::io::{BufRead, Read};

use crate::pg::quote_ident;
pub use crate::pgarchive::ArchiveError as CountError;
use crate::pgarchive::{BLOCK_BLOBS, BLOCK_DATA, COPY_END as END, Reader};

/// Count the rows of every table in the custom-format archive `r` (read to its end).
/// Keys are `"schema"."table"`, as `pg::row_counts` names them.
pub fn count_rows<R: BufRead>(r: R) -> Result<Vec<(String, i64)>, CountError> {
    let mut rd = Reader::new(r);
    // A `TABLE DATA` entry: the table it fills, or none when it is loaded through its
    // partition root.
    let entries: HashMap<i64, Option<String>> = rd
        .toc()?
        .into_iter()
        .filter(|e| e.desc == "TABLE DATA")
        .map(|e| {
            let via_root = e.defn.starts_with("-- load via partition root ");
            let table = format!("{}.{}", quote_ident(&e.namespace), quote_ident(&e.tag));
            (e.dump_id, (!via_root).then_some(table))
        })
        .collect();
    let mut counts: Vec<(String, i64)> = vec![];
    while let Some((block, dump_id)) = rd.next_block()? {
        match block {
            BLOCK_DATA => {
                let (mut lines, mut tail) = (0i64, Tail::default());
                while let Some(len) = rd.piece_len()? {
                    rd.each_slice(len, |got| {
                        lines += memchr::memchr_iter(b'\n', got).count() as i64;
                        tail.push(got);
                    })?;
                }
                if !tail.is(END) {
                    return Err(CountError::Unsupported(format!(
                        "table data (entry {dump_id}) not ended by \\."
                    )));
                }
                let rows = lines - 3;
                if let Some(Some(table)) = entries.get(&dump_id) {
                    counts.push((table.clone(), rows));
                }
            }
            BLOCK_BLOBS => rd.skip_blobs()?,
            other => {
                return Err(CountError::Unsupported(format!(
                    "a data block of type {other}"
                )));
            }
        }
    }
    counts.sort();
    Ok(counts)
}

/// The last bytes of a table's data seen so far (as many as [`END`] has).
#[derive(Default)]
struct Tail {
    bytes: [u8; END.len()],
    len: usize,
}

impl Tail {
    fn push(&mut self, got: &[u8]) {
        let n = END.len();
        if got.len() >= n {
            self.bytes.copy_from_slice(&got[got.len() - n..]);
            self.len = n;
            return;
        }
        let keep = (n - got.len()).min(self.len);
        self.bytes.copy_within(self.len - keep..self.len, 0);
        self.bytes[keep..keep + got.len()].copy_from_slice(got);
        self.len = keep + got.len();
    }

    fn is(&self, end: &[u8]) -> bool {
        &self.bytes[..self.len] == end
    }
}

/// The row counter's thread: its counts, once the stream ended.
pub type Counting = std::thread::JoinHandle<Result<Vec<(String, i64)>, CountError>>;

/// Reads what a tap sends (blocking; run on its own thread).
struct Tapped {
    rx: tokio::sync::mpsc::Receiver<bytes::Bytes>,
    current: bytes::Bytes,
}

impl Read for Tapped {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let got = self.fill_buf()?;
        let n = buf.len().min(got.len());
        buf[..n].copy_from_slice(&got[..n]);
        self.consume(n);
        Ok(n)
    }
}

/// The blocks the tap sends are the buffer: nothing is copied to be looked at.
impl BufRead for Tapped {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.current = b,
                None => break,
            }
        }
        Ok(&self.current)
    }

    fn consume(&mut self, n: usize) {
        bytes::Buf::advance(&mut self.current, n);
    }
}

/// Start counting the rows of the archive sent to the returned tap, on a thread of its
/// own; the handle answers once the tap is closed (the stream ended) or the counter gave
/// up (then the tap's sends fail and the stream goes on without it).
pub fn spawn_counter() -> (super::pipeline::Tap, Counting) {
    super::pipeline::spawn_tap(|rx| {
        count_rows(Tapped {
            rx,
            current: bytes::Bytes::new(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(rows: &[&str], end: &[u8]) -> Vec<u8> {
        let data = [rows.concat().into_bytes(), end.to_vec()].concat();
        crate::pgarchive::testing::archive(&data, 7, b"\n\n\n")
    }

    #[test]
    fn the_tail_keeps_the_last_bytes_across_pieces() {
        let mut t = Tail::default();
        for piece in [&b"ab"[..], b"\\", b".\n", b"", b"\n\n"] {
            t.push(piece);
        }
        assert!(t.is(END));
        t.push(b"x\\.\n\n\n");
        assert!(t.is(END));
        t.push(b"y");
        assert!(!t.is(END));
        let mut short = Tail::default();
        short.push(b"\n");
        assert!(!short.is(END) && short.is(b"\n"));
    }

    #[test]
    fn rows_are_the_lines_of_the_table_data() {
        let a = archive(&["1\ta\\nb\n", "2\t\\\\N\n", "3\t\\.\n"], END);
        let counts = count_rows(&a[..]).unwrap();
        assert_eq!(counts, [("\"sch\".\"ta ble\"".to_string(), 3)]);
        let empty = archive(&[], END);
        assert_eq!(count_rows(&empty[..]).unwrap()[0].1, 0);
    }

    #[test]
    fn what_cannot_be_read_is_refused_not_guessed() {
        let a = archive(&["1\n"], END);
        assert!(matches!(
            count_rows(&a[..a.len() - 9]),
            Err(CountError::Io(_))
        ));
        let unended = archive(&["1\n"], b"\n");
        assert!(matches!(
            count_rows(&unended[..]),
            Err(CountError::Unsupported(_))
        ));
        let mut newer = archive(&["1\n"], END);
        newer[6] = 17;
        assert!(count_rows(&newer[..]).is_err());
        assert!(count_rows(&b"not an archive"[..]).is_err());
    }
}
