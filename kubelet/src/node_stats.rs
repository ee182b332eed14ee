//! The node's own usage for /stats/summary, read from the kernel: CPU time from
//! /proc/stat, memory from /proc/meminfo and /proc/vmstat, filesystem usage from
//! statvfs. The parsers are pure; the readers only open the files.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum NodeStatsError {
    #[error("read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("parse {path}: {what} not found")]
    Parse { path: String, what: &'static str },
    #[error("statvfs {path}: {source}")]
    Statvfs { path: String, source: nix::Error },
}

fn read(path: &str) -> Result<String, NodeStatsError> {
    std::fs::read_to_string(path).map_err(|source| NodeStatsError::Read {
        path: path.into(),
        source,
    })
}

/// What /proc/stat says about the whole machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcStat {
    /// CPU time spent working, all CPUs, in clock ticks: user, nice, system, irq,
    /// softirq and steal (idle and iowait are not work; guest time is already in user).
    pub busy_ticks: u64,
    /// Boot time, seconds since the epoch.
    pub boot_time: i64,
}

pub fn parse_proc_stat(text: &str) -> Option<ProcStat> {
    let mut busy = None;
    let mut boot = None;
    for line in text.lines() {
        let mut f = line.split_whitespace();
        match f.next() {
            Some("cpu") => {
                let v: Vec<u64> = f.filter_map(|x| x.parse().ok()).collect();
                // user nice system idle iowait irq softirq steal ...
                let at = |i: usize| v.get(i).copied().unwrap_or(0);
                if v.len() >= 4 {
                    busy = Some(at(0) + at(1) + at(2) + at(5) + at(6) + at(7));
                }
            }
            Some("btime") => boot = f.next().and_then(|x| x.parse().ok()),
            _ => {}
        }
    }
    Some(ProcStat {
        busy_ticks: busy?,
        boot_time: boot?,
    })
}

pub fn proc_stat() -> Result<ProcStat, NodeStatsError> {
    parse_proc_stat(&read("/proc/stat")?).ok_or(NodeStatsError::Parse {
        path: "/proc/stat".into(),
        what: "the cpu or btime line",
    })
}

/// Nanoseconds per clock tick of /proc/stat (USER_HZ).
pub fn nanos_per_tick() -> u64 {
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|v| u64::try_from(v).ok())
        .filter(|v| *v > 0)
        .unwrap_or(100);
    1_000_000_000 / hz
}

/// The node's memory as the summary reports it, computed as cAdvisor does for the
/// root container: usage = total - free; the working set leaves out inactive file
/// pages (reclaimable), and what is available is what the working set leaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeMemory {
    pub capacity: u64,
    pub usage: u64,
    pub working_set: u64,
    pub available: u64,
}

pub fn parse_meminfo(text: &str) -> Option<NodeMemory> {
    let field = |name: &str| {
        text.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(':')?;
            let kib: u64 = rest.split_whitespace().next()?.parse().ok()?;
            Some(kib * 1024)
        })
    };
    let total = field("MemTotal")?;
    let free = field("MemFree")?;
    let inactive_file = field("Inactive(file)").unwrap_or(0);
    let usage = total.saturating_sub(free);
    let working_set = usage.saturating_sub(inactive_file);
    Some(NodeMemory {
        capacity: total,
        usage,
        working_set,
        available: total.saturating_sub(working_set),
    })
}

pub fn node_memory() -> Result<NodeMemory, NodeStatsError> {
    parse_meminfo(&read("/proc/meminfo")?).ok_or(NodeStatsError::Parse {
        path: "/proc/meminfo".into(),
        what: "MemTotal or MemFree",
    })
}

/// Page faults since boot, (all, major), from /proc/vmstat.
pub fn parse_vmstat(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        text.lines().find_map(|l| {
            let mut f = l.split_whitespace();
            (f.next()? == name).then(|| f.next()?.parse().ok())?
        })
    };
    Some((field("pgfault")?, field("pgmajfault")?))
}

pub fn page_faults() -> Option<(u64, u64)> {
    parse_vmstat(&read("/proc/vmstat").ok()?)
}

/// A filesystem's size and use, from statvfs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FsUsage {
    pub capacity: u64,
    pub available: u64,
    pub used: u64,
    pub inodes: u64,
    pub inodes_free: u64,
}

pub fn fs_usage(path: &Path) -> Result<FsUsage, NodeStatsError> {
    let st = nix::sys::statvfs::statvfs(path).map_err(|source| NodeStatsError::Statvfs {
        path: path.display().to_string(),
        source,
    })?;
    let frag = st.fragment_size() as u64;
    let blocks = st.blocks() as u64;
    Ok(FsUsage {
        capacity: blocks * frag,
        available: st.blocks_available() as u64 * frag,
        used: blocks.saturating_sub(st.blocks_free() as u64) * frag,
        inodes: st.files() as u64,
        inodes_free: st.files_free() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_busy_time_and_boot_time() {
        let text = "cpu  100 5 50 1000 20 3 2 1 0 0\ncpu0 50 2 25 500 10 1 1 0 0 0\nintr 1\nbtime 1714557600\n";
        assert_eq!(
            parse_proc_stat(text),
            Some(ProcStat {
                busy_ticks: 100 + 5 + 50 + 3 + 2 + 1,
                boot_time: 1714557600
            })
        );
        assert_eq!(parse_proc_stat("cpu 1 2 3 4\n"), None);
    }

    #[test]
    fn meminfo_working_set_leaves_out_inactive_file_pages() {
        let text = "MemTotal:       1000 kB\nMemFree:         200 kB\nMemAvailable:    600 kB\nInactive(file):  300 kB\n";
        assert_eq!(
            parse_meminfo(text),
            Some(NodeMemory {
                capacity: 1000 * 1024,
                usage: 800 * 1024,
                working_set: 500 * 1024,
                available: 500 * 1024,
            })
        );
    }

    #[test]
    fn vmstat_page_faults() {
        assert_eq!(parse_vmstat("pgfault 42\npgmajfault 7\n"), Some((42, 7)));
        assert_eq!(parse_vmstat("pgfault 42\n"), None);
    }

    #[test]
    fn this_machine_answers() {
        assert!(proc_stat().unwrap().busy_ticks > 0);
        assert!(node_memory().unwrap().capacity > 0);
        let fs = fs_usage(Path::new("/")).unwrap();
        assert!(fs.capacity >= fs.available);
        assert!(nanos_per_tick() > 0);
    }
}
