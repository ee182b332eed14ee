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
    /// The cgroup (below every hierarchy's root) its containers go in when a sandbox
    /// names no parent.
    pub cgroup_root: String,
    /// Its volatile state directory (FIFOs, namespace pins, /dev/shm mounts).
    pub state_dir: PathBuf,
    /// Its persistent state directory (sandbox files, CNI result cache).
    pub root_dir: PathBuf,
    /// Where it serves its operation metrics (`--metrics-bind-address`), host:port.
    pub metrics_addr: String,
    name: String,
    args: Vec<std::ffi::OsString>,
    restarts: u32,
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
    let cgroup_root = format!("gantry-e2e-{}-{name}", bed.state.name);
    bed.state.cgroup_roots.push(cgroup_root.clone());
    bed.state.save()?;
    let state_dir = dir.join("state");
    let root_dir = dir.join("root");
    let ctd = &bed.containerd;
    let metrics_addr = format!("127.0.0.1:{}", crate::bed::free_port()?);
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
        .args(["--cni-bin-dir", CNI_BIN_DIR])
        .arg("--state-dir")
        .arg(&state_dir)
        .arg("--root-dir")
        .arg(&root_dir)
        .arg("--runc-root")
        .arg(ctd.runc_root())
        .arg("--default-cgroup-parent")
        .arg(format!("/{cgroup_root}"))
        .arg("--metrics-bind-address")
        .arg(&metrics_addr);
    let args = cmd.get_args().map(|a| a.to_os_string()).collect();
    let process = bed.state.spawn(name, cmd)?;
    let cri = GantryCri {
        socket,
        process,
        network: net,
        namespace,
        cgroup_root,
        state_dir,
        root_dir,
        metrics_addr,
        name: name.to_string(),
        args,
        restarts: 0,
    };
    cri.wait_ready()?;
    Ok(cri)
}

impl GantryCri {
    fn wait_ready(&self) -> Result<()> {
        wait::until(
            &format!("{} to answer crictl version", self.name),
            Duration::from_secs(30),
            || {
                self.process.ensure_alive()?;
                let out = self.crictl()?.arg("version").output()?;
                Ok(out.status.success().then_some(()))
            },
        )
    }

    /// Kills `gantry cri` with `signal` (SIGKILL: a crash; SIGTERM: a clean stop) and
    /// starts it again with the same arguments, as systemd would.
    pub fn restart(&mut self, bed: &mut Bed, signal: i32) -> Result<()> {
        self.restart_with_failpoint(bed, signal, None)
    }

    /// Like `restart`, and the new process aborts at crash point `failpoint` (see
    /// gantry_cri::failpoint), as if the machine lost power there.
    pub fn restart_with_failpoint(
        &mut self,
        bed: &mut Bed,
        signal: i32,
        failpoint: Option<&str>,
    ) -> Result<()> {
        if self.process.is_alive() {
            crate::process::signal(self.process.pid, signal);
        }
        self.process.stop(Duration::from_secs(10));
        self.restarts += 1;
        let mut cmd = Command::new(paths::gantry_bin()?);
        cmd.args(&self.args);
        if let Some(point) = failpoint {
            cmd.env("GANTRY_CRI_FAILPOINT", point);
        }
        self.process = bed
            .state
            .spawn(&format!("{}-restart{}", self.name, self.restarts), cmd)?;
        self.wait_ready()
    }
}
