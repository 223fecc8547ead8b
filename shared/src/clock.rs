//! The wall clock and the process's stop signal, one definition each for the agent and
//! the controller.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, now (0 for a clock set before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> i64 {
    (now_ms() / 1000) as i64
}

/// Resolves on Ctrl-C, or SIGTERM on Unix (what systemd sends).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    #[test]
    fn seconds_and_milliseconds_agree() {
        let (ms, s) = (super::now_ms(), super::unix_now());
        assert!(ms > 1_700_000_000_000, "a clock after 2023");
        assert!((s - (ms / 1000) as i64).abs() <= 1);
    }
}
