//! Finding PostgreSQL client tools (pg_dump, pg_dumpall, pg_restore, psql) whose major
//! version is at least the server's, on Linux and on Windows.

use crate::error::AgentError;
use std::path::{Path, PathBuf};

/// A located tool and its major version.
#[derive(Debug, Clone)]
pub struct Tool {
    pub path: PathBuf,
    pub version: String,
    pub major: u32,
}

fn exe(name: &str) -> String {
    format!("{name}{}", std::env::consts::EXE_SUFFIX)
}

/// Directories to search, most specific first.
fn candidate_dirs(configured: Option<&Path>) -> Vec<PathBuf> {
    if let Some(d) = configured {
        return vec![d.to_path_buf()];
    }
    let mut dirs = vec![];
    let mut versioned: Vec<PathBuf> = vec![];
    #[cfg(unix)]
    let roots = [
        PathBuf::from("/usr/lib/postgresql"),
        PathBuf::from("/usr/pgsql"),
    ];
    #[cfg(windows)]
    let roots = [
        PathBuf::from(r"C:\Program Files\PostgreSQL"),
        PathBuf::from(r"C:\Program Files (x86)\PostgreSQL"),
    ];
    for root in roots {
        if let Ok(entries) = std::fs::read_dir(&root) {
            versioned.extend(entries.flatten().map(|e| e.path().join("bin")));
        }
    }
    // Newest first: "17" sorts after "9.6" numerically.
    versioned.sort_by_key(|p| {
        let v = p
            .parent()
            .and_then(|v| v.file_name())
            .map(|v| v.to_string_lossy().into_owned())
            .unwrap_or_default();
        std::cmp::Reverse(
            v.split('.')
                .next()
                .and_then(|m| m.parse::<u32>().ok())
                .unwrap_or(0),
        )
    });
    dirs.extend(versioned);
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs
}

/// Parse "pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)" -> ("15.18", 15).
pub fn parse_version(out: &str) -> Option<(String, u32)> {
    let v = out
        .split_whitespace()
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))?;
    let major = v.split(['.', '-']).next()?.parse().ok()?;
    Some((v.to_string(), major))
}

async fn probe(path: &Path) -> Option<Tool> {
    let out = tokio::process::Command::new(path)
        .arg("--version")
        .output()
        .await
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let (version, major) = parse_version(&text)?;
    Some(Tool {
        path: path.to_path_buf(),
        version,
        major,
    })
}

/// Debian's postgresql-common dispatcher: `/usr/bin/pg_dump` and its kin link to it, and
/// it runs one of the versioned binaries under /usr/lib/postgresql, which discovery
/// searches first. A Perl script: asking it for a version costs 30–70 ms.
const DISPATCHER: &str = "pg_wrapper";

/// Find `name` with major version >= `min_major`, preferring the newest.
pub async fn find(
    name: &str,
    configured: Option<&Path>,
    min_major: u32,
) -> Result<Tool, AgentError> {
    let (best, seen) = find_in(name, candidate_dirs(configured), min_major).await;
    best.ok_or_else(|| {
        let found: Vec<String> = seen.iter().map(|t| format!("{} {} at {}", name, t.version, t.path.display())).collect();
        let found = if found.is_empty() { "none".to_string() } else { found.join(", ") };
        let where_ = configured.map_or("(discovery)".to_string(), |d| d.display().to_string());
        format!("{name} {min_major} or newer is needed for this server; found: {found} (searched {where_}; set pg_bin_dir)")
    })
    .map_err(AgentError::from)
}

/// The newest `name` of at least `min_major` in `dirs`, and every one probed. Each file
/// is asked once, whatever links lead to it (`/bin` is `/usr/bin` on merged-/usr
/// systems), and the [`DISPATCHER`] only when no versioned binary was found before it.
async fn find_in(name: &str, dirs: Vec<PathBuf>, min_major: u32) -> (Option<Tool>, Vec<Tool>) {
    let mut asked = std::collections::HashSet::new();
    let mut seen: Vec<Tool> = vec![];
    let mut best: Option<Tool> = None;
    for dir in dirs {
        let p = dir.join(exe(name));
        if !p.is_file() {
            continue;
        }
        let real = std::fs::canonicalize(&p).unwrap_or_else(|_| p.clone());
        let dispatcher = real.file_name().is_some_and(|f| f == DISPATCHER);
        if !asked.insert(real) || (dispatcher && !seen.is_empty()) {
            continue;
        }
        if let Some(t) = probe(&p).await {
            if t.major >= min_major && best.as_ref().is_none_or(|b| t.major > b.major) {
                best = Some(t.clone());
            }
            seen.push(t);
        }
    }
    (best, seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse() {
        assert_eq!(
            parse_version("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n"),
            Some(("15.18".into(), 15))
        );
        assert_eq!(
            parse_version("pg_restore (PostgreSQL) 9.6.24"),
            Some(("9.6.24".into(), 9))
        );
        assert_eq!(
            parse_version("pg_dump (PostgreSQL) 17beta1").map(|v| v.1),
            None
        );
        assert_eq!(parse_version("garbage"), None);
    }

    /// A tool script printing its version, appending a line to `log` each time it runs.
    #[cfg(unix)]
    fn script(path: &Path, log: &Path) {
        use std::os::unix::fs::PermissionsExt;
        let text = format!(
            "#!/bin/sh\necho run >> '{}'\necho 'pg_dump (PostgreSQL) 15.2'\n",
            log.display()
        );
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// Debian's layout: a versioned binary, `/usr/bin/pg_dump` linking to the Perl
    /// dispatcher, and `/bin` a link to `/usr/bin`.
    #[cfg(unix)]
    #[tokio::test]
    async fn each_file_is_asked_once_and_the_dispatcher_only_when_nothing_else_was_found() {
        let d = tempfile::tempdir().unwrap();
        let (versioned, usr_bin, bin) = (
            d.path().join("15"),
            d.path().join("usr-bin"),
            d.path().join("bin"),
        );
        std::fs::create_dir_all(&versioned).unwrap();
        std::fs::create_dir_all(&usr_bin).unwrap();
        std::os::unix::fs::symlink(&usr_bin, &bin).unwrap();
        let (ran_versioned, ran_wrapper) = (d.path().join("ran-15"), d.path().join("ran-wrapper"));
        script(&versioned.join("pg_dump"), &ran_versioned);
        script(&usr_bin.join(DISPATCHER), &ran_wrapper);
        std::os::unix::fs::symlink(usr_bin.join(DISPATCHER), usr_bin.join("pg_dump")).unwrap();
        let runs = |log: &Path| std::fs::read_to_string(log).map_or(0, |t| t.lines().count());

        let dirs = vec![versioned.clone(), usr_bin.clone(), bin.clone()];
        let (best, seen) = find_in("pg_dump", dirs, 15).await;
        assert_eq!(best.unwrap().path, versioned.join("pg_dump"));
        assert_eq!(
            (seen.len(), runs(&ran_versioned), runs(&ran_wrapper)),
            (1, 1, 0)
        );

        // Without a versioned binary the dispatcher is asked, once for both links.
        let (best, seen) = find_in("pg_dump", vec![usr_bin.clone(), bin], 15).await;
        assert_eq!(best.unwrap().path, usr_bin.join("pg_dump"));
        assert_eq!((seen.len(), runs(&ran_wrapper)), (1, 1));
    }

    #[tokio::test]
    async fn too_old_is_explained() {
        let e = find("pg_dump", Some(Path::new("/nonexistent-dir")), 99)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("pg_dump 99 or newer") && e.contains("/nonexistent-dir"),
            "{e}"
        );
    }
}
