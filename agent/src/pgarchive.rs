//! Reading pg_dump's custom-format archive as it streams past, for the row counter of a
//! backup (`backup::rowcount`) and the parallel restore (`restore::parallel`).
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
//! - data: per entry a block type ([`BLOCK_DATA`], [`BLOCK_BLOBS`]) and the dump id,
//!   then length-prefixed pieces up to a zero length (large objects: per object an oid
//!   and its pieces, up to a zero oid).
//!
//! An int is a sign byte and int-size bytes, least significant first; a string is an
//! int length (negative: null) and its bytes.
//!
//! Anything else (another version, compression, a truncated stream) is an error: the
//! callers then fall back to what does not need to read the archive, never to a guess.

use std::io::BufRead;

/// Why the archive could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("not a custom-format archive this agent reads: {0}")]
    Unsupported(String),
    #[error("the archive ended early or could not be read: {0}")]
    Io(#[from] std::io::Error),
}

/// How pg_dump ends a table's COPY data in the archive: the end-of-data line `\.` and
/// two empty lines, three newlines that are not rows.
pub const COPY_END: &[u8] = b"\\.\n\n\n";

/// A data block holding one table's COPY text.
pub const BLOCK_DATA: u8 = 1;
/// A data block holding large objects.
pub const BLOCK_BLOBS: u8 = 3;

/// The TOC sections (`teSection`).
pub const SECTION_PRE_DATA: i64 = 2;

/// Longest TOC string accepted (a definition can be long; a corrupt length must not
/// allocate gigabytes).
const MAX_STR: usize = 64 << 20;

/// One TOC entry, the fields the agent uses.
#[derive(Debug, Clone)]
pub struct Entry {
    pub dump_id: i64,
    /// The entry has a data block in the archive.
    pub had_dumper: bool,
    pub tag: String,
    pub desc: String,
    pub section: i64,
    pub defn: String,
    pub copy_stmt: Option<String>,
    pub namespace: String,
    /// The role owning the object (empty for entries without one).
    pub owner: String,
    /// The tablespace the object is created in (empty: the database's default).
    pub tablespace: String,
}

/// Reads an archive from `r`; counts what it consumed. Buffered (`BufRead`): pg_dump
/// writes each row as a piece of its own, behind a length of its own, so the lengths are
/// read straight from the buffer and the pieces are looked at where they lie, uncopied.
pub struct Reader<R> {
    r: R,
    int_size: usize,
    consumed: u64,
}

impl<R: BufRead> Reader<R> {
    pub fn new(r: R) -> Self {
        Reader {
            r,
            int_size: 4,
            consumed: 0,
        }
    }

    /// Bytes of the archive read so far.
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    pub fn into_inner(self) -> R {
        self.r
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.r
    }

    /// Fill `buf` from the archive.
    pub fn read_exact(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        self.r.read_exact(buf)?;
        self.consumed += buf.len() as u64;
        Ok(())
    }

    fn byte(&mut self) -> std::io::Result<u8> {
        let mut b = [0u8; 1];
        self.read_exact(&mut b)?;
        Ok(b[0])
    }

    /// The next byte, or None at the end of the stream.
    fn byte_or_end(&mut self) -> std::io::Result<Option<u8>> {
        let b = match self.r.fill_buf()?.first() {
            None => return Ok(None),
            Some(&b) => b,
        };
        self.r.consume(1);
        self.consumed += 1;
        Ok(Some(b))
    }

    pub fn int(&mut self) -> Result<i64, ArchiveError> {
        let n = 1 + self.int_size;
        let buf = self.r.fill_buf()?;
        if buf.len() >= n && self.int_size <= 8 {
            // All of it in the buffer: the common case.
            let v = buf[1..n]
                .iter()
                .rev()
                .fold(0i64, |v, &b| (v << 8) | i64::from(b));
            let negative = buf[0] != 0;
            self.r.consume(n);
            self.consumed += n as u64;
            return Ok(if negative { -v } else { v });
        }
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

    fn string(&mut self) -> Result<Option<String>, ArchiveError> {
        let len = self.int()?;
        if len < 0 {
            return Ok(None);
        }
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len > MAX_STR {
            return Err(ArchiveError::Unsupported(format!(
                "a string of {len} bytes"
            )));
        }
        let mut buf = vec![0u8; len];
        self.read_exact(&mut buf)?;
        Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
    }

    /// Read the header and the TOC; the reader is then at the first data block.
    pub fn toc(&mut self) -> Result<Vec<Entry>, ArchiveError> {
        let mut magic = [0u8; 5];
        self.read_exact(&mut magic)?;
        if &magic != b"PGDMP" {
            return Err(ArchiveError::Unsupported("no PGDMP magic".into()));
        }
        let version = (self.byte()?, self.byte()?, self.byte()?);
        if !((1, 12, 0)..=(1, 16, 255)).contains(&version) {
            let (a, b, c) = version;
            return Err(ArchiveError::Unsupported(format!(
                "archive version {a}.{b}.{c}"
            )));
        }
        self.int_size = usize::from(self.byte()?);
        let off_size = usize::from(self.byte()?);
        if !(1..=16).contains(&self.int_size) || off_size > 16 {
            return Err(ArchiveError::Unsupported("integer sizes".into()));
        }
        if self.byte()? != 1 {
            return Err(ArchiveError::Unsupported("not the custom format".into()));
        }
        let compressed = if version >= (1, 15, 0) {
            i64::from(self.byte()?)
        } else {
            self.int()?
        };
        if compressed != 0 {
            return Err(ArchiveError::Unsupported("compressed table data".into()));
        }
        for _ in 0..7 {
            self.int()?; // creation time
        }
        for _ in 0..3 {
            self.string()?; // database, server version, pg_dump version
        }
        let count = self.int()?;
        let mut entries = Vec::new();
        for _ in 0..count {
            entries.push(self.entry(version, off_size)?);
        }
        Ok(entries)
    }

    fn entry(&mut self, version: (u8, u8, u8), off_size: usize) -> Result<Entry, ArchiveError> {
        let dump_id = self.int()?;
        let had_dumper = self.int()? != 0;
        self.string()?; // table oid
        self.string()?; // oid
        let tag = self.string()?.unwrap_or_default();
        let desc = self.string()?.unwrap_or_default();
        let section = self.int()?;
        let defn = self.string()?.unwrap_or_default();
        self.string()?; // drop statement
        let copy_stmt = self.string()?.filter(|s| !s.is_empty());
        let namespace = self.string()?.unwrap_or_default();
        let tablespace = self.string()?.unwrap_or_default();
        if version >= (1, 14, 0) {
            self.string()?; // table access method
        }
        if version >= (1, 16, 0) {
            self.int()?; // relkind
        }
        let owner = self.string()?.unwrap_or_default();
        self.string()?; // "with oids"
        while self.string()?.is_some() {} // dependencies
        self.byte()?; // offset flag
        for _ in 0..off_size {
            self.byte()?;
        }
        Ok(Entry {
            dump_id,
            had_dumper,
            tag,
            desc,
            section,
            defn,
            copy_stmt,
            namespace,
            owner,
            tablespace,
        })
    }

    /// The next data block's type and dump id, or None at the end of the archive.
    pub fn next_block(&mut self) -> Result<Option<(u8, i64)>, ArchiveError> {
        match self.byte_or_end()? {
            None => Ok(None),
            Some(kind) => Ok(Some((kind, self.int()?))),
        }
    }

    /// The length of the next piece of a block, or None at the block's end.
    pub fn piece_len(&mut self) -> Result<Option<u64>, ArchiveError> {
        match self.int()? {
            0 => Ok(None),
            n if n < 0 => Err(ArchiveError::Unsupported("a negative piece length".into())),
            n => Ok(Some(n as u64)),
        }
    }

    /// Read `n` bytes in slices, each given to `f` where it lies in the buffer.
    pub fn each_slice(&mut self, mut n: u64, mut f: impl FnMut(&[u8])) -> std::io::Result<()> {
        while n > 0 {
            let buf = self.r.fill_buf()?;
            if buf.is_empty() {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let take = buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
            f(&buf[..take]);
            self.r.consume(take);
            self.consumed += take as u64;
            n -= take as u64;
        }
        Ok(())
    }

    /// Skip a large-objects block (after its type and dump id).
    pub fn skip_blobs(&mut self) -> Result<(), ArchiveError> {
        while self.int()? != 0 {
            while let Some(len) = self.piece_len()? {
                self.each_slice(len, |_| {})?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub mod testing {
    /// An archive of version 1.14 with one table (entry 5, schema `sch`, table `ta ble`)
    /// holding `data` in pieces of `piece` bytes, and one large object (oid 16385, entry
    /// 6) holding `lo`, written the way pg_dump writes them.
    pub fn archive(data: &[u8], piece: usize, lo: &[u8]) -> Vec<u8> {
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
        for p in data.chunks(piece) {
            a.extend(int(p.len() as i64));
            a.extend_from_slice(p);
        }
        a.extend(int(0));
        a.push(3);
        a.extend(int(6));
        a.extend(int(16385));
        for p in lo.chunks(piece) {
            a.extend(int(p.len() as i64));
            a.extend_from_slice(p);
        }
        a.extend(int(0));
        a.extend(int(0));
        a
    }
}
