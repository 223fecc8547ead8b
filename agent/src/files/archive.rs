//! Writing a set's pax tar archive (on a blocking thread) while recording one
//! [`FileEntry`] per entry. Symlinks are stored as links, never followed. A file is read
//! once, streamed (any size, bounded memory), hashed as it is written; one that changes
//! while it is read is flagged, one that cannot be read is listed with its error.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use globset::Glob;
use nex_backup_shared::files::{ENVIRONMENT_FILE, FileEntry, FileKind};
use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

use super::owners::Owners;
use super::platform;
use crate::config::SetSpec;

/// What the archive holds, and what could not be stored.
#[derive(Debug, Default)]
pub struct Archived {
    pub entries: Vec<FileEntry>,
    pub unreadable: usize,
    pub skipped_large: usize,
}

/// Reads exactly `left` bytes from `inner` (zero-filling if it ends early), hashing them.
struct Exact<R> {
    inner: R,
    left: u64,
    hasher: Sha256,
    short: bool,
    /// A read error: the rest was zero-filled.
    failed: Option<String>,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let mut n = match self.inner.read(&mut buf[..want]) {
            Ok(n) => n,
            Err(e) => {
                self.failed.get_or_insert_with(|| e.to_string());
                0
            }
        };
        if n == 0 {
            // The file shrank while it was read: keep the archive well-formed.
            self.short = true;
            buf[..want].fill(0);
            n = want;
        }
        self.hasher.update(&buf[..n]);
        self.left -= n as u64;
        Ok(n)
    }
}

/// Counts the bytes written through it: where each file's content lands.
pub struct Counting<W> {
    inner: W,
    pub pos: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Where the content of an entry of `size` bytes started, given the position after it.
fn data_start(end: u64, size: u64) -> u64 {
    end - size.div_ceil(512) * 512
}

/// The paths a set names, expanded: globs matched under their literal prefix,
/// directories walked, in a stable order, each once.
fn expand(spec: &SetSpec) -> Vec<(PathBuf, Option<std::io::Error>)> {
    let mut out = vec![];
    let mut seen = HashSet::new();
    for p in &spec.paths {
        let is_glob = p.contains(['*', '?', '[']);
        let (root, glob) = if is_glob {
            let prefix: PathBuf = Path::new(p)
                .components()
                .take_while(|c| !c.as_os_str().to_string_lossy().contains(['*', '?', '[']))
                .collect();
            (prefix, Glob::new(p).ok().map(|g| g.compile_matcher()))
        } else {
            (PathBuf::from(p), None)
        };
        if std::fs::symlink_metadata(&root).is_err() {
            let e = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory");
            if !is_glob && seen.insert(root.clone()) {
                out.push((root, Some(e)));
            }
            continue;
        }
        let walk = walkdir::WalkDir::new(&root)
            .follow_links(false)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| !spec.excludes.is_match(e.path()));
        for item in walk {
            match item {
                Ok(e) => {
                    let path = e.path().to_path_buf();
                    if let Some(g) = &glob
                        && !g.is_match(&path)
                    {
                        continue;
                    }
                    if seen.insert(path.clone()) {
                        out.push((path, None));
                    }
                }
                Err(e) => {
                    let path = e
                        .path()
                        .map(Path::to_path_buf)
                        .unwrap_or_else(|| root.clone());
                    if seen.insert(path.clone()) {
                        out.push((path, Some(e.into())));
                    }
                }
            }
        }
    }
    out
}

fn mtime(m: &std::fs::Metadata) -> (i64, u32) {
    m.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or((0, 0), |d| (d.as_secs() as i64, d.subsec_nanos()))
}

/// Append one entry: pax records (path, link, mtime, owner names) then the ustar header.
fn append<W: Write>(
    b: &mut tar::Builder<W>,
    e: &FileEntry,
    ty: EntryType,
    data: impl Read,
) -> std::io::Result<()> {
    let mtime = format!("{}.{:09}", e.mtime_sec, e.mtime_nsec);
    let mut pax: Vec<(&str, &[u8])> = vec![
        ("path", e.path.as_bytes()),
        ("mtime", mtime.as_bytes()),
        ("uname", e.owner.as_bytes()),
        ("gname", e.group.as_bytes()),
    ];
    if ty == EntryType::Symlink {
        pax.push(("linkpath", e.link.as_bytes()));
    }
    if e.readonly {
        pax.push(("NEXBACKUP.readonly", b"1"));
    }
    b.append_pax_extensions(pax)?;
    let mut h = Header::new_ustar();
    h.set_entry_type(ty);
    h.set_size(if ty == EntryType::Regular { e.size } else { 0 });
    h.set_mode(e.mode);
    h.set_mtime(e.mtime_sec.max(0) as u64);
    // The pax path is authoritative; the ustar field holds what fits.
    if h.set_path(&e.path).is_err() {
        h.set_path("nexb-long-path")?;
    }
    if ty == EntryType::Symlink && h.set_link_name(&e.link).is_err() {
        h.set_link_name("nexb-long-link")?;
    }
    h.set_cksum();
    b.append(&h, data)
}

/// Write the archive of `spec` (and `env`, the environment file of an env set) to `w`.
pub fn write<W: Write>(spec: &SetSpec, env: Option<Vec<u8>>, w: W) -> std::io::Result<Archived> {
    let owners = Owners::load();
    let mut b = tar::Builder::new(Counting { inner: w, pos: 0 });
    let mut out = Archived::default();
    if let Some(content) = env {
        let e = FileEntry {
            path: ENVIRONMENT_FILE.into(),
            kind: Some(FileKind::File),
            size: content.len() as u64,
            mtime_sec: nex_backup_shared::clock::unix_now(),
            mode: 0o600,
            sha256: Some(Sha256::digest(&content).into()),
            ..Default::default()
        };
        let mut e = e;
        append(&mut b, &e, EntryType::Regular, content.as_slice())?;
        e.data_offset = data_start(b.get_ref().pos, e.size);
        out.entries.push(e);
    }
    for (path, err) in expand(spec) {
        let Some(apath) = platform::archive_path(&path) else {
            continue;
        };
        let mut e = FileEntry {
            path: apath,
            ..Default::default()
        };
        if let Some(err) = err {
            e.error = err.to_string();
            out.unreadable += 1;
            out.entries.push(e);
            continue;
        }
        // Only a failed write (the upload stopped) ends the archive; a file that cannot
        // be read is listed with its error.
        entry(&mut b, &path, &mut e, spec, &owners)?;
        if e.error.starts_with("skipped:") {
            out.skipped_large += 1;
        } else if !e.error.is_empty() {
            out.unreadable += 1;
        }
        out.entries.push(e);
    }
    b.into_inner()?.flush()?;
    Ok(out)
}

/// Archive one path into `e`. A path that cannot be read gets `e.error` and nothing in
/// the archive; the error returned is the archive's own (a failed write).
fn entry<W: Write>(
    b: &mut tar::Builder<Counting<W>>,
    path: &Path,
    e: &mut FileEntry,
    spec: &SetSpec,
    owners: &Owners,
) -> std::io::Result<()> {
    let unreadable = |e: &mut FileEntry, err: std::io::Error| {
        e.error = err.to_string();
        Ok(())
    };
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(err) => return unreadable(e, err),
    };
    let (mode, uid, gid, readonly) = platform::attrs(&meta);
    (e.mode, e.readonly) = (mode, readonly);
    (e.owner, e.group) = (owners.user(uid), owners.group(gid));
    (e.mtime_sec, e.mtime_nsec) = mtime(&meta);
    let ft = meta.file_type();
    if ft.is_symlink() {
        e.kind = Some(FileKind::Symlink);
        e.link = match std::fs::read_link(path) {
            Ok(l) => l.to_string_lossy().into_owned(),
            Err(err) => return unreadable(e, err),
        };
        return append(b, e, EntryType::Symlink, std::io::empty());
    }
    if ft.is_dir() {
        e.kind = Some(FileKind::Dir);
        return append(b, e, EntryType::Directory, std::io::empty());
    }
    e.kind = Some(FileKind::File);
    e.size = meta.len();
    if let Some(max) = spec.max_file_size
        && e.size > max
    {
        e.error = format!(
            "skipped: {} bytes, over the set's max_file_size_mib",
            e.size
        );
        return Ok(());
    }
    if !ft.is_file() {
        e.error = "skipped: not a regular file (device, socket or pipe)".into();
        return Ok(());
    }
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(err) => return unreadable(e, err),
    };
    let mut data = Exact {
        inner: file,
        left: e.size,
        hasher: Sha256::new(),
        short: false,
        failed: None,
    };
    append(b, e, EntryType::Regular, &mut data)?;
    e.data_offset = data_start(b.get_ref().pos, e.size);
    if let Some(err) = data.failed {
        e.error = format!("read failed: {err} (stored incomplete; not restored)");
        return Ok(());
    }
    let mut extra = [0u8; 1];
    let grew = data.inner.read(&mut extra).map(|n| n > 0).unwrap_or(false);
    let after = std::fs::symlink_metadata(path).ok();
    let moved = after.is_none_or(|a| a.len() != e.size || mtime(&a) != (e.mtime_sec, e.mtime_nsec));
    e.changed = data.short || grew || moved;
    e.sha256 = Some(data.hasher.finalize().into());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_path_is_listed_with_its_error_and_the_rest_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), "a: 1\n").unwrap();
        let spec = SetSpec {
            name: "s".into(),
            kind: "files",
            paths: vec![
                dir.path().display().to_string(),
                dir.path().join("missing.yaml").display().to_string(),
            ],
            excludes: globset::GlobSet::empty(),
            max_file_size: None,
            fail_on_unreadable: false,
            variables: vec![],
        };
        let mut tar = Vec::new();
        let out = write(&spec, None, &mut tar).unwrap();
        assert_eq!(out.unreadable, 1);
        let missing = out
            .entries
            .iter()
            .find(|e| e.path.ends_with("missing.yaml"))
            .unwrap();
        assert!(missing.error.contains("no such file"), "{missing:?}");
        let a = out
            .entries
            .iter()
            .find(|e| e.path.ends_with("a.yaml"))
            .unwrap();
        assert!(a.stored() && a.sha256.is_some() && !a.changed);
        // The archive holds the stored entries, readable, content where the manifest says.
        let start = a.data_offset as usize;
        assert_eq!(&tar[start..start + 5], b"a: 1\n");
        let names: Vec<String> = tar::Archive::new(tar.as_slice())
            .entries()
            .unwrap()
            .map(|e| String::from_utf8_lossy(&e.unwrap().path_bytes()).into_owned())
            .collect();
        assert_eq!(names.len(), 2, "the directory and a.yaml: {names:?}");
    }

    /// A file whose content differs from what its size said when it was read (here a
    /// /proc file: size 0, content behind it) is stored as read and flagged.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_file_that_changes_while_read_is_flagged() {
        let spec = SetSpec {
            name: "s".into(),
            kind: "files",
            paths: vec!["/proc/self/status".into()],
            excludes: globset::GlobSet::empty(),
            max_file_size: None,
            fail_on_unreadable: false,
            variables: vec![],
        };
        let out = write(&spec, None, Vec::new()).unwrap();
        let e = &out.entries[0];
        assert!(e.changed && e.stored(), "{e:?}");
    }
}
