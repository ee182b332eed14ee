//! The cgroup filesystem, as the cgroupfs driver sees it: cgroups named by paths such
//! as `/kubepods/burstable/pod<uid>`, created, configured and removed in every
//! hierarchy (cgroup v1: one per controller, v2: the unified one). Everything goes
//! through the hierarchies' root directories, so unit tests run it over a fake
//! cgroupfs in a temporary directory.

use std::io;
use std::path::{Path, PathBuf};

use super::config::ResourceConfig;

/// Controllers a pod cgroup needs enabled on cgroup v2 (those the root offers).
const V2_CONTROLLERS: &[&str] = &["cpuset", "cpu", "io", "memory", "hugetlb", "pids"];

/// The controllers of cgroup v1 (the other words of a cgroup mount's options are
/// mount options such as rw, xattr or name=systemd).
const V1_CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "net_prio",
    "blkio",
    "perf_event",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
];

/// One mounted hierarchy: its root directory and the controllers attached to it.
#[derive(Clone, Debug, PartialEq)]
pub struct Hierarchy {
    pub root: PathBuf,
    pub controllers: Vec<String>,
}

/// The host's cgroup filesystem.
#[derive(Clone, Debug, PartialEq)]
pub enum CgroupFs {
    /// cgroup v1 (or hybrid): a cgroup exists once per hierarchy. Hierarchies without
    /// controllers (name=systemd, an empty cgroup2) are listed too: the runtime creates
    /// container cgroups there as well, so a pod's directories there go with the pod.
    V1 { hierarchies: Vec<Hierarchy> },
    /// cgroup v2: one unified hierarchy.
    V2 { root: PathBuf },
}

#[derive(Debug, thiserror::Error)]
#[error("{action} cgroup {cgroup} ({path}): {source}")]
pub struct CgroupError {
    pub action: &'static str,
    pub cgroup: String,
    pub path: String,
    #[source]
    pub source: io::Error,
}

impl CgroupFs {
    /// The host's cgroups, from its mounts: /sys/fs/cgroup mounted as cgroup2 is v2;
    /// otherwise every cgroup (v1) and cgroup2 mount is a hierarchy.
    pub fn detect() -> io::Result<CgroupFs> {
        let text = std::fs::read_to_string("/proc/self/mountinfo")?;
        let fs = Self::from_mountinfo(&text);
        match &fs {
            CgroupFs::V1 { hierarchies } if hierarchies.is_empty() => Err(io::Error::new(
                io::ErrorKind::NotFound,
                "no cgroup filesystem is mounted",
            )),
            _ => Ok(fs),
        }
    }

    /// The cgroup mode and hierarchies of a /proc/self/mountinfo.
    pub fn from_mountinfo(text: &str) -> CgroupFs {
        let mut hierarchies = Vec::new();
        for line in text.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let Some(mount_point) = left.split(' ').nth(4) else {
                continue;
            };
            let mut right = right.split(' ');
            let fs_type = right.next().unwrap_or_default();
            let options = right.nth(1).unwrap_or_default();
            let mount_point = PathBuf::from(unescape(mount_point));
            match fs_type {
                "cgroup2" if mount_point == Path::new("/sys/fs/cgroup") => {
                    return CgroupFs::V2 { root: mount_point };
                }
                "cgroup2" => hierarchies.push(Hierarchy {
                    root: mount_point,
                    controllers: Vec::new(),
                }),
                "cgroup" => hierarchies.push(Hierarchy {
                    root: mount_point,
                    controllers: options
                        .split(',')
                        .filter(|o| V1_CONTROLLERS.contains(o))
                        .map(str::to_string)
                        .collect(),
                }),
                _ => {}
            }
        }
        CgroupFs::V1 { hierarchies }
    }

    pub fn is_v2(&self) -> bool {
        matches!(self, CgroupFs::V2 { .. })
    }

    /// The directories of cgroup `name` (an absolute cgroupfs path).
    fn dirs(&self, name: &str) -> Vec<PathBuf> {
        let rel = name.trim_start_matches('/');
        match self {
            CgroupFs::V1 { hierarchies } => hierarchies.iter().map(|h| h.root.join(rel)).collect(),
            CgroupFs::V2 { root } => vec![root.join(rel)],
        }
    }

    /// The directory of `name` in the hierarchy holding `controller`.
    fn controller_dir(&self, name: &str, controller: &str) -> Option<PathBuf> {
        let rel = name.trim_start_matches('/');
        match self {
            CgroupFs::V1 { hierarchies } => hierarchies
                .iter()
                .find(|h| h.controllers.iter().any(|c| c == controller))
                .map(|h| h.root.join(rel)),
            CgroupFs::V2 { root } => Some(root.join(rel)),
        }
    }

    /// Whether cgroup `name` exists (in every hierarchy with a controller, on v1).
    pub fn exists(&self, name: &str) -> bool {
        match self {
            CgroupFs::V1 { hierarchies } => hierarchies
                .iter()
                .filter(|h| !h.controllers.is_empty())
                .all(|h| h.root.join(name.trim_start_matches('/')).is_dir()),
            CgroupFs::V2 { root } => root.join(name.trim_start_matches('/')).is_dir(),
        }
    }

    /// Creates cgroup `name` and its missing ancestors (as `mkdir -p`), ready for
    /// processes: on v1 a new cpuset gets its parent's CPUs and memory nodes; on v2
    /// each ancestor delegates the controllers to its children.
    pub fn create(&self, name: &str) -> Result<(), CgroupError> {
        let err = |action, path: &Path, source| CgroupError {
            action,
            cgroup: name.to_string(),
            path: path.display().to_string(),
            source,
        };
        match self {
            CgroupFs::V1 { hierarchies } => {
                for h in hierarchies {
                    let dir = h.root.join(name.trim_start_matches('/'));
                    std::fs::create_dir_all(&dir).map_err(|e| err("create", &dir, e))?;
                    if h.controllers.iter().any(|c| c == "cpuset") {
                        inherit_cpuset(&h.root, &dir).map_err(|e| err("configure", &dir, e))?;
                    }
                }
            }
            CgroupFs::V2 { root } => {
                let available = read(&root.join("cgroup.controllers")).unwrap_or_default();
                let enable: Vec<String> = available
                    .split_whitespace()
                    .filter(|c| V2_CONTROLLERS.contains(c))
                    .map(|c| format!("+{c}"))
                    .collect();
                let dir = root.join(name.trim_start_matches('/'));
                let mut level = root.clone();
                for part in Path::new(name.trim_start_matches('/')).components() {
                    if !enable.is_empty() {
                        let control = level.join("cgroup.subtree_control");
                        write(&control, &enable.join(" "))
                            .map_err(|e| err("delegate", &control, e))?;
                    }
                    level = level.join(part);
                    match std::fs::create_dir(&level) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                        Err(e) => return Err(err("create", &level, e)),
                    }
                }
                debug_assert_eq!(level, dir);
            }
        }
        Ok(())
    }

    /// Writes the settings of `config` into cgroup `name` (which must exist). Unset
    /// settings are left as they are.
    pub fn apply(&self, name: &str, config: &ResourceConfig) -> Result<(), CgroupError> {
        let set = |controller: &str, file: &str, value: String| -> Result<(), CgroupError> {
            let Some(dir) = self.controller_dir(name, controller) else {
                return Ok(());
            };
            let path = dir.join(file);
            write(&path, &value).map_err(|source| CgroupError {
                action: "configure",
                cgroup: name.to_string(),
                path: format!("{} = {value}", path.display()),
                source,
            })
        };
        let v2 = self.is_v2();
        if let Some(shares) = config.cpu_shares {
            if v2 {
                set(
                    "cpu",
                    "cpu.weight",
                    cpu_shares_to_weight(shares).to_string(),
                )?;
            } else {
                set("cpu", "cpu.shares", shares.to_string())?;
            }
        }
        if let Some(period) = config.cpu_period {
            let quota = config.cpu_quota.unwrap_or(-1);
            if v2 {
                let quota = if quota > 0 {
                    quota.to_string()
                } else {
                    "max".to_string()
                };
                set("cpu", "cpu.max", format!("{quota} {period}"))?;
            } else {
                let quota = if quota > 0 { quota } else { -1 };
                // The kernel refuses a quota/period pair that would exceed the
                // parent's bandwidth either way round; try the other order as runc.
                if set("cpu", "cpu.cfs_period_us", period.to_string()).is_err() {
                    set("cpu", "cpu.cfs_quota_us", quota.to_string())?;
                    set("cpu", "cpu.cfs_period_us", period.to_string())?;
                } else {
                    set("cpu", "cpu.cfs_quota_us", quota.to_string())?;
                }
            }
        }
        if let Some(memory) = config.memory.filter(|m| *m != 0) {
            let (file, value) = match (v2, memory < 0) {
                (true, true) => ("memory.max", "max".to_string()),
                (true, false) => ("memory.max", memory.to_string()),
                (false, true) => ("memory.limit_in_bytes", "-1".to_string()),
                (false, false) => ("memory.limit_in_bytes", memory.to_string()),
            };
            set("memory", file, value)?;
        }
        if let Some(pids) = config.pids_limit {
            let value = if pids > 0 {
                pids.to_string()
            } else {
                "max".to_string()
            };
            set("pids", "pids.max", value)?;
        }
        Ok(())
    }

    /// The names of the child cgroups of `name`.
    pub fn children(&self, name: &str) -> Vec<String> {
        // In every hierarchy: a removal that failed half-way leaves a child in some.
        let all: std::collections::BTreeSet<String> = self
            .dirs(name)
            .into_iter()
            .flat_map(|dir| std::fs::read_dir(dir).into_iter().flatten().flatten())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        all.into_iter().collect()
    }

    /// Whether any process runs in cgroup `name` or below, in any hierarchy.
    pub fn has_processes(&self, name: &str) -> bool {
        self.dirs(name).iter().any(|d| has_processes(d))
    }

    /// Removes cgroup `name` and the cgroups below it in every hierarchy, deepest
    /// first. Missing directories are fine (safe to call twice); a cgroup that still
    /// has processes is an error (EBUSY) and stays.
    pub fn remove(&self, name: &str) -> Result<(), CgroupError> {
        for dir in self.dirs(name) {
            remove_tree(&dir).map_err(|source| CgroupError {
                action: "remove",
                cgroup: name.to_string(),
                path: dir.display().to_string(),
                source,
            })?;
        }
        Ok(())
    }
}

/// upstream's cgroup v2 conversion of cpu.shares ([2, 262144]) to cpu.weight
/// ([1, 10000]), as the kubelet's cgroup_v2_manager_linux.go.
pub fn cpu_shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    (shares - 2) * 9999 / 262_142 + 1
}

fn read(path: &Path) -> io::Result<String> {
    std::fs::read_to_string(path).map(|s| s.trim().to_string())
}

/// Writes a cgroup file (no truncation, no temporary file: cgroup files are written in
/// place).
fn write(path: &Path, value: &str) -> io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    f.write_all(value.as_bytes())
}

/// A v1 cpuset cgroup starts with no CPUs and no memory nodes; each level from the
/// hierarchy's root down to `dir` that has none takes its parent's.
fn inherit_cpuset(root: &Path, dir: &Path) -> io::Result<()> {
    let Ok(rel) = dir.strip_prefix(root) else {
        return Ok(());
    };
    let mut parent = root.to_path_buf();
    for part in rel.components() {
        let level = parent.join(part);
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let own = read(&level.join(file)).unwrap_or_default();
            if own.is_empty() {
                let from_parent = read(&parent.join(file)).unwrap_or_default();
                if !from_parent.is_empty() {
                    write(&level.join(file), &from_parent)?;
                }
            }
        }
        parent = level;
    }
    Ok(())
}

fn has_processes(dir: &Path) -> bool {
    if read(&dir.join("cgroup.procs")).is_ok_and(|p| !p.is_empty()) {
        return true;
    }
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .any(|e| has_processes(&e.path()))
}

/// rmdir of a cgroup and its children, deepest first. On a real cgroupfs a cgroup's
/// files go with its directory; on an ordinary filesystem (a fake cgroupfs) rmdir
/// says ENOTEMPTY and the files are removed first.
fn remove_tree(dir: &Path) -> io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&e.path())?;
        }
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => {
            for e in std::fs::read_dir(dir)?.flatten() {
                if e.file_type().is_ok_and(|t| t.is_file()) {
                    std::fs::remove_file(e.path())?;
                }
            }
            std::fs::remove_dir(dir)
        }
        Err(e) => Err(e),
    }
}

/// mountinfo escapes spaces and such as octal (`\040`).
fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let code: String = chars.by_ref().take(3).collect();
            if let Ok(n) = u8::from_str_radix(&code, 8) {
                out.push(n as char);
                continue;
            }
            out.push('\\');
            out.push_str(&code);
        } else {
            out.push(c);
        }
    }
    out
}
