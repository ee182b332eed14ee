//! Settings of the CRI server, with the defaults a node uses.

use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Clone, Debug)]
pub struct CriConfig {
    /// The unix socket the CRI is served on.
    pub listen: PathBuf,
    /// containerd's gRPC socket.
    pub containerd_address: PathBuf,
    /// containerd namespace holding Gantry's images, containers and snapshots. Kept apart
    /// from containerd's own CRI plugin (`k8s.io`) so both can share one containerd.
    pub namespace: String,
    /// containerd's root directory: the image filesystem is its snapshotter below it.
    pub containerd_root: PathBuf,
    pub snapshotter: String,
    /// Per-registry host configuration in containerd's format: DIR/HOST/hosts.toml
    /// (mirrors, plain HTTP, `server`), with DIR/_default/hosts.toml as the fallback.
    pub registry_config_path: Option<PathBuf>,
    /// Where CNI conflists are read from (the first one, by name, is used).
    pub cni_conf_dir: PathBuf,
    /// Directories searched for CNI plugin binaries.
    pub cni_bin_dirs: Vec<PathBuf>,
    /// Volatile state, gone after a reboot: stdio FIFOs, namespace pins, /dev/shm mounts.
    pub state_dir: PathBuf,
    /// Persistent state: sandbox hostname/hosts/resolv.conf files, the CNI result cache.
    pub root_dir: PathBuf,
    /// runc's state directory (`--root`); None uses the shim's default.
    pub runc_root: Option<PathBuf>,
    /// Cgroup parent for containers whose sandbox names none (crictl without one).
    pub default_cgroup_parent: String,
    /// Where the exec/attach/port-forward streaming server listens (port 0: any free).
    pub stream_address: SocketAddr,
    /// The image of the infra process of pods that share one PID namespace.
    pub infra_image: String,
}

impl Default for CriConfig {
    fn default() -> Self {
        CriConfig {
            listen: PathBuf::from("/run/gantry/cri.sock"),
            containerd_address: PathBuf::from("/run/containerd/containerd.sock"),
            namespace: "gantry".to_string(),
            containerd_root: PathBuf::from("/var/lib/containerd"),
            snapshotter: "overlayfs".to_string(),
            registry_config_path: Some(PathBuf::from("/etc/gantry/certs.d")),
            cni_conf_dir: PathBuf::from("/etc/cni/net.d"),
            cni_bin_dirs: vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")],
            state_dir: PathBuf::from("/run/gantry/cri"),
            root_dir: PathBuf::from("/var/lib/gantry/cri"),
            runc_root: None,
            default_cgroup_parent: "/gantry".to_string(),
            stream_address: SocketAddr::from(([127, 0, 0, 1], 0)),
            infra_image: "registry.k8s.io/pause:3.9".to_string(),
        }
    }
}
