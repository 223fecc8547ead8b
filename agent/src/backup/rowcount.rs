//! Row counts from the dump itself, as it streams past: no second scan of the customer's
//! data. `pg_dump -Fc -Z0` writes a custom-format archive whose table data are the
//! tables' COPY text, one row per line (a newline inside a value is written `\n`), so
//! counting the newlines of each `TABLE DATA` entry's blocks (less the three of the
//! `\.` end line pg_dump adds) counts the rows that were actually dumped, a stronger
//! check than a `count(*)` beside the dump.
//!
//! The archive, as far as it is read here (`pg_backup_archiver.c`,
//! `pg_backup_custom.c`; versions 1.12 to 1.16, PostgreSQL 9.6 to 17):
//! - header: `PGDMP`, version (3 bytes), int size, offset size, format (1 = custom),
//!   compression (a byte from 1.15, an int before; must be none), 7 ints of creation
//!   time, 3 strings (database, server version, pg_dump version);
//! - TOC: an int count, then per entry: dump id, had-dumper, table oid, oid, tag, desc,
//!   section, definition, drop, copy statement, namespace, tablespace, table access
//!   method (1.14+), relkind (an int, 1.16+), owner, "with oids", dependencies (strings
//!   up to a null one), and a data offset (a flag byte and offset-size bytes);
//! - data: per entry a block type (1 = data, 3 = large objects) and the dump id, then
//!   length-prefixed pieces up to a zero length (large objects: per object an oid and
//!   its pieces, up to a zero oid).
//!
//! An int is a sign byte and int-size bytes, least significant first; a string is an
//! int length (negative: null) and its bytes.
//!
//! Anything else (another version, compression, a truncated stream) makes the counter
//! give up: the caller then counts with `count(*)` as before, never with a guess.
//! Tables loaded through their partition root (`-- load via partition root`) are left
//! out: their rows land wherever the root routes them.

use std::collections::HashMap;
use std::io::Read;

use crate::pg::quote_ident;

/// Why the dump could not be counted.
#[derive(Debug, thiserror::Error)]
pub enum CountError {
    #[error("not a custom-format archive this agent reads: {0}")]
    Unsupported(String),
    #[error("the archive ended early or could not be read: {0}")]
    Io(#[from] std::io::Error),
}

/// How pg_dump ends a table's COPY data in the archive: the end-of-data line `\.` and
/// two empty lines, three newlines that are not rows.
const END: &[u8] = b"\\.\n\n\n";

/// Longest TOC string accepted (a definition can be long; a corrupt length must not
/// allocate gigabytes).
const MAX_STR: usize = 64 << 20;

struct Reader<R> {
    r: R,
    int_size: usize,
    /// Reused for every piece of data: pg_dump writes each row as a piece of its own,
    /// so a buffer made per piece would cost more than the counting.
    scratch: Vec<u8>,
}

impl<R: Read> Reader<R> {
    fn byte(&mut self) -> std::io::Result<u8> {
        let mut b = [0u8; 1];
        self.r.read_exact(&mut b)?;
        Ok(b[0])
    }

    /// The next byte, or None at the end of the stream.
    fn byte_or_end(&mut self) -> std::io::Result<Option<u8>> {
        let mut b = [0u8; 1];
        loop {
            match self.r.read(&mut b) {
                Ok(0) => return Ok(None),
                Ok(_) => return Ok(Some(b[0])),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn int(&mut self) -> Result<i64, CountError> {
        let negative = self.byte()? != 0;
        let mut v: i64 = 0;
        for i in 0..self.int_size {
            let b = i64::from(self.byte()?);
            if i < 8 {
                v |= b << (8 * i);
            }
        }
        Ok(if negative { -v } else { v })
    }

    fn string(&mut self) -> Result<Option<String>, CountError> {
        let len = self.int()?;
        if len < 0 {
            return Ok(None);
        }
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len > MAX_STR {
            return Err(CountError::Unsupported(format!("a string of {len} bytes")));
        }
        let mut buf = vec![0u8; len];
        self.r.read_exact(&mut buf)?;
        Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
    }

    /// Skip `n` bytes, returning how many newlines they held; `tail` keeps the last
    /// bytes seen (across calls).
    fn newlines_in(&mut self, mut n: u64, tail: &mut Vec<u8>) -> Result<i64, CountError> {
        let mut lines = 0i64;
        while n > 0 {
            let want = n.min(self.scratch.len() as u64) as usize;
            self.r.read_exact(&mut self.scratch[..want])?;
            let got = &self.scratch[..want];
            lines += got.iter().filter(|&&b| b == b'\n').count() as i64;
            tail.extend_from_slice(&got[want.saturating_sub(END.len())..]);
            let drop = tail.len().saturating_sub(END.len());
            tail.drain(..drop);
            n -= want as u64;
        }
        Ok(lines)
    }
}

/// A `TABLE DATA` entry: the table it fills, or none when it is loaded through its
/// partition root.
type DataEntries = HashMap<i64, Option<String>>;

/// Read the archive header and TOC; the reader positioned at the first data block.
fn header_and_toc<R: Read>(r: R) -> Result<(Reader<R>, DataEntries), CountError> {
    let mut rd = Reader {
        r,
        int_size: 4,
        scratch: vec![0; 64 * 1024],
    };
    let mut magic = [0u8; 5];
    rd.r.read_exact(&mut magic)?;
    if &magic != b"PGDMP" {
        return Err(CountError::Unsupported("no PGDMP magic".into()));
    }
    let version = (rd.byte()?, rd.byte()?, rd.byte()?);
    if !((1, 12, 0)..=(1, 16, 255)).contains(&version) {
        let (a, b, c) = version;
        return Err(CountError::Unsupported(format!(
            "archive version {a}.{b}.{c}"
        )));
    }
    rd.int_size = usize::from(rd.byte()?);
    let off_size = usize::from(rd.byte()?);
    if !(1..=16).contains(&rd.int_size) || off_size > 16 {
        return Err(CountError::Unsupported("integer sizes".into()));
    }
    if rd.byte()? != 1 {
        return Err(CountError::Unsupported("not the custom format".into()));
    }
    let compressed = if version >= (1, 15, 0) {
        i64::from(rd.byte()?)
    } else {
        rd.int()?
    };
    if compressed != 0 {
        return Err(CountError::Unsupported("compressed table data".into()));
    }
    for _ in 0..7 {
        rd.int()?; // creation time
    }
    for _ in 0..3 {
        rd.string()?; // database, server version, pg_dump version
    }
    let entries = rd.int()?;
    let mut data = DataEntries::new();
    for _ in 0..entries {
        let dump_id = rd.int()?;
        rd.int()?; // had dumper
        rd.string()?; // table oid
        rd.string()?; // oid
        let tag = rd.string()?.unwrap_or_default();
        let desc = rd.string()?.unwrap_or_default();
        rd.int()?; // section
        let defn = rd.string()?.unwrap_or_default();
        rd.string()?; // drop statement
        rd.string()?; // copy statement
        let namespace = rd.string()?.unwrap_or_default();
        rd.string()?; // tablespace
        if version >= (1, 14, 0) {
            rd.string()?; // table access method
        }
        if version >= (1, 16, 0) {
            rd.int()?; // relkind
        }
        rd.string()?; // owner
        rd.string()?; // "with oids"
        while rd.string()?.is_some() {} // dependencies
        rd.byte()?; // offset flag
        for _ in 0..off_size {
            rd.byte()?;
        }
        if desc == "TABLE DATA" {
            let via_root = defn.starts_with("-- load via partition root ");
            let table = format!("{}.{}", quote_ident(&namespace), quote_ident(&tag));
            data.insert(dump_id, (!via_root).then_some(table));
        }
    }
    Ok((rd, data))
}

/// Count the rows of every table in the custom-format archive `r` (read to its end).
/// Keys are `"schema"."table"`, as `pg::row_counts` names them.
pub fn count_rows<R: Read>(r: R) -> Result<Vec<(String, i64)>, CountError> {
    let (mut rd, entries) = header_and_toc(r)?;
    let mut counts: Vec<(String, i64)> = vec![];
    while let Some(block) = rd.byte_or_end()? {
        let dump_id = rd.int()?;
        match block {
            1 => {
                let (mut lines, mut tail) = (0, Vec::with_capacity(2 * END.len()));
                loop {
                    let len = rd.int()?;
                    if len == 0 {
                        break;
                    }
                    if len < 0 {
                        return Err(CountError::Unsupported("a negative block length".into()));
                    }
                    lines += rd.newlines_in(len as u64, &mut tail)?;
                }
                if tail != END {
                    return Err(CountError::Unsupported(format!(
                        "table data (entry {dump_id}) not ended by \\."
                    )));
                }
                let rows = lines - 3;
                if let Some(Some(table)) = entries.get(&dump_id) {
                    counts.push((table.clone(), rows));
                }
            }
            3 => loop {
                if rd.int()? == 0 {
                    break; // the last large object
                }
                loop {
                    let len = rd.int()?;
                    if len <= 0 {
                        break;
                    }
                    rd.newlines_in(len as u64, &mut Vec::new())?;
                }
            },
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

/// The row counter's thread: its counts, once the stream ended.
pub type Counting = std::thread::JoinHandle<Result<Vec<(String, i64)>, CountError>>;

/// Reads what a tap sends (blocking; run on its own thread).
struct Tapped {
    rx: tokio::sync::mpsc::Receiver<bytes::Bytes>,
    current: bytes::Bytes,
}

impl Read for Tapped {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.current = b,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        bytes::Buf::advance(&mut self.current, n);
        Ok(n)
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

    /// An archive of version 1.14 with one table and one large object, written the way
    /// pg_dump writes it.
    fn archive(rows: &[&str], end: &[u8]) -> Vec<u8> {
        let int = |v: i64| {
            let mut b = vec![u8::from(v < 0)];
            b.extend_from_slice(&(v.unsigned_abs() as u32).to_le_bytes());
            b
        };
        let string = |s: Option<&str>| match s {
            None => int(-1),
            Some(s) => [int(s.len() as i64), s.as_bytes().to_vec()].concat(),
        };
        let mut a = b"PGDMP\x01\x0e\x00\x04\x08\x01".to_vec();
        a.extend(int(0)); // no compression
        (0..7).for_each(|_| a.extend(int(0)));
        ["db", "15", "15"]
            .iter()
            .for_each(|s| a.extend(string(Some(s))));
        a.extend(int(2));
        for (id, desc, tag) in [(5, "TABLE DATA", "ta ble"), (6, "BLOBS", "BLOBS")] {
            a.extend(int(id));
            a.extend(int(1));
            a.extend(string(Some("0")));
            a.extend(string(Some("0")));
            a.extend(string(Some(tag)));
            a.extend(string(Some(desc)));
            a.extend(int(3));
            for s in ["", "", "COPY ...", "sch", "", "heap", "owner", "false"] {
                a.extend(string(Some(s)));
            }
            a.extend(string(Some("3")));
            a.extend(string(None));
            a.push(2);
            a.extend([0u8; 8]);
        }
        a.push(1);
        a.extend(int(5));
        let data = [rows.concat().into_bytes(), end.to_vec()].concat();
        for piece in data.chunks(7) {
            a.extend(int(piece.len() as i64));
            a.extend_from_slice(piece);
        }
        a.extend(int(0));
        a.push(3);
        a.extend(int(6));
        a.extend(int(16385));
        a.extend(int(3));
        a.extend_from_slice(b"\n\n\n");
        a.extend(int(0));
        a.extend(int(0));
        a
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
