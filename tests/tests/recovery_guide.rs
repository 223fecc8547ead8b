//! The recovery guide cannot rot: every block of `docs/RECOVERY_GUIDE.md` marked
//! ```` ```sh tested:<id> ```` runs here, in the guide's order, with `bash -eo pipefail`,
//! against a throwaway controller, agent and PostgreSQL cluster. Before some blocks this
//! harness causes the disaster the scenario describes (rows deleted, a database
//! truncated, the customer's server or the controller lost, a chunk damaged, a bad
//! configuration change); after some it checks the result or starts what the guide says
//! to start. A guide command that stops working fails here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use nex_backup_tests::env::{Env, EnvOpts, PW_ENV, SITE};
use nex_backup_tests::pg::PASSWORD;
use nex_backup_tests::procs::{Controller, bin};
use nex_backup_tests::sample::invoices_sql;
use nex_backup_tests::store_files::{chunk_files, flip_byte, varies_per_dump};
use nex_backup_tests::wait_for;

/// The tested blocks of the guide: (id, script).
fn tested_blocks(guide: &str) -> Vec<(String, String)> {
    let mut out = vec![];
    let mut current: Option<(String, String)> = None;
    for line in guide.lines() {
        match &mut current {
            None => {
                if let Some(id) = line.trim().strip_prefix("```sh tested:") {
                    current = Some((id.trim().to_string(), String::new()));
                }
            }
            Some((_, body)) if line.trim() == "```" => {
                let _ = body;
                out.push(current.take().expect("in a block"));
            }
            Some((_, body)) => {
                body.push_str(line);
                body.push('\n');
            }
        }
    }
    out
}

struct Run {
    env: Env,
    vars: BTreeMap<String, String>,
    work: PathBuf,
    conf: PathBuf,
}

impl Run {
    fn run_block(&self, id: &str, script: &str) {
        let bin_dir = bin("nex-backup").parent().unwrap().to_path_buf();
        let path = format!(
            "{}:{}:{}",
            bin_dir.display(),
            self.env.pg.bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = Command::new("bash")
            .args(["-eo", "pipefail", "-c", script])
            .current_dir(&self.work)
            .envs(&self.vars)
            .env("PATH", path)
            .env("NEX_LOG", "warn")
            .output()
            .expect("run bash");
        assert!(
            out.status.success(),
            "guide block {id} failed:\n{script}\n--- stdout\n{}\n--- stderr\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.env.logs()
        );
    }

    fn set(&mut self, k: &str, v: impl Into<String>) {
        self.vars.insert(k.into(), v.into());
    }

    fn count(&self, db: &str) -> String {
        self.env.pg.psql(db, "SELECT count(*) FROM invoices")
    }

    fn snapshots(&self, target: &str) -> Vec<String> {
        self.env
            .snapshots(target)
            .iter()
            .map(|s| s["snapshot_id"].as_str().unwrap().to_string())
            .collect()
    }

    /// Cause the disaster a block is about.
    fn before(&mut self, id: &str) {
        match id {
            "rows-deleted" => {
                self.env
                    .pg
                    .psql("invoices", "DELETE FROM invoices WHERE id <= 100");
            }
            "db-corrupted" => {
                self.env.pg.psql("invoices", "TRUNCATE invoices");
            }
            "server-lost" => {
                // The host and its database are gone; a new host gets a new agent id.
                self.env.agent.as_mut().unwrap().kill();
                std::fs::remove_dir_all(self.env.agent_state_dir()).unwrap();
                self.env.pg.psql("postgres", "DROP DATABASE invoices");
                std::fs::remove_dir_all(&self.conf).unwrap();
                let cfg = self.env.second_agent_config("acme-new");
                self.set("AGENT_CONFIG", cfg.display().to_string());
                let text = std::fs::read_to_string(&cfg).unwrap();
                let state = text
                    .lines()
                    .find_map(|l| l.strip_prefix("state_dir = "))
                    .unwrap()
                    .trim_matches('"')
                    .to_string();
                self.set("AGENT_STATE", state);
            }
            "ransomware" => {
                let first = self.snapshots("main")[0].clone();
                self.set("CLEAN_SNAPSHOT", first);
            }
            "offline-restore" => {
                // A state copy that knows the new agent, then the controller dies; a
                // copy of its store survives off site.
                let copies = self.env.controller.data_dir.join("blobs/controller/state");
                let since = std::time::SystemTime::now();
                wait_for("a state copy", 30, || {
                    std::fs::read_dir(&copies)
                        .ok()?
                        .filter_map(|e| e.ok())
                        .any(|e| {
                            e.metadata()
                                .and_then(|m| m.modified())
                                .is_ok_and(|t| t > since)
                        })
                        .then_some(())
                });
                let port = self.env.controller.port();
                self.env.controller.kill();
                let old = self.env.controller.data_dir.clone();
                let store = self.work.join("offsite-store");
                std::fs::rename(old.join("blobs"), &store).unwrap();
                std::fs::remove_dir_all(&old).unwrap();
                self.set("STORE", store.display().to_string());
                self.set(
                    "NEW_DATA_DIR",
                    self.work.join("controller-new").display().to_string(),
                );
                self.set("PORT", port.to_string());
            }
            "store-damaged" => {
                self.env.pg.psql(
                    "invoices",
                    "INSERT INTO invoices (id, customer_id, total, status) SELECT g, 1, 1, 'new' FROM generate_series(900001, 902000) g",
                );
                self.env.backup_ok("main");
                // The newest data chunk: the next backup of the same data stores it again.
                let keyring = PathBuf::from(&self.vars["AGENT_STATE"]).join("keyring");
                let (victim, _) = chunk_files(&self.env.controller.data_dir, SITE)
                    .into_iter()
                    .rfind(|(p, _)| !varies_per_dump(&keyring, p))
                    .expect("a data chunk");
                flip_byte(&victim);
            }
            "config-change" => {
                let good = self.snapshots("conf").last().unwrap().clone();
                self.set("GOOD_SNAPSHOT", good);
                std::fs::write(self.conf.join("app/config.yaml"), "port: oops\n").unwrap();
                std::fs::write(self.conf.join("app/.env"), "API_KEY=leaked-new\nMODE=x\n").unwrap();
                self.env.backup_ok("conf");
            }
            _ => {}
        }
    }

    /// Check a block's result, or start what the guide says to start.
    fn after(&mut self, id: &str) {
        match id {
            "rows-deleted" | "db-corrupted" => assert_eq!(self.count("invoices"), "3000"),
            "server-lost" => {
                let cfg = PathBuf::from(&self.vars["AGENT_CONFIG"]);
                self.env.spawn_agent(&cfg);
                self.env.wait_agent_online("acme-new");
            }
            "server-lost-restore" => {
                assert_eq!(self.count("invoices"), "3000");
                assert!(self.conf.join("app/config.yaml").is_file());
            }
            "ransomware" => assert_eq!(self.count("invoices_clean"), "3000"),
            "offline-restore" => {
                assert!(self.work.join("invoices.dump.globals.sql").is_file());
            }
            "restore-controller" => {
                let dir = PathBuf::from(&self.vars["NEW_DATA_DIR"]);
                let port: u16 = self.vars["PORT"].parse().unwrap();
                let log = self.env.dir.path().join("controller.log");
                let args = [
                    "--recovery-key".to_string(),
                    self.env.recovery_public.clone(),
                    "--no-scheduler".to_string(),
                ];
                self.env.controller = Controller::start(&dir, port, &log, &args);
                self.set("NEX_CONFIG", dir.join("cli.toml").display().to_string());
                self.set("DATA_DIR", dir.display().to_string());
                self.env.wait_online(true);
            }
            "config-change" => {
                assert_eq!(
                    std::fs::read_to_string(self.conf.join("app/config.yaml")).unwrap(),
                    "port: 8080\n"
                );
            }
            _ => {}
        }
    }
}

#[test]
fn every_tested_command_of_the_recovery_guide_works() {
    let guide_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/RECOVERY_GUIDE.md");
    let guide = std::fs::read_to_string(&guide_path).unwrap();
    let blocks = tested_blocks(&guide);
    assert!(
        blocks.len() >= 12,
        "the guide's tested blocks: {}",
        blocks.len()
    );

    let conf_root = tempfile::Builder::new()
        .prefix("nexguide")
        .tempdir()
        .unwrap();
    let conf = conf_root.path().join("srv");
    std::fs::create_dir_all(conf.join("app")).unwrap();
    std::fs::write(conf.join("app/config.yaml"), "port: 8080\n").unwrap();
    std::fs::write(conf.join("app/.env"), "API_KEY=old\nMODE=prod\n").unwrap();
    let set = format!(
        "\n[[file_sets]]\nname = \"conf\"\npaths = [\"{}\"]\n",
        conf.display()
    );
    let env = Env::start(
        &invoices_sql(3_000),
        EnvOpts {
            extra_targets: set,
            controller_args: ["--state-copy-every", "1s"].map(String::from).to_vec(),
            ..Default::default()
        },
    );
    env.backup_ok("main");
    env.backup_ok("conf");
    let work = env.dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let mut vars = BTreeMap::new();
    let config_file = format!(
        "{}/app/config.yaml",
        conf.strip_prefix("/").unwrap().display()
    );
    for (k, v) in [
        (
            "NEX_CONFIG",
            env.controller.cli_config().display().to_string(),
        ),
        ("DATA_DIR", env.controller.data_dir.display().to_string()),
        ("SITE", SITE.to_string()),
        ("TARGET", "main".into()),
        ("DB", "invoices".into()),
        ("FILESET", "conf".into()),
        ("CONFIG_FILE", config_file),
        ("AGENT_CONFIG", env.agent_config.display().to_string()),
        ("AGENT_STATE", env.agent_state_dir().display().to_string()),
        ("RECOVERY_KEY", env.recovery_key.display().to_string()),
        ("WORK", work.display().to_string()),
        ("PGHOST", "127.0.0.1".into()),
        ("PGPORT", env.pg.port.to_string()),
        ("PGUSER", "postgres".into()),
        ("PGPASSWORD", PASSWORD.into()),
        (PW_ENV, PASSWORD.into()),
    ] {
        vars.insert(k.to_string(), v);
    }
    let mut run = Run {
        env,
        vars,
        work,
        conf,
    };
    for (id, script) in &blocks {
        run.before(id);
        run.run_block(id, script);
        run.after(id);
    }
}
