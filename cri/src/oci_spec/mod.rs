//! The OCI runtime spec of a container, built from its CRI config, the sandbox's
//! config and namespaces, and the image's process defaults, following containerd's CRI
//! plugin (internal/cri/server/container_create*.go and internal/cri/opts) so that
//! critest and the kubelet see what they see with containerd.
//!
//! [`build`] is pure: the host's facts come in through [`HostFacts`] and
//! [`HostLookup`] ([`FsHost`] for the real host), the image's /etc/passwd and
//! /etc/group as text. Creating missing host paths of mounts (containerd does
//! `mkdir -p`) is the caller's job, before build.

mod host;
mod mounts;
mod process;
mod seccomp_default;
mod security;
#[cfg(test)]
mod tests;
mod user;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ::oci_spec::runtime::{
    LinuxCpu, LinuxHugepageLimit, LinuxMemory, LinuxNamespace, LinuxNamespaceType, LinuxResources,
    LinuxSeccomp, Process, Root, Spec, User,
};

pub use host::{
    capabilities_from_mask, unescape_mountinfo, FsHost, HostDevice, HostFacts, HostLookup,
    HostPropagation,
};
pub use process::{image_defaults_from_config, ImageProcessDefaults};
pub use security::{parse_seccomp, ALL_CAPABILITIES, DEFAULT_CAPABILITIES};

use crate::api::{self, NamespaceMode};
use crate::error::{CriError, Result};

/// The sandbox's pinned namespaces; `None` is the host's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SandboxNamespaces {
    pub net: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
    /// The pod's PID namespace (its infra process's), joined by containers whose
    /// namespace_options.pid is POD; `None` for a host-PID pod.
    pub pid: Option<PathBuf>,
}

/// Host paths of the files the sandbox prepared for its containers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SandboxFiles {
    pub hostname: Option<PathBuf>,
    pub resolv_conf: Option<PathBuf>,
    pub hosts: Option<PathBuf>,
    /// The sandbox's /dev/shm directory; without it (and for a host-IPC pod, which
    /// gets the host's /dev/shm) the container has its own tmpfs.
    pub shm: Option<PathBuf>,
}

/// Everything [`build`] reads.
pub struct SpecInputs<'a> {
    pub container_id: &'a str,
    pub sandbox_id: &'a str,
    pub container: &'a api::ContainerConfig,
    pub sandbox: &'a api::PodSandboxConfig,
    /// From the image config (see [`image_defaults_from_config`]).
    pub image: &'a ImageProcessDefaults,
    /// The image's name for the image-name annotation when the config carries no
    /// user_specified_image (containerd uses the resolved reference).
    pub image_name: &'a str,
    /// spec.root.path, usually "rootfs" relative to the bundle.
    pub rootfs: &'a str,
    pub namespaces: &'a SandboxNamespaces,
    /// The PID namespace of namespace_options.target_id, for pid mode TARGET.
    pub target_pid_ns: Option<&'a Path>,
    pub sandbox_files: &'a SandboxFiles,
    /// linux.cgroupsPath, computed by the caller (cgroupfs: parent + "/" + id); empty
    /// leaves it unset.
    pub cgroups_path: String,
    /// The image rootfs's /etc/passwd and /etc/group, if present.
    pub passwd: Option<&'a str>,
    pub group: Option<&'a str>,
    /// The RuntimeDefault seccomp profile; `None` is the built-in one (containerd's
    /// allow list, see seccomp_default.rs).
    pub seccomp_default: Option<&'a LinuxSeccomp>,
    /// The AppArmor profile name for RuntimeDefault (and an unset profile), where
    /// AppArmor is loaded; `None` sets none.
    pub apparmor_default: Option<&'a str>,
    pub host: &'a HostFacts<'a>,
    pub lookup: &'a dyn HostLookup,
}

/// Annotation keys containerd's CRI plugin sets on containers.
pub mod annotations {
    pub const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
    pub const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
    pub const SANDBOX_NAMESPACE: &str = "io.kubernetes.cri.sandbox-namespace";
    pub const SANDBOX_UID: &str = "io.kubernetes.cri.sandbox-uid";
    pub const SANDBOX_NAME: &str = "io.kubernetes.cri.sandbox-name";
    pub const CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";
    pub const IMAGE_NAME: &str = "io.kubernetes.cri.image-name";
}

/// An empty oci-spec value (their Default impls fill in a demo container).
fn blank<T: serde::de::DeserializeOwned>(json: serde_json::Value) -> Result<T> {
    serde_json::from_value(json)
        .map_err(|e| CriError::Internal(format!("oci-spec: empty value: {e}")))
}

/// Builds the OCI spec of a container. Errors are InvalidArgument naming the container
/// and the field, except host lookups (their own codes) and unmet host preconditions
/// of mount propagation (FailedPrecondition).
pub fn build(i: &SpecInputs) -> Result<Spec> {
    let c = i.container;
    let name = c
        .metadata
        .as_ref()
        .map(|m| m.name.as_str())
        .unwrap_or_default();
    let who = format!("container {name:?} ({})", i.container_id);
    let invalid = |msg: String| CriError::InvalidArgument(format!("{who}: {msg}"));
    let sc = c.linux.as_ref().and_then(|l| l.security_context.as_ref());
    let privileged = sc.is_some_and(|s| s.privileged);
    let sandbox_sc = i
        .sandbox
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref());
    if privileged && !sandbox_sc.is_some_and(|s| s.privileged) {
        return Err(invalid(
            "privileged container in a sandbox that is not privileged".into(),
        ));
    }
    let ns_opts = sc.and_then(|s| s.namespace_options.as_ref());
    if ns_opts
        .and_then(|n| n.userns_options.as_ref())
        .is_some_and(|u| u.mode == NamespaceMode::Pod as i32)
    {
        return Err(invalid(
            "user namespaces (userns_options mode POD) are not supported".into(),
        ));
    }

    // Process.
    let user = user::resolve(&who, sc, &i.image.user, i.passwd, i.group)?;
    let caps = security::capabilities(&who, sc, i.host.capabilities)?;
    let hostname = match i.sandbox.hostname.as_str() {
        "" => i.host.hostname,
        h => h,
    };
    let mut process: Process = blank(serde_json::json!({"user": {}, "cwd": "/"}))?;
    process.set_terminal(Some(c.tty));
    process.set_args(Some(process::args(&who, c, i.image)?));
    process.set_env(Some(process::env(c, i.image, hostname)));
    process.set_cwd(process::cwd(c, i.image).into());
    let mut oci_user = User::default();
    oci_user.set_uid(user.uid);
    oci_user.set_gid(user.gid);
    oci_user.set_additional_gids(Some(user.additional_gids));
    process.set_user(oci_user);
    process.set_capabilities(Some(caps.to_oci()));
    process.set_no_new_privileges(Some(sc.is_some_and(|s| s.no_new_privs)));
    process.set_apparmor_profile(security::apparmor(&who, sc, i.apparmor_default)?);
    let resources = c.linux.as_ref().and_then(|l| l.resources.as_ref());
    if let Some(r) = resources {
        if !(-1000..=1000).contains(&r.oom_score_adj) {
            return Err(invalid(format!(
                "oom_score_adj {} is out of [-1000, 1000]",
                r.oom_score_adj
            )));
        }
        process.set_oom_score_adj(Some((r.oom_score_adj as i32).max(i.host.min_oom_score_adj)));
    }

    // Linux.
    let mut linux: ::oci_spec::runtime::Linux = blank(serde_json::json!({}))?;
    let host_ipc = i.namespaces.ipc.is_none();
    linux.set_namespaces(Some(namespaces(&who, ns_opts, i, privileged)?));
    let (mounts, rootfs_propagation) = mounts::mounts(
        &who,
        c,
        i.sandbox_files,
        host_ipc,
        privileged,
        i.host,
        i.lookup,
    )?;
    linux.set_rootfs_propagation(rootfs_propagation);
    let (devices, device_rules) = mounts::devices(&who, c, privileged, i.lookup)?;
    linux.set_devices((!devices.is_empty()).then_some(devices));
    let mut res = linux_resources(&who, resources, i.host)?;
    res.set_devices(Some(device_rules));
    linux.set_resources(Some(res));
    if !i.cgroups_path.is_empty() {
        linux.set_cgroups_path(Some(PathBuf::from(&i.cgroups_path)));
    }
    linux.set_sysctl(sysctls(&who, i.sandbox, i.namespaces)?);
    linux.set_seccomp(security::seccomp(
        &who,
        sc,
        &caps.bounding,
        i.seccomp_default,
        i.lookup,
    )?);
    // As containerd: the security context's lists, none when empty (the kubelet sends
    // the defaults, and empty lists for procMount: Unmasked), none when privileged.
    if let Some(sc) = sc.filter(|s| !s.privileged) {
        let some = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        linux.set_masked_paths(some(&sc.masked_paths));
        linux.set_readonly_paths(some(&sc.readonly_paths));
    }

    let mut root: Root = blank(serde_json::json!({"path": i.rootfs}))?;
    root.set_readonly(sc.is_some_and(|s| s.readonly_rootfs).then_some(true));

    let mut spec: Spec = blank(serde_json::json!({"ociVersion": ::oci_spec::runtime::VERSION}))?;
    spec.set_root(Some(root));
    spec.set_process(Some(process));
    spec.set_mounts(Some(mounts));
    if i.namespaces.uts.is_some() && !i.sandbox.hostname.is_empty() {
        spec.set_hostname(Some(i.sandbox.hostname.clone()));
    }
    spec.set_annotations(Some(spec_annotations(i, name)));
    spec.set_linux(Some(linux));
    Ok(spec)
}

/// Namespaces: network, IPC and UTS are the sandbox's (omitted, so inherited from the
/// host, when the sandbox uses the host's); PID per namespace_options.pid; always a new
/// mount namespace; a new cgroup namespace on cgroup v2 unless privileged (containerd
/// keeps cgroup v1 containers in the host's for compatibility).
fn namespaces(
    who: &str,
    ns_opts: Option<&api::NamespaceOption>,
    i: &SpecInputs,
    privileged: bool,
) -> Result<Vec<LinuxNamespace>> {
    let entry = |typ: LinuxNamespaceType, path: Option<&Path>| {
        let mut n = LinuxNamespace::default();
        n.set_typ(typ);
        n.set_path(path.map(Path::to_path_buf));
        n
    };
    let ns = i.namespaces;
    let mut out = Vec::new();
    // The CRI default (no options) is POD.
    let pid_mode = ns_opts.map(|n| n.pid).unwrap_or_default();
    match NamespaceMode::try_from(pid_mode) {
        Ok(NamespaceMode::Container) => out.push(entry(LinuxNamespaceType::Pid, None)),
        Ok(NamespaceMode::Pod) => {
            if let Some(p) = &ns.pid {
                out.push(entry(LinuxNamespaceType::Pid, Some(p)));
            }
        }
        Ok(NamespaceMode::Node) => {}
        Ok(NamespaceMode::Target) => match i.target_pid_ns {
            Some(p) => out.push(entry(LinuxNamespaceType::Pid, Some(p))),
            None => {
                let target = ns_opts.map(|n| n.target_id.as_str()).unwrap_or_default();
                return Err(CriError::InvalidArgument(format!(
                    "{who}: pid namespace TARGET: target container {target:?} has no PID namespace"
                )));
            }
        },
        Err(_) => {
            return Err(CriError::InvalidArgument(format!(
                "{who}: unknown pid namespace mode {pid_mode}"
            )))
        }
    }
    for (typ, path) in [
        (LinuxNamespaceType::Ipc, &ns.ipc),
        (LinuxNamespaceType::Uts, &ns.uts),
        (LinuxNamespaceType::Network, &ns.net),
    ] {
        if let Some(p) = path {
            out.push(entry(typ, Some(p)));
        }
    }
    out.push(entry(LinuxNamespaceType::Mount, None));
    if i.host.cgroup_v2 && !privileged {
        out.push(entry(LinuxNamespaceType::Cgroup, None));
    }
    Ok(out)
}

/// CPU, memory, hugepage and unified limits (containerd's WithResources): zero means
/// unset; swap equals the memory limit unless given, where swap is accounted.
pub fn linux_resources(
    who: &str,
    r: Option<&api::LinuxContainerResources>,
    host: &HostFacts,
) -> Result<LinuxResources> {
    let mut out = LinuxResources::default();
    let Some(r) = r else { return Ok(out) };
    let invalid = |msg: String| CriError::InvalidArgument(format!("{who}: resources: {msg}"));
    for (field, v) in [("cpu_period", r.cpu_period), ("cpu_shares", r.cpu_shares)] {
        if v < 0 {
            return Err(invalid(format!("{field} {v} is negative")));
        }
    }
    let mut cpu = LinuxCpu::default();
    cpu.set_period((r.cpu_period != 0).then_some(r.cpu_period as u64));
    cpu.set_quota((r.cpu_quota != 0).then_some(r.cpu_quota));
    cpu.set_shares((r.cpu_shares != 0).then_some(r.cpu_shares as u64));
    cpu.set_cpus((!r.cpuset_cpus.is_empty()).then(|| r.cpuset_cpus.clone()));
    cpu.set_mems((!r.cpuset_mems.is_empty()).then(|| r.cpuset_mems.clone()));
    if cpu != LinuxCpu::default() {
        out.set_cpu(Some(cpu));
    }
    let mut memory = LinuxMemory::default();
    if r.memory_limit_in_bytes != 0 {
        memory.set_limit(Some(r.memory_limit_in_bytes));
        if r.memory_swap_limit_in_bytes == 0 && host.swap_accounting {
            memory.set_swap(Some(r.memory_limit_in_bytes));
        }
    }
    if r.memory_swap_limit_in_bytes != 0 && host.swap_accounting {
        memory.set_swap(Some(r.memory_swap_limit_in_bytes));
    }
    if memory != LinuxMemory::default() {
        out.set_memory(Some(memory));
    }
    if host.hugetlb && !r.hugepage_limits.is_empty() {
        let mut limits = Vec::new();
        for h in &r.hugepage_limits {
            let limit = i64::try_from(h.limit).map_err(|_| {
                invalid(format!(
                    "hugepage limit {} for {} is too large",
                    h.limit, h.page_size
                ))
            })?;
            let mut l = LinuxHugepageLimit::default();
            l.set_page_size(h.page_size.clone());
            l.set_limit(limit);
            limits.push(l);
        }
        out.set_hugepage_limits(Some(limits));
    }
    if !r.unified.is_empty() {
        out.set_unified(Some(r.unified.clone()));
    }
    Ok(out)
}

/// IPC-namespaced sysctls besides fs.mqueue.* (runc's list).
const IPC_SYSCTLS: [&str; 8] = [
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

/// The sandbox's sysctls (CRI has no per-container ones). Each must live in a
/// namespace the pod owns, as runc validates: net.* needs the pod's network namespace
/// (so a host-network pod may not set them), IPC sysctls the pod's IPC namespace,
/// kernel.domainname its UTS namespace; kernel.hostname conflicts with spec.hostname.
fn sysctls(
    who: &str,
    sandbox: &api::PodSandboxConfig,
    ns: &SandboxNamespaces,
) -> Result<Option<HashMap<String, String>>> {
    let Some(sysctls) = sandbox
        .linux
        .as_ref()
        .map(|l| &l.sysctls)
        .filter(|s| !s.is_empty())
    else {
        return Ok(None);
    };
    for key in sysctls.keys() {
        let needs = if key.starts_with("net.") {
            ns.net
                .as_ref()
                .map(|_| ())
                .ok_or("the pod uses the host's network namespace")
        } else if IPC_SYSCTLS.contains(&key.as_str()) || key.starts_with("fs.mqueue.") {
            ns.ipc
                .as_ref()
                .map(|_| ())
                .ok_or("the pod uses the host's IPC namespace")
        } else if key == "kernel.domainname" {
            ns.uts
                .as_ref()
                .map(|_| ())
                .ok_or("the pod uses the host's UTS namespace")
        } else if key == "kernel.hostname" {
            Err("it conflicts with the sandbox hostname")
        } else {
            Err("it is not in a namespace the pod owns")
        };
        if let Err(why) = needs {
            return Err(CriError::InvalidArgument(format!(
                "{who}: sandbox sysctl {key:?} is not allowed: {why}"
            )));
        }
    }
    Ok(Some(sysctls.clone()))
}

fn spec_annotations(i: &SpecInputs, name: &str) -> HashMap<String, String> {
    use annotations::*;
    let meta = i.sandbox.metadata.as_ref();
    let image = i
        .container
        .image
        .as_ref()
        .map(|s| s.user_specified_image.as_str())
        .filter(|s| !s.is_empty())
        .unwrap_or(i.image_name);
    [
        (CONTAINER_TYPE, "container"),
        (SANDBOX_ID, i.sandbox_id),
        (
            SANDBOX_NAMESPACE,
            meta.map(|m| m.namespace.as_str()).unwrap_or_default(),
        ),
        (
            SANDBOX_UID,
            meta.map(|m| m.uid.as_str()).unwrap_or_default(),
        ),
        (
            SANDBOX_NAME,
            meta.map(|m| m.name.as_str()).unwrap_or_default(),
        ),
        (CONTAINER_NAME, name),
        (IMAGE_NAME, image),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}
