//! The controller's data directory holds the catalog, every backup blob, the CA key and
//! the admin credential. It is created private (0700, files 0600 through a 0077 umask),
//! and the controller refuses to start on one that other users can write: whoever can
//! write there can replace the CA or delete backups.

use std::path::Path;

use anyhow::{Context, bail};

/// Create `dir` (0700) if needed, make new files private, and refuse a directory that
/// others can write.
pub fn prepare(dir: &Path) -> anyhow::Result<()> {
    private_umask();
    create_private(dir).with_context(|| format!("create data dir {}", dir.display()))?;
    check_not_shared(dir)
}

#[cfg(unix)]
fn private_umask() {
    rustix::process::umask(rustix::fs::Mode::from_bits_truncate(0o077));
}

#[cfg(not(unix))]
fn private_umask() {}

#[cfg(unix)]
fn create_private(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.exists() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(not(unix))]
fn create_private(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

/// Refuse a directory others can write; make one others can only read private.
#[cfg(unix)]
fn check_not_shared(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir)
        .with_context(|| format!("inspect data dir {}", dir.display()))?
        .permissions()
        .mode();
    if mode & 0o022 == 0 && mode & 0o077 != 0 {
        // Readable by others (made by an older version, or by hand): close it. With the
        // directory private, nothing inside can be reached by other users.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("make data dir {} private (chmod 700)", dir.display()))?;
        tracing::warn!(dir = %dir.display(), was = format!("{:o}", mode & 0o777),
            "data dir was readable by other users; made it private (0700)");
        return Ok(());
    }
    if mode & 0o022 != 0 {
        bail!(
            "data dir {} is writable by other users (mode {:o}); whoever can write there can replace the CA or delete backups. Fix it with: chmod 700 {}",
            dir.display(),
            mode & 0o777,
            dir.display()
        );
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_not_shared(_dir: &Path) -> anyhow::Result<()> {
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_new_data_dir_is_private_and_a_shared_one_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        prepare(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::fs::write(dir.join("f"), b"x").unwrap();
        let fmode = std::fs::metadata(dir.join("f"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(fmode, 0o600, "files are created 0600");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        prepare(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "a readable data dir is made private");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = prepare(&dir).unwrap_err().to_string();
        assert!(
            e.contains("writable by other users") && e.contains("chmod 700"),
            "{e}"
        );
    }
}
