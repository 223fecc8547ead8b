//! File and environment sets in a snapshot: the `files.tar` stream (pax tar) and, in the
//! manifest, one [`FileEntry`] per archive entry (and per file that could not be read),
//! so that listing and diffing a snapshot need no data chunks.

use crate::error::FormatError;
use crate::pb;

/// The stream holding a file set's archive.
pub const STREAM_FILES: &str = "files.tar";
/// Where an environment set's variables are stored in its archive.
pub const ENVIRONMENT_FILE: &str = "environment.env";
/// Longest archive path accepted.
pub const MAX_PATH_LEN: usize = 4096;

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    File,
    Dir,
    Symlink,
}

/// One file, directory or link of a file set, as recorded in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FileEntry {
    pub path: String,
    pub kind: Option<FileKind>,
    pub size: u64,
    pub mtime_sec: i64,
    pub mtime_nsec: u32,
    pub mode: u32,
    pub link: String,
    pub sha256: Option<[u8; 32]>,
    pub changed: bool,
    pub error: String,
    pub owner: String,
    pub group: String,
    pub readonly: bool,
    /// Where a regular file's content starts in the archive stream.
    pub data_offset: u64,
}

impl FileEntry {
    /// A regular file.
    pub fn is_file(&self) -> bool {
        self.kind == Some(FileKind::File)
    }

    /// In the archive (not an unreadable file).
    pub fn stored(&self) -> bool {
        self.error.is_empty()
    }
}

impl From<&FileEntry> for pb::FileEntry {
    fn from(e: &FileEntry) -> Self {
        pb::FileEntry {
            path: e.path.clone(),
            kind: match e.kind {
                Some(FileKind::Dir) => 1,
                Some(FileKind::Symlink) => 2,
                _ => 0,
            },
            size: e.size,
            mtime_sec: e.mtime_sec,
            mtime_nsec: e.mtime_nsec,
            mode: e.mode,
            link: e.link.clone(),
            sha256: e.sha256.map(|h| h.to_vec()).unwrap_or_default(),
            changed: e.changed,
            error: e.error.clone(),
            owner: e.owner.clone(),
            group: e.group.clone(),
            readonly: e.readonly,
            data_offset: e.data_offset,
        }
    }
}

impl TryFrom<pb::FileEntry> for FileEntry {
    type Error = FormatError;
    fn try_from(p: pb::FileEntry) -> Result<Self, FormatError> {
        let what = "manifest file entry";
        if p.path.is_empty() || p.path.len() > MAX_PATH_LEN || p.path.contains('\0') {
            return Err(FormatError::invalid(what, "bad path"));
        }
        let kind = match p.kind {
            0 => FileKind::File,
            1 => FileKind::Dir,
            2 => FileKind::Symlink,
            k => return Err(FormatError::invalid(what, format!("kind {k}"))),
        };
        let sha256 = match p.sha256.len() {
            0 => None,
            32 => Some(p.sha256.as_slice().try_into().expect("32 bytes")),
            n => return Err(FormatError::invalid(what, format!("sha256 of {n} bytes"))),
        };
        Ok(FileEntry {
            path: p.path,
            kind: Some(kind),
            size: p.size,
            mtime_sec: p.mtime_sec,
            mtime_nsec: p.mtime_nsec,
            mode: p.mode,
            link: p.link,
            sha256,
            changed: p.changed,
            error: p.error,
            owner: p.owner,
            group: p.group,
            readonly: p.readonly,
            data_offset: p.data_offset,
        })
    }
}
