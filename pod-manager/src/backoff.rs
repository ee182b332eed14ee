//! Restart and image-pull backoff, as upstream's flowcontrol.Backoff is used by the
//! kubelet: a key's window starts at 10 s and doubles on each failure up to 5 min.
//! While `now - last failure < window`, the key is in back-off. A container that ran
//! for 10 minutes before it exited starts again from the initial window.

use std::collections::HashMap;
use std::time::{Duration, Instant};

pub const INITIAL: Duration = Duration::from_secs(10);
pub const MAX: Duration = Duration::from_secs(300);
/// A container that ran this long before exiting resets its backoff.
pub const RESET_AFTER_RUNNING: Duration = Duration::from_secs(600);

#[derive(Debug, Default)]
pub struct Backoff {
    entries: HashMap<String, Entry>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    window: Duration,
    /// When the failure that opened the current window happened.
    since: Instant,
}

impl Backoff {
    /// The time left in `key`'s window after a failure at `failed_at`, if any.
    pub fn remaining(&self, key: &str, now: Instant) -> Option<Duration> {
        let e = self.entries.get(key)?;
        let elapsed = now.saturating_duration_since(e.since);
        (elapsed < e.window).then(|| e.window - elapsed)
    }

    /// Records a failure of `key` at `at`: the first opens the initial window, each
    /// later one doubles it (up to MAX). Returns the new window.
    pub fn fail(&mut self, key: &str, at: Instant) -> Duration {
        let window = match self.entries.get(key) {
            Some(e) => (e.window * 2).min(MAX),
            None => INITIAL,
        };
        self.entries
            .insert(key.to_string(), Entry { window, since: at });
        window
    }

    /// The current window of `key`, if it has one.
    pub fn window(&self, key: &str) -> Option<Duration> {
        self.entries.get(key).map(|e| e.window)
    }

    pub fn reset(&mut self, key: &str) {
        self.entries.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_double_from_10s_to_at_most_5_minutes() {
        let mut b = Backoff::default();
        let t = Instant::now();
        let windows: Vec<u64> = (0..7).map(|_| b.fail("c", t).as_secs()).collect();
        assert_eq!(windows, [10, 20, 40, 80, 160, 300, 300]);
    }

    #[test]
    fn a_key_is_in_backoff_only_inside_its_window() {
        let mut b = Backoff::default();
        let t = Instant::now();
        assert_eq!(b.remaining("c", t), None);
        b.fail("c", t);
        assert_eq!(
            b.remaining("c", t + Duration::from_secs(4)),
            Some(Duration::from_secs(6))
        );
        assert_eq!(b.remaining("c", t + Duration::from_secs(10)), None);
        assert_eq!(b.remaining("other", t), None);
        b.reset("c");
        assert_eq!(b.window("c"), None);
    }
}
