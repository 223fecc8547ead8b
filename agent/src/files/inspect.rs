//! `ls` and `diff` of file and environment sets, from the manifests (and, for the keys
//! of `.env` files and environments, their contents). Values are never shown.

use std::collections::{BTreeMap, BTreeSet};

use nex_backup_shared::files::{ENVIRONMENT_FILE, FileEntry, FileKind};

/// Quote a value for a `.env` line when it needs it.
pub fn quote(v: &str) -> String {
    if !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:@+,=%".contains(c))
    {
        return v.to_string();
    }
    let mut s = String::from("\"");
    for c in v.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

/// Whether an archive path holds `KEY=VALUE` lines whose keys a diff compares.
pub fn is_env_file(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    path == ENVIRONMENT_FILE
        || name == ".env"
        || name.starts_with(".env.")
        || name.ends_with(".env")
}

/// The keys of a `.env` text with a digest of each value (values never leave).
pub fn env_keys(text: &[u8]) -> BTreeMap<String, [u8; 32]> {
    use sha2::{Digest, Sha256};
    String::from_utf8_lossy(text)
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l.strip_prefix("export ").unwrap_or(l);
            if l.starts_with('#') {
                return None;
            }
            let (k, v) = l.split_once('=')?;
            let k = k.trim();
            (!k.is_empty()).then(|| (k.to_string(), Sha256::digest(v.trim().as_bytes()).into()))
        })
        .collect()
}

fn kind_char(e: &FileEntry) -> char {
    match e.kind {
        Some(FileKind::Dir) => 'd',
        Some(FileKind::Symlink) => 'l',
        _ => '-',
    }
}

/// A Unix time in seconds as `YYYY-MM-DD HH:MM:SS` (UTC).
pub fn utc(sec: i64) -> String {
    jiff::Timestamp::from_second(sec)
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

/// One `ls` line: kind and mode, owner, size, mtime (UTC), path, and what to know.
pub fn ls_line(e: &FileEntry) -> String {
    let mut s = format!(
        "{}{:04o} {:>8}:{:<8} {:>12} {} {}",
        kind_char(e),
        e.mode & 0o7777,
        e.owner,
        e.group,
        e.size,
        utc(e.mtime_sec),
        e.path
    );
    if e.kind == Some(FileKind::Symlink) {
        s.push_str(&format!(" -> {}", e.link));
    }
    if e.changed {
        s.push_str("  [changed while read]");
    }
    if !e.error.is_empty() {
        s.push_str(&format!("  [NOT STORED: {}]", e.error));
    }
    s
}

/// The diff of two snapshots' entries: `+ path (size)`, `- path (size)`,
/// `~ path (size -> size)`; under a changed `.env`-like file, its keys added, removed
/// or changed (values masked). `contents` holds both versions of changed `.env` files.
pub fn diff_lines(
    a: &[FileEntry],
    b: &[FileEntry],
    contents: &BTreeMap<(bool, String), Vec<u8>>,
) -> Vec<String> {
    let am: BTreeMap<&str, &FileEntry> = a.iter().map(|e| (e.path.as_str(), e)).collect();
    let bm: BTreeMap<&str, &FileEntry> = b.iter().map(|e| (e.path.as_str(), e)).collect();
    let paths: BTreeSet<&str> = am.keys().chain(bm.keys()).copied().collect();
    let mut out = vec![];
    for p in paths {
        match (am.get(p), bm.get(p)) {
            (None, Some(e)) => out.push(format!("+ {p} ({} bytes)", e.size)),
            (Some(e), None) => out.push(format!("- {p} ({} bytes)", e.size)),
            (Some(x), Some(y)) => {
                let same = x.sha256 == y.sha256
                    && x.kind == y.kind
                    && x.link == y.link
                    && x.mode == y.mode;
                if same {
                    continue;
                }
                out.push(format!("~ {p} ({} -> {} bytes)", x.size, y.size));
                if is_env_file(p) {
                    let empty = vec![];
                    let ka = env_keys(contents.get(&(false, p.to_string())).unwrap_or(&empty));
                    let kb = env_keys(contents.get(&(true, p.to_string())).unwrap_or(&empty));
                    let keys: BTreeSet<&String> = ka.keys().chain(kb.keys()).collect();
                    for k in keys {
                        match (ka.get(k), kb.get(k)) {
                            (None, Some(_)) => out.push(format!("    key {k}: added (value ****)")),
                            (Some(_), None) => out.push(format!("    key {k}: removed")),
                            (Some(x), Some(y)) if x != y => {
                                out.push(format!("    key {k}: changed (**** -> ****)"))
                            }
                            _ => {}
                        }
                    }
                }
            }
            (None, None) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, sum: u8) -> FileEntry {
        FileEntry {
            path: path.into(),
            kind: Some(FileKind::File),
            size: 10,
            sha256: Some([sum; 32]),
            ..Default::default()
        }
    }

    #[test]
    fn a_changed_env_value_shows_its_key_and_never_a_value() {
        let a = vec![file("app/.env", 1), file("app/old.yaml", 1)];
        let b = vec![file("app/.env", 2), file("app/new.yaml", 1)];
        let mut contents = BTreeMap::new();
        contents.insert(
            (false, "app/.env".into()),
            b"DB_PASSWORD=hunter2\nKEEP=1\nGONE=x\n".to_vec(),
        );
        contents.insert(
            (true, "app/.env".into()),
            b"DB_PASSWORD=s3cret\nKEEP=1\nNEW=y\n".to_vec(),
        );
        let lines = diff_lines(&a, &b, &contents).join("\n");
        assert!(lines.contains("~ app/.env"), "{lines}");
        assert!(lines.contains("key DB_PASSWORD: changed"), "{lines}");
        assert!(
            lines.contains("key GONE: removed") && lines.contains("key NEW: added"),
            "{lines}"
        );
        assert!(!lines.contains("KEEP"), "{lines}");
        assert!(
            lines.contains("+ app/new.yaml") && lines.contains("- app/old.yaml"),
            "{lines}"
        );
        for secret in ["hunter2", "s3cret", "=y", "=x"] {
            assert!(!lines.contains(secret), "{lines}");
        }
    }

    #[test]
    fn values_are_quoted_when_needed() {
        assert_eq!(quote("plain"), "plain");
        assert_eq!(quote("two words"), "\"two words\"");
        assert_eq!(quote("a\"b\nc"), "\"a\\\"b\\nc\"");
    }
}
