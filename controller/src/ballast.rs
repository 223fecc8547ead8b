//! Emergency room on a full disk. Garbage collection is how a full controller disk gets
//! space back, but it must first make its catalog deletions durable (before any blob
//! goes, so a crash never leaves a record whose blob is gone), and that write needs a
//! little space itself. So the controller keeps a small ballast file in its data
//! directory; when the catalog reports the disk full during GC, the ballast is
//! released, GC runs in small steps that each free their blobs, and the ballast is laid
//! again once there is room.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The ballast's size: room for a few catalog log writes.
pub const BALLAST_BYTES: usize = 1 << 20;

/// The ballast file of one data directory.
#[derive(Debug, Clone)]
pub struct Ballast {
    path: PathBuf,
}

impl Ballast {
    pub fn new(data_dir: &Path) -> Ballast {
        Ballast {
            path: data_dir.join("ballast.reserve"),
        }
    }

    /// Lay the ballast if it is missing (real blocks, not a sparse file). A failure
    /// (no room yet) is logged and tried again later.
    pub fn lay(&self) {
        if self.path.exists() {
            return;
        }
        let tmp = self.path.with_extension("tmp");
        let laid = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&vec![0xA5u8; BALLAST_BYTES])?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        })();
        if let Err(e) = laid {
            let _ = std::fs::remove_file(&tmp);
            tracing::warn!(path = %self.path.display(), error = %e, "could not lay the disk ballast (no room yet)");
        }
    }

    /// Release the ballast when its disk has less than its size free: a run of GC calls
    /// this before its first catalog write, because the embedded catalog, once a write
    /// of its log fails for want of space, fails every later operation until restart.
    pub fn release_if_full(&self) -> bool {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        match free_bytes(dir) {
            Some(free) if free < BALLAST_BYTES as u64 => self.release(),
            _ => false,
        }
    }

    /// Free the ballast's space. True when there was one to free.
    pub fn release(&self) -> bool {
        let freed = std::fs::remove_file(&self.path).is_ok();
        if freed {
            tracing::warn!(path = %self.path.display(), "disk full: released the ballast so garbage collection can free space");
        }
        freed
    }
}

#[cfg(unix)]
fn free_bytes(dir: &Path) -> Option<u64> {
    let st = rustix::fs::statvfs(dir).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

#[cfg(not(unix))]
fn free_bytes(_dir: &Path) -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lays_releases_and_lays_again() {
        let dir = tempfile::tempdir().unwrap();
        let b = Ballast::new(dir.path());
        b.lay();
        let p = dir.path().join("ballast.reserve");
        assert_eq!(std::fs::metadata(&p).unwrap().len(), BALLAST_BYTES as u64);
        assert!(b.release());
        assert!(!p.exists());
        assert!(!b.release(), "nothing left to free");
        b.lay();
        assert!(!b.release_if_full(), "a roomy disk keeps its ballast");
        b.lay();
        assert!(p.exists());
    }
}
