//! Gathers what the pure OCI spec builder (oci_spec) needs for one container: the
//! sandbox's namespace pins and files, the image's defaults and passwd/group, and the
//! host's facts; creates missing host paths of bind mounts, as containerd does.

use std::sync::OnceLock;

use ::oci_spec::runtime::Capability;

use crate::api;
use crate::container::ImageUsers;
use crate::engine::Engine;
use crate::error::{CriError, Result};
use crate::images::LocalImage;
use crate::oci_spec::{self, HostFacts, SandboxFiles, SandboxNamespaces, SpecInputs};
use crate::store::{Container, Sandbox};

impl Engine {
    /// The container's OCI spec as JSON, ready for its containerd record.
    pub fn container_spec(
        &self,
        c: &Container,
        sb: &Sandbox,
        image: &LocalImage,
        users: ImageUsers,
    ) -> Result<Vec<u8>> {
        let sandbox_config = &sb.config;
        let paths = self.sandbox_paths(&sb.id);
        let modes = crate::sandbox::namespace_modes(sandbox_config);
        let ns_dir = paths.ns_dir();
        let namespaces = SandboxNamespaces {
            net: (!sb.state.host_network).then(|| ns_dir.join("net")),
            ipc: (!modes.host_ipc).then(|| ns_dir.join("ipc")),
            uts: (!sb.state.host_network).then(|| ns_dir.join("uts")),
            pid: (sb.state.infra_pid > 0)
                .then(|| format!("/proc/{}/ns/pid", sb.state.infra_pid).into()),
        };
        // Pid mode POD without an infra process (the sandbox has its own PID namespace
        // per container) must never fall through to the host's: use the container's own.
        let mut config = c.config.clone();
        if namespaces.pid.is_none() {
            if let Some(o) = config
                .linux
                .as_mut()
                .and_then(|l| l.security_context.as_mut())
                .and_then(|s| s.namespace_options.as_mut())
                .filter(|o| o.pid == api::NamespaceMode::Pod as i32)
            {
                o.pid = api::NamespaceMode::Container as i32;
            }
            let unset = config
                .linux
                .as_ref()
                .and_then(|l| l.security_context.as_ref())
                .and_then(|s| s.namespace_options.as_ref())
                .is_none();
            if unset {
                let linux = config.linux.get_or_insert_with(Default::default);
                let sc = linux.security_context.get_or_insert_with(Default::default);
                sc.namespace_options = Some(api::NamespaceOption {
                    pid: api::NamespaceMode::Container as i32,
                    ..Default::default()
                });
            }
        }
        let files = SandboxFiles {
            hostname: Some(paths.hostname()),
            resolv_conf: Some(paths.resolv_conf()),
            hosts: Some(paths.hosts()),
            shm: if modes.host_ipc {
                Some("/dev/shm".into())
            } else {
                Some(paths.shm())
            },
        };
        // containerd creates missing host directories of bind mounts.
        for m in &c.config.mounts {
            if !m.host_path.is_empty() && !std::path::Path::new(&m.host_path).exists() {
                std::fs::create_dir_all(&m.host_path).map_err(|e| {
                    CriError::Internal(format!(
                        "create the host path {} of a mount: {e}",
                        m.host_path
                    ))
                })?;
            }
        }
        let defaults = oci_spec::image_defaults_from_config(&image.config);
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        let caps = own_capabilities();
        let host = HostFacts {
            hostname: &hostname,
            min_oom_score_adj: self.min_oom_score_adj,
            capabilities: caps,
            cgroup_v2: matches!(self.cgroups, crate::cgroup_stats::CgroupLayout::V2 { .. }),
            swap_accounting: swap_accounting(),
            hugetlb: std::path::Path::new("/sys/fs/cgroup/hugetlb").exists()
                || matches!(self.cgroups, crate::cgroup_stats::CgroupLayout::V2 { .. }),
            recursive_read_only_mounts: false,
        };
        let inputs = SpecInputs {
            container_id: &c.id,
            sandbox_id: &sb.id,
            container: &config,
            sandbox: sandbox_config,
            image: &defaults,
            image_name: &c.state.image_name,
            rootfs: "rootfs",
            namespaces: &namespaces,
            target_pid_ns: None,
            sandbox_files: &files,
            cgroups_path: c.state.cgroups_path.clone(),
            passwd: users.passwd.as_deref(),
            group: users.group.as_deref(),
            seccomp_default: None,
            apparmor_default: None,
            host: &host,
            lookup: &oci_spec::FsHost,
        };
        let spec = oci_spec::build(&inputs)?;
        serde_json::to_vec(&spec)
            .map_err(|e| CriError::Internal(format!("encode the OCI spec of {}: {e}", c.id)))
    }
}

/// Whether the memory controller accounts swap (memory.memsw.* on v1, memory.swap.* on
/// v2): only then can a swap limit be set.
fn swap_accounting() -> bool {
    std::path::Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists()
        || std::path::Path::new("/sys/fs/cgroup/memory.swap.max").exists()
}

/// The agent's effective capabilities, read once: what privileged containers get.
fn own_capabilities() -> &'static [Capability] {
    static CAPS: OnceLock<Vec<Capability>> = OnceLock::new();
    CAPS.get_or_init(|| oci_spec::FsHost::effective_capabilities().unwrap_or_default())
}
