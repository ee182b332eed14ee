//! `gantry node` joining the bed by TLS bootstrap, on Gantry's embedded CRI (its own
//! CNI network and containerd namespace) or on containerd's CRI plugin (the bed's CNI
//! network for containerd). Configured like the reference node, so both are held to
//! the same checks and compared by the benchmarks.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Result};
use serde_json::json;

use crate::bed::Bed;
use crate::network::{self, NodeNetwork};
use crate::paths::{self, CNI_BIN_DIR};
use crate::process::Recorded;
use crate::reference_node::{kubelet_config, register_node};
use crate::wait;

/// The runtime under `gantry node`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeRuntime {
    /// Gantry's CRI in the same process (the default of `gantry node`).
    Embedded,
    /// containerd's CRI plugin, through --container-runtime-endpoint.
    Containerd,
}

/// Where a node that is a host of its own runs (see [`crate::multinode`]).
#[derive(Clone, Debug)]
pub struct NetnsPlacement {
    /// The pinned network namespace `gantry node` is started in (setns before exec; the
    /// mount namespace stays the host's, so its mounts are seen by containerd).
    pub netns: PathBuf,
    /// The node's address in that namespace: its InternalIP and the kubelet API's
    /// listen address.
    pub address: String,
    /// Its pod network, the bridge inside `netns`.
    pub network: NodeNetwork,
}

#[derive(Clone, Debug)]
pub struct GantryNode {
    pub name: String,
    pub dir: PathBuf,
    pub process: Recorded,
    pub network: NodeNetwork,
    /// The node's address (InternalIP): its bridge's gateway, or its address on the
    /// link between hosts when it runs in a network namespace of its own.
    pub address: String,
    /// The network namespace it runs in, if not the host's.
    pub netns: Option<PathBuf>,
    pub runtime: NodeRuntime,
    /// The CRI socket crictl can use (the embedded CRI's, or containerd's).
    pub cri_socket: PathBuf,
    pub cgroup_root: String,
    /// The kubelet API port (on the node address).
    pub port: u16,
    /// The plain-HTTP healthz port on 127.0.0.1.
    pub healthz_port: u16,
    args: Vec<std::ffi::OsString>,
    restarts: u32,
    standalone: bool,
}

pub fn start(bed: &mut Bed, name: &str, runtime: NodeRuntime) -> Result<GantryNode> {
    start_with(bed, name, runtime, &[], None, &|_| {})
}

/// `gantry node` whose KubeletConfiguration (JSON, as the bed writes it) `tune` changes
/// before the start: lowered eviction or image GC thresholds, a pod pids limit, …
pub fn start_tuned(
    bed: &mut Bed,
    name: &str,
    runtime: NodeRuntime,
    tune: &dyn Fn(&mut serde_json::Value),
) -> Result<GantryNode> {
    start_with(bed, name, runtime, &[], None, tune)
}

/// `gantry node` on its embedded CRI inside a network namespace of its own, with the pod
/// network and address of `placement`.
pub fn start_in_netns(bed: &mut Bed, name: &str, placement: NetnsPlacement) -> Result<GantryNode> {
    start_with(
        bed,
        name,
        NodeRuntime::Embedded,
        &[],
        Some(placement),
        &|_| {},
    )
}

/// `gantry node` without any kubeconfig: standalone, running the static pods in
/// `static_pods` (manifest file names and contents) with no API server.
pub fn start_standalone(
    bed: &mut Bed,
    name: &str,
    static_pods: &[(&str, &str)],
) -> Result<GantryNode> {
    start_with(bed, name, NodeRuntime::Embedded, static_pods, None, &|_| {})
}

fn start_with(
    bed: &mut Bed,
    name: &str,
    runtime: NodeRuntime,
    standalone_pods: &[(&str, &str)],
    placement: Option<NetnsPlacement>,
    tune: &dyn Fn(&mut serde_json::Value),
) -> Result<GantryNode> {
    let standalone = !standalone_pods.is_empty();
    let dir = bed.dir().join("nodes").join(name);
    fs::create_dir_all(&dir)?;
    let conf_dir = match runtime {
        NodeRuntime::Embedded => dir.join("net.d"),
        NodeRuntime::Containerd => bed.containerd.cni_conf_dir.clone(),
    };
    let (net, address, netns) = match placement {
        Some(p) => (p.network, p.address, Some(p.netns)),
        None => {
            let net = network::create_node_network(&mut bed.state, name, &conf_dir)?;
            let address = net.gateway.clone();
            (net, address, None)
        }
    };
    let cgroup_root = register_node(bed, name)?;

    let ctd = bed.containerd.clone();
    let cri_socket = match runtime {
        NodeRuntime::Embedded => dir.join("cri.sock"),
        NodeRuntime::Containerd => ctd.socket.clone(),
    };
    let mut config = kubelet_config(bed, &net, &cgroup_root, &dir)?;
    config["address"] = json!(address);
    config["staticPodPath"] = json!(dir.join("manifests"));
    // Small, so the e2e suite sees rotation happen.
    config["containerLogMaxSize"] = json!("1Mi");
    config["containerLogMaxFiles"] = json!(3);
    let port = config["port"].as_u64().unwrap_or(0) as u16;
    let healthz_port = config["healthzPort"].as_u64().unwrap_or(0) as u16;
    if runtime == NodeRuntime::Containerd {
        config["containerRuntimeEndpoint"] = json!(format!("unix://{}", ctd.socket.display()));
    }
    tune(&mut config);
    fs::create_dir_all(dir.join("manifests"))?;
    for (file, text) in standalone_pods {
        fs::write(dir.join("manifests").join(file), text)?;
    }
    let config_path = dir.join("kubelet-config.json");
    fs::write(&config_path, serde_json::to_vec_pretty(&config)?)?;

    let mut cmd = gantry_command(netns.as_deref())?;
    cmd.arg("node")
        .arg("--config")
        .arg(&config_path)
        .arg("--kubeconfig")
        .arg(dir.join("kubelet.kubeconfig"))
        .arg("--cert-dir")
        .arg(dir.join("pki"))
        .arg("--root-dir")
        .arg(dir.join("root"))
        .args(["--hostname-override", name, "--node-ip", &address])
        // The embedded CRI (unused on containerd's CRI plugin).
        .arg("--cri-socket")
        .arg(dir.join("cri.sock"))
        .arg("--cri-state-dir")
        .arg(dir.join("cri-state"))
        .arg("--containerd-address")
        .arg(&ctd.socket)
        .arg("--containerd-root")
        .arg(&ctd.root)
        .arg("--containerd-namespace")
        .arg(format!("gantry-{name}"))
        .arg("--registry-config-path")
        .arg(&ctd.certs_dir)
        .arg("--cni-conf-dir")
        .arg(&conf_dir)
        .args(["--cni-bin-dir", CNI_BIN_DIR])
        .arg("--runc-root")
        .arg(ctd.runc_root())
        .env("RUST_LOG", "info,gantry=debug,gantry_pod_manager=debug");
    if !standalone {
        cmd.arg("--bootstrap-kubeconfig")
            .arg(&bed.control_plane.bootstrap_kubeconfig);
    }
    let args = cmd.get_args().map(|a| a.to_os_string()).collect();
    let process = bed.state.spawn(&format!("gantry-node-{name}"), cmd)?;
    let node = GantryNode {
        name: name.to_string(),
        dir,
        process,
        network: net,
        address,
        netns,
        runtime,
        cri_socket,
        cgroup_root,
        port,
        healthz_port,
        args,
        restarts: 0,
        standalone,
    };
    node.wait_ready(bed)?;
    Ok(node)
}

impl GantryNode {
    fn wait_ready(&self, bed: &Bed) -> Result<()> {
        if self.standalone {
            return wait::until(
                &format!("standalone node {} to answer crictl version", self.name),
                Duration::from_secs(60),
                || {
                    self.process.ensure_alive()?;
                    let out = self.crictl()?.arg("version").output()?;
                    Ok(out.status.success().then_some(()))
                },
            );
        }
        let kubectl = bed.kubectl()?;
        wait::until(
            &format!("node {} to be Ready", self.name),
            Duration::from_secs(180),
            || {
                self.process.ensure_alive()?;
                match kubectl.node_condition(&self.name, "Ready")? {
                    Some((status, _)) if status == "True" => Ok(Some(())),
                    Some((status, why)) => bail!("Ready={status} ({why})"),
                    None => bail!("node {} is not registered yet", self.name),
                }
            },
        )
    }

    /// `result`, with the tail of the agent's log added to an error.
    pub fn explain<T>(&self, result: Result<T>) -> Result<T> {
        result.map_err(|e| {
            let tail = self.process.log_tail(150);
            e.context(format!("gantry node {} log (tail):\n{tail}", self.name))
        })
    }

    /// crictl pointed at the node's runtime, as a user runs it.
    pub fn crictl(&self) -> Result<Command> {
        let endpoint = format!("unix://{}", self.cri_socket.display());
        let mut cmd = Command::new(paths::tool("crictl")?);
        cmd.args([
            "--runtime-endpoint",
            &endpoint,
            "--image-endpoint",
            &endpoint,
        ])
        .args(["--timeout", "60s"]);
        Ok(cmd)
    }

    /// Kills `gantry node` with `signal` and starts it again with the same arguments,
    /// as systemd would; waits until the node is Ready.
    pub fn restart(&mut self, bed: &mut Bed, signal: i32) -> Result<()> {
        self.restart_with_failpoint(bed, signal, None, || Ok(()))
    }

    /// Like `restart`, running `while_down` after the process is gone and before the
    /// new one starts (to change the cluster behind a dead agent's back).
    pub fn restart_with(
        &mut self,
        bed: &mut Bed,
        signal: i32,
        while_down: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        self.restart_with_failpoint(bed, signal, None, while_down)
    }

    /// Like `restart_with`, and the new process's CRI aborts at crash point `failpoint`
    /// (see gantry_cri::failpoint), as if the machine lost power there. The node still
    /// turns Ready; it dies when the work reaches that point.
    pub fn restart_with_failpoint(
        &mut self,
        bed: &mut Bed,
        signal: i32,
        failpoint: Option<&str>,
        while_down: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        if self.process.is_alive() {
            crate::process::signal(self.process.pid, signal);
        }
        self.process.stop(Duration::from_secs(10));
        while_down()?;
        self.restarts += 1;
        let mut cmd = gantry_command(self.netns.as_deref())?;
        cmd.args(&self.args)
            .env("RUST_LOG", "info,gantry=debug,gantry_pod_manager=debug");
        if let Some(point) = failpoint {
            cmd.env("GANTRY_CRI_FAILPOINT", point);
        }
        self.process = bed.state.spawn(
            &format!("gantry-node-{}-restart{}", self.name, self.restarts),
            cmd,
        )?;
        self.wait_ready(bed)
    }
}

/// The `gantry` command, entering the network namespace pinned at `netns` (if any)
/// between fork and exec.
fn gantry_command(netns: Option<&Path>) -> Result<Command> {
    let mut cmd = Command::new(paths::gantry_bin()?);
    if let Some(ns) = netns {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let file = fs::File::open(ns)
            .map_err(|e| anyhow::anyhow!("open network namespace {}: {e}", ns.display()))?;
        // SAFETY: setns is async-signal-safe; the closure only reads a descriptor that
        // the closure itself keeps open (the File moved into it).
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    Ok(cmd)
}
