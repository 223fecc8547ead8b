//! Restoring a set's archive into a directory (on a blocking thread, fed by the
//! verifying chunk stream). Every entry must land inside the directory: absolute paths,
//! `..`, paths through a link, and links pointing out are refused. Existing files are
//! never replaced without `overwrite`. Each file is written to a temporary name, its
//! SHA-256 checked against the manifest, its mode and mtime set, then renamed into place.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use globset::{Glob, GlobSet, GlobSetBuilder};
use nex_backup_shared::files::{FileEntry, FileKind};
use sha2::{Digest, Sha256};

use super::platform;
use crate::config::BadGlob;

/// What to restore and how.
pub struct Plan {
    pub dir: PathBuf,
    /// Only archive paths matching one of these (all when empty).
    pub only: Option<GlobSet>,
    pub overwrite: bool,
    /// The manifest's entries, by archive path.
    pub entries: HashMap<String, FileEntry>,
}

/// What was restored, and what was not (with why).
#[derive(Debug, Default)]
pub struct Extracted {
    pub files: u64,
    pub dirs: u64,
    pub links: u64,
    pub bytes: u64,
    /// Entries not restored: (archive path, why).
    pub refused: Vec<(String, String)>,
}

/// Compile `--path` globs (a plain path matches itself and everything under it).
pub fn selection(globs: &[String]) -> Result<Option<GlobSet>, BadGlob> {
    if globs.is_empty() {
        return Ok(None);
    }
    let mut b = GlobSetBuilder::new();
    for g in globs {
        let g = g.trim_start_matches('/').trim_end_matches('/');
        for pat in [g.to_string(), format!("{g}/**")] {
            b.add(Glob::new(&pat).map_err(|source| BadGlob::Path {
                glob: g.to_string(),
                source,
            })?);
        }
    }
    b.build().map(Some).map_err(BadGlob::Set)
}

/// The relative path of an archive entry, if it stays inside the target directory.
fn inside(path: &str) -> Option<PathBuf> {
    let p = Path::new(path);
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// Whether a link at `rel` (relative to the directory) pointing to `target` stays inside.
fn link_inside(rel: &Path, target: &str) -> bool {
    let t = Path::new(target);
    if t.is_absolute() {
        return false;
    }
    let mut depth: i64 = rel.components().count() as i64 - 1;
    for c in t.components() {
        match c {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            _ => return false,
        }
        if depth < 0 {
            return false;
        }
    }
    true
}

/// No existing part of `rel`'s parent inside `dir` is a link (nothing is written
/// through a link the archive made).
fn no_link_on_the_way(dir: &Path, rel: &Path) -> bool {
    let mut at = dir.to_path_buf();
    for c in rel.parent().into_iter().flat_map(Path::components) {
        at.push(c);
        if std::fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink()) {
            return false;
        }
    }
    true
}

fn set_times(p: &Path, e: &FileEntry) -> std::io::Result<()> {
    let t = filetime::FileTime::from_unix_time(e.mtime_sec, e.mtime_nsec);
    filetime::set_symlink_file_times(p, t, t)
}

fn refuse(out: &mut Extracted, name: &str, why: impl Into<String>) {
    out.refused.push((name.to_string(), why.into()));
}

/// Count a written file, or refuse it when its content did not match.
fn tally(out: &mut Extracted, name: &str, written: Option<u64>) {
    match written {
        Some(n) => {
            out.files += 1;
            out.bytes += n;
        }
        None => refuse(
            out,
            name,
            "content does not match the SHA-256 in the manifest: not restored",
        ),
    }
}

/// Restore the archive read from `r` according to `plan`.
pub fn extract<R: Read>(r: R, plan: &Plan) -> std::io::Result<Extracted> {
    std::fs::create_dir_all(&plan.dir)?;
    let mut out = Extracted::default();
    let mut dirs: Vec<(PathBuf, FileEntry)> = vec![];
    let mut archive = tar::Archive::new(r);
    for item in archive.entries()? {
        let mut entry = item?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        if plan.only.as_ref().is_some_and(|g| !g.is_match(&name)) {
            continue;
        }
        let Some(rel) = inside(&name) else {
            refuse(
                &mut out,
                &name,
                "absolute or leaves the directory (`..`): refused",
            );
            continue;
        };
        let Some(e) = plan.entries.get(&name) else {
            refuse(&mut out, &name, "not in the snapshot's manifest: refused");
            continue;
        };
        if !e.stored() {
            refuse(&mut out, &name, format!("not restorable: {}", e.error));
            continue;
        }
        if !no_link_on_the_way(&plan.dir, &rel) {
            refuse(&mut out, &name, "a link on its path: refused");
            continue;
        }
        let dest = plan.dir.join(&rel);
        match e.kind {
            Some(FileKind::Dir) => {
                std::fs::create_dir_all(&dest)?;
                dirs.push((dest, e.clone()));
                out.dirs += 1;
            }
            Some(FileKind::Symlink) => {
                if !link_inside(&rel, &e.link) {
                    refuse(
                        &mut out,
                        &name,
                        format!("link to {} points outside the directory: refused", e.link),
                    );
                    continue;
                }
                if std::fs::symlink_metadata(&dest).is_ok() {
                    if !plan.overwrite {
                        refuse(&mut out, &name, "exists (pass --overwrite to replace it)");
                        continue;
                    }
                    std::fs::remove_file(&dest)?;
                }
                if let Some(parent) = dest.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                platform::symlink(&e.link, &dest)?;
                set_times(&dest, e)?;
                out.links += 1;
            }
            _ => {
                if std::fs::symlink_metadata(&dest).is_ok() && !plan.overwrite {
                    refuse(&mut out, &name, "exists (pass --overwrite to replace it)");
                    continue;
                }
                let written = write_file(&mut entry, &dest, e)?;
                tally(&mut out, &name, written);
            }
        }
    }
    // Directory times last: writing into a directory changes its mtime.
    for (d, e) in dirs.iter().rev() {
        platform::set_mode(d, e.mode, e.readonly)?;
        set_times(d, e)?;
    }
    platform::sync_fs(&plan.dir)?;
    Ok(out)
}

/// Place one regular file whose content was read already (a `--path` restore reads only
/// the chunks that hold it), with the same checks as a full extraction.
pub fn place_file(
    plan: &Plan,
    e: &FileEntry,
    content: &[u8],
    out: &mut Extracted,
) -> std::io::Result<()> {
    let Some(rel) = inside(&e.path) else {
        refuse(
            out,
            &e.path,
            "absolute or leaves the directory (`..`): refused",
        );
        return Ok(());
    };
    if !no_link_on_the_way(&plan.dir, &rel) {
        refuse(out, &e.path, "a link on its path: refused");
        return Ok(());
    }
    let dest = plan.dir.join(&rel);
    if std::fs::symlink_metadata(&dest).is_ok() && !plan.overwrite {
        refuse(out, &e.path, "exists (pass --overwrite to replace it)");
        return Ok(());
    }
    let written = write_file(&mut &content[..], &dest, e)?;
    tally(out, &e.path, written);
    platform::sync_fs(&plan.dir)
}

/// Write one file through a temporary name, checking its SHA-256: its length, or `None`
/// when the content did not match (nothing is left behind).
fn write_file(data: &mut impl Read, dest: &Path, e: &FileEntry) -> std::io::Result<Option<u64>> {
    let parent = dest.parent().expect("inside the directory");
    std::fs::create_dir_all(parent)?;
    let name = dest.file_name().unwrap_or_default().to_string_lossy();
    let tmp = parent.join(format!(".{name}.nexb-{:08x}", rand::random::<u32>()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut n = 0u64;
        loop {
            let k = data.read(&mut buf)?;
            if k == 0 {
                break;
            }
            h.update(&buf[..k]);
            f.write_all(&buf[..k])?;
            n += k as u64;
        }
        // No fsync per file (20,000 small files would take a minute): the caller
        // syncs the file system once at the end.
        let sum: [u8; 32] = h.finalize().into();
        if Some(sum) != e.sha256 {
            return Ok(None);
        }
        drop(f);
        platform::set_mode(&tmp, e.mode, e.readonly)?;
        set_times(&tmp, e)?;
        std::fs::rename(&tmp, dest)?;
        Ok(Some(n))
    })();
    if !matches!(result, Ok(Some(_))) {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_and_links_must_stay_inside() {
        assert!(inside("etc/app/x.yaml").is_some());
        assert!(inside("/etc/passwd").is_none());
        assert!(inside("etc/../../x").is_none());
        assert!(link_inside(Path::new("etc/app/link"), "x.yaml"));
        assert!(link_inside(Path::new("etc/app/link"), "../../etc/y"));
        assert!(!link_inside(Path::new("etc/app/link"), "../../../y"));
        assert!(!link_inside(Path::new("etc/link"), "/etc/shadow"));
    }

    /// A tar entry with a raw name (bypassing the builder's own checks).
    fn raw(
        b: &mut tar::Builder<Vec<u8>>,
        name: &[u8],
        ty: tar::EntryType,
        link: &[u8],
        data: &[u8],
    ) {
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
        h.set_entry_type(ty);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }

    #[test]
    fn a_crafted_archive_writes_nothing_outside_the_directory() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("into");
        let mut b = tar::Builder::new(Vec::new());
        let evil = b"pwned\n";
        raw(
            &mut b,
            b"../outside.txt",
            tar::EntryType::Regular,
            b"",
            evil,
        );
        let abs = root.path().join("abs.txt");
        raw(
            &mut b,
            abs.to_str().unwrap().as_bytes(),
            tar::EntryType::Regular,
            b"",
            evil,
        );
        let up = root.path().to_str().unwrap().as_bytes().to_vec();
        raw(&mut b, b"esc", tar::EntryType::Symlink, &up, b"");
        raw(
            &mut b,
            b"esc/through.txt",
            tar::EntryType::Regular,
            b"",
            evil,
        );
        raw(&mut b, b"ok.txt", tar::EntryType::Regular, b"", evil);
        let tar = b.into_inner().unwrap();
        let sum: [u8; 32] = Sha256::digest(evil).into();
        let mut entries = HashMap::new();
        for (p, kind, link) in [
            ("../outside.txt", FileKind::File, ""),
            (abs.to_str().unwrap(), FileKind::File, ""),
            ("esc", FileKind::Symlink, root.path().to_str().unwrap()),
            ("esc/through.txt", FileKind::File, ""),
            ("ok.txt", FileKind::File, ""),
        ] {
            let e = FileEntry {
                path: p.into(),
                kind: Some(kind),
                link: link.into(),
                mode: 0o644,
                size: evil.len() as u64,
                sha256: Some(sum),
                ..Default::default()
            };
            entries.insert(p.to_string(), e);
        }
        let plan = Plan {
            dir: dir.clone(),
            only: None,
            overwrite: false,
            entries,
        };
        let x = extract(tar.as_slice(), &plan).unwrap();
        // The link was refused, so esc/through.txt lands in a real directory inside.
        assert_eq!(x.files, 2, "{:?}", x.refused);
        assert!(dir.join("ok.txt").exists());
        assert!(dir.join("esc/through.txt").is_file());
        assert!(!root.path().join("outside.txt").exists());
        assert!(!abs.exists());
        assert!(!root.path().join("through.txt").exists());
        assert!(dir.join("esc").is_dir(), "no link out");
        assert_eq!(x.refused.len(), 3, "{:?}", x.refused);
    }

    #[test]
    fn a_path_selects_itself_and_what_is_under_it() {
        let g = selection(&["/etc/app".into()]).unwrap().unwrap();
        assert!(g.is_match("etc/app"));
        assert!(g.is_match("etc/app/x.yaml"));
        assert!(!g.is_match("etc/application"));
        let g = selection(&["etc/*.env".into()]).unwrap().unwrap();
        assert!(g.is_match("etc/prod.env"));
    }
}
