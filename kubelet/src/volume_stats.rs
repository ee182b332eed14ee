//! Volume usage for /stats/summary, as upstream's MetricsDu: the bytes and inodes a
//! volume directory holds come from walking it (what `du -x` counts: allocated
//! blocks, each hard-linked inode once, never crossing into another filesystem), and
//! the capacity, available bytes and inodes from statfs of the directory.
//!
//! Walking is slow on big volumes, so it never runs on a request: a scrape reads the
//! last walk from [`UsageCache`] and, when that is older than volumeStatsAggPeriod
//! (upstream's default 1 min), a walk starts in the background for the next one.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a directory tree holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirUsage {
    /// Allocated bytes (st_blocks × 512), so sparse files count what they use.
    pub bytes: u64,
    /// Distinct inodes, the directory itself included.
    pub inodes: u64,
}

/// Walks `root` like `du -x -s -B1`: lstat of every entry (symlinks are not followed),
/// entries on another device (mounts below the root) left out, an inode with several
/// links counted once. Entries that vanish during the walk are skipped.
pub fn du(root: &Path) -> std::io::Result<DirUsage> {
    let top = std::fs::symlink_metadata(root)?;
    let dev = top.dev();
    let mut seen: HashSet<u64> = HashSet::new();
    let mut usage = DirUsage::default();
    let mut count = |m: &std::fs::Metadata, usage: &mut DirUsage| {
        if m.nlink() > 1 && !m.is_dir() && !seen.insert(m.ino()) {
            return;
        }
        usage.bytes = usage.bytes.saturating_add(m.blocks().saturating_mul(512));
        usage.inodes += 1;
    };
    count(&top, &mut usage);
    if !top.is_dir() {
        return Ok(usage);
    }
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(m) = entry.path().symlink_metadata() else {
                continue;
            };
            if m.dev() != dev {
                continue;
            }
            count(&m, &mut usage);
            if m.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    Ok(usage)
}

/// The last walk of each volume directory, refreshed in the background.
#[derive(Clone, Default)]
pub struct UsageCache {
    inner: Arc<Mutex<HashMap<PathBuf, Entry>>>,
}

#[derive(Clone, Copy)]
struct Entry {
    usage: Option<(Instant, DirUsage)>,
    walking: bool,
    /// Last asked for: entries nobody asks for any more (gone pods) are dropped.
    asked: Instant,
}

impl UsageCache {
    /// The last walk of `dir`, if any; starts a new walk (off this task, at most one
    /// per directory) when there is none or it is older than `every`.
    pub fn get(&self, dir: &Path, every: Duration) -> Option<DirUsage> {
        let now = Instant::now();
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if !map.contains_key(dir) {
            // A new volume: a good time to forget those nobody asked about for long.
            map.retain(|_, e| now.duration_since(e.asked) < every.max(Duration::from_secs(60)) * 5);
        }
        let e = map.entry(dir.to_path_buf()).or_insert(Entry {
            usage: None,
            walking: false,
            asked: now,
        });
        e.asked = now;
        let stale = e
            .usage
            .is_none_or(|(at, _)| now.duration_since(at) >= every);
        if stale && !e.walking {
            e.walking = true;
            let inner = self.inner.clone();
            let dir = dir.to_path_buf();
            tokio::task::spawn_blocking(move || {
                let walked = du(&dir);
                let mut map = inner.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(e) = map.get_mut(&dir) {
                    e.walking = false;
                    match walked {
                        Ok(u) => e.usage = Some((Instant::now(), u)),
                        Err(err) => {
                            tracing::debug!(dir = %dir.display(), error = %err, "volume usage");
                            e.usage = None;
                        }
                    }
                }
            });
        }
        e.usage.map(|(_, u)| u)
    }

    /// Walks `dir` now and caches the result (tests, and the first sample).
    #[cfg(test)]
    fn fill(&self, dir: &Path) {
        let u = du(dir).unwrap();
        self.inner.lock().unwrap().insert(
            dir.to_path_buf(),
            Entry {
                usage: Some((Instant::now(), u)),
                walking: false,
                asked: Instant::now(),
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn blocks(p: &Path) -> u64 {
        std::fs::symlink_metadata(p).unwrap().blocks() * 512
    }

    #[test]
    fn counts_allocated_blocks_and_every_inode() {
        let d = tempfile::tempdir().unwrap();
        let sub = d.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        let f = sub.join("data");
        let mut file = std::fs::File::create(&f).unwrap();
        file.write_all(&vec![7u8; 100_000]).unwrap();
        file.sync_all().unwrap();
        let u = du(d.path()).unwrap();
        assert_eq!(u.inodes, 3, "root, sub, data");
        assert_eq!(u.bytes, blocks(d.path()) + blocks(&sub) + blocks(&f));
        assert!(u.bytes >= 100_000, "{u:?}");
    }

    #[test]
    fn sparse_files_count_what_they_allocate() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("sparse");
        let file = std::fs::File::create(&f).unwrap();
        file.set_len(1 << 30).unwrap();
        let u = du(d.path()).unwrap();
        assert_eq!(u.bytes, blocks(d.path()) + blocks(&f));
        assert!(
            u.bytes < 1 << 20,
            "a 1 GiB hole allocates next to nothing: {u:?}"
        );
    }

    #[test]
    fn hard_links_count_once() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("a");
        std::fs::write(&f, vec![1u8; 50_000]).unwrap();
        let alone = du(d.path()).unwrap();
        std::fs::hard_link(&f, d.path().join("b")).unwrap();
        let linked = du(d.path()).unwrap();
        // The directory may grow by a block for the new name; the file is not doubled.
        assert_eq!(linked.inodes, alone.inodes);
        assert_eq!(linked.bytes, blocks(d.path()) + blocks(&f));
    }

    #[test]
    fn symlinks_are_not_followed() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("big"), vec![1u8; 200_000]).unwrap();
        std::os::unix::fs::symlink(outside.path(), d.path().join("link")).unwrap();
        let u = du(d.path()).unwrap();
        assert_eq!(u.inodes, 2);
        assert!(u.bytes < 200_000, "{u:?}");
    }

    #[tokio::test]
    async fn the_cache_answers_from_the_last_walk_and_refreshes_in_the_background() {
        let d = tempfile::tempdir().unwrap();
        let cache = UsageCache::default();
        cache.fill(d.path());
        let before = cache.get(d.path(), Duration::from_secs(3600)).unwrap();
        std::fs::write(d.path().join("new"), vec![1u8; 100_000]).unwrap();
        // Fresh enough: the old walk is the answer.
        assert_eq!(cache.get(d.path(), Duration::from_secs(3600)), Some(before));
        // Stale: the old answer now, the new walk for a later scrape.
        assert_eq!(cache.get(d.path(), Duration::ZERO), Some(before));
        let mut after = before;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            after = cache.get(d.path(), Duration::from_secs(3600)).unwrap();
            if after != before {
                break;
            }
        }
        assert_eq!(after, du(d.path()).unwrap());
    }
}
