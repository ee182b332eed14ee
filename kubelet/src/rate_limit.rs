//! The node's client-side rate limit for the writes it makes on its own (pod status,
//! events): a token bucket with upstream's kubeAPIQPS 50 and kubeAPIBurst 100, shared
//! by every writer, so a node with many changing pods cannot flood the API server.

use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct RateLimiter {
    qps: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    pub fn new(qps: f64, burst: u32) -> RateLimiter {
        RateLimiter {
            qps,
            burst: burst as f64,
            state: Mutex::new((burst as f64, Instant::now())),
        }
    }

    /// Upstream's defaults.
    pub fn kubelet_default() -> RateLimiter {
        RateLimiter::new(50.0, 100)
    }

    /// Takes one token, waiting until there is one.
    pub async fn acquire(&self) {
        let wait = self.take(Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// Takes a token at `now` (the bucket may go negative: later callers queue behind)
    /// and says how long the caller must wait for it.
    fn take(&self, now: Instant) -> Duration {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, last) = *s;
        let refilled =
            (tokens + now.saturating_duration_since(last).as_secs_f64() * self.qps).min(self.burst);
        let left = refilled - 1.0;
        *s = (left, now);
        if left >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-left / self.qps)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_requests_are_spaced_at_the_rate() {
        let r = RateLimiter::new(10.0, 3);
        let t = Instant::now();
        let waits: Vec<u128> = (0..5).map(|_| r.take(t).as_millis()).collect();
        assert_eq!(waits, [0, 0, 0, 100, 200]);
        // After a second the bucket has refilled (to the burst size at most).
        assert_eq!(r.take(t + Duration::from_secs(2)), Duration::ZERO);
    }
}
