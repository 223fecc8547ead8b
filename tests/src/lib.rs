//! Test harness for NEX Backup: real PostgreSQL clusters, real controller and agent
//! processes, and a TCP proxy that can cut the network.
//!
//! Module map:
//! - [`pg`]: throwaway PostgreSQL clusters (initdb + postgres as the `postgres` user when
//!   run as root), with password authentication on TCP.
//! - [`procs`]: the `nex-backup` controller, the `nex-backup-agent`, and the operator CLI.
//! - [`proxy`]: a TCP proxy that counts bytes and cuts every connection on demand.
//! - [`inproc`]: an in-process controller on port 0 with enrolled mTLS clients, for edge
//!   and attack tests.
//! - [`fake_agent`]: a raw agent session (hello, commands, job events) and dispatched jobs.
//! - [`logcap`]: the controller's log lines in an in-process test.
//! - [`offline`]: the agent's offline `snapshots` and `restore --store` on a store copy.
//! - [`env`]: a ready test environment: cluster + controller + agent wired together.
//! - [`sample`]: SQL for the test databases.
//! - [`measure`]: CPU and peak-memory figures from /proc, for the benchmark.
//! - [`s3`]: a real S3 server (SeaweedFS `weed mini`) with checked credentials.
//! - [`fleet`]: real enrolled agents for the benchmark commands.
//! - [`store_files`]: a controller's stored chunks: listed, told apart, damaged.
//! - [`web`]: a dashboard client (HTTPS, its session cookie kept by hand).
//! - [`browser`]: headless Chromium over WebDriver: pages, screenshots, axe-core.
//!
//! Nothing here is mocked. A missing PostgreSQL or binary fails the test loudly.

pub mod browser;
pub mod env;
pub mod fake_agent;
pub mod fleet;
pub mod inproc;
pub mod logcap;
pub mod measure;
pub mod offline;
pub mod pg;
pub mod procs;
pub mod proxy;
pub mod s3;
pub mod sample;
pub mod smtp;
pub mod store_files;
pub mod web;
pub mod webhook;

use std::time::{Duration, Instant};

/// A daily window "HH:MM-HH:MM" in UTC from `from_min` to `to_min` minutes from now
/// (negative: ago).
pub fn utc_window(from_min: i64, to_min: i64) -> String {
    let now_min = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
        / 60) as i64;
    let hm = |m: i64| {
        let m = (now_min + m).rem_euclid(1440);
        format!("{:02}:{:02}", m / 60, m % 60)
    };
    format!("{}-{}", hm(from_min), hm(to_min))
}

/// Poll `f` every 50 ms until it returns `Some`, or panic after `secs` naming `what`.
pub fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every file below `dir` (the blob store's chunks, say).
pub fn files_below(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

/// Mount a tmpfs of `mib` MiB at `dir` (created). Needs root: a test that asks for one
/// fails loudly without it.
pub fn mount_tmpfs(dir: &std::path::Path, mib: u32) {
    std::fs::create_dir_all(dir).expect("create mount point");
    let st = std::process::Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            &format!("size={mib}m,mode=700"),
            "tmpfs",
        ])
        .arg(dir)
        .status()
        .expect("run mount");
    assert!(
        st.success(),
        "mount a {mib} MiB tmpfs at {}: this test needs root",
        dir.display()
    );
}

/// Unmount `dir` if something is mounted there.
pub fn unmount_if_mounted(dir: &std::path::Path) {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let d = dir.display().to_string();
    if mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(d.as_str()))
    {
        let _ = std::process::Command::new("umount").arg(dir).status();
    }
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind port 0")
        .local_addr()
        .expect("addr")
        .port()
}
