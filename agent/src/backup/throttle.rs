//! Upload bandwidth limit: a token bucket on sealed bytes sent. Tokens refill at the
//! configured rate up to one second's worth (the burst); a batch larger than the tokens
//! on hand is sent and the debt is slept off first, so the average never exceeds the
//! rate over any window longer than a second.

use std::sync::Mutex;

use tokio::time::{Duration, Instant};

/// See module docs.
#[derive(Debug)]
pub struct Throttle {
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl Throttle {
    /// A bucket of `bytes_per_sec`, starting full.
    pub fn new(bytes_per_sec: u64) -> Self {
        let rate = bytes_per_sec.max(1) as f64;
        Throttle {
            rate,
            state: Mutex::new((rate, Instant::now())),
        }
    }

    /// Wait until `n` bytes may be sent.
    pub async fn take(&self, n: u64) {
        let wait = {
            let mut g = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let refill = now.duration_since(g.1).as_secs_f64() * self.rate;
            g.0 = (g.0 + refill).min(self.rate) - n as f64;
            g.1 = now;
            (g.0 < 0.0).then(|| Duration::from_secs_f64(-g.0 / self.rate))
        };
        if let Some(d) = wait {
            tokio::time::sleep(d).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn average_rate_is_held() {
        let t = Throttle::new(1_000_000);
        let start = Instant::now();
        // 10 MB in 250 kB batches: one second of burst, then 9 s at the rate.
        for _ in 0..40 {
            t.take(250_000).await;
        }
        let took = start.elapsed().as_secs_f64();
        assert!((8.9..=9.1).contains(&took), "{took}");
        // After an idle spell the bucket holds at most one second's worth.
        tokio::time::sleep(Duration::from_secs(60)).await;
        let start = Instant::now();
        for _ in 0..12 {
            t.take(250_000).await;
        }
        let took = start.elapsed().as_secs_f64();
        assert!((1.9..=2.1).contains(&took), "{took}");
    }
}
