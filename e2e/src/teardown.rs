//! Removing a bed and everything it made on the host, whether the bed ended normally,
//! its test failed, or its process was killed mid-way.
//!
//! Per bed: its daemons, the containerd shims and container processes started for it
//! (found by their command lines, which name the bed directory, and by the node cgroup
//! roots), the mounts below its directory (container root filesystems, pinned network
//! namespaces, pod volumes, network namespaces of nodes that are hosts of their own), its
//! bridges and with them the pods' veths, its other host links, iptables rules
//! tagged with its CNI network names, CNI result caches and log links, then the directory.
//! Host-wide, once the last bed is gone: the guard rule and blackhole route of
//! [`crate::network`], chains the kubelet and CNI plugins created, and the sysctls the
//! kubelet and the bridge plugin changed are put back as they were before the first bed.

use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::host;
use crate::network::HostSnapshot;
use crate::paths::BED_ROOT;
use crate::process;
use crate::state::BedState;

/// A lock over all beds' host-wide changes; released when dropped.
pub struct HostLock {
    _file: fs::File,
}

impl HostLock {
    pub fn acquire() -> Result<Self> {
        fs::create_dir_all(BED_ROOT)?;
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(Path::new(BED_ROOT).join(".lock"))?;
        // SAFETY: flock on a file descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            bail!("lock {BED_ROOT}/.lock: {}", std::io::Error::last_os_error());
        }
        Ok(HostLock { _file: file })
    }
}

/// Directories of every bed on this machine, live or left over.
pub fn all_beds() -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(BED_ROOT) else {
        return Vec::new();
    };
    let mut beds: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .map(|e| e.path())
        .collect();
    beds.sort();
    beds
}

/// Tears down the bed in `dir` and, if it was the last one, the host-wide guard.
pub fn teardown(dir: &Path) -> Result<()> {
    let state = BedState::load(dir).unwrap_or_else(|_| BedState {
        name: dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        dir: dir.to_path_buf(),
        ..Default::default()
    });
    let needle = format!("{}/", dir.display());
    // Read before anything is removed: containerd's CRI plugin caches CNI results per
    // sandbox in /var/lib/cni/results, outside the bed.
    let sandboxes = cri_sandbox_ids(dir);

    // Daemons in reverse start order: nodes first, so nothing restarts what follows.
    for p in state.processes.iter().rev() {
        p.stop(Duration::from_secs(10));
    }
    // containerd shims, kubelets or daemons a crash kept out of the record.
    process::kill_all(&process::processes_mentioning(&needle));
    // Container processes live in the nodes' cgroups.
    let mut problems = Vec::new();
    for root in &state.cgroup_roots {
        for left in host::destroy_cgroup_root(root) {
            problems.push(format!("cgroup {} could not be removed", left.display()));
        }
    }
    process::kill_all(&process::processes_mentioning(&needle));

    for m in host::unmount_below(dir) {
        problems.push(format!("mount {} could not be detached", m.display()));
    }
    for bridge in &state.bridges {
        host::delete_bridge(bridge);
    }
    for link in &state.links {
        if host::link_exists(link) {
            let _ = host::run("ip", &["link", "delete", link]);
        }
    }
    for net in &state.cni_networks {
        host::iptables_remove(Some(&portmap_tag(net)), &|_| false);
        remove_matching("/var/lib/cni/results", |name| {
            name.starts_with(&format!("{net}-"))
        });
    }
    remove_matching("/var/lib/cni/results", |name| {
        sandboxes.iter().any(|id| name.contains(id.as_str()))
    });
    remove_matching("/var/log/containers", |name| {
        fs::read_link(Path::new("/var/log/containers").join(name))
            .map(|target| target.starts_with(dir))
            .unwrap_or(false)
    });

    if !problems.is_empty() {
        bail!(
            "teardown of bed {} left: {}",
            dir.display(),
            problems.join("; ")
        );
    }
    if dir.exists() {
        // --one-file-system: never follow into a mount that survived (defence in depth;
        // the check above already refuses to get here with mounts below the bed).
        host::run("rm", &["-rf", "--one-file-system", &dir.to_string_lossy()])
            .with_context(|| format!("remove bed directory {}", dir.display()))?;
    }

    let _lock = HostLock::acquire()?;
    if all_beds().is_empty() {
        HostSnapshot::restore()?;
    }
    Ok(())
}

/// Tears down every bed on the machine; used before and after a test run.
pub fn teardown_all() -> Result<()> {
    let mut errors = Vec::new();
    for dir in all_beds() {
        if let Err(e) = teardown(&dir) {
            errors.push(format!("{e:#}"));
        }
    }
    // Also when there was no bed left: a crash may have happened after the last bed
    // directory was removed but before the host was restored.
    {
        let _lock = HostLock::acquire()?;
        if all_beds().is_empty() {
            HostSnapshot::restore()?;
        }
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("\n"));
    }
    Ok(())
}

/// What of the bed in `dir` is still on the host: empty when teardown was complete.
pub fn leftovers(dir: &Path, state: &BedState) -> Vec<String> {
    let mut found = Vec::new();
    let pids = process::processes_mentioning(&format!("{}/", dir.display()));
    if !pids.is_empty() {
        found.push(format!("processes {pids:?}"));
    }
    for m in host::mounts_below(dir) {
        found.push(format!("mount {}", m.display()));
    }
    if dir.exists() {
        found.push(format!("directory {}", dir.display()));
    }
    for root in &state.cgroup_roots {
        for mount in host::cgroup_mounts() {
            if mount.join(root).exists() {
                found.push(format!("cgroup {}", mount.join(root).display()));
            }
        }
    }
    for bridge in &state.bridges {
        if host::link_exists(bridge) {
            found.push(format!("bridge {bridge}"));
        }
    }
    for link in &state.links {
        if host::link_exists(link) {
            found.push(format!("link {link}"));
        }
    }
    for net in &state.cni_networks {
        for bin in ["iptables", "ip6tables"] {
            for table in host::IPTABLES_TABLES {
                if let Ok(dump) = host::run(bin, &["-w", "-t", table, "-S"]) {
                    for rule in dump.lines().filter(|l| l.contains(&portmap_tag(net))) {
                        found.push(format!("{bin} -t {table} rule {rule}"));
                    }
                }
            }
        }
    }
    found
}

/// How the portmap plugin's rules name CNI network `net` in `iptables -S` output: its
/// comment says `dnat name: "NET" id: "..."`, printed with the quotes escaped.
pub fn portmap_tag(net: &str) -> String {
    format!("\\\"{net}\\\"")
}

/// IDs of the sandboxes containerd's CRI plugin made for the bed.
fn cri_sandbox_ids(dir: &Path) -> Vec<String> {
    let mut ids = Vec::new();
    for part in ["root", "state"] {
        let sandboxes = dir
            .join("containerd")
            .join(part)
            .join("io.containerd.grpc.v1.cri/sandboxes");
        if let Ok(entries) = fs::read_dir(sandboxes) {
            ids.extend(
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned()),
            );
        }
    }
    ids.retain(|id| id.len() >= 32);
    ids.sort();
    ids.dedup();
    ids
}

fn remove_matching(dir: &str, matches: impl Fn(&str) -> bool) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if matches(&e.file_name().to_string_lossy()) {
            let _ = fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn portmap_tag_matches_iptables_save_output() {
        let line = r#"-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \"gte-b-n\" id: \"8627\"" -m multiport --dports 18080 -j CNI-DN-c2a9"#;
        assert!(line.contains(&portmap_tag("gte-b-n")));
        assert!(!line.contains(&portmap_tag("gte-b")));
    }
}
