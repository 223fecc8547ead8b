//! Making a group of new files durable at once.
//!
//! On Linux one `syncfs` per filesystem writes back every dirty page and commits the
//! journal once for the whole group (and, since Linux 5.8, reports a writeback error of
//! any file on it). Elsewhere each file and each directory is fsynced.

use std::fs::File;
use std::path::{Path, PathBuf};

/// The distinct directories of a group of paths.
pub(super) struct Dirs(Vec<PathBuf>);

impl Dirs {
    pub(super) fn of<'a>(paths: impl Iterator<Item = &'a Path>) -> Self {
        let mut dirs: Vec<PathBuf> = paths
            .filter_map(|p| p.parent().map(Path::to_path_buf))
            .collect();
        dirs.sort();
        dirs.dedup();
        Dirs(dirs)
    }
}

/// Make the data of `files` (new files in `dirs`) durable.
pub(super) fn sync_files(files: &[File], dirs: &Dirs) -> std::io::Result<()> {
    if files.is_empty() {
        return Ok(());
    }
    #[cfg(target_os = "linux")]
    {
        sync_filesystems(dirs)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = dirs;
        files.iter().try_for_each(File::sync_all)
    }
}

/// Make the entries just linked into `dirs` durable.
pub(super) fn sync_dirs(dirs: &Dirs) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        sync_filesystems(dirs)
    }
    #[cfg(all(unix, not(target_os = "linux")))]
    {
        dirs.0.iter().try_for_each(|d| File::open(d)?.sync_all())
    }
    #[cfg(not(unix))]
    {
        let _ = dirs;
        Ok(())
    }
}

/// One `syncfs` for each filesystem that holds one of `dirs`.
#[cfg(target_os = "linux")]
fn sync_filesystems(dirs: &Dirs) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let mut done = Vec::new();
    for d in &dirs.0 {
        let f = File::open(d)?;
        let dev = f.metadata()?.dev();
        if !done.contains(&dev) {
            rustix::fs::syncfs(&f).map_err(std::io::Error::from)?;
            done.push(dev);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_directories_of_a_group_are_listed_once() {
        let paths = [
            Path::new("/s/chunks/a/ab/1"),
            Path::new("/s/chunks/a/cd/2"),
            Path::new("/s/chunks/a/ab/3"),
        ];
        let d = Dirs::of(paths.into_iter());
        assert_eq!(
            d.0,
            vec![
                PathBuf::from("/s/chunks/a/ab"),
                PathBuf::from("/s/chunks/a/cd")
            ]
        );
    }
}
