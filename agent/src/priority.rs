//! Running the agent, and every pg_dump and pg_restore it starts, at a lower CPU and I/O
//! priority (`low_priority = true` in the agent's configuration), so that a backup
//! beside a busy production database takes what the database leaves. Applied to the
//! main thread before the runtime starts: every thread and child process after it
//! inherits it. The database server's own backend that serves the dump is PostgreSQL's
//! process and keeps its priority. The Windows half is unverified (no Windows target can
//! be built here).

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
