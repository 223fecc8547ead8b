//! What differs between Unix and Windows for file sets: archive paths, modes, owners,
//! the read-only flag, and creating links. The Windows half is unverified (no Windows
//! target can be built here).

use std::fs::Metadata;
use std::path::{Component, Path};

/// The archive path of an absolute source path: relative and `/`-separated; on Windows
/// the drive letter is the first part (`C:\app\x.env` -> `C/app/x.env`).
pub fn archive_path(p: &Path) -> Option<String> {
    let mut parts = vec![];
    for c in p.components() {
        match c {
            Component::Prefix(pre) => {
                let s = pre.as_os_str().to_string_lossy();
                parts.push(s.trim_end_matches(':').to_string());
            }
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => return None,
            Component::Normal(n) => parts.push(n.to_str()?.to_string()),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// (mode, uid, gid, read-only) of an entry.
#[cfg(unix)]
pub fn attrs(m: &Metadata) -> (u32, u32, u32, bool) {
    use std::os::unix::fs::MetadataExt;
    (m.mode() & 0o7777, m.uid(), m.gid(), false)
}

#[cfg(windows)]
pub fn attrs(m: &Metadata) -> (u32, u32, u32, bool) {
    let ro = m.permissions().readonly();
    let mode = if m.is_dir() {
        0o755
    } else if ro {
        0o444
    } else {
        0o644
    };
    (mode, 0, 0, ro)
}

/// Apply a stored mode (and the read-only flag) to a restored file or directory.
#[cfg(unix)]
pub fn set_mode(p: &Path, mode: u32, _readonly: bool) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode & 0o7777))
}

#[cfg(windows)]
pub fn set_mode(p: &Path, _mode: u32, readonly: bool) -> std::io::Result<()> {
    let mut perm = std::fs::metadata(p)?.permissions();
    perm.set_readonly(readonly);
    std::fs::set_permissions(p, perm)
}

/// Create a symbolic link at `at` pointing to `target`.
#[cfg(unix)]
pub fn symlink(target: &str, at: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, at)
}

#[cfg(windows)]
pub fn symlink(target: &str, at: &Path) -> std::io::Result<()> {
    std::os::windows::fs::symlink_file(target, at)
}

/// Make everything written under `dir` durable, once.
#[cfg(unix)]
pub fn sync_fs(dir: &Path) -> std::io::Result<()> {
    let f = std::fs::File::open(dir)?;
    rustix::fs::syncfs(&f).map_err(std::io::Error::from)
}

#[cfg(windows)]
pub fn sync_fs(_dir: &Path) -> std::io::Result<()> {
    Ok(()) // each file handle is flushed on close; no volume-wide sync without admin rights
}
