//! File and environment sets in the agent config: what files and which environment
//! variables this host backs up, each set a target of its own.

use std::path::PathBuf;

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Deserialize;

/// `[[file_sets]]`: files, directories and globs, with excludes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSetConfig {
    pub name: String,
    /// Files, directories (taken whole) and globs (`/etc/app/*.yaml`), absolute.
    pub paths: Vec<String>,
    /// Globs matched against each full path; a matching directory is skipped whole.
    #[serde(default)]
    pub excludes: Vec<String>,
    /// Files larger than this (MiB) are listed as skipped, not stored.
    #[serde(default)]
    pub max_file_size_mib: Option<u64>,
    /// An unreadable file fails the backup (default: the backup ends partial).
    #[serde(default)]
    pub fail_on_unreadable: bool,
}

/// `[[env_sets]]`: environment variables of the agent and `.env` files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvSetConfig {
    pub name: String,
    /// Variable names; a trailing `*` makes a prefix (`APP_*`).
    #[serde(default)]
    pub variables: Vec<String>,
    /// `.env` files, stored as files.
    #[serde(default)]
    pub env_files: Vec<PathBuf>,
}

/// What one backup of a file or environment set reads.
#[derive(Debug, Clone)]
pub struct SetSpec {
    pub name: String,
    /// "files" or "env".
    pub kind: &'static str,
    pub paths: Vec<String>,
    pub excludes: GlobSet,
    pub max_file_size: Option<u64>,
    pub fail_on_unreadable: bool,
    /// Environment variable patterns (env sets).
    pub variables: Vec<String>,
}

/// A glob (an exclude, or a restore's `--path`) that does not compile.
#[derive(Debug, thiserror::Error)]
pub enum BadGlob {
    #[error("exclude {glob:?}: {source}")]
    Exclude {
        glob: String,
        #[source]
        source: globset::Error,
    },
    #[error("--path {glob:?}: {source}")]
    Path {
        glob: String,
        #[source]
        source: globset::Error,
    },
    #[error("globs: {0}")]
    Set(#[source] globset::Error),
}

/// A file set that cannot be backed up as configured.
#[derive(Debug, thiserror::Error)]
#[error("file set {name}: {source}")]
pub struct BadSet {
    pub name: String,
    #[source]
    pub source: BadGlob,
}

/// Compile exclude globs; the error names the glob.
pub fn excludes(globs: &[String]) -> Result<GlobSet, BadGlob> {
    let mut b = GlobSetBuilder::new();
    for g in globs {
        b.add(Glob::new(g).map_err(|source| BadGlob::Exclude {
            glob: g.clone(),
            source,
        })?);
    }
    b.build().map_err(BadGlob::Set)
}

impl FileSetConfig {
    pub fn spec(&self) -> Result<SetSpec, BadGlob> {
        Ok(SetSpec {
            name: self.name.clone(),
            kind: "files",
            paths: self.paths.clone(),
            excludes: excludes(&self.excludes)?,
            max_file_size: self.max_file_size_mib.map(|m| m << 20),
            fail_on_unreadable: self.fail_on_unreadable,
            variables: vec![],
        })
    }

    /// Problems a config check reports: (key, reason).
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.paths.is_empty() {
            return Err(("paths", "give at least one path".into()));
        }
        for p in &self.paths {
            if !std::path::Path::new(p).is_absolute() {
                return Err(("paths", format!("{p:?} is not an absolute path")));
            }
            if p.contains(['*', '?', '[']) {
                Glob::new(p).map_err(|e| ("paths", format!("{p:?}: {e}")))?;
            }
        }
        excludes(&self.excludes).map_err(|e| ("excludes", e.to_string()))?;
        Ok(())
    }
}

impl EnvSetConfig {
    pub fn spec(&self) -> SetSpec {
        SetSpec {
            name: self.name.clone(),
            kind: "env",
            paths: self
                .env_files
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
            excludes: GlobSet::empty(),
            max_file_size: Some(16 << 20),
            fail_on_unreadable: false,
            variables: self.variables.clone(),
        }
    }

    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.variables.is_empty() && self.env_files.is_empty() {
            return Err(("variables", "give variables or env_files".into()));
        }
        for p in &self.env_files {
            if !p.is_absolute() {
                return Err((
                    "env_files",
                    format!("{} is not an absolute path", p.display()),
                ));
            }
        }
        Ok(())
    }
}
