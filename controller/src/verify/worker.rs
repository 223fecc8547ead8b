//! The scheduled store verification: every `every`, check the next share of the store so
//! that the whole store is covered once per `period`, resuming at the recorded cursor.

use std::sync::Arc;
use std::time::Duration;

use super::{Scope, run};
use crate::state::State;

/// When and how fast the scheduled verification runs.
#[derive(Debug, Clone, Copy)]
pub struct VerifyConfig {
    /// The whole store is covered once per period (zero: no scheduled verification).
    pub period: Duration,
    /// How often a share is checked.
    pub every: Duration,
    /// Read at most this many bytes per second (zero: unlimited).
    pub rate_bytes_per_sec: u64,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        VerifyConfig {
            period: Duration::from_secs(30 * 86_400),
            every: Duration::from_secs(3600),
            rate_bytes_per_sec: 50 << 20,
        }
    }
}

/// The share of `total` objects one run checks: the whole store once per period.
pub fn share(total: u64, cfg: &VerifyConfig) -> u64 {
    let runs = (cfg.period.as_secs_f64() / cfg.every.as_secs_f64().max(1e-3)).max(1.0);
    ((total as f64 / runs).ceil() as u64).max(1)
}

/// Start the `verify` worker (unless the period is zero).
pub fn spawn(state: &Arc<State>, cfg: VerifyConfig) {
    if cfg.period.is_zero() {
        return;
    }
    let st = state.clone();
    let stop = state.workers.stop_token();
    state.workers.periodic("verify", cfg.every, None, move || {
        let (st, stop) = (st.clone(), stop.clone());
        async move {
            let (total, _) = st.catalog.chunk_totals().await?;
            let scope = Scope {
                site: None,
                max_objects: Some(share(total, &cfg)),
                rate_bytes_per_sec: Some(cfg.rate_bytes_per_sec).filter(|r| *r > 0),
                resume: true,
            };
            run(&st, &scope, &stop).await.map(|_| ())
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_the_store_once_per_period() {
        let cfg = VerifyConfig::default(); // 30 days, hourly: 720 runs
        assert_eq!(share(720_000, &cfg), 1000);
        assert_eq!(share(10, &cfg), 1, "at least one object per run");
        let fast = VerifyConfig {
            period: Duration::from_secs(10),
            every: Duration::from_secs(1),
            rate_bytes_per_sec: 0,
        };
        assert_eq!(share(95, &fast), 10);
    }
}
