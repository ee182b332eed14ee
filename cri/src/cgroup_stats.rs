//! Container and pod resource usage read from cgroupfs, for ContainerStats,
//! ListContainerStats and PodSandboxStats. Both layouts are read: cgroup v1 (one
//! hierarchy per controller under `<root>/<controller>/`, as on hosts in hybrid mode)
//! and v2 (one unified hierarchy at `<root>`).
//!
//! The numbers are the ones the kubelet expects from the CRI, computed as containerd's
//! CRI plugin and cAdvisor compute them:
//! - working set = usage - inactive file pages, floored at 0 (v1: `memory.usage_in_bytes`
//!   and `total_inactive_file`; v2: `memory.current` and `inactive_file`): the memory the
//!   kernel cannot reclaim cheaply, which is what evictions and `kubectl top` use;
//! - available = limit - working set, only when a limit is set (a limit above 2^62 is
//!   the kernel's "unlimited", rounded to pages);
//! - RSS is v1 `total_rss`, v2 `anon`; CPU is v1 `cpuacct.usage`, v2 `usage_usec` x 1000.
//!
//! A file that is missing (controller not mounted, older kernel) leaves its field `None`;
//! a cgroup that does not exist at all is `NotFound`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::api;
use crate::error::{CriError, Result};

/// Where cgroupfs is mounted on every Linux host we run on.
const DEFAULT_ROOT: &str = "/sys/fs/cgroup";

/// Limits above this are "no limit": the kernel reports unlimited as the largest
/// page-aligned i64 (9223372036854771712), not a fixed value. As containerd and cAdvisor.
const UNLIMITED_ABOVE: u64 = 1 << 62;

/// v1 controllers read here. `cpuacct` is the name under which the accounting hierarchy
/// is found whether it is mounted alone or co-mounted as `cpu,cpuacct` (with symlinks).
const V1_CONTROLLERS: [&str; 3] = ["cpuacct", "memory", "pids"];

/// How cgroupfs is laid out on this host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CgroupLayout {
    /// One hierarchy per controller: `<root>/memory/<path>`, `<root>/cpuacct/<path>`, ...
    V1 { root: PathBuf },
    /// The unified hierarchy: `<root>/<path>`.
    V2 { root: PathBuf },
}

impl CgroupLayout {
    /// The layout of `/sys/fs/cgroup`.
    pub fn detect() -> Self {
        Self::detect_at(DEFAULT_ROOT)
    }

    /// v2 if `root` is a cgroup2 mount, as runc and the kubelet decide (a hybrid host has
    /// a tmpfs there, with cgroup2 only below at `unified/`). A plain directory holding
    /// `cgroup.controllers` also counts as v2, so a copy of a unified tree reads the same.
    pub fn detect_at(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        if is_cgroup2_mount(&root) || root.join("cgroup.controllers").is_file() {
            CgroupLayout::V2 { root }
        } else {
            CgroupLayout::V1 { root }
        }
    }
}

fn is_cgroup2_mount(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs only writes into `st`, which is a properly sized, zeroed struct, and
    // reads the NUL-terminated `c_path`, which outlives the call.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(c_path.as_ptr(), &mut st) };
    rc == 0 && st.f_type as u64 == libc::CGROUP2_SUPER_MAGIC as u64
}

/// One sample of a cgroup's usage. Every counter is `None` when the host does not
/// provide it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupStats {
    /// When the sample was taken (just before reading the CPU counter), ns since the epoch.
    pub timestamp_ns: i64,
    /// Cumulative CPU time of all tasks, all cores.
    pub cpu_usage_ns: Option<u64>,
    pub memory_usage_bytes: Option<u64>,
    pub memory_working_set_bytes: Option<u64>,
    pub memory_rss_bytes: Option<u64>,
    pub page_faults: Option<u64>,
    pub major_page_faults: Option<u64>,
    /// Limit minus working set; `None` without a memory limit.
    pub available_bytes: Option<u64>,
    /// Processes the kernel OOM-killed in this cgroup.
    pub oom_events: Option<u64>,
    /// Tasks currently in the cgroup.
    pub pids: Option<u64>,
}

/// Reads the cgroup at `cgroups_path`, the OCI `linux.cgroupsPath` of a container or
/// pod as the cgroupfs driver writes it (`/kubepods/burstable/pod<uid>/<id>`).
pub fn read(layout: &CgroupLayout, cgroups_path: &str) -> Result<CgroupStats> {
    let rel = relative_cgroup_path(cgroups_path)?;
    match layout {
        CgroupLayout::V1 { root } => read_v1(root, &rel),
        CgroupLayout::V2 { root } => read_v2(root, &rel),
    }
}

/// How many processes the kernel OOM-killed in the cgroup at `cgroups_path` (v1
/// `memory.oom_control`, v2 `memory.events`): `None` when the cgroup or the counter is
/// missing. One small file, so an exit can be told apart from an OOM kill at once.
pub fn oom_kills(layout: &CgroupLayout, cgroups_path: &str) -> Option<u64> {
    let rel = relative_cgroup_path(cgroups_path).ok()?;
    let (file, key) = match layout {
        CgroupLayout::V1 { root } => (
            root.join("memory").join(rel).join("memory.oom_control"),
            "oom_kill",
        ),
        CgroupLayout::V2 { root } => (root.join(rel).join("memory.events"), "oom_kill"),
    };
    read_keyed(&file).ok()??.get(key).copied()
}

/// The cgroup path below a hierarchy's root. `..` could leave cgroupfs, and the systemd
/// driver's `slice:prefix:name` form names a unit, not a directory.
fn relative_cgroup_path(cgroups_path: &str) -> Result<PathBuf> {
    let bad = |why: &str| CriError::InvalidArgument(format!("cgroup path {cgroups_path:?}: {why}"));
    if !cgroups_path.contains('/') && cgroups_path.matches(':').count() == 2 {
        return Err(bad(
            "systemd cgroup paths are not supported (Gantry uses the cgroupfs driver)",
        ));
    }
    let mut rel = PathBuf::new();
    for part in cgroups_path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
    {
        if part == ".." {
            return Err(bad("\"..\" is not allowed"));
        }
        rel.push(part);
    }
    Ok(rel)
}

fn read_v1(root: &Path, rel: &Path) -> Result<CgroupStats> {
    let [cpuacct, memory, pids] = V1_CONTROLLERS.map(|c| root.join(c).join(rel));
    if ![&cpuacct, &memory, &pids].iter().any(|d| d.is_dir()) {
        return Err(CriError::NotFound(format!(
            "cgroup {} not found under {} (no {} directory)",
            rel.display(),
            root.display(),
            memory.display()
        )));
    }
    let timestamp_ns = crate::store::now_ns();
    let cpu_usage_ns = read_u64(&cpuacct.join("cpuacct.usage"))?;
    let stat = read_keyed(&memory.join("memory.stat"))?.unwrap_or_default();
    let usage = read_u64(&memory.join("memory.usage_in_bytes"))?;
    let limit = read_limit(&memory.join("memory.limit_in_bytes"))?;
    let oom = read_keyed(&memory.join("memory.oom_control"))?;
    let mem = derive_memory(usage, limit, &stat, &V1_KEYS);
    Ok(CgroupStats {
        timestamp_ns,
        cpu_usage_ns,
        oom_events: oom.and_then(|o| o.get("oom_kill").copied()),
        pids: read_u64(&pids.join("pids.current"))?,
        ..mem
    })
}

fn read_v2(root: &Path, rel: &Path) -> Result<CgroupStats> {
    let dir = root.join(rel);
    if !dir.is_dir() {
        return Err(CriError::NotFound(format!(
            "cgroup {} not found",
            dir.display()
        )));
    }
    let timestamp_ns = crate::store::now_ns();
    let cpu = read_keyed(&dir.join("cpu.stat"))?;
    let stat = read_keyed(&dir.join("memory.stat"))?.unwrap_or_default();
    let usage = read_u64(&dir.join("memory.current"))?;
    let limit = read_limit(&dir.join("memory.max"))?;
    let events = read_keyed(&dir.join("memory.events"))?;
    let mem = derive_memory(usage, limit, &stat, &V2_KEYS);
    Ok(CgroupStats {
        timestamp_ns,
        cpu_usage_ns: cpu.and_then(|c| c.get("usage_usec").map(|us| us.saturating_mul(1000))),
        oom_events: events.and_then(|e| e.get("oom_kill").copied()),
        pids: read_u64(&dir.join("pids.current"))?,
        ..mem
    })
}

/// The `memory.stat` keys of one cgroup version. v1 uses the `total_` keys, which cover
/// the whole subtree like `memory.usage_in_bytes` does; v2 keys always do.
struct StatKeys {
    inactive_file: &'static str,
    rss: &'static str,
    pgfault: &'static str,
    pgmajfault: &'static str,
}

const V1_KEYS: StatKeys = StatKeys {
    inactive_file: "total_inactive_file",
    rss: "total_rss",
    pgfault: "total_pgfault",
    pgmajfault: "total_pgmajfault",
};

const V2_KEYS: StatKeys = StatKeys {
    inactive_file: "inactive_file",
    rss: "anon",
    pgfault: "pgfault",
    pgmajfault: "pgmajfault",
};

/// The memory fields of a sample, from the raw counters.
fn derive_memory(
    usage: Option<u64>,
    limit: Option<u64>,
    stat: &HashMap<String, u64>,
    keys: &StatKeys,
) -> CgroupStats {
    // A missing inactive_file counts as 0, as in containerd and cAdvisor.
    let inactive = stat.get(keys.inactive_file).copied().unwrap_or(0);
    let working_set = usage.map(|u| u.saturating_sub(inactive));
    let available = match (limit, working_set) {
        (Some(l), Some(ws)) => Some(l.saturating_sub(ws)),
        _ => None,
    };
    CgroupStats {
        memory_usage_bytes: usage,
        memory_working_set_bytes: working_set,
        memory_rss_bytes: stat.get(keys.rss).copied(),
        page_faults: stat.get(keys.pgfault).copied(),
        major_page_faults: stat.get(keys.pgmajfault).copied(),
        available_bytes: available,
        ..CgroupStats::default()
    }
}

impl CgroupStats {
    /// The CRI CPU usage. `usage_nano_cores` is the average over the window since `prev`
    /// (an earlier sample of the same cgroup); without one, or when the window is empty
    /// or the counter went back (the cgroup was recreated), it is left unset and the
    /// kubelet computes it from its own previous sample.
    pub fn to_cri_cpu(&self, prev: Option<&CgroupStats>) -> api::CpuUsage {
        let nano_cores = prev.and_then(|p| {
            let window = u128::try_from(self.timestamp_ns.checked_sub(p.timestamp_ns)?).ok()?;
            let used = self.cpu_usage_ns?.checked_sub(p.cpu_usage_ns?)?;
            if window == 0 {
                return None;
            }
            u64::try_from(u128::from(used) * 1_000_000_000 / window).ok()
        });
        api::CpuUsage {
            timestamp: self.timestamp_ns,
            usage_core_nano_seconds: value(self.cpu_usage_ns),
            usage_nano_cores: value(nano_cores),
            psi: None,
        }
    }

    /// The CRI memory usage.
    pub fn to_cri_memory(&self) -> api::MemoryUsage {
        api::MemoryUsage {
            timestamp: self.timestamp_ns,
            working_set_bytes: value(self.memory_working_set_bytes),
            available_bytes: value(self.available_bytes),
            usage_bytes: value(self.memory_usage_bytes),
            rss_bytes: value(self.memory_rss_bytes),
            page_faults: value(self.page_faults),
            major_page_faults: value(self.major_page_faults),
            psi: None,
        }
    }
}

fn value(v: Option<u64>) -> Option<api::UInt64Value> {
    v.map(|value| api::UInt64Value { value })
}

/// A cgroup file's text; `None` when the file is absent. ENODEV is absence too: reading
/// a file of a cgroup that is being removed returns it.
fn read_file(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                || e.raw_os_error() == Some(libc::ENODEV) =>
        {
            Ok(None)
        }
        Err(e) => Err(CriError::Internal(format!("read {}: {e}", path.display()))),
    }
}

fn malformed(path: &Path, text: &str) -> CriError {
    CriError::Internal(format!(
        "read {}: unexpected content {:?}",
        path.display(),
        text.trim()
    ))
}

fn read_u64(path: &Path) -> Result<Option<u64>> {
    let Some(text) = read_file(path)? else {
        return Ok(None);
    };
    text.trim()
        .parse()
        .map(Some)
        .map_err(|_| malformed(path, &text))
}

/// A memory limit: `None` for v2's `max` and for v1's huge "unlimited" value.
fn read_limit(path: &Path) -> Result<Option<u64>> {
    let Some(text) = read_file(path)? else {
        return Ok(None);
    };
    match text.trim() {
        "max" => Ok(None),
        n => match n.parse::<u64>() {
            Ok(v) if v > UNLIMITED_ABOVE => Ok(None),
            Ok(v) => Ok(Some(v)),
            Err(_) => Err(malformed(path, &text)),
        },
    }
}

/// A flat-keyed file (`memory.stat`, `cpu.stat`, `memory.events`, `memory.oom_control`):
/// one `key value` per line.
fn read_keyed(path: &Path) -> Result<Option<HashMap<String, u64>>> {
    let Some(text) = read_file(path)? else {
        return Ok(None);
    };
    parse_keyed(&text)
        .map(Some)
        .ok_or_else(|| malformed(path, &text))
}

fn parse_keyed(text: &str) -> Option<HashMap<String, u64>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut fields = l.split_whitespace();
            let (key, val) = (fields.next()?, fields.next()?.parse().ok()?);
            fields.next().is_none().then(|| (key.to_string(), val))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CGROUP: &str = "/kubepods/burstable/pod5f0c/4a1b";

    /// Writes `files` (paths relative to `root`, `{cg}` standing for `CGROUP`).
    fn tree(root: &Path, files: &[(&str, &str)]) {
        for (rel, text) in files {
            let path = root.join(rel.replace("{cg}", &CGROUP[1..]));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
    }

    fn v1(root: &Path) -> CgroupLayout {
        CgroupLayout::V1 { root: root.into() }
    }

    fn v2(root: &Path) -> CgroupLayout {
        CgroupLayout::V2 { root: root.into() }
    }

    // From a v1 host (kernel 6.x), the total_ numbers changed to be told apart.
    const V1_MEMORY_STAT: &str = "cache 1069056\nrss 1695744\nrss_huge 0\nshmem 0\n\
        mapped_file 0\ndirty 24576\nwriteback 0\nswap 0\npgpgin 14525\npgpgout 13849\n\
        pgfault 33858\npgmajfault 16\ninactive_anon 1556480\nactive_anon 12288\n\
        inactive_file 491520\nactive_file 577536\nunevictable 0\n\
        hierarchical_memory_limit 268435456\nhierarchical_memsw_limit 9223372036854771712\n\
        total_cache 2138112\ntotal_rss 3391488\ntotal_rss_huge 0\ntotal_shmem 0\n\
        total_mapped_file 0\ntotal_dirty 24576\ntotal_writeback 0\ntotal_swap 0\n\
        total_pgpgin 29050\ntotal_pgpgout 27698\ntotal_pgfault 67716\ntotal_pgmajfault 32\n\
        total_inactive_anon 3112960\ntotal_active_anon 24576\ntotal_inactive_file 983040\n\
        total_active_file 1155072\ntotal_unevictable 0\n";

    const V1_TREE: [(&str, &str); 6] = [
        ("cpuacct/{cg}/cpuacct.usage", "3524351826\n"),
        ("memory/{cg}/memory.stat", V1_MEMORY_STAT),
        ("memory/{cg}/memory.usage_in_bytes", "5529600\n"),
        ("memory/{cg}/memory.limit_in_bytes", "268435456\n"),
        (
            "memory/{cg}/memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        ),
        ("pids/{cg}/pids.current", "7\n"),
    ];

    // From a v2 host (kernel 6.x), shortened.
    const V2_MEMORY_STAT: &str = "anon 10170368\nfile 4866048\nkernel 1372160\n\
        kernel_stack 65536\npagetables 151552\nsec_pagetables 0\npercpu 0\nsock 0\nvmalloc 0\n\
        shmem 0\nfile_mapped 2338816\nfile_dirty 0\nfile_writeback 0\nswapcached 0\n\
        anon_thp 0\nfile_thp 0\nshmem_thp 0\ninactive_anon 10153984\nactive_anon 16384\n\
        inactive_file 4042752\nactive_file 823296\nunevictable 0\nslab_reclaimable 880408\n\
        slab_unreclaimable 209576\nslab 1089984\nworkingset_refault_anon 0\n\
        workingset_refault_file 12\npgscan 0\npgsteal 0\npgfault 12345\npgmajfault 27\n\
        pgrefill 0\nthp_fault_alloc 0\n";

    const V2_CPU_STAT: &str = "usage_usec 2345678\nuser_usec 1800000\nsystem_usec 545678\n\
        nr_periods 0\nnr_throttled 0\nthrottled_usec 0\nnr_bursts 0\nburst_usec 0\n";

    const V2_TREE: [(&str, &str); 8] = [
        (
            "cgroup.controllers",
            "cpuset cpu io memory hugetlb pids rdma misc\n",
        ),
        ("{cg}/cpu.stat", V2_CPU_STAT),
        ("{cg}/memory.stat", V2_MEMORY_STAT),
        ("{cg}/memory.current", "16519168\n"),
        ("{cg}/memory.max", "134217728\n"),
        (
            "{cg}/memory.events",
            "low 0\nhigh 0\nmax 17\noom 3\noom_kill 2\noom_group_kill 0\n",
        ),
        ("{cg}/pids.current", "3\n"),
        ("{cg}/cgroup.procs", "4242\n"),
    ];

    #[test]
    fn oom_kills_are_read_from_either_layout_and_absent_without_the_cgroup() {
        for tree_files in [&V1_TREE[..], &V2_TREE[..]] {
            let dir = tempfile::tempdir().unwrap();
            tree(dir.path(), tree_files);
            let layout = CgroupLayout::detect_at(dir.path());
            assert_eq!(oom_kills(&layout, CGROUP), Some(2), "{layout:?}");
            assert_eq!(oom_kills(&layout, "/kubepods/gone"), None, "{layout:?}");
        }
    }

    #[test]
    fn v1_tree_reads_total_counters_and_working_set_as_cadvisor() {
        let dir = tempfile::tempdir().unwrap();
        tree(dir.path(), &V1_TREE);
        let layout = CgroupLayout::detect_at(dir.path());
        assert_eq!(layout, v1(dir.path()));
        let s = read(&layout, CGROUP).unwrap();
        assert!(s.timestamp_ns > 0);
        let working_set = 5_529_600 - 983_040;
        let want = CgroupStats {
            timestamp_ns: s.timestamp_ns,
            cpu_usage_ns: Some(3_524_351_826),
            memory_usage_bytes: Some(5_529_600),
            memory_working_set_bytes: Some(working_set),
            memory_rss_bytes: Some(3_391_488),
            page_faults: Some(67_716),
            major_page_faults: Some(32),
            available_bytes: Some(268_435_456 - working_set),
            oom_events: Some(2),
            pids: Some(7),
        };
        assert_eq!(s, want);
        // The kernel's "unlimited" is the largest page-aligned i64, not a fixed value.
        let unlimited = "9223372036854771712\n";
        tree(
            dir.path(),
            &[("memory/{cg}/memory.limit_in_bytes", unlimited)],
        );
        let s = read(&layout, CGROUP).unwrap();
        assert_eq!(
            (s.available_bytes, s.memory_working_set_bytes),
            (None, Some(working_set))
        );
    }

    #[test]
    fn v2_tree_reads_unified_files_and_working_set_as_cadvisor() {
        let dir = tempfile::tempdir().unwrap();
        tree(dir.path(), &V2_TREE);
        let layout = CgroupLayout::detect_at(dir.path());
        assert_eq!(layout, v2(dir.path()));
        let s = read(&layout, CGROUP).unwrap();
        let working_set = 16_519_168 - 4_042_752;
        let want = CgroupStats {
            timestamp_ns: s.timestamp_ns,
            cpu_usage_ns: Some(2_345_678_000),
            memory_usage_bytes: Some(16_519_168),
            memory_working_set_bytes: Some(working_set),
            memory_rss_bytes: Some(10_170_368),
            page_faults: Some(12_345),
            major_page_faults: Some(27),
            available_bytes: Some(134_217_728 - working_set),
            oom_events: Some(2),
            pids: Some(3),
        };
        assert_eq!(s, want);
        // Usage below inactive_file happens (the files are not read atomically): the
        // working set floors at 0. `max` is no limit.
        tree(
            dir.path(),
            &[
                ("{cg}/memory.current", "4000000\n"),
                ("{cg}/memory.max", "max\n"),
            ],
        );
        let s = read(&layout, CGROUP).unwrap();
        assert_eq!(
            (s.memory_working_set_bytes, s.available_bytes),
            (Some(0), None)
        );
    }

    #[test]
    fn missing_files_leave_fields_unset() {
        let dir = tempfile::tempdir().unwrap();
        tree(
            dir.path(),
            &[("v1/memory/{cg}/tasks", ""), ("v2/{cg}/cgroup.procs", "")],
        );
        for layout in [v1(&dir.path().join("v1")), v2(&dir.path().join("v2"))] {
            let s = read(&layout, CGROUP).unwrap();
            let timestamp_ns = s.timestamp_ns;
            assert_eq!(
                s,
                CgroupStats {
                    timestamp_ns,
                    ..CgroupStats::default()
                }
            );
        }
    }

    #[test]
    fn missing_cgroup_is_not_found_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        for layout in [v1(dir.path()), v2(dir.path())] {
            let err = read(&layout, "/kubepods/pod1/gone").unwrap_err();
            let named = err.to_string().contains("kubepods/pod1/gone");
            assert!(err.is_not_found() && named, "{err}");
        }
    }

    #[test]
    fn paths_leaving_cgroupfs_or_naming_systemd_units_are_invalid() {
        for path in ["/kubepods/../../etc", "kubepods.slice:cri-containerd:abc"] {
            let err = read(&v2(Path::new("/nonexistent")), path).unwrap_err();
            assert!(matches!(err, CriError::InvalidArgument(_)), "{path}: {err}");
        }
    }

    #[test]
    fn garbage_in_a_cgroup_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        tree(dir.path(), &[("{cg}/memory.current", "lots\n")]);
        let err = read(&v2(dir.path()), CGROUP).unwrap_err().to_string();
        assert!(
            err.contains("memory.current") && err.contains("lots"),
            "{err}"
        );
    }

    #[test]
    fn cri_cpu_usage_averages_over_the_window_since_the_previous_sample() {
        let at = |timestamp_ns: i64, cpu: Option<u64>| CgroupStats {
            timestamp_ns,
            cpu_usage_ns: cpu,
            ..Default::default()
        };
        let (first, second) = (
            at(10_000_000_000, Some(4_000_000_000)),
            at(12_000_000_000, Some(5_000_000_000)),
        );
        let cpu = second.to_cri_cpu(Some(&first));
        let v = |x: Option<api::UInt64Value>| x.map(|v| v.value);
        assert_eq!(cpu.timestamp, 12_000_000_000);
        assert_eq!(v(cpu.usage_core_nano_seconds), Some(5_000_000_000));
        assert_eq!(v(cpu.usage_nano_cores), Some(500_000_000));
        // No previous sample, the same instant, a counter that went back (a recreated
        // cgroup) or no counter: no rate.
        let recreated = at(9_000_000_000, Some(9_000_000_000));
        for (now, prev) in [
            (&second, None),
            (&second, Some(&second)),
            (&first, Some(&recreated)),
        ] {
            assert_eq!(now.to_cri_cpu(prev).usage_nano_cores, None);
        }
        let unknown = at(13_000_000_000, None).to_cri_cpu(Some(&second));
        assert_eq!(
            (unknown.usage_core_nano_seconds, unknown.usage_nano_cores),
            (None, None)
        );
    }

    #[test]
    fn cri_memory_usage_carries_every_known_counter() {
        let m = CgroupStats {
            timestamp_ns: 7,
            memory_usage_bytes: Some(100),
            memory_working_set_bytes: Some(60),
            memory_rss_bytes: Some(50),
            page_faults: Some(3),
            major_page_faults: Some(1),
            available_bytes: None,
            ..Default::default()
        }
        .to_cri_memory();
        let v = |x: Option<api::UInt64Value>| x.map(|v| v.value);
        let got = [
            m.usage_bytes,
            m.working_set_bytes,
            m.rss_bytes,
            m.page_faults,
            m.major_page_faults,
            m.available_bytes,
        ];
        assert_eq!(m.timestamp, 7);
        assert_eq!(
            got.map(v),
            [Some(100), Some(60), Some(50), Some(3), Some(1), None]
        );
    }

    /// This process's cgroup for `controller` on the real host, from /proc/self/cgroup
    /// (`id:controllers:path`; the v2 line has no controllers, so `""` finds it).
    fn own_cgroup(controller: &str) -> String {
        let text = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let path = text.lines().find_map(|l| {
            let (_, rest) = l.split_once(':')?;
            let (ctrls, path) = rest.split_once(':')?;
            ctrls
                .split(',')
                .any(|c| c == controller)
                .then(|| path.to_string())
        });
        path.unwrap_or_else(|| panic!("no {controller:?} in /proc/self/cgroup:\n{text}"))
    }

    #[test]
    fn reads_this_process_cgroup_on_the_host() {
        let layout = CgroupLayout::detect();
        // On v1 each controller may place the process differently (here: cpuacct at the
        // root, memory in a sandbox's group).
        let (cpu_path, memory_path) = match layout {
            CgroupLayout::V1 { .. } => (own_cgroup("cpuacct"), own_cgroup("memory")),
            CgroupLayout::V2 { .. } => (own_cgroup(""), own_cgroup("")),
        };
        let cpu = read(&layout, &cpu_path).unwrap();
        assert!(
            cpu.cpu_usage_ns.unwrap_or(0) > 0,
            "{layout:?} {cpu_path}: {cpu:?}"
        );
        let mem = read(&layout, &memory_path).unwrap();
        let usage = mem.memory_usage_bytes.unwrap_or(0);
        assert!(usage > 0, "{layout:?} {memory_path}: {mem:?}");
        assert!(mem.memory_working_set_bytes.is_some_and(|ws| ws <= usage));
        // A hybrid host mounts cgroup2 below the root: that mount alone reads as v2.
        let unified = Path::new("/sys/fs/cgroup/unified");
        if matches!(layout, CgroupLayout::V1 { .. }) && unified.is_dir() {
            assert!(is_cgroup2_mount(unified));
        }
    }
}
