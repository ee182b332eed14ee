//! The container's mounts and devices, as containerd's CRI plugin lays them out
//! (oci default mounts without /run, opts.WithMounts, linuxContainerMounts,
//! opts.WithDevices, oci.WithHostDevices).

use std::path::{Component, Path, PathBuf};

use ::oci_spec::runtime::{LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType, Mount};

use super::{HostDevice, HostFacts, HostLookup, HostPropagation, SandboxFiles};
use crate::api::{self, MountPropagation};
use crate::error::{CriError, Result};

/// Lexically cleaned path (Go's filepath.Clean for absolute paths): no ".", "..", or
/// repeated and trailing slashes.
fn clean(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in Path::new(p).components() {
        match c {
            Component::Normal(s) => parts.push(s.to_str().unwrap_or_default()),
            Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    format!("/{}", parts.join("/"))
}

/// Mount depth ("/" and "/a" are 1, "/a/b" is 2): parents sort before children.
fn depth(p: &str) -> usize {
    clean(p).matches('/').count()
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Mount {
    let mut m = Mount::default();
    m.set_destination(PathBuf::from(dest));
    m.set_typ(Some(typ.to_string()));
    m.set_source(Some(PathBuf::from(source)));
    m.set_options(Some(options.iter().map(|o| o.to_string()).collect()));
    m
}

/// containerd's default Linux mounts (without /run), and /sys/fs/cgroup read-only.
/// Privileged containers get sysfs and cgroupfs read-write.
fn default_mounts(privileged: bool) -> Vec<Mount> {
    let mode = if privileged { "rw" } else { "ro" };
    vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", mode],
        ),
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", mode],
        ),
    ]
}

/// The sandbox's files the container gets unless it mounts the same path itself:
/// /etc/hostname, /etc/hosts and /etc/resolv.conf (read-only with a read-only rootfs),
/// and /dev/shm (the host's for a host-IPC pod, else the sandbox's).
fn sandbox_mounts(
    c: &api::ContainerConfig,
    files: &SandboxFiles,
    host_ipc: bool,
) -> Vec<api::Mount> {
    let readonly = c
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .is_some_and(|s| s.readonly_rootfs);
    let taken = |dest: &str| c.mounts.iter().any(|m| clean(&m.container_path) == dest);
    let host_shm = host_ipc.then(|| PathBuf::from("/dev/shm"));
    let shm = host_shm.as_ref().or(files.shm.as_ref());
    [
        ("/etc/hostname", files.hostname.as_ref(), readonly),
        ("/etc/hosts", files.hosts.as_ref(), readonly),
        ("/etc/resolv.conf", files.resolv_conf.as_ref(), readonly),
        ("/dev/shm", shm, false),
    ]
    .into_iter()
    .filter(|(dest, _, _)| !taken(dest))
    .filter_map(|(dest, src, readonly)| {
        Some(api::Mount {
            container_path: dest.to_string(),
            host_path: src?.to_string_lossy().into_owned(),
            readonly,
            ..Default::default()
        })
    })
    .collect()
}

/// One CRI mount as a bind mount, and the rootfs propagation it asks for.
fn bind(
    who: &str,
    m: &api::Mount,
    host: &HostFacts,
    lookup: &dyn HostLookup,
) -> Result<(Mount, Option<&'static str>)> {
    let invalid = |msg: String| {
        CriError::InvalidArgument(format!("{who}: mount at {:?}: {msg}", m.container_path))
    };
    if !m.container_path.starts_with('/') {
        return Err(invalid("container_path must be absolute".into()));
    }
    if m.host_path.is_empty() {
        return Err(invalid(if m.image.is_some() {
            "image volumes must be resolved to a host path by the caller".into()
        } else {
            "host_path is empty".into()
        }));
    }
    if !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty() {
        return Err(invalid("id-mapped mounts are not supported".into()));
    }
    // As containerd: a read-only rootfs does not make the mounts read-only.
    let access = match (m.readonly, m.recursive_read_only) {
        (true, true) => {
            if m.propagation != MountPropagation::PropagationPrivate as i32 {
                return Err(invalid(
                    "recursive read-only needs Private propagation".into(),
                ));
            }
            if !host.recursive_read_only_mounts {
                return Err(invalid(
                    "the runtime does not support recursive read-only mounts".into(),
                ));
            }
            "rro"
        }
        (true, false) => "ro",
        (false, true) => return Err(invalid("recursive read-only needs readonly".into())),
        (false, false) => "rw",
    };
    let src = Path::new(&m.host_path);
    let mut options = vec!["rbind".to_string()];
    let mut rootfs = None;
    match MountPropagation::try_from(m.propagation) {
        Ok(MountPropagation::PropagationBidirectional) => {
            if lookup.propagation(src)? != HostPropagation::Shared {
                return Err(CriError::FailedPrecondition(format!(
                    "{who}: mount at {:?}: Bidirectional propagation needs {} on a shared mount",
                    m.container_path, m.host_path
                )));
            }
            options.push("rshared".into());
            rootfs = Some("rshared");
        }
        Ok(MountPropagation::PropagationHostToContainer) => {
            if lookup.propagation(src)? == HostPropagation::Private {
                return Err(CriError::FailedPrecondition(format!(
                    "{who}: mount at {:?}: HostToContainer propagation needs {} on a shared or slave mount",
                    m.container_path, m.host_path
                )));
            }
            options.push("rslave".into());
            rootfs = Some("rslave");
        }
        // PRIVATE, and unknown values as containerd (which only warns).
        _ => options.push("rprivate".into()),
    }
    options.push(access.into());
    options.extend(m.mount_options.iter().cloned());
    let mut out = Mount::default();
    out.set_destination(PathBuf::from(&m.container_path));
    out.set_typ(Some("bind".into()));
    out.set_source(Some(src.to_path_buf()));
    out.set_options(Some(options));
    Ok((out, rootfs))
}

/// All mounts in the order runc mounts them, and the rootfs propagation: the defaults
/// not replaced by a CRI or sandbox mount at the same destination (nothing under /dev
/// when /dev itself is mounted), then the CRI mounts and the sandbox's files sorted by
/// depth, so a parent never shadows a child.
pub(super) fn mounts(
    who: &str,
    c: &api::ContainerConfig,
    files: &SandboxFiles,
    host_ipc: bool,
    privileged: bool,
    host: &HostFacts,
    lookup: &dyn HostLookup,
) -> Result<(Vec<Mount>, Option<String>)> {
    let mut cri: Vec<api::Mount> = c.mounts.clone();
    cri.extend(sandbox_mounts(c, files, host_ipc));
    cri.sort_by_key(|m| depth(&m.container_path)); // stable, as upstream's sort.Stable
    let dests: Vec<String> = cri.iter().map(|m| clean(&m.container_path)).collect();
    let dev_mounted = dests.iter().any(|d| d == "/dev");
    let mut out: Vec<Mount> = default_mounts(privileged)
        .into_iter()
        .filter(|m| {
            let d = clean(&m.destination().to_string_lossy());
            let under_dev = dev_mounted && d.starts_with("/dev/");
            !(dests.contains(&d) || under_dev)
        })
        .collect();
    let mut propagation: Option<String> = None;
    for m in &cri {
        let (bound, wants) = bind(who, m, host, lookup)?;
        out.push(bound);
        // rshared wins over rslave.
        match (wants, propagation.as_deref()) {
            (Some("rshared"), _) => propagation = Some("rshared".into()),
            (Some(p), None) => propagation = Some(p.into()),
            _ => {}
        }
    }
    Ok((out, propagation))
}

/// Device nodes and cgroup device rules: everything denied, then each CRI device
/// allowed with its permissions (a host directory brings every device below it); a
/// privileged container gets all host devices and every device allowed.
pub(super) fn devices(
    who: &str,
    c: &api::ContainerConfig,
    privileged: bool,
    lookup: &dyn HostLookup,
) -> Result<(Vec<LinuxDevice>, Vec<LinuxDeviceCgroup>)> {
    let mut nodes = Vec::new();
    let mut rules = vec![rule(false, None, "rwm")];
    for d in &c.devices {
        let invalid = |msg: String| {
            CriError::InvalidArgument(format!("{who}: device {:?}: {msg}", d.host_path))
        };
        if d.host_path.is_empty() {
            return Err(invalid("host_path is empty".into()));
        }
        if d.permissions.is_empty() || !d.permissions.chars().all(|p| "rwm".contains(p)) {
            return Err(invalid(format!(
                "permissions {:?} must be letters of \"rwm\"",
                d.permissions
            )));
        }
        let host_path = Path::new(&d.host_path);
        let container_path = if d.container_path.is_empty() {
            host_path
        } else {
            Path::new(&d.container_path)
        };
        if !container_path.is_absolute() {
            return Err(invalid("container_path must be absolute".into()));
        }
        let found = lookup.devices(host_path)?;
        if found.is_empty() {
            return Err(invalid("no device node there".into()));
        }
        for dev in found {
            let path = match dev.path.strip_prefix(host_path) {
                Ok(rel) if !rel.as_os_str().is_empty() => container_path.join(rel),
                _ => container_path.to_path_buf(),
            };
            rules.push(rule(true, Some(&dev), &d.permissions));
            nodes.push(node(&dev, path));
        }
    }
    if privileged {
        for dev in lookup.all_devices()? {
            if !nodes.iter().any(|n: &LinuxDevice| n.path() == &dev.path) {
                nodes.push(node(&dev, dev.path.clone()));
            }
        }
        rules = vec![rule(true, None, "rwm")];
    }
    Ok((nodes, rules))
}

fn node(dev: &HostDevice, path: PathBuf) -> LinuxDevice {
    let mut n = LinuxDevice::default();
    n.set_path(path);
    n.set_typ(dev.kind);
    n.set_major(dev.major);
    n.set_minor(dev.minor);
    n.set_file_mode(Some(dev.file_mode));
    n.set_uid(Some(dev.uid));
    n.set_gid(Some(dev.gid));
    n
}

fn rule(allow: bool, dev: Option<&HostDevice>, access: &str) -> LinuxDeviceCgroup {
    let mut r = LinuxDeviceCgroup::default();
    r.set_allow(allow);
    r.set_typ(Some(dev.map(|d| d.kind).unwrap_or(LinuxDeviceType::A)));
    r.set_major(dev.map(|d| d.major));
    r.set_minor(dev.map(|d| d.minor));
    r.set_access(Some(access.to_string()));
    r
}
