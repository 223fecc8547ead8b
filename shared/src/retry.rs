//! The one retry policy (backon): exponential backoff with jitter, doubling from a
//! first delay up to a cap. The agent's reconnect loop, its calls to the controller and
//! the controller's notice outbox all take their delays from it.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// Delays that double from `first` up to `max`, with jitter, without end.
pub fn policy(first: Duration, max: Duration) -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(first)
        .with_max_delay(max)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
}

/// A fresh sequence of delays of [`policy`].
pub fn delays(first: Duration, max: Duration) -> impl Iterator<Item = Duration> + Send {
    policy(first, max).build()
}

/// The delay before attempt `attempt + 1` (0-based) of a retried operation whose state
/// is stored between attempts (no jitter, so a restart computes the same wait).
pub fn nth_delay(first: Duration, max: Duration, attempt: u32) -> Duration {
    ExponentialBuilder::default()
        .with_min_delay(first)
        .with_max_delay(max)
        .with_factor(2.0)
        .without_max_times()
        .build()
        .nth(attempt as usize)
        .unwrap_or(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap() {
        let s = Duration::from_secs;
        assert_eq!(nth_delay(s(1), s(10), 0), s(1));
        assert_eq!(nth_delay(s(1), s(10), 3), s(8));
        assert_eq!(nth_delay(s(1), s(10), 30), s(10));
        let d: Vec<Duration> = delays(s(1), s(4)).take(6).collect();
        assert!(d.iter().all(|x| *x >= s(1) && *x <= s(8)), "{d:?}");
        assert!(d[5] >= s(4), "capped, jitter on top: {d:?}");
    }
}
