//! What the spec depends on from the host: facts the caller gathers once
//! ([`HostFacts`]) and lookups made per container ([`HostLookup`]), with [`FsHost`]
//! reading the real host. build() itself does no I/O.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use ::oci_spec::runtime::{Capability, LinuxDeviceType};

use super::security::ALL_CAPABILITIES;
use crate::error::{CriError, Result};

/// Facts about the node, gathered once by the caller.
#[derive(Clone, Debug)]
pub struct HostFacts<'a> {
    /// The node's hostname, for HOSTNAME when the sandbox config has none (host network).
    pub hostname: &'a str,
    /// The agent's own oom_score_adj: a container's is never set lower, because
    /// lowering needs CAP_SYS_RESOURCE (containerd's restrict_oom_score_adj).
    pub min_oom_score_adj: i32,
    /// The agent's effective capabilities (containerd's cap.Current()): what a
    /// privileged container, or "ALL" in add_capabilities, gets.
    pub capabilities: &'a [Capability],
    /// cgroup v2 unified mode: non-privileged containers get a cgroup namespace.
    pub cgroup_v2: bool,
    /// The memory controller accounts swap: memory.swap is set (to the memory limit by
    /// default, so containers do not swap).
    pub swap_accounting: bool,
    /// The hugetlb controller is present; without it hugepage limits are dropped, as
    /// containerd's default tolerate_missing_hugetlb_controller.
    pub hugetlb: bool,
    /// The OCI runtime supports the "rro" mount option (runc >= 1.1 on Linux >= 5.12).
    pub recursive_read_only_mounts: bool,
}

/// A device node on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostDevice {
    /// Its host path.
    pub path: PathBuf,
    /// Char (`C`) or block (`B`).
    pub kind: LinuxDeviceType,
    pub major: i64,
    pub minor: i64,
    /// Permission bits (mode without the file type).
    pub file_mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// The propagation of the host mount that holds a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostPropagation {
    Shared,
    Slave,
    Private,
}

/// Host lookups build() makes for a particular container.
pub trait HostLookup {
    /// The device node at `host_path` (symlinks followed), or for a directory every
    /// device node below it.
    fn devices(&self, host_path: &Path) -> Result<Vec<HostDevice>>;
    /// Every device node under the host's /dev (containerd's WithHostDevices), for
    /// privileged containers.
    fn all_devices(&self) -> Result<Vec<HostDevice>>;
    /// The propagation of the mount holding `host_path`, for Bidirectional and
    /// HostToContainer mounts.
    fn propagation(&self, host_path: &Path) -> Result<HostPropagation>;
    /// The contents of a Localhost seccomp profile.
    fn seccomp_profile(&self, path: &Path) -> Result<String>;
}

/// [`HostLookup`] on the real host.
#[derive(Clone, Copy, Debug, Default)]
pub struct FsHost;

fn io_error(what: String, e: std::io::Error) -> CriError {
    match e.kind() {
        std::io::ErrorKind::NotFound => CriError::NotFound(format!("{what}: {e}")),
        _ => CriError::Internal(format!("{what}: {e}")),
    }
}

/// A device from its metadata; None for anything but char and block devices.
fn device(path: &Path, md: &fs::Metadata) -> Option<HostDevice> {
    let ft = md.file_type();
    let kind = if ft.is_char_device() {
        LinuxDeviceType::C
    } else if ft.is_block_device() {
        LinuxDeviceType::B
    } else {
        return None;
    };
    // glibc's gnu_dev_major / gnu_dev_minor.
    let rdev = md.rdev();
    Some(HostDevice {
        path: path.to_path_buf(),
        kind,
        major: (((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff)) as i64,
        minor: ((rdev & 0xff) | ((rdev >> 12) & !0xff)) as i64,
        file_mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
    })
}

/// Device nodes below `dir`, not following symlinks, skipping `skip` names.
fn walk(dir: &Path, skip: &[&str], out: &mut Vec<HostDevice>) -> Result<()> {
    let entries = fs::read_dir(dir).map_err(|e| io_error(format!("list {}", dir.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_error(format!("list {}", dir.display()), e))?;
        let name = entry.file_name();
        if skip.iter().any(|s| name == *s) {
            continue;
        }
        let path = entry.path();
        let Ok(md) = fs::symlink_metadata(&path) else {
            continue;
        };
        if md.is_dir() {
            walk(&path, skip, out)?;
        } else if let Some(d) = device(&path, &md) {
            out.push(d);
        }
    }
    Ok(())
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
pub fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        if let (b'\\', Some(d)) = (b[i], octal) {
            let v = d.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
            if let Ok(v) = u8::try_from(v) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The propagation of the mount holding `path` according to a mountinfo text.
pub(super) fn propagation_in(mountinfo: &str, path: &Path) -> Option<HostPropagation> {
    let mut best: Option<(usize, HostPropagation)> = None;
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(mount_point) = fields.get(4).map(|m| unescape_mountinfo(m)) else {
            continue;
        };
        if !path.starts_with(&mount_point) {
            continue;
        }
        let optional = fields.iter().skip(6).take_while(|f| **f != "-");
        let mut p = HostPropagation::Private;
        for f in optional {
            if f.starts_with("shared:") {
                p = HostPropagation::Shared;
            } else if f.starts_with("master:") && p == HostPropagation::Private {
                p = HostPropagation::Slave;
            }
        }
        // Later lines mount over earlier ones at the same point.
        let len = Path::new(&mount_point).components().count();
        if best.is_none_or(|(l, _)| len >= l) {
            best = Some((len, p));
        }
    }
    best.map(|(_, p)| p)
}

/// The capabilities set in a kernel mask (bit n is capability n, as /proc/PID/status
/// prints CapEff).
pub fn capabilities_from_mask(mask: u64) -> Vec<Capability> {
    ALL_CAPABILITIES
        .iter()
        .enumerate()
        .filter(|(bit, _)| mask & (1u64 << bit) != 0)
        .map(|(_, c)| *c)
        .collect()
}

impl FsHost {
    /// The agent's effective capabilities, for [`HostFacts::capabilities`].
    pub fn effective_capabilities() -> Result<Vec<Capability>> {
        let status = fs::read_to_string("/proc/self/status")
            .map_err(|e| io_error("read /proc/self/status".into(), e))?;
        let hex = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .map(str::trim)
            .ok_or_else(|| CriError::Internal("/proc/self/status has no CapEff".into()))?;
        let mask = u64::from_str_radix(hex, 16)
            .map_err(|e| CriError::Internal(format!("/proc/self/status: CapEff {hex:?}: {e}")))?;
        Ok(capabilities_from_mask(mask))
    }

    /// The agent's oom_score_adj, for [`HostFacts::min_oom_score_adj`].
    pub fn oom_score_adj() -> Result<i32> {
        let text = fs::read_to_string("/proc/self/oom_score_adj")
            .map_err(|e| io_error("read /proc/self/oom_score_adj".into(), e))?;
        text.trim().parse().map_err(|e| {
            CriError::Internal(format!("/proc/self/oom_score_adj {:?}: {e}", text.trim()))
        })
    }
}

impl HostLookup for FsHost {
    fn devices(&self, host_path: &Path) -> Result<Vec<HostDevice>> {
        let md = fs::metadata(host_path)
            .map_err(|e| io_error(format!("stat device {}", host_path.display()), e))?;
        if md.is_dir() {
            let mut out = Vec::new();
            walk(host_path, &[], &mut out)?;
            return Ok(out);
        }
        device(host_path, &md).map(|d| vec![d]).ok_or_else(|| {
            CriError::InvalidArgument(format!("{} is not a device node", host_path.display()))
        })
    }

    fn all_devices(&self) -> Result<Vec<HostDevice>> {
        // As runc's devices.HostDevices, which containerd uses.
        let mut out = Vec::new();
        walk(
            Path::new("/dev"),
            &[
                "pts",
                "shm",
                "fd",
                "mqueue",
                ".lxc",
                ".lxd-mounts",
                ".udev",
                "console",
            ],
            &mut out,
        )?;
        Ok(out)
    }

    fn propagation(&self, host_path: &Path) -> Result<HostPropagation> {
        let path = fs::canonicalize(host_path)
            .map_err(|e| io_error(format!("resolve {}", host_path.display()), e))?;
        let info = fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| io_error("read /proc/self/mountinfo".into(), e))?;
        propagation_in(&info, &path).ok_or_else(|| {
            CriError::Internal(format!(
                "no mount holds {} in /proc/self/mountinfo",
                path.display()
            ))
        })
    }

    fn seccomp_profile(&self, path: &Path) -> Result<String> {
        fs::read_to_string(path)
            .map_err(|e| io_error(format!("read seccomp profile {}", path.display()), e))
    }
}
