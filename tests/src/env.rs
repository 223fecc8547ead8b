//! A complete test environment: a PostgreSQL cluster, a controller with a recovery key,
//! and an enrolled agent of site `acme` whose target `main` is the database `invoices`,
//! optionally behind a proxy. Everything runs over mutual TLS as in production.

use std::path::PathBuf;

use serde_json::Value;

use crate::pg::{PASSWORD, PgCluster};
use crate::procs::{Agent, CliOut, Controller, agent_cmd, recovery_key};
use crate::proxy::Proxy;
use crate::wait_for;

pub const SITE: &str = "acme";
pub const AGENT_ID: &str = "acme-srv1";
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
    /// Extra `nex-backup serve` arguments.
    pub controller_args: Vec<String>,
    /// Run the controller's scheduler (off by default: tests start jobs themselves).
    pub scheduler: bool,
    /// Put the controller's data dir on a tmpfs of this many MiB (needs root), to fill
    /// its disk for real.
    pub data_dir_mib: Option<u32>,
}

impl EnvOpts {
    /// The controller's scheduler runs.
    pub fn scheduled() -> EnvOpts {
        EnvOpts {
            scheduler: true,
            ..Default::default()
        }
    }
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
    /// The offline recovery private key file and its public key.
    pub recovery_key: PathBuf,
    pub recovery_public: String,
    /// Every enrollment token issued so far (for the secret scan).
    pub issued_tokens: std::sync::Mutex<Vec<String>>,
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
        let recovery_key_file = dir.path().join("recovery.key");
        let recovery_public = recovery_key(&recovery_key_file);
        if let Some(mib) = opts.data_dir_mib {
            crate::mount_tmpfs(&dir.path().join("controller"), mib);
        }
        let controller = Controller::start(
            &dir.path().join("controller"),
            0,
            &dir.path().join("controller.log"),
            &[
                vec!["--recovery-key".into(), recovery_public.clone()],
                if opts.scheduler {
                    vec![]
                } else {
                    vec!["--no-scheduler".into()]
                },
                opts.controller_args.clone(),
            ]
            .concat(),
        );
        let proxy = opts
            .via_proxy
            .then(|| Proxy::start(controller.addr.clone()));
        let url = proxy.as_ref().map_or_else(|| controller.url(), Proxy::url);
        let agent_config = dir.path().join("agent.toml");
        let config = format!(
            "agent_id = \"{AGENT_ID}\"\ncontroller = \"{url}\"\nstate_dir = \"{state}\"\n\
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
            recovery_key: recovery_key_file,
            recovery_public,
            issued_tokens: Default::default(),
            agent_env,
        };
        let out = env.enroll(&env.agent_config.clone(), SITE);
        assert!(out.ok, "enroll: {}\n{}", out.stderr, env.logs());
        env.start_agent();
        env
    }

    pub fn url(&self) -> String {
        self.controller.url()
    }

    pub fn cli(&self, args: &[&str]) -> CliOut {
        self.controller.cli(args)
    }

    /// A fresh single-use enrollment token for `site`.
    pub fn token(&self, site: &str) -> String {
        let out = self.cli(&["token", "create", "--site", site]);
        assert!(out.ok, "token create: {}", out.stderr);
        let token = out.stdout.trim().to_string();
        self.issued_tokens.lock().unwrap().push(token.clone());
        token
    }

    /// Enroll the agent configured in `config` for `site` with a new token.
    pub fn enroll(&self, config: &std::path::Path, site: &str) -> CliOut {
        let token = self.token(site);
        self.enroll_with(config, &token)
    }

    /// `nex-backup-agent enroll` with the given token.
    pub fn enroll_with(&self, config: &std::path::Path, token: &str) -> CliOut {
        let config = config.display().to_string();
        agent_cmd(
            &[
                "enroll",
                "--config",
                &config,
                "--ca-fingerprint",
                &self.controller.fingerprint,
            ],
            &[("NEX_ENROLL_TOKEN", token)],
        )
    }

    /// (Re)start the agent and wait until the controller sees it online.
    pub fn start_agent(&mut self) {
        let config = self.agent_config.clone();
        self.start_agent_with(&config);
    }

    /// Start the agent with another config (see [`Env::second_agent_config`]).
    pub fn start_agent_with(&mut self, config: &std::path::Path) {
        self.spawn_agent(config);
        self.wait_online(true);
    }

    /// Start the agent process without waiting for it to come online.
    pub fn spawn_agent(&mut self, config: &std::path::Path) {
        let env: Vec<(&str, &str)> = self
            .agent_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.agent = Some(Agent::start(
            config,
            &env,
            &self.dir.path().join("agent.log"),
        ));
    }

    /// A copy of the agent config for another host of the same site: its own agent id
    /// and state dir.
    pub fn second_agent_config(&self, agent_id: &str) -> PathBuf {
        let text = std::fs::read_to_string(&self.agent_config).expect("agent config");
        let state = self.dir.path().join(format!("{agent_id}-state"));
        let text = text
            .lines()
            .map(|l| {
                if l.starts_with("agent_id = ") {
                    format!("agent_id = \"{agent_id}\"")
                } else if l.starts_with("state_dir = ") {
                    format!("state_dir = \"{}\"", state.display())
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let path = self.dir.path().join(format!("{agent_id}.toml"));
        std::fs::write(&path, text).expect("write agent config");
        path
    }

    /// The state dir of the first agent.
    pub fn agent_state_dir(&self) -> PathBuf {
        self.dir.path().join("agent-state")
    }

    /// Wait until some agent of the site is online (`true`) or none is (`false`).
    pub fn wait_online(&self, online: bool) {
        wait_for(&format!("agent online={online}"), 60, || {
            let out = self.cli(&["status", "--json"]);
            let v: Value = serde_json::from_str(&out.stdout).ok()?;
            let any = v["sites"]
                .as_array()?
                .iter()
                .any(|s| s["site"] == SITE && s["online"] == true);
            (any == online).then_some(())
        });
    }

    /// A new agent for `site` (another host on the environment's cluster): its own config
    /// with `head` (top-level keys, or "") put first, enrolled, started and online.
    /// Returns it and its log file.
    pub fn site_agent(&self, site: &str, head: &str) -> (Agent, PathBuf) {
        let config = self.second_agent_config(&format!("{site}-srv1"));
        let text = std::fs::read_to_string(&config).expect("agent config");
        std::fs::write(&config, format!("{head}{text}")).expect("agent config");
        let out = self.enroll(&config, site);
        assert!(out.ok, "enroll {site}: {}", out.stderr);
        let log = config.with_extension("log");
        let agent = Agent::start(&config, &[(PW_ENV, PASSWORD)], &log);
        self.wait_site_online(site);
        (agent, log)
    }

    /// Wait until some agent of `site` (any site) is online.
    pub fn wait_site_online(&self, site: &str) {
        wait_for(&format!("an agent of {site} online"), 60, || {
            let v = self.cli(&["status", "--json"]).json();
            v["sites"]
                .as_array()?
                .iter()
                .any(|s| s["site"] == site && s["online"] == true)
                .then_some(())
        });
    }

    /// Wait until agent `agent_id` of the site is online.
    pub fn wait_agent_online(&self, agent_id: &str) {
        wait_for(&format!("agent {agent_id} online"), 60, || {
            let out = self.cli(&["status", "--json"]);
            let v: Value = serde_json::from_str(&out.stdout).ok()?;
            v["sites"]
                .as_array()?
                .iter()
                .any(|s| s["site"] == SITE && s["agent_id"] == agent_id && s["online"] == true)
                .then_some(())
        });
    }

    /// The environment the agent processes run with (the PostgreSQL password).
    pub fn agent_env(&self) -> Vec<(&str, &str)> {
        self.agent_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
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

    /// `policy set` for `target` of the site with `args`; it must succeed.
    pub fn set_target_policy(&self, target: &str, args: &[&str]) -> CliOut {
        let mut all = vec!["policy", "set", "--site", SITE, "--target", target];
        all.extend(args);
        let out = self.cli(&all);
        assert!(out.ok, "policy set {args:?}: {}", out.stderr);
        out
    }

    /// Start `backup` of `target` on a thread; join it for the CLI's output.
    pub fn backup_in_background(&self, target: &str) -> std::thread::JoinHandle<CliOut> {
        let (config, url) = (self.controller.cli_config(), self.url());
        let target = target.to_string();
        std::thread::spawn(move || {
            crate::procs::cli(
                &config,
                &url,
                &["backup", "--site", SITE, "--target", &target, "--json"],
            )
        })
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
        self.controller.restart();
    }

    /// The agent's whole log.
    pub fn agent_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
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
        self.controller.kill();
        crate::unmount_if_mounted(&self.dir.path().join("controller"));
    }
}
