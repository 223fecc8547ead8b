//! The install scripts, run as a new operator would run them: from a fresh directory
//! holding only `deploy/` and the binaries, as root. The controller and agent they set up
//! (service user, private directories, env files, systemd units checked with
//! `systemd-analyze verify`) then run as the service user, the agent enrolled by the
//! script as that user, and a backup goes through. Running the controller script again
//! with `--upgrade` keeps the configuration and the data. Paths are this test's own
//! (`--data-dir`, `--etc-dir`, `--bin-dir`, `--unit`), so nothing else is touched.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use nex_backup_tests::pg::{PASSWORD, PgCluster};
use nex_backup_tests::procs::{bin, cli_bare, recovery_key};
use nex_backup_tests::sample::invoices_sql;
use nex_backup_tests::wait_for;

struct Cleanup(Vec<PathBuf>, Vec<Child>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &mut self.1 {
            // `runuser` forks the service's process and waits for it: killing `runuser`
            // alone would leave the controller or agent running. Its children first.
            let _ = Command::new("pkill")
                .args(["-KILL", "-P", &c.id().to_string()])
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
        for p in &self.0 {
            let _ = std::fs::remove_dir_all(p);
            let _ = std::fs::remove_file(p);
        }
    }
}

fn script(fresh: &Path, name: &str, args: &[&str]) -> String {
    let out = Command::new("bash")
        .arg(fresh.join("deploy").join(name))
        .args(args)
        .current_dir(fresh)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{name} {args:?}:\n{text}");
    text
}

fn mode_owner(p: &Path) -> (u32, String) {
    let m = std::fs::metadata(p).unwrap();
    let user = Command::new("stat")
        .args(["-c", "%U:%G"])
        .arg(p)
        .output()
        .unwrap();
    (
        m.mode() & 0o777,
        String::from_utf8_lossy(&user.stdout).trim().to_string(),
    )
}

/// The unit's ExecStart, run as its User with its EnvironmentFile.
fn start_as_unit(unit: &Path, env_file: &Path) -> Child {
    let text = std::fs::read_to_string(unit).unwrap();
    let exec = text
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap()
        .to_string();
    let user = text.lines().find_map(|l| l.strip_prefix("User=")).unwrap();
    let env: Vec<String> = std::fs::read_to_string(env_file)
        .unwrap()
        .lines()
        .filter(|l| l.contains('=') && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    Command::new("runuser")
        .args(["-u", user, "--", "env"])
        .args(&env)
        .arg("NEX_LOG=info")
        .args(exec.split_whitespace())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn install_scripts_set_up_a_working_controller_and_agent() {
    let tag = format!("nexb-install-{}", std::process::id());
    let fresh = tempfile::Builder::new()
        .prefix("nexfresh")
        .tempdir()
        .unwrap();
    std::fs::create_dir_all(fresh.path().join("deploy")).unwrap();
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    for e in std::fs::read_dir(&deploy).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, fresh.path().join("deploy").join(p.file_name().unwrap())).unwrap();
        }
    }
    let (data, etc, opt) = (
        PathBuf::from(format!("/var/lib/{tag}")),
        PathBuf::from(format!("/etc/{tag}")),
        PathBuf::from(format!("/opt/{tag}")),
    );
    let state = PathBuf::from(format!("/var/lib/{tag}-agent"));
    let (unit_c, unit_a) = (
        PathBuf::from(format!("/etc/systemd/system/{tag}.service")),
        PathBuf::from(format!("/etc/systemd/system/{tag}-agent.service")),
    );
    let mut cleanup = Cleanup(
        vec![
            data.clone(),
            etc.clone(),
            opt.clone(),
            state.clone(),
            unit_c.clone(),
            unit_a.clone(),
        ],
        vec![],
    );
    let key_file = fresh.path().join("recovery.key");
    let public = recovery_key(&key_file);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let s = |p: &Path| p.display().to_string();
    let ctl_bin = s(&bin("nex-backup"));
    let common = |unit: &Path| {
        vec![
            "--etc-dir".to_string(),
            s(&etc),
            "--bin-dir".into(),
            s(&opt.join("bin")),
            "--unit".into(),
            s(unit),
            "--no-start".into(),
        ]
    };
    let mut args = vec![
        "--binary".to_string(),
        ctl_bin.clone(),
        "--recovery-key".into(),
        public.clone(),
        "--listen".into(),
        listen.clone(),
        "--data-dir".into(),
        s(&data),
    ];
    args.extend(common(&unit_c));
    let out = script(
        fresh.path(),
        "install-controller.sh",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(out.contains("verified (systemd-analyze verify)"), "{out}");
    assert_eq!(mode_owner(&data), (0o700, "nex-backup:nex-backup".into()));
    let env_file = etc.join("controller.env");
    assert_eq!(mode_owner(&env_file), (0o640, "root:nex-backup".into()));

    // The controller as its unit runs it: the service user, the env file.
    let mut ctl = start_as_unit(&unit_c, &env_file);
    let stdout = ctl.stdout.take().unwrap();
    cleanup.1.push(ctl);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            if l.starts_with("listening on") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(std::time::Duration::from_secs(30))
        .expect("controller listens");
    let cli_env = [("NEX_CONFIG", s(&data.join("cli.toml")))];
    let cli_env: Vec<(&str, &str)> = cli_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let fp = cli_bare(&["ca", "show", "--data-dir", &s(&data)], &[])
        .stdout
        .trim()
        .to_string();
    let token = cli_bare(&["token", "create", "--site", "acme"], &cli_env);
    assert!(token.ok, "{}", token.stderr);

    // The agent: installed, configured for a real database, enrolled as its user.
    let pg = PgCluster::start();
    pg.psql("postgres", "CREATE DATABASE invoices");
    pg.psql("invoices", &invoices_sql(500));
    let mut args = vec![
        "--binary".to_string(),
        s(&bin("nex-backup-agent")),
        "--controller".into(),
        format!("https://{listen}"),
        "--state-dir".into(),
        s(&state),
    ];
    args.extend(common(&unit_a));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = script(fresh.path(), "install-agent.sh", &argv);
    assert!(out.contains("not enrolled yet"), "{out}");
    assert_eq!(mode_owner(&state), (0o700, "nex-backup:nex-backup".into()));
    assert_eq!(mode_owner(&etc.join("agent.env")).0, 0o600);
    let config = etc.join("agent.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text
        .replace("port = 5432", &format!("port = {}", pg.port))
        .replace("user = \"backup\"", "user = \"postgres\"");
    std::fs::write(&config, text).unwrap();
    std::fs::write(
        etc.join("agent.env"),
        format!("NEX_PG_PASSWORD={PASSWORD}\n"),
    )
    .unwrap();
    let mut enroll = argv.clone();
    enroll.extend(["--token", token.stdout.trim(), "--ca-fingerprint", &fp]);
    let out = script(fresh.path(), "install-agent.sh", &enroll);
    assert!(out.contains("enrolling as nex-backup"), "{out}");
    assert_eq!(
        mode_owner(&state.join("enrollment.toml")).1,
        "nex-backup:nex-backup"
    );

    let agent = start_as_unit(&unit_a, &etc.join("agent.env"));
    cleanup.1.push(agent);
    wait_for("the agent online", 60, || {
        let st = cli_bare(&["status", "--json"], &cli_env);
        st.stdout.contains("\"online\": true").then_some(())
    });
    let b = cli_bare(
        &["backup", "--site", "acme", "--target", "invoices", "--json"],
        &cli_env,
    );
    assert!(b.ok, "{}\n{}", b.stdout, b.stderr);

    // Upgrade: the binary is replaced; configuration and data stay.
    let before = std::fs::read_to_string(&env_file).unwrap();
    let mut args = vec![
        "--upgrade".to_string(),
        "--binary".into(),
        ctl_bin,
        "--data-dir".into(),
        s(&data),
    ];
    args.extend(common(&unit_c));
    let out = script(
        fresh.path(),
        "install-controller.sh",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(out.contains("kept"), "{out}");
    assert_eq!(std::fs::read_to_string(&env_file).unwrap(), before);
    assert!(
        std::fs::read_to_string(&unit_c).unwrap().contains(&listen),
        "ExecStart kept"
    );
    assert!(data.join("catalog").is_dir() && data.join("blobs").is_dir());
    drop(cleanup);
}
