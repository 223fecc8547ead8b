//! The agent's key ring: every master-key epoch of its site it holds. The newest epoch
//! seals new snapshots; older epochs stay so that old snapshots remain restorable (each
//! sealed object names its key id in the clear header).
//!
//! File format (text, mode 0600, written atomically):
//! ```text
//! # comment lines
//! site = <site>
//! epoch <n> <key id hex> <master key base64>
//! ```

use std::fmt;
use std::io::Write;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::keys::MasterKey;

/// Key ring errors; they name the file and never include key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyRingError {
    #[error("key ring {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("key ring {path}: line {line}: {reason}")]
    Parse {
        path: String,
        line: usize,
        reason: String,
    },
}

/// See module docs.
#[derive(Clone)]
pub struct KeyRing {
    pub site: String,
    /// (epoch, key), ascending by epoch.
    epochs: Vec<(u32, MasterKey)>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<String> = self
            .epochs
            .iter()
            .map(|(e, k)| format!("{e}:{}", k.derive().key_id_hex()))
            .collect();
        write!(f, "KeyRing({}, epochs [{}])", self.site, ids.join(", "))
    }
}

impl KeyRing {
    pub fn new(site: &str) -> Self {
        KeyRing {
            site: site.into(),
            epochs: vec![],
        }
    }

    /// The epoch that seals new snapshots.
    pub fn current(&self) -> Option<(u32, &MasterKey)> {
        self.epochs.last().map(|(e, k)| (*e, k))
    }

    /// Every epoch, oldest first.
    pub fn epochs(&self) -> impl Iterator<Item = (u32, &MasterKey)> {
        self.epochs.iter().map(|(e, k)| (*e, k))
    }

    /// The key whose derived key id is `key_id`.
    pub fn by_key_id(&self, key_id: [u8; 8]) -> Option<&MasterKey> {
        self.epochs
            .iter()
            .find(|(_, k)| k.derive().key_id() == key_id)
            .map(|(_, k)| k)
    }

    /// Add (or replace) an epoch.
    pub fn insert(&mut self, epoch: u32, key: MasterKey) {
        self.epochs.retain(|(e, _)| *e != epoch);
        self.epochs.push((epoch, key));
        self.epochs.sort_by_key(|(e, _)| *e);
    }

    /// Load the ring at `path`; `None` when there is no file.
    pub fn load(path: &Path) -> Result<Option<Self>, KeyRingError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(KeyRingError::Io {
                    path: path.display().to_string(),
                    source,
                });
            }
        };
        Self::parse(&text)
            .map(Some)
            .map_err(|(line, reason)| KeyRingError::Parse {
                path: path.display().to_string(),
                line,
                reason,
            })
    }

    fn parse(text: &str) -> Result<Self, (usize, String)> {
        let mut ring = KeyRing::new("");
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(site) = line.strip_prefix("site = ") {
                ring.site = site.trim().to_string();
                continue;
            }
            let parts: Vec<&str> = line.split_whitespace().collect();
            let [kw, epoch, key_id, key] = parts[..] else {
                return Err((n, "expected `epoch <n> <key id> <key>`".into()));
            };
            let epoch: u32 = epoch
                .parse()
                .ok()
                .filter(|_| kw == "epoch")
                .ok_or((n, "expected `epoch <n> <key id> <key>`".into()))?;
            let bytes: [u8; 32] = STANDARD
                .decode(key)
                .ok()
                .and_then(|v| v.try_into().ok())
                .ok_or((n, format!("epoch {epoch}: key is not 32 bytes of base64")))?;
            let key = MasterKey::from_bytes(bytes);
            if key.derive().key_id_hex() != key_id {
                return Err((
                    n,
                    format!("epoch {epoch}: key does not match key id {key_id}"),
                ));
            }
            ring.insert(epoch, key);
        }
        if ring.site.is_empty() {
            return Err((0, "no `site = ` line".into()));
        }
        Ok(ring)
    }

    /// Write the ring to `path` atomically with owner-only permissions.
    pub fn save(&self, path: &Path) -> Result<(), KeyRingError> {
        let mut text = format!(
            "# NEX Backup key ring of site {}. SECRET: these keys decrypt the site's backups.\n\
             # Losing it is recoverable only with an offline recovery key.\nsite = {}\n",
            self.site, self.site
        );
        for (e, k) in &self.epochs {
            text.push_str(&format!(
                "epoch {e} {} {}\n",
                k.derive().key_id_hex(),
                STANDARD.encode(k.as_bytes())
            ));
        }
        write_private_file(path, text.as_bytes()).map_err(|source| KeyRingError::Io {
            path: path.display().to_string(),
            source,
        })
    }
}

/// Write `bytes` to `path` atomically (temp file, fsync, rename, fsync dir), readable by
/// the owner only: mode 0600 on Unix; on Windows inheritance is removed and only the
/// current account is granted access.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    restrict_to_owner(&tmp)?;
    std::fs::rename(&tmp, path)?;
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(unix)]
fn restrict_to_owner(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

#[cfg(windows)]
fn restrict_to_owner(path: &Path) -> std::io::Result<()> {
    // icacls ships with every Windows; grant the account the agent runs as (the service
    // account) full control and drop inherited entries.
    let user = std::env::var("USERNAME").unwrap_or_else(|_| "SYSTEM".into());
    let status = std::process::Command::new("icacls")
        .arg(path)
        .args(["/inheritance:r", "/grant:r"])
        .arg(format!("{user}:F"))
        .stdout(std::process::Stdio::null())
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "icacls could not restrict {}",
            path.display()
        )))
    }
}

#[cfg(not(any(unix, windows)))]
fn restrict_to_owner(_: &Path) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn save_load_round_trip_0600() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/keyring");
        assert!(KeyRing::load(&p).unwrap().is_none());
        let mut r = KeyRing::new("acme");
        let (k1, k2) = (MasterKey::generate(), MasterKey::generate());
        r.insert(2, k2.clone());
        r.insert(1, k1.clone());
        r.save(&p).unwrap();
        let back = KeyRing::load(&p).unwrap().unwrap();
        assert_eq!(back.site, "acme");
        assert_eq!(back.current().unwrap().0, 2);
        let id1 = k1.derive().key_id();
        assert_eq!(back.by_key_id(id1).unwrap().as_bytes(), k1.as_bytes());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(!format!("{back:?}").contains(&STANDARD.encode(k1.as_bytes())));
    }

    #[test]
    fn damaged_files_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("keyring");
        std::fs::write(&p, "site = a\nepoch 1 00 AAAA\n").unwrap();
        let e = KeyRing::load(&p).unwrap_err().to_string();
        assert!(e.contains("keyring") && e.contains("line 2"), "{e}");
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in "(site = [a-z]{1,5}\n)?(epoch [0-9]{1,3} [0-9a-f]{0,16} [A-Za-z0-9+/=]{0,44}\n){0,3}") {
            let _ = KeyRing::parse(&text);
        }
    }
}
