//! Running the agent, and every pg_dump and pg_restore it starts, at a lower CPU and I/O
//! priority (`low_priority = true` in the agent's configuration), so that a backup
//! beside a busy production database takes what the database leaves. Applied to the
//! main thread before the runtime starts: every thread and child process after it
//! inherits it.
//!
//! Most of a dump's CPU is spent by the database server's backend that serves it, a
//! process of PostgreSQL's own. When the server runs on this host, [`lower_backend`]
//! finds that backend (pg_dump connects under an application name naming the job) and
//! lowers it the same way. That takes the right to renice another user's process: root,
//! or `AmbientCapabilities=CAP_SYS_NICE` in the agent's systemd unit; without it the
//! backend keeps its priority and the agent says so. The Windows half is unverified (no
//! Windows target can be built here) and leaves the backend alone.

/// Lower this process's priority; a step that cannot be taken is logged, not fatal.
#[cfg(unix)]
pub fn lower() -> Vec<String> {
    let mut notes = vec![];
    // nice 10: the scheduler gives normal processes ~10 times our share under contention.
    if let Err(e) = rustix::process::setpriority_process(None, 10) {
        notes.push(format!("nice 10 not set: {e}"));
    }
    // Best-effort class, lowest level: the agent's reads and pg_dump's writes queue
    // behind the database's own I/O (ionice applies to the thread with the process id:
    // the main thread, which every later thread inherits from).
    let pid = std::process::id().to_string();
    match std::process::Command::new("ionice")
        .args(["-c", "2", "-n", "7", "-p", &pid])
        .output()
    {
        Ok(o) if o.status.success() => {}
        Ok(o) => notes.push(format!(
            "ionice -c 2 -n 7 failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => notes.push(format!("ionice not run ({e}); install util-linux")),
    }
    notes
}

/// Lower this process's priority class to below normal (inherited by child processes).
#[cfg(windows)]
pub fn lower() -> Vec<String> {
    let script = format!(
        "(Get-Process -Id {}).PriorityClass = 'BelowNormal'",
        std::process::id()
    );
    match std::process::Command::new("powershell")
        .args(["-NoProfile", "-NonInteractive", "-Command", &script])
        .output()
    {
        Ok(o) if o.status.success() => vec![],
        Ok(o) => vec![format!(
            "priority class not set: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )],
        Err(e) => vec![format!("priority class not set: {e}")],
    }
}

/// How long to look for the dump's backend once pg_dump started.
const FIND_BACKEND: std::time::Duration = std::time::Duration::from_secs(15);

/// Lower the CPU and I/O priority of the backends connected under `app` (the dump's) on
/// the server of target `t`, if that server runs on this host. Best effort: what could
/// not be done is logged. Run beside the dump; cancelled with it.
pub async fn lower_backend(t: crate::config::TargetConfig, app: String) {
    if !server_is_local(&t.host) {
        tracing::info!(target = %t.name, host = %t.host, "database server not on this host: its backend keeps its priority");
        return;
    }
    let client = match crate::pg::connect(&t, &t.dbname).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(target = %t.name, error = %e, "backend priority not lowered");
            return;
        }
    };
    let deadline = tokio::time::Instant::now() + FIND_BACKEND;
    while tokio::time::Instant::now() < deadline {
        let rows = client
            .query(
                "SELECT pid FROM pg_catalog.pg_stat_activity WHERE application_name = $1",
                &[&app],
            )
            .await;
        let pids: Vec<i32> = match rows {
            Ok(rows) => rows.iter().map(|r| r.get(0)).collect(),
            Err(e) => {
                let e = crate::pg::db_error_text(&e);
                tracing::warn!(target = %t.name, error = %e, "backend priority not lowered");
                return;
            }
        };
        if !pids.is_empty() {
            for pid in pids {
                match lower_process(pid) {
                    Ok(()) => {
                        tracing::info!(target = %t.name, pid, "the dump's database backend runs at nice 10, I/O best-effort 7")
                    }
                    Err(e) => {
                        tracing::warn!(target = %t.name, pid, error = %e, "the dump's database backend keeps its priority")
                    }
                }
            }
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    tracing::warn!(target = %t.name, "the dump's database backend was not found: it keeps its priority");
}

/// A host name or socket directory of this host.
fn server_is_local(host: &str) -> bool {
    host.starts_with('/') || ["localhost", "127.0.0.1", "::1"].contains(&host)
}

/// Errors lowering another process's priority.
#[derive(Debug, thiserror::Error)]
pub enum LowerError {
    #[error("process {0} is not a PostgreSQL process of this host")]
    NotPostgres(i32),
    #[error("nice 10: {0} (renicing the postgres user's processes takes root or CAP_SYS_NICE)")]
    Nice(std::io::Error),
    #[error("ionice: {0}")]
    Ionice(String),
}

/// Lower PostgreSQL process `pid` to nice 10 and I/O best-effort 7.
#[cfg(unix)]
fn lower_process(pid: i32) -> Result<(), LowerError> {
    // Only a postgres process of this host: a pid read from the server names nothing
    // else here.
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let process = rustix::process::Pid::from_raw(pid).filter(|_| comm.trim() == "postgres");
    let Some(process) = process else {
        return Err(LowerError::NotPostgres(pid));
    };
    rustix::process::setpriority_process(Some(process), 10)
        .map_err(|e| LowerError::Nice(e.into()))?;
    let out = std::process::Command::new("ionice")
        .args(["-c", "2", "-n", "7", "-p", &pid.to_string()])
        .output()
        .map_err(|e| LowerError::Ionice(e.to_string()))?;
    if !out.status.success() {
        return Err(LowerError::Ionice(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(())
}

/// Left alone on Windows (unverified platform).
#[cfg(windows)]
fn lower_process(pid: i32) -> Result<(), LowerError> {
    Err(LowerError::NotPostgres(pid))
}
