//! A small map whose entries expire, for review results: upstream caches TokenReview
//! answers for authentication.webhook.cacheTTL (2 min) and SubjectAccessReview answers
//! for cacheAuthorizedTTL (5 min) / cacheUnauthorizedTTL (30 s), so a busy client (the
//! apiserver streaming logs, metrics-server scraping) costs one review per TTL.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// More entries than this and expired ones are swept; if none were expired the map is
/// cleared: a bound on memory that a flood of distinct tokens cannot push past.
const MAX_ENTRIES: usize = 4096;

pub struct TtlCache<K, V> {
    entries: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K: Eq + Hash, V: Clone> TtlCache<K, V> {
    pub fn new() -> Self {
        TtlCache {
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The value, if present and not expired at `now`.
    pub fn get(&self, key: &K, now: Instant) -> Option<V> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match entries.get(key) {
            Some((expires, v)) if *expires > now => Some(v.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    pub fn insert(&self, key: K, value: V, ttl: Duration, now: Instant) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, (expires, _)| *expires > now);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(key, (now + ttl, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_after_their_ttl() {
        let c = TtlCache::new();
        let t0 = Instant::now();
        c.insert("a", 1, Duration::from_secs(30), t0);
        assert_eq!(c.get(&"a", t0 + Duration::from_secs(29)), Some(1));
        assert_eq!(c.get(&"a", t0 + Duration::from_secs(30)), None);
        assert_eq!(c.get(&"b", t0), None);
    }

    #[test]
    fn a_full_cache_sweeps_instead_of_growing() {
        let c = TtlCache::new();
        let t0 = Instant::now();
        for i in 0..MAX_ENTRIES + 10 {
            c.insert(i, i, Duration::from_secs(60), t0);
        }
        let len = c.entries.lock().unwrap().len();
        assert!(len <= MAX_ENTRIES, "{len} entries");
        assert_eq!(c.get(&(MAX_ENTRIES + 9), t0), Some(MAX_ENTRIES + 9));
    }
}
