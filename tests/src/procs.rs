//! The real binaries as child processes: the controller, the agent and the operator CLI.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Path of a workspace binary: `$NEX_BIN_DIR/NAME`, or next to the test executable's
/// `deps/` directory (where `cargo build` puts it).
pub fn bin(name: &str) -> PathBuf {
    let dir = match std::env::var("NEX_BIN_DIR") {
        Ok(d) => PathBuf::from(d),
        Err(_) => {
            let exe = std::env::current_exe().expect("current exe");
            let dir = exe.parent().expect("exe dir");
            // Test executables live in target/<profile>/deps, binaries in target/<profile>.
            if dir.ends_with("deps") {
                dir.parent().expect("target dir")
            } else {
                dir
            }
            .to_path_buf()
        }
    };
    let p = dir.join(name);
    assert!(
        p.is_file(),
        "binary {} not found: run `cargo build --bins` first (or set NEX_BIN_DIR)",
        p.display()
    );
    p
}

/// What a CLI run printed.
#[derive(Debug)]
pub struct CliOut {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl CliOut {
    pub fn json(&self) -> serde_json::Value {
        assert!(self.ok, "CLI failed: {}\n{}", self.stderr, self.stdout);
        self.parse()
    }

    /// The JSON of a command that must have failed (non-zero exit).
    pub fn json_failed(&self) -> serde_json::Value {
        assert!(!self.ok, "CLI should have failed: {}", self.stdout);
        self.parse()
    }

    fn parse(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "CLI output is not JSON ({e}): {}\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

fn output(cmd: &mut Command) -> CliOut {
    let out = cmd.output().expect("run command");
    CliOut {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Run `nex-backup ARGS --controller URL` with the CLI config `config` (NEX_CONFIG).
pub fn cli(config: &Path, url: &str, args: &[&str]) -> CliOut {
    output(
        Command::new(bin("nex-backup"))
            .args(args)
            .args(["--controller", url])
            .env("NEX_CONFIG", config)
            .env_remove("NEX_ADMIN_TOKEN")
            .env_remove("NEX_LOG"),
    )
}

/// Run `nex-backup ARGS` with exactly the environment given (no CLI config).
pub fn cli_bare(args: &[&str], env: &[(&str, &str)]) -> CliOut {
    let mut cmd = Command::new(bin("nex-backup"));
    cmd.args(args)
        .env_remove("NEX_CONFIG")
        .env_remove("NEX_ADMIN_TOKEN")
        .env_remove("NEX_DATA_DIR")
        .env_remove("NEX_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    output(&mut cmd)
}

/// Run a one-shot `nex-backup-agent ARGS` (enroll, recover, rotate-key) with `env`.
pub fn agent_cmd(args: &[&str], env: &[(&str, &str)]) -> CliOut {
    let mut cmd = Command::new(bin("nex-backup-agent"));
    cmd.args(args).env("NEX_LOG", "info");
    for (k, v) in env {
        cmd.env(k, v);
    }
    output(&mut cmd)
}

/// Create a recovery key pair in `file`; returns the public key.
pub fn recovery_key(file: &Path) -> String {
    let out = cli_bare(
        &[
            "recovery-key",
            "create",
            "--out",
            &file.display().to_string(),
        ],
        &[],
    );
    assert!(out.ok, "recovery-key create: {}", out.stderr);
    out.stdout.trim().to_string()
}

/// A running `nex-backup serve`.
pub struct Controller {
    child: Child,
    pub data_dir: PathBuf,
    pub addr: String,
    pub log: PathBuf,
    pub fingerprint: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Controller {
    /// Start on `port` (0 = any) with `data_dir` and extra `serve` args; waits until it
    /// listens.
    pub fn start(data_dir: &Path, port: u16, log: &Path, args: &[String]) -> Controller {
        Self::start_env(data_dir, port, log, args, &[])
    }

    /// As [`Controller::start`], with environment variables (object store credentials).
    pub fn start_env(
        data_dir: &Path,
        port: u16,
        log: &Path,
        args: &[String],
        env: &[(String, String)],
    ) -> Controller {
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("controller log");
        let mut child = Command::new(bin("nex-backup"))
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(args)
            .env("NEX_LOG", "info")
            .env_remove("NEX_RECOVERY_KEYS")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(logf)
            .spawn()
            .expect("start controller");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut fingerprint = String::new();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(f) = line.strip_prefix("CA fingerprint ") {
                    fingerprint = f.to_string();
                }
                if let Some(a) = line.strip_prefix("listening on ") {
                    let _ = tx.send((a.to_string(), fingerprint.clone()));
                }
            }
        });
        let (addr, fingerprint) = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                panic!(
                    "controller did not start; log:\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                )
            });
        Controller {
            child,
            data_dir: data_dir.to_path_buf(),
            addr,
            log: log.to_path_buf(),
            fingerprint,
            args: args.to_vec(),
            env: env.to_vec(),
        }
    }

    /// Kill and start again on the same port, data dir and arguments.
    pub fn restart(&mut self) {
        self.kill();
        let port = self.port();
        *self = Controller::start_env(
            &self.data_dir.clone(),
            port,
            &self.log.clone(),
            &self.args,
            &self.env,
        );
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The CLI config `serve` wrote (URL, CA fingerprint, admin credential file).
    pub fn cli_config(&self) -> PathBuf {
        self.data_dir.join("cli.toml")
    }

    /// Run the operator CLI against this controller.
    pub fn cli(&self, args: &[&str]) -> CliOut {
        cli(&self.cli_config(), &self.url(), args)
    }

    pub fn port(&self) -> u16 {
        self.addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running `nex-backup-agent run`.
pub struct Agent {
    child: Child,
    pub log: PathBuf,
}

impl Agent {
    pub fn start(config: &Path, env: &[(&str, &str)], log: &Path) -> Agent {
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("agent log");
        let mut cmd = Command::new(bin("nex-backup-agent"));
        cmd.arg("run")
            .arg("--config")
            .arg(config)
            .env("NEX_LOG", "info")
            .stdout(Stdio::null())
            .stderr(logf);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Agent {
            child: cmd.spawn().expect("start agent"),
            log: log.to_path_buf(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}
