//! Observing the signals from the kernel's own accounting, as upstream's cAdvisor-backed
//! summary does for the root container:
//!
//! - memory.available = capacity (MemTotal) − working set, the working set being the
//!   root memory cgroup's usage less its inactive file pages. On cgroup v1 the usage is
//!   memory.usage_in_bytes and the inactive pages total_inactive_file of memory.stat; on
//!   cgroup v2 the root has no memory.current, so (as runc's rootStatsFromMeminfo) the
//!   usage is anon + file of the root memory.stat, less inactive_file. Without either
//!   (no memory controller), /proc/meminfo's MemTotal − MemFree − Inactive(file).
//! - nodefs / imagefs: statvfs of the kubelet's root directory and of the runtime's image
//!   filesystem (bytes available to unprivileged users, free inodes).
//! - pid.available = min(kernel.pid_max, kernel.threads-max) − the number of tasks
//!   (/proc/loadavg's fourth field), as upstream's pidlimit.Stats.
//!
//! Every reader takes the root of the files it reads, so tests give it fake trees.

use std::collections::BTreeMap;
use std::path::Path;

use super::thresholds::Signal;

/// One signal's value: what is available of how much.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observation {
    pub available: i64,
    pub capacity: i64,
}

pub type Observations = BTreeMap<Signal, Observation>;

fn read(root: &Path, path: &str) -> Result<String, String> {
    let p = root.join(path.trim_start_matches('/'));
    std::fs::read_to_string(&p).map_err(|e| format!("read {}: {e}", p.display()))
}

/// `name value` lines (memory.stat) or `Name: value kB` lines (meminfo): the value.
fn field(text: &str, name: &str) -> Option<i64> {
    text.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let key = f.next()?;
        (key.trim_end_matches(':') == name).then(|| f.next()?.parse().ok())?
    })
}

fn meminfo_bytes(text: &str, name: &str) -> Option<i64> {
    field(text, name).map(|kib| kib * 1024)
}

/// memory.available under `root` ("/" on a real node).
pub fn memory(root: &Path) -> Result<Observation, String> {
    let meminfo = read(root, "/proc/meminfo")?;
    let capacity =
        meminfo_bytes(&meminfo, "MemTotal").ok_or("/proc/meminfo has no MemTotal".to_string())?;
    let working_set = if let Ok(usage) = read(root, "/sys/fs/cgroup/memory/memory.usage_in_bytes") {
        // cgroup v1: the memory controller's own hierarchy.
        let usage: i64 = usage
            .trim()
            .parse()
            .map_err(|_| format!("memory.usage_in_bytes {:?} is not a number", usage.trim()))?;
        let stat = read(root, "/sys/fs/cgroup/memory/memory.stat")?;
        let inactive = field(&stat, "total_inactive_file").unwrap_or(0);
        (usage - inactive).max(0)
    } else if let Ok(stat) = read(root, "/sys/fs/cgroup/memory.stat") {
        // cgroup v2: the root's memory.stat.
        let anon = field(&stat, "anon").ok_or("memory.stat has no anon".to_string())?;
        let file = field(&stat, "file").ok_or("memory.stat has no file".to_string())?;
        let inactive = field(&stat, "inactive_file").unwrap_or(0);
        (anon + file - inactive).max(0)
    } else {
        let free =
            meminfo_bytes(&meminfo, "MemFree").ok_or("/proc/meminfo has no MemFree".to_string())?;
        let inactive = meminfo_bytes(&meminfo, "Inactive(file)").unwrap_or(0);
        (capacity - free - inactive).max(0)
    };
    Ok(Observation {
        available: (capacity - working_set).max(0),
        capacity,
    })
}

/// (bytes, inodes) of the filesystem holding `path`.
pub fn filesystem(path: &Path) -> Result<(Observation, Observation), String> {
    let u = crate::node_stats::fs_usage(path).map_err(|e| e.to_string())?;
    let bytes = Observation {
        available: u.available as i64,
        capacity: u.capacity as i64,
    };
    let inodes = Observation {
        available: u.inodes_free as i64,
        capacity: u.inodes as i64,
    };
    Ok((bytes, inodes))
}

/// pid.available under `root`.
pub fn pids(root: &Path) -> Result<Observation, String> {
    let number = |path: &str| -> Result<i64, String> {
        let text = read(root, path)?;
        text.trim()
            .parse()
            .map_err(|_| format!("{path} {:?} is not a number", text.trim()))
    };
    let max = number("/proc/sys/kernel/pid_max")?.min(number("/proc/sys/kernel/threads-max")?);
    let loadavg = read(root, "/proc/loadavg")?;
    let tasks: i64 = loadavg
        .split_whitespace()
        .nth(3)
        .and_then(|f| f.split_once('/'))
        .and_then(|(_, total)| total.parse().ok())
        .ok_or_else(|| {
            format!(
                "/proc/loadavg {:?} has no running/total field",
                loadavg.trim()
            )
        })?;
    Ok(Observation {
        available: max - tasks,
        capacity: max,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let p = dir.path().join(path.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        dir
    }

    const MEMINFO: &str =
        "MemTotal:       1048576 kB\nMemFree:         102400 kB\nInactive(file):  204800 kB\n";

    #[test]
    fn cgroup_v1_memory_is_the_root_cgroups_usage_less_inactive_file() {
        let root = tree(&[
            ("/proc/meminfo", MEMINFO),
            ("/sys/fs/cgroup/memory/memory.usage_in_bytes", "734003200\n"),
            (
                "/sys/fs/cgroup/memory/memory.stat",
                "cache 1\ninactive_file 5\ntotal_cache 9\ntotal_inactive_file 104857600\n",
            ),
        ]);
        // 1 GiB − (700 MiB − 100 MiB).
        assert_eq!(
            memory(root.path()).unwrap(),
            Observation {
                available: (1024 - 600) << 20,
                capacity: 1 << 30
            }
        );
    }

    #[test]
    fn cgroup_v2_memory_is_anon_plus_file_less_inactive_file() {
        let root = tree(&[
            ("/proc/meminfo", MEMINFO),
            (
                "/sys/fs/cgroup/memory.stat",
                "anon 314572800\nfile 209715200\nkernel 1\ninactive_file 104857600\n",
            ),
        ]);
        assert_eq!(
            memory(root.path()).unwrap().available,
            (1024 - 300 - 200 + 100) << 20
        );
    }

    #[test]
    fn without_a_memory_controller_meminfo_decides() {
        let root = tree(&[("/proc/meminfo", MEMINFO)]);
        // working set = total − free − inactive(file) = 1024 − 100 − 200 MiB.
        assert_eq!(memory(root.path()).unwrap().available, 300 << 20);
        let bad = tree(&[("/proc/meminfo", "MemFree: 1 kB\n")]);
        assert!(memory(bad.path()).unwrap_err().contains("MemTotal"));
    }

    #[test]
    fn pids_available_is_the_smaller_limit_less_the_tasks() {
        let root = tree(&[
            ("/proc/sys/kernel/pid_max", "4194304\n"),
            ("/proc/sys/kernel/threads-max", "190000\n"),
            ("/proc/loadavg", "0.52 0.58 0.59 3/1234 56789\n"),
        ]);
        assert_eq!(
            pids(root.path()).unwrap(),
            Observation {
                available: 190000 - 1234,
                capacity: 190000
            }
        );
    }

    #[test]
    fn this_machine_answers() {
        let m = memory(Path::new("/")).unwrap();
        assert!(m.capacity > 0 && m.available <= m.capacity);
        let (bytes, inodes) = filesystem(Path::new("/")).unwrap();
        assert!(bytes.available <= bytes.capacity && inodes.available <= inodes.capacity);
        assert!(pids(Path::new("/")).unwrap().available > 0);
    }
}
