//! containerd for the bed: Debian's containerd with every path (root, state, sockets,
//! runc state, the CRI plugin's network namespaces) inside the bed directory, the image
//! mirror configured for each mirrored registry, and the CRI plugin set up the way the
//! reference node needs (restrict_oom_score_adj: this machine lacks CAP_SYS_RESOURCE).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Result;

use crate::paths::{self, CNI_BIN_DIR};
use crate::process::Recorded;
use crate::registry::MIRRORED;
use crate::state::BedState;
use crate::wait;

/// The image the CRI plugin uses for sandboxes.
pub const PAUSE_IMAGE: &str = "registry.k8s.io/pause:3.9";

#[derive(Clone, Debug)]
pub struct Containerd {
    pub socket: PathBuf,
    pub root: PathBuf,
    pub state_dir: PathBuf,
    /// Where the CRI plugin reads CNI conflists (the reference node's pod network).
    pub cni_conf_dir: PathBuf,
    /// hosts.toml per mirrored registry (containerd's `config_path`).
    pub certs_dir: PathBuf,
    pub process: Recorded,
    config: PathBuf,
    restarts: u32,
}

impl Containerd {
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Stops containerd (SIGTERM; its shims and containers keep running, as on a
    /// real node) and starts it again with the same configuration.
    pub fn restart(&mut self, state: &mut BedState) -> Result<()> {
        self.process.stop(Duration::from_secs(20));
        self.restarts += 1;
        self.process = spawn(
            state,
            &format!("containerd-restart{}", self.restarts),
            &self.config,
            &self.socket,
        )?;
        Ok(())
    }

    /// runc's state directory for this containerd's containers.
    pub fn runc_root(&self) -> PathBuf {
        self.state_dir
            .parent()
            .unwrap_or(&self.state_dir)
            .join("runc")
    }
}

pub fn start(state: &mut BedState, registry_addr: &str, cni_conf_dir: &Path) -> Result<Containerd> {
    let dir = state.dir.join("containerd");
    let root = dir.join("root");
    let state_dir = dir.join("state");
    let certs_dir = dir.join("certs.d");
    let socket = dir.join("containerd.sock");
    for d in [&root, &state_dir, &certs_dir, cni_conf_dir] {
        fs::create_dir_all(d)?;
    }
    write_mirror_hosts(&certs_dir, registry_addr)?;
    let config = dir.join("config.toml");
    fs::write(
        &config,
        config_toml(&dir, &root, &state_dir, &socket, &certs_dir, cni_conf_dir),
    )?;

    let p = spawn(state, "containerd", &config, &socket)?;
    Ok(Containerd {
        socket,
        root,
        state_dir,
        cni_conf_dir: cni_conf_dir.to_path_buf(),
        certs_dir,
        process: p,
        config,
        restarts: 0,
    })
}

/// Starts containerd with `config` as daemon `name` and waits until it answers.
fn spawn(state: &mut BedState, name: &str, config: &Path, socket: &Path) -> Result<Recorded> {
    let mut cmd = Command::new(paths::system_tool("containerd")?);
    cmd.arg("--config").arg(config);
    let p = state.spawn(name, cmd)?;
    let ctr = paths::system_tool("ctr")?;
    wait::until(
        "containerd to answer on its socket",
        Duration::from_secs(30),
        || {
            p.ensure_alive()?;
            let ok = Command::new(&ctr)
                .arg("--address")
                .arg(socket)
                .arg("version")
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            Ok(ok.then_some(()))
        },
    )?;
    Ok(p)
}

/// One hosts.toml per mirrored registry. `server` is the mirror too, so a missing image
/// fails at the mirror instead of falling back to the real registry on the internet.
fn write_mirror_hosts(certs_dir: &Path, registry_addr: &str) -> Result<()> {
    for registry in MIRRORED {
        let dir = certs_dir.join(registry);
        fs::create_dir_all(&dir)?;
        fs::write(
            dir.join("hosts.toml"),
            format!(
                "# {registry} is served by the test bed's mirror on loopback.\n\
                 server = \"http://{registry_addr}\"\n\n\
                 [host.\"http://{registry_addr}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
            ),
        )?;
    }
    Ok(())
}

fn config_toml(
    dir: &Path,
    root: &Path,
    state: &Path,
    socket: &Path,
    certs: &Path,
    cni_conf: &Path,
) -> String {
    let d = |p: &Path| p.display().to_string();
    format!(
        r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.internal.v1.tracing",
  "io.containerd.tracing.processor.v1.otlp",
]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[debug]
  level = "info"

[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{runc_root}"

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{cni_conf}"

  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{certs}"
"#,
        root = d(root),
        state = d(state),
        socket = d(socket),
        opt = d(&dir.join("opt")),
        pause = PAUSE_IMAGE,
        runc_root = d(&dir.join("runc")), // = Containerd::runc_root
        cni_bin = CNI_BIN_DIR,
        cni_conf = d(cni_conf),
        certs = d(certs),
    )
}
