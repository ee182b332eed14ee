//! Table tests of build(): one fixture (a container "app" in pod default/web whose
//! namespaces and files are all pinned by the sandbox) varied per rule.

// The tables are tuples of inputs and expectations.
#![allow(clippy::type_complexity)]

mod mounts;
mod process;
mod security;
mod spec;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ::oci_spec::runtime::{Capability, LinuxDeviceType, LinuxSeccomp, Mount, Spec};

use super::*;
use crate::api;

/// A [`HostLookup`] answering from maps.
#[derive(Default)]
pub(super) struct FakeHost {
    pub devices: HashMap<PathBuf, Vec<HostDevice>>,
    pub all: Vec<HostDevice>,
    pub propagation: HashMap<PathBuf, HostPropagation>,
    pub profiles: HashMap<PathBuf, String>,
}

impl HostLookup for FakeHost {
    fn devices(&self, host_path: &Path) -> Result<Vec<HostDevice>> {
        self.devices
            .get(host_path)
            .cloned()
            .ok_or_else(|| CriError::NotFound(format!("no device {}", host_path.display())))
    }
    fn all_devices(&self) -> Result<Vec<HostDevice>> {
        Ok(self.all.clone())
    }
    fn propagation(&self, host_path: &Path) -> Result<HostPropagation> {
        Ok(self
            .propagation
            .get(host_path)
            .copied()
            .unwrap_or(HostPropagation::Private))
    }
    fn seccomp_profile(&self, path: &Path) -> Result<String> {
        self.profiles
            .get(path)
            .cloned()
            .ok_or_else(|| CriError::NotFound(format!("no profile {}", path.display())))
    }
}

pub(super) fn dev(path: &str, kind: LinuxDeviceType, major: i64, minor: i64) -> HostDevice {
    HostDevice {
        path: PathBuf::from(path),
        kind,
        major,
        minor,
        file_mode: 0o666,
        uid: 0,
        gid: 0,
    }
}

pub(super) struct Fx {
    pub container: api::ContainerConfig,
    pub sandbox: api::PodSandboxConfig,
    pub image: ImageProcessDefaults,
    pub image_name: String,
    pub ns: SandboxNamespaces,
    pub files: SandboxFiles,
    pub target_pid_ns: Option<PathBuf>,
    pub passwd: Option<String>,
    pub group: Option<String>,
    pub seccomp_default: Option<LinuxSeccomp>,
    pub apparmor_default: Option<String>,
    pub host_caps: Vec<Capability>,
    pub node_hostname: String,
    pub min_oom_score_adj: i32,
    pub cgroup_v2: bool,
    pub swap_accounting: bool,
    pub hugetlb: bool,
    pub rro: bool,
    pub lookup: FakeHost,
}

impl Fx {
    pub fn new() -> Self {
        Fx {
            container: api::ContainerConfig {
                metadata: Some(api::ContainerMetadata {
                    name: "app".into(),
                    attempt: 0,
                }),
                image: Some(api::ImageSpec {
                    image: "sha256:0123".into(),
                    user_specified_image: "busybox:1.36".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            sandbox: api::PodSandboxConfig {
                metadata: Some(api::PodSandboxMetadata {
                    name: "web".into(),
                    uid: "uid-1".into(),
                    namespace: "default".into(),
                    attempt: 0,
                }),
                hostname: "web".into(),
                linux: Some(api::LinuxPodSandboxConfig::default()),
                ..Default::default()
            },
            image: ImageProcessDefaults {
                cmd: vec!["sh".into()],
                ..Default::default()
            },
            image_name: "docker.io/library/busybox:1.36".into(),
            ns: SandboxNamespaces {
                net: Some("/run/gantry/ns/net-sb".into()),
                ipc: Some("/run/gantry/ns/ipc-sb".into()),
                uts: Some("/run/gantry/ns/uts-sb".into()),
                pid: Some("/proc/4242/ns/pid".into()),
            },
            files: SandboxFiles {
                hostname: Some("/var/lib/gantry/sb/hostname".into()),
                resolv_conf: Some("/var/lib/gantry/sb/resolv.conf".into()),
                hosts: Some("/var/lib/gantry/sb/hosts".into()),
                shm: Some("/run/gantry/sb/shm".into()),
            },
            target_pid_ns: None,
            passwd: None,
            group: None,
            seccomp_default: None,
            apparmor_default: None,
            host_caps: ALL_CAPABILITIES
                .into_iter()
                .filter(|c| *c != Capability::SysResource)
                .collect(),
            node_hostname: "node-1".into(),
            min_oom_score_adj: -999,
            cgroup_v2: false,
            swap_accounting: true,
            hugetlb: true,
            rro: true,
            lookup: FakeHost::default(),
        }
    }

    pub fn sc(&mut self) -> &mut api::LinuxContainerSecurityContext {
        self.container
            .linux
            .get_or_insert_with(Default::default)
            .security_context
            .get_or_insert_with(Default::default)
    }

    pub fn sandbox_sc(&mut self) -> &mut api::LinuxSandboxSecurityContext {
        self.sandbox
            .linux
            .get_or_insert_with(Default::default)
            .security_context
            .get_or_insert_with(Default::default)
    }

    pub fn resources(&mut self) -> &mut api::LinuxContainerResources {
        self.container
            .linux
            .get_or_insert_with(Default::default)
            .resources
            .get_or_insert_with(Default::default)
    }

    pub fn privileged(&mut self) {
        self.sc().privileged = true;
        self.sandbox_sc().privileged = true;
    }

    pub fn build(&self) -> Result<Spec> {
        let host = HostFacts {
            hostname: &self.node_hostname,
            min_oom_score_adj: self.min_oom_score_adj,
            capabilities: &self.host_caps,
            cgroup_v2: self.cgroup_v2,
            swap_accounting: self.swap_accounting,
            hugetlb: self.hugetlb,
            recursive_read_only_mounts: self.rro,
        };
        build(&SpecInputs {
            container_id: "c0ffee",
            sandbox_id: "5a1d",
            container: &self.container,
            sandbox: &self.sandbox,
            image: &self.image,
            image_name: &self.image_name,
            rootfs: "rootfs",
            namespaces: &self.ns,
            target_pid_ns: self.target_pid_ns.as_deref(),
            sandbox_files: &self.files,
            cgroups_path: "/kubepods/pod-uid-1/c0ffee".into(),
            passwd: self.passwd.as_deref(),
            group: self.group.as_deref(),
            seccomp_default: self.seccomp_default.as_ref(),
            apparmor_default: self.apparmor_default.as_deref(),
            host: &host,
            lookup: &self.lookup,
        })
    }

    pub fn spec(&self) -> Spec {
        match self.build() {
            Ok(s) => s,
            Err(e) => panic!("build failed: {e}"),
        }
    }

    /// The InvalidArgument message of a build that must fail.
    pub fn invalid(&self) -> String {
        match self.build() {
            Err(CriError::InvalidArgument(m)) => m,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }
}

/// A mount as (destination, type, source, options) for comparisons.
pub(super) fn m(mount: &Mount) -> (String, String, String, Vec<String>) {
    (
        mount.destination().to_string_lossy().into_owned(),
        mount.typ().clone().unwrap_or_default(),
        mount
            .source()
            .as_ref()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        mount.options().clone().unwrap_or_default(),
    )
}

pub(super) fn mounts(spec: &Spec) -> Vec<(String, String, String, Vec<String>)> {
    spec.mounts().iter().flatten().map(m).collect()
}

pub(super) fn mount_at(spec: &Spec, dest: &str) -> Option<(String, String, String, Vec<String>)> {
    mounts(spec).into_iter().find(|x| x.0 == dest)
}

pub(super) fn process(spec: &Spec) -> &::oci_spec::runtime::Process {
    spec.process().as_ref().expect("a process")
}

pub(super) fn linux(spec: &Spec) -> &::oci_spec::runtime::Linux {
    spec.linux().as_ref().expect("a linux section")
}

pub(super) fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}
