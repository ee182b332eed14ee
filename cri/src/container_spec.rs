//! Gathers what the pure OCI spec builder (oci_spec) needs for one container: the
//! sandbox's namespace pins and files, the image's defaults and passwd/group, and the
//! host's facts; creates missing host paths of bind mounts, as containerd does.

use std::path::Path;

use ::oci_spec::runtime::Capability;

use crate::api;
use crate::cgroup_stats::CgroupLayout;
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
        // Pid mode POD (also the CRI's default) without an infra process must never
        // fall through to the host's PID namespace: the container gets its own.
        let mut config = c.config.clone();
        if namespaces.pid.is_none() {
            let options = config
                .linux
                .get_or_insert_with(Default::default)
                .security_context
                .get_or_insert_with(Default::default)
                .namespace_options
                .get_or_insert_with(Default::default);
            if options.pid == api::NamespaceMode::Pod as i32 {
                options.pid = api::NamespaceMode::Container as i32;
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
        let host = self.node.facts();
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

/// What the spec builder needs to know about this node, read once at start.
#[derive(Clone, Debug)]
pub struct NodeFacts {
    pub hostname: String,
    /// Gantry's own oom_score_adj: containers never get a lower one (lowering it needs
    /// CAP_SYS_RESOURCE, and a kubelet must not make its pods harder to kill than itself).
    pub min_oom_score_adj: i32,
    /// The agent's effective capabilities: what privileged containers get.
    pub capabilities: Vec<Capability>,
    pub cgroup_v2: bool,
    pub swap_accounting: bool,
    pub hugetlb: bool,
}

impl NodeFacts {
    pub fn read(cgroups: &CgroupLayout) -> Self {
        let cgroup_v2 = matches!(cgroups, CgroupLayout::V2 { .. });
        NodeFacts {
            hostname: crate::sandbox::host_name().unwrap_or_default(),
            min_oom_score_adj: oci_spec::FsHost::oom_score_adj().unwrap_or(0),
            capabilities: oci_spec::FsHost::effective_capabilities().unwrap_or_default(),
            cgroup_v2,
            // Swap limits need the memory controller to account swap (memsw on v1).
            swap_accounting: Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes")
                .exists()
                || Path::new("/sys/fs/cgroup/memory.swap.max").exists(),
            hugetlb: cgroup_v2 || Path::new("/sys/fs/cgroup/hugetlb").exists(),
        }
    }

    pub fn facts(&self) -> HostFacts<'_> {
        HostFacts {
            hostname: &self.hostname,
            min_oom_score_adj: self.min_oom_score_adj,
            capabilities: &self.capabilities,
            cgroup_v2: self.cgroup_v2,
            swap_accounting: self.swap_accounting,
            hugetlb: self.hugetlb,
            recursive_read_only_mounts: false,
        }
    }
}
