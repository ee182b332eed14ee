//! `gantry cri` on the bed's containerd: its own CNI network, the bed's registry mirror
//! configuration (containerd's hosts.toml files serve Gantry unchanged), and its own
//! containerd namespace, beside containerd's CRI plugin.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::Result;

use crate::bed::Bed;
use crate::network::{self, NodeNetwork};
use crate::paths::{self, CNI_BIN_DIR};
use crate::process::Recorded;
use crate::wait;

#[derive(Clone, Debug)]
pub struct GantryCri {
    pub socket: PathBuf,
    pub process: Recorded,
    pub network: NodeNetwork,
    /// The containerd namespace holding its images and containers.
    pub namespace: String,
}

impl GantryCri {
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// crictl pointed at this CRI, as a user runs it.
    pub fn crictl(&self) -> Result<Command> {
        let mut cmd = Command::new(paths::tool("crictl")?);
        cmd.args([
            "--runtime-endpoint",
            &self.endpoint(),
            "--image-endpoint",
            &self.endpoint(),
        ])
        .args(["--timeout", "60s"]);
        Ok(cmd)
    }
}

/// Starts `gantry cri` as `name` and waits until crictl gets its version.
pub fn start(bed: &mut Bed, name: &str) -> Result<GantryCri> {
    let dir = bed.dir().join(name);
    let conf_dir = dir.join("net.d");
    let net = network::create_node_network(&mut bed.state, name, &conf_dir)?;
    let socket = dir.join("cri.sock");
    let namespace = format!("gantry-{name}");
    let ctd = &bed.containerd;
    let mut cmd = Command::new(paths::gantry_bin()?);
    cmd.arg("cri")
        .arg("--listen")
        .arg(&socket)
        .arg("--containerd-address")
        .arg(&ctd.socket)
        .arg("--containerd-root")
        .arg(&ctd.root)
        .arg("--containerd-namespace")
        .arg(&namespace)
        .arg("--registry-config-path")
        .arg(&ctd.certs_dir)
        .arg("--cni-conf-dir")
        .arg(&conf_dir)
        .args(["--cni-bin-dir", CNI_BIN_DIR]);
    let process = bed.state.spawn(name, cmd)?;
    let cri = GantryCri {
        socket,
        process: process.clone(),
        network: net,
        namespace,
    };
    wait::until(
        &format!("{name} to answer crictl version"),
        Duration::from_secs(30),
        || {
            process.ensure_alive()?;
            let out = cri.crictl()?.arg("version").output()?;
            Ok(out.status.success().then_some(()))
        },
    )?;
    Ok(cri)
}
