//! `nex-backup-agent snapshots` and `restore --store` against a store copy (a
//! directory or an `s3://` URL) and a recovery key, with no controller: what the
//! offline-restore and off-site copy tests run.

use crate::env::{Env, PW_ENV, SITE};
use crate::pg::PASSWORD;
use crate::procs::{CliOut, agent_cmd};

/// The offline commands on one store copy with one recovery key, restoring onto the
/// environment's cluster.
pub struct Offline<'a> {
    pub env: &'a Env,
    pub store: String,
    pub key: String,
}

impl<'a> Offline<'a> {
    /// The copy at `store`, opened with the environment's recovery key.
    pub fn new(env: &'a Env, store: &str) -> Offline<'a> {
        Offline {
            env,
            store: store.to_string(),
            key: env.recovery_key.display().to_string(),
        }
    }

    /// `nex-backup-agent ARGS[0] --store … --recovery-key … ARGS[1..]`.
    pub fn run(&self, args: &[&str]) -> CliOut {
        let mut all = vec![args[0], "--store", &self.store, "--recovery-key", &self.key];
        all.extend(&args[1..]);
        agent_cmd(&all, &[(PW_ENV, PASSWORD)])
    }

    /// Restore `snapshot` (an id or `latest`) of target `main` to `to` (e.g.
    /// `["--to-database", "db"]`) on the environment's cluster.
    pub fn restore(&self, snapshot: &str, to: &[&str]) -> CliOut {
        let port = self.env.pg.port.to_string();
        let bin = self.env.pg.bin.display().to_string();
        let mut args = vec![
            "restore",
            "--site",
            SITE,
            "--target",
            "main",
            "--snapshot",
            snapshot,
            "--pg-port",
            &port,
            "--pg-password-env",
            PW_ENV,
            "--pg-bin-dir",
            &bin,
        ];
        args.extend(to);
        self.run(&args)
    }
}
