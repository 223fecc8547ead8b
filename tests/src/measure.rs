//! Measuring processes from outside through /proc (Linux): CPU time including reaped
//! children, and peak resident memory with a resettable high-water mark.

use std::time::{Duration, Instant};

fn clk_tck() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime + cutime + cstime of `pid` ("self" for this process), in seconds.
pub fn cpu_secs(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the ")" that ends the command name; utime is field 14 overall.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    if f.len() < 15 {
        return 0.0;
    }
    (f[11] + f[12] + f[13] + f[14]) / clk_tck()
}

/// The live children of `pid`.
pub fn children(pid: u32) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    let parent = pid.to_string();
    dir.flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.bytes().all(|b| b.is_ascii_digit()))
        .filter(|name| {
            let stat = std::fs::read_to_string(format!("/proc/{name}/stat")).unwrap_or_default();
            let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
            // Field 4 overall, the parent's pid, is the second after the name.
            rest.split_whitespace().nth(1) == Some(parent.as_str())
        })
        .collect()
}

/// CPU seconds of `pid` and of its live children: a PostgreSQL server and its backends
/// (the exited ones are in the server's own children's time).
pub fn tree_cpu_secs(pid: u32) -> f64 {
    cpu_secs(&pid.to_string()) + children(pid).iter().map(|c| cpu_secs(c)).sum::<f64>()
}

/// Wait (up to `max`) until `pid` has no children but `before`: a server's backends
/// go on for a moment after their client is gone, and count only once reaped.
pub fn settle(pid: u32, before: &[String], max: Duration) {
    let end = Instant::now() + max;
    while Instant::now() < end && children(pid).iter().any(|c| !before.contains(c)) {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reset the peak-RSS mark of `pid` (Linux >= 4.0; needs permission on the process).
pub fn reset_peak_rss(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

/// Peak resident set size of `pid` since start or the last reset, in bytes.
pub fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Wall and CPU time of a closure, where CPU is summed over the given pids.
pub struct Sample {
    pub wall: Duration,
    pub cpu: f64,
}

/// Run `f`, measuring wall time and the CPU used by `pids` meanwhile.
pub fn measure<T>(pids: &[String], f: impl FnOnce() -> T) -> (T, Sample) {
    let before: f64 = pids.iter().map(|p| cpu_secs(p)).sum();
    let start = Instant::now();
    let out = f();
    let wall = start.elapsed();
    let after: f64 = pids.iter().map(|p| cpu_secs(p)).sum();
    (
        out,
        Sample {
            wall,
            cpu: after - before,
        },
    )
}
