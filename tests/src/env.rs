//! A complete test environment: a PostgreSQL cluster, a controller, and an agent of site
//! `acme` whose target `main` is the database `invoices`, optionally behind a proxy.

use std::path::PathBuf;

use serde_json::Value;

use crate::pg::{PASSWORD, PgCluster};
use crate::procs::{Agent, CliOut, Controller, cli};
use crate::proxy::Proxy;
use crate::wait_for;

pub const SITE: &str = "acme";
pub const PW_ENV: &str = "NEXT_PG_PASSWORD";

/// Options for [`Env::start`].
#[derive(Default)]
pub struct EnvOpts {
    /// Route the agent's traffic through a [`Proxy`].
    pub via_proxy: bool,
    /// Extra `[[targets]]` TOML appended to the agent config (see [`target_toml`]);
    /// `{PGPORT}` is replaced by the cluster's port.
    pub extra_targets: String,
    /// Extra environment for the agent.
    pub agent_env: Vec<(String, String)>,
    /// The agent's `stall_timeout_secs` (default 60).
    pub stall_timeout_secs: Option<u64>,
}

/// A `[[targets]]` entry on the test cluster, for [`EnvOpts::extra_targets`].
pub fn target_toml(name: &str, user: &str, dbname: &str, password_env: &str) -> String {
    format!(
        "\n[[targets]]\nname = \"{name}\"\nhost = \"127.0.0.1\"\nport = {{PGPORT}}\nuser = \"{user}\"\n\
         dbname = \"{dbname}\"\npassword_env = \"{password_env}\"\n"
    )
}

/// See module docs.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub pg: PgCluster,
    pub controller: Controller,
    pub proxy: Option<Proxy>,
    pub agent: Option<Agent>,
    pub agent_config: PathBuf,
    agent_env: Vec<(String, String)>,
}

impl Env {
    /// Start everything; `setup_sql` populates the `invoices` database first.
    pub fn start(setup_sql: &str, opts: EnvOpts) -> Env {
        let dir = tempfile::Builder::new()
            .prefix("nexenv")
            .tempdir()
            .expect("temp dir");
        let pg = PgCluster::start();
        pg.psql("postgres", "CREATE DATABASE invoices");
        pg.psql("invoices", setup_sql);
        let controller = Controller::start(
            &dir.path().join("controller"),
            0,
            &dir.path().join("controller.log"),
        );
        let proxy = opts
            .via_proxy
            .then(|| Proxy::start(controller.addr.clone()));
        let url = proxy.as_ref().map_or_else(|| controller.url(), Proxy::url);
        let agent_config = dir.path().join("agent.toml");
        let config = format!(
            "site = \"{SITE}\"\nagent_id = \"acme-srv1\"\ncontroller = \"{url}\"\nstate_dir = \"{state}\"\n\
             stall_timeout_secs = {stall}\nretry_budget_secs = 120\n\n\
             [[targets]]\nname = \"main\"\nhost = \"127.0.0.1\"\nport = {port}\nuser = \"postgres\"\n\
             dbname = \"invoices\"\npassword_env = \"{PW_ENV}\"\npg_bin_dir = \"{bin}\"\n{extra}",
            state = dir.path().join("agent-state").display(),
            port = pg.port,
            bin = pg.bin.display(),
            stall = opts.stall_timeout_secs.unwrap_or(60),
            extra = opts.extra_targets.replace("{PGPORT}", &pg.port.to_string()),
        );
        std::fs::write(&agent_config, config).expect("write agent config");
        let mut agent_env = vec![(PW_ENV.to_string(), PASSWORD.to_string())];
        agent_env.extend(opts.agent_env);
        let mut env = Env {
            dir,
            pg,
            controller,
            proxy,
            agent: None,
            agent_config,
            agent_env,
        };
        env.start_agent();
        env
    }

    pub fn url(&self) -> String {
        self.controller.url()
    }

    pub fn cli(&self, args: &[&str]) -> CliOut {
        cli(&self.url(), args)
    }

    /// (Re)start the agent and wait until the controller sees it online.
    pub fn start_agent(&mut self) {
        let env: Vec<(&str, &str)> = self
            .agent_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.agent = Some(Agent::start(
            &self.agent_config,
            &env,
            &self.dir.path().join("agent.log"),
        ));
        self.wait_online(true);
    }

    pub fn wait_online(&self, online: bool) {
        wait_for(&format!("agent online={online}"), 60, || {
            let out = self.cli(&["status", "--json"]);
            let v: Value = serde_json::from_str(&out.stdout).ok()?;
            let site = v["sites"]
                .as_array()?
                .iter()
                .find(|s| s["site"] == SITE)?
                .clone();
            (site["online"] == online).then_some(())
        });
    }

    pub fn status(&self) -> Value {
        self.cli(&["status", "--json"]).json()
    }

    pub fn snapshots(&self, target: &str) -> Vec<Value> {
        let v = self
            .cli(&["snapshots", "--site", SITE, "--target", target, "--json"])
            .json();
        v.as_array().expect("array").clone()
    }

    pub fn backup(&self, target: &str) -> CliOut {
        self.cli(&["backup", "--site", SITE, "--target", target, "--json"])
    }

    /// A backup that must succeed; returns its JSON outcome.
    pub fn backup_ok(&self, target: &str) -> Value {
        let out = self.backup(target);
        let v = out.json();
        assert_eq!(v["ok"], true, "backup failed: {v}\n{}", self.logs());
        v
    }

    pub fn restore(&self, target: &str, db: &str, extra: &[&str]) -> CliOut {
        let mut args = vec![
            "restore",
            "--site",
            SITE,
            "--target",
            target,
            "--to-database",
            db,
            "--json",
        ];
        args.extend(extra);
        self.cli(&args)
    }

    /// Kill the controller with SIGKILL and start it again on the same port and data.
    pub fn restart_controller(&mut self, kill_agent_first: bool) {
        if kill_agent_first && let Some(a) = self.agent.as_mut() {
            a.kill();
        }
        self.controller.kill();
        let port = self.controller.port();
        self.controller = Controller::start(
            &self.controller.data_dir.clone(),
            port,
            &self.controller.log.clone(),
        );
    }

    /// The tails of the controller and agent logs, for failure messages.
    pub fn logs(&self) -> String {
        let tail = |name: &str| {
            let text = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(40)..].join("\n")
        };
        format!(
            "--- controller.log ---\n{}\n--- agent.log ---\n{}",
            tail("controller.log"),
            tail("agent.log")
        )
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}
