//! Replicas and real agents for the benchmark commands: replica arguments on a shared
//! catalog and store, and enrolled `nex-backup-agent run` processes with one PostgreSQL
//! target, `erp`.

use std::path::Path;

use crate::env::PW_ENV;
use crate::pg::{PASSWORD, PgCluster};
use crate::procs::{Agent, Controller, agent_cmd, recovery_key};

/// `nex-backup serve` arguments of a replica on the shared `catalog` and `store`, with a
/// recovery key made in `dir` (the same for every replica started with these).
pub fn replica_args(dir: &Path, catalog: &str, store: &str) -> Vec<String> {
    let file = dir.join("recovery.key");
    let public = if file.exists() {
        std::fs::read_to_string(dir.join("recovery.pub")).expect("recovery.pub")
    } else {
        let public = recovery_key(&file);
        std::fs::write(dir.join("recovery.pub"), &public).expect("write recovery.pub");
        public
    };
    [
        "--recovery-key",
        &public,
        "--catalog",
        catalog,
        "--store",
        store,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Enroll `site`'s agent through `via` and start it. Its target `erp` is database `db`
/// of `pg`; `controllers` is its `controller` setting (one URL or several, comma
/// separated). Config, state and log live under `dir`.
pub fn real_agent(
    via: &Controller,
    controllers: &str,
    site: &str,
    pg: &PgCluster,
    db: &str,
    dir: &Path,
) -> Agent {
    let config = dir.join(format!("{site}.toml"));
    std::fs::write(
        &config,
        format!(
            "agent_id = \"{site}-agent\"\ncontroller = \"{controllers}\"\nstate_dir = \"{}\"\n\n\
             [[targets]]\nname = \"erp\"\nhost = \"127.0.0.1\"\nport = {}\n\
             user = \"postgres\"\ndbname = \"{db}\"\npassword_env = \"{PW_ENV}\"\n\
             pg_bin_dir = \"{}\"\n",
            dir.join(format!("{site}-state")).display(),
            pg.port,
            pg.bin.display(),
        ),
    )
    .expect("write agent config");
    let token = via.cli(&["token", "create", "--site", site]);
    assert!(token.ok, "token create: {}", token.stderr);
    let config_s = config.display().to_string();
    let out = agent_cmd(
        &[
            "enroll",
            "--config",
            &config_s,
            "--ca-fingerprint",
            &via.fingerprint,
        ],
        &[("NEX_ENROLL_TOKEN", token.stdout.trim())],
    );
    assert!(out.ok, "enroll {site}: {}", out.stderr);
    Agent::start(
        &config,
        &[(PW_ENV, PASSWORD)],
        &dir.join(format!("{site}.log")),
    )
}
