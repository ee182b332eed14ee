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
    /// Failures recorded since the last reset.
    failures: u32,
}

impl Backoff {
    /// The time left in `key`'s window counted from its last recorded failure, if
    /// any (image pulls: upstream's IsInBackOffSinceUpdate).
    pub fn remaining(&self, key: &str, now: Instant) -> Option<Duration> {
        let e = self.entries.get(key)?;
        self.remaining_since(key, e.since, now)
    }

    /// The time left in `key`'s current window counted from `event` (a container's
    /// latest exit: upstream's IsInBackOffSince), if any.
    pub fn remaining_since(&self, key: &str, event: Instant, now: Instant) -> Option<Duration> {
        let e = self.entries.get(key)?;
        let elapsed = now.saturating_duration_since(event);
        (elapsed < e.window).then(|| e.window - elapsed)
    }

    /// Records a failure of `key` at `at`: the first opens the initial window, each
    /// later one doubles it (up to MAX). Returns the new window.
    pub fn fail(&mut self, key: &str, at: Instant) -> Duration {
        let (window, failures) = match self.entries.get(key) {
            Some(e) => ((e.window * 2).min(MAX), e.failures + 1),
            None => (INITIAL, 1),
        };
        self.entries.insert(
            key.to_string(),
            Entry {
                window,
                since: at,
                failures,
            },
        );
        window
    }

    /// The current window of `key`, if it has one.
    pub fn window(&self, key: &str) -> Option<Duration> {
        self.entries.get(key).map(|e| e.window)
    }

    /// Failures of `key` since its last reset: names the current window.
    pub fn failures(&self, key: &str) -> u32 {
        self.entries.get(key).map_or(0, |e| e.failures)
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

    #[test]
    fn a_restart_window_counts_from_the_latest_exit() {
        let mut b = Backoff::default();
        let first_exit = Instant::now();
        b.fail("c", first_exit);
        // The container ran 30 s after its restart and exited again: the 10 s window
        // starts at that exit, not at the first one.
        let second_exit = first_exit + Duration::from_secs(30);
        assert_eq!(
            b.remaining_since("c", second_exit, second_exit + Duration::from_secs(3)),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            b.remaining_since("c", second_exit, second_exit + Duration::from_secs(10)),
            None
        );
    }
}
