//! The restored database itself: created with the source database's encoding and
//! locale, and given its own settings, comment and grants once its content is in.
//!
//! `pg_restore` without `--create` (a restore into a database of another name) skips the
//! archive's `DATABASE` entry and what hangs on it: `ALTER DATABASE ... SET` (a
//! `search_path` an application relies on), the database's comment and its grants. A
//! database created with the server's defaults may also sort text another way than the
//! source's, or refuse characters the source's encoding held. So the archive's head is
//! read first ([`peek`]), the database is created as the source was ([`create`]), and
//! its properties are applied once every table and index is in ([`apply`]; a setting
//! such as `default_transaction_read_only` must not govern the restore's own sessions).
//! A server without the source's locale still gets the data back, in the server's
//! default locale, and the restore says so.

use std::sync::Arc;

use nex_backup_shared::chunk::ChunkCodec;
use nex_backup_shared::manifest::StreamEntry;
use tokio_util::io::SyncIoBridge;

use super::feed::{ChunkSource, feed};
use crate::error::AgentError;
use crate::pg::{self, quote_ident};
use crate::pgarchive::{Entry, Reader};

/// `CREATE DATABASE` options taken over from the source (no tablespace, no OID).
const KEPT: [&str; 7] = [
    "ENCODING",
    "LOCALE_PROVIDER",
    "LOCALE",
    "LC_COLLATE",
    "LC_CTYPE",
    "ICU_LOCALE",
    "ICU_RULES",
];

/// The source database as the archive describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Source {
    /// Its name in the archive.
    pub name: String,
    /// Its owner.
    pub owner: String,
    /// `CREATE DATABASE` options, in order (values as written, quotes included).
    pub options: Vec<(String, String)>,
    /// Its settings (`DATABASE PROPERTIES`), comments and grants: statements naming it.
    pub properties: Vec<String>,
    pub comments: Vec<String>,
    pub grants: Vec<String>,
}

impl Source {
    /// The database entries of a TOC, if it has a `DATABASE` entry.
    pub fn of(entries: &[Entry]) -> Option<Source> {
        let db = entries.iter().find(|e| e.desc == "DATABASE")?;
        let mut s = Source {
            name: db.tag.clone(),
            owner: db.owner.clone(),
            options: options(&db.defn, &db.tag),
            ..Default::default()
        };
        let on_db = |e: &&Entry| e.tag.starts_with("DATABASE ") || e.desc == "DATABASE PROPERTIES";
        for e in entries.iter().filter(on_db) {
            match e.desc.as_str() {
                "DATABASE PROPERTIES" => s.properties.push(e.defn.clone()),
                "COMMENT" => s.comments.push(e.defn.clone()),
                "ACL" => s.grants.push(e.defn.clone()),
                _ => {}
            }
        }
        Some(s)
    }

    /// `statement` about the source database, about `db` instead.
    fn renamed(&self, statement: &str, db: &str) -> String {
        let from = format!("DATABASE {}", fmt_id(&self.name));
        statement.replace(&from, &format!("DATABASE {}", quote_ident(db)))
    }
}

/// An identifier as pg_dump writes it: bare if it is lowercase letters, digits and
/// underscores not starting with a digit, else double-quoted. (A bare keyword would be
/// quoted by pg_dump too; such a name simply does not match and is left as is.)
fn fmt_id(name: &str) -> String {
    let bare = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if bare {
        name.to_string()
    } else {
        quote_ident(name)
    }
}

/// The `KEY = value` options of `CREATE DATABASE <name> WITH ...;` that are kept.
fn options(defn: &str, name: &str) -> Vec<(String, String)> {
    let head = format!("CREATE DATABASE {} WITH ", fmt_id(name));
    let Some(rest) = defn.trim().strip_prefix(&head) else {
        return vec![];
    };
    let rest = rest.lines().next().unwrap_or("").trim_end_matches(';');
    let mut words = vec![];
    let (mut cur, mut quoted) = (String::new(), false);
    for c in rest.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                cur.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
        .chunks(3)
        .filter(|w| w.len() == 3 && w[1] == "=" && KEPT.contains(&w[0].as_str()))
        .map(|w| (w[0].clone(), w[2].clone()))
        .collect()
}

/// How much of the stream's head a peek fetches first: the TOC of most databases fits
/// (a few KiB a table); a longer TOC is read from the whole stream after all.
const HEAD_BYTES: u64 = 4 << 20;

/// Read the TOC from the head of the database stream `s` (its chunks' tags checked as
/// always); `None` if it cannot be read. Only the first chunks are fetched (about
/// [`HEAD_BYTES`]); if the TOC runs past them, the stream is read again, from the start,
/// until the TOC ends.
pub async fn peek<S: ChunkSource>(
    src: &Arc<S>,
    codec: &ChunkCodec,
    job_id: &str,
    s: &StreamEntry,
) -> Option<Vec<Entry>> {
    peek_within(src, codec, job_id, s, HEAD_BYTES).await
}

async fn peek_within<S: ChunkSource>(
    src: &Arc<S>,
    codec: &ChunkCodec,
    job_id: &str,
    s: &StreamEntry,
    head_bytes: u64,
) -> Option<Vec<Entry>> {
    let head = head_of(s, head_bytes);
    if head.chunks.len() < s.chunks.len()
        && let Some(toc) = read_toc(src, codec, job_id, head).await
    {
        return Some(toc);
    }
    read_toc(src, codec, job_id, s.clone()).await
}

/// The first chunks of `s`, at least `bytes` of it (all of it if shorter). Its digest no
/// longer matches: the feed's final check fails, after every chunk it read was checked.
fn head_of(s: &StreamEntry, bytes: u64) -> StreamEntry {
    let (mut n, mut length) = (0, 0u64);
    for (_, len) in &s.chunks {
        if length >= bytes {
            break;
        }
        length += u64::from(*len);
        n += 1;
    }
    StreamEntry {
        name: s.name.clone(),
        chunks: s.chunks[..n].to_vec(),
        length,
        sha256: s.sha256,
        digest: s.digest,
    }
}

/// Feed `s` to an archive reader until its TOC is read; the feed is dropped then.
async fn read_toc<S: ChunkSource>(
    src: &Arc<S>,
    codec: &ChunkCodec,
    job_id: &str,
    s: StreamEntry,
) -> Option<Vec<Entry>> {
    let (w, r) = tokio::io::duplex(256 << 10);
    let (src, codec, job_id) = (src.clone(), codec.clone(), job_id.to_string());
    let feeder = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
        let _ = feed(&src, &codec, &job_id, &s, w).await;
    }));
    let toc = tokio::task::spawn_blocking(move || {
        Reader::new(std::io::BufReader::with_capacity(
            64 << 10,
            SyncIoBridge::new(r),
        ))
        .toc()
    })
    .await;
    drop(feeder);
    toc.ok()?.ok()
}

/// Create `db` as the source database was (encoding, locale); on a server without that
/// locale, with the source's encoding alone, then with the server's defaults. Returns
/// a note when it fell back.
pub async fn create(
    admin: &tokio_postgres::Client,
    db: &str,
    source: Option<&Source>,
) -> Result<Option<String>, AgentError> {
    let base = format!("CREATE DATABASE {} TEMPLATE template0", quote_ident(db));
    let opts = source.map(|s| s.options.clone()).unwrap_or_default();
    let encoding: Vec<_> = opts
        .iter()
        .filter(|(k, _)| k == "ENCODING")
        .cloned()
        .collect();
    let mut tries = vec![opts.clone()];
    if encoding.len() < opts.len() {
        tries.push(encoding);
    }
    if !tries.last().is_some_and(Vec::is_empty) {
        tries.push(vec![]);
    }
    let mut first_error: Option<String> = None;
    for (i, opts) in tries.iter().enumerate() {
        let sql = (opts.iter()).fold(base.clone(), |sql, (k, v)| format!("{sql} {k} = {v}"));
        match admin.batch_execute(&sql).await {
            Ok(()) => return Ok(first_error.map(|e| fell_back(db, &tries[0], &e))),
            Err(e) if i + 1 < tries.len() => {
                first_error.get_or_insert(pg::db_error_text(&e));
            }
            Err(e) => {
                return Err(format!("create database {db}: {}", pg::db_error_text(&e)).into());
            }
        }
    }
    unreachable!("the last try returns")
}

fn fell_back(db: &str, wanted: &[(String, String)], error: &str) -> String {
    let wanted: Vec<String> = wanted.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let note = format!(
        "database {db} created without the source's {} ({error}): text may sort \
         differently; install the locale on this server and restore again to keep it",
        wanted.join(", ")
    );
    super::noted(db, note)
}

/// Give `db` the source database's owner (unless `no_owner`), settings, comment and
/// grants (unless `no_privileges`). Returns a note naming what could not be applied.
pub async fn apply(
    client: &tokio_postgres::Client,
    db: &str,
    source: &Source,
    no_owner: bool,
    no_privileges: bool,
) -> Option<String> {
    let mut statements = vec![];
    if !no_owner && !source.owner.is_empty() {
        statements.push(format!(
            "ALTER DATABASE {} OWNER TO {};",
            quote_ident(db),
            quote_ident(&source.owner)
        ));
    }
    let grants = source.grants.iter().filter(|_| !no_privileges);
    for s in source
        .properties
        .iter()
        .chain(&source.comments)
        .chain(grants)
    {
        statements.push(source.renamed(s, db));
    }
    let mut failed = vec![];
    for s in &statements {
        if let Err(e) = client.batch_execute(s).await {
            failed.push(format!("{} ({})", s.trim(), pg::db_error_text(&e)));
        }
    }
    (!failed.is_empty()).then(|| {
        let note = format!("database settings not applied: {}", failed.join("; "));
        super::noted(db, note)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_options_are_taken_from_the_database_entry() {
        let defn = "CREATE DATABASE \"Účty\" WITH TEMPLATE = template0 ENCODING = 'UTF8' \
                    LOCALE_PROVIDER = libc LOCALE = 'sk_SK.UTF-8' TABLESPACE = fast;\n";
        assert_eq!(
            options(defn, "Účty"),
            vec![
                ("ENCODING".into(), "'UTF8'".into()),
                ("LOCALE_PROVIDER".into(), "libc".into()),
                ("LOCALE".into(), "'sk_SK.UTF-8'".into()),
            ]
        );
        let split = "CREATE DATABASE app WITH TEMPLATE = template0 ENCODING = 'LATIN1' \
                     LC_COLLATE = 'de_DE' LC_CTYPE = 'de DE';";
        assert_eq!(options(split, "app").len(), 3);
        assert_eq!(options(split, "other"), vec![]);
    }

    #[test]
    fn statements_about_the_source_are_about_the_restored_database() {
        let s = Source {
            name: "app".into(),
            ..Default::default()
        };
        assert_eq!(
            s.renamed(
                "ALTER DATABASE app SET search_path TO 'app', 'public';",
                "r1"
            ),
            "ALTER DATABASE \"r1\" SET search_path TO 'app', 'public';"
        );
        assert_eq!(fmt_id("My db"), "\"My db\"");
    }
}

#[cfg(test)]
mod peek_tests {
    use std::sync::atomic::Ordering;

    use nex_backup_shared::keys::MasterKey;

    use super::super::feed::testing::stored;
    use super::*;

    #[tokio::test]
    async fn the_toc_is_read_from_the_head_alone_or_from_the_whole_stream_when_longer() {
        let codec = ChunkCodec::new(MasterKey::from_bytes([4; 32]).derive(), 1);
        let rows = "1\trow\n".repeat(20_000);
        let archive = crate::pgarchive::testing::archive(rows.as_bytes(), 4096, b"lo");
        let parts: Vec<&[u8]> = archive.chunks(64).collect();
        let total = parts.len();
        let s = |list| StreamEntry::from_chunks("database.dump".into(), list, archive.len() as u64);

        // The TOC lies within the first 1 KiB: only the head is asked for.
        let (src, list) = stored(&codec, &parts);
        let src = Arc::new(src);
        let toc = peek_within(&src, &codec, "job", &s(list), 1024)
            .await
            .unwrap();
        assert_eq!(toc.len(), 2, "{toc:?}");
        let asked = src.asked.load(Ordering::Relaxed);
        assert_eq!(asked, 1024 / 64, "chunks asked for, of {total}");

        // A head of one chunk ends inside the TOC: the whole stream is read after all.
        let (src, list) = stored(&codec, &parts);
        let src = Arc::new(src);
        let toc = peek_within(&src, &codec, "job", &s(list), 1).await.unwrap();
        assert_eq!(toc.len(), 2);
        assert_eq!(src.asked.load(Ordering::Relaxed), 1 + total);
    }
}
