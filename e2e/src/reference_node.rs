//! The reference node: the upstream kubelet (built from the pinned Kubernetes module)
//! on containerd's CRI plugin, joining the bed by TLS bootstrap. Benchmarks compare
//! Gantry with this node, so its configuration mirrors what Gantry's node is given.

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Result};
use serde_json::json;

use crate::bed::{free_port, Bed};
use crate::gantry_cri::GantryCri;
use crate::host;
use crate::network::{self, CLUSTER_DNS_IP};
use crate::paths;
use crate::process::Recorded;
use crate::wait;

#[derive(Clone, Debug)]
pub struct ReferenceNode {
    pub name: String,
    pub dir: PathBuf,
    pub kubelet: Recorded,
    pub network: network::NodeNetwork,
    /// The node's cgroup root (cgroupRoot): every pod cgroup is below it.
    pub cgroup_root: String,
}

/// The CRI runtime under the upstream kubelet.
pub enum Runtime<'a> {
    /// containerd's own CRI plugin (the reference for benchmarks).
    Containerd,
    /// Gantry's CRI (`gantry cri`), with the pod network it was started with.
    Gantry(&'a GantryCri),
}

/// The bed nodes' evictionHard memory.available (upstream's default).
pub const EVICTION_HARD_MEMORY: &str = "100Mi";

/// The KubeletConfiguration both kinds of node get in the bed (the same file format
/// for the upstream kubelet and `gantry node`): cgroupfs under the node's cgroup root,
/// the node's bridge address, free ports, webhook authentication and authorization
/// with the bed's CA, the bed's cluster DNS, logs under the node's directory.
pub fn kubelet_config(
    bed: &Bed,
    net: &network::NodeNetwork,
    cgroup_root: &str,
    dir: &std::path::Path,
) -> Result<serde_json::Value> {
    Ok(json!({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        // This machine is cgroup v1; from 1.35 the kubelet refuses v1 unless told.
        "failCgroupV1": false,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": format!("/{cgroup_root}"),
        // The node's address is its bridge's gateway: the kubelet refuses a loopback node
        // IP, and the bridge is a host interface the bed made itself.
        "address": net.gateway,
        "port": free_port()?,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": free_port()?,
        "authentication": {
            "anonymous": { "enabled": false },
            "webhook": { "enabled": true },
            "x509": { "clientCAFile": bed.control_plane.pki.ca.cert },
        },
        "authorization": { "mode": "Webhook" },
        "clusterDomain": "cluster.local",
        "clusterDNS": [CLUSTER_DNS_IP],
        "podLogsDir": dir.join("pod-logs"),
        "rotateCertificates": true,
        "failSwapOn": false,
        "resolvConf": "/etc/resolv.conf",
        // Upstream's default disk thresholds (nodefs 10%, imagefs 15%) are met on the
        // shared development machines, whose root filesystem keeps most of its free
        // space from unprivileged use (statvfs f_bavail ~8%): every node would report
        // DiskPressure and turn pods away. The bed's nodes evict only when the disk is
        // really full; memory keeps upstream's default.
        "evictionHard": {
            "memory.available": EVICTION_HARD_MEMORY,
            "nodefs.available": "1%",
            "nodefs.inodesFree": "1%",
            "imagefs.available": "1%",
            "imagefs.inodesFree": "1%",
        },
        // For the same reason, image GC (upstream: from 85 % used, down to 80 %) would
        // remove unused images from under the suites every 5 minutes; e2e/tests/image_gc.rs
        // sets its own thresholds.
        "imageGCHighThresholdPercent": 99,
        "imageGCLowThresholdPercent": 98,
    }))
}

/// Records node `name` and its cgroup root in the bed's state (teardown removes what is
/// recorded, so before it exists) and creates the cgroup root; returns the root's name.
pub(crate) fn register_node(bed: &mut Bed, name: &str) -> Result<String> {
    let cgroup_root = format!("gantry-e2e-{}-{name}", bed.state.name);
    bed.state.cgroup_roots.push(cgroup_root.clone());
    bed.state.nodes.push(name.to_string());
    bed.state.save()?;
    host::create_cgroup_root(&cgroup_root)?;
    Ok(cgroup_root)
}

/// Starts the upstream kubelet as node `name` on `runtime` and waits until the Node is
/// Ready.
pub fn start(bed: &mut Bed, name: &str, runtime: Runtime) -> Result<ReferenceNode> {
    let dir = bed.dir().join("nodes").join(name);
    fs::create_dir_all(&dir)?;
    let (net, endpoint) = match runtime {
        Runtime::Containerd => {
            let conf_dir = bed.containerd.cni_conf_dir.clone();
            let net = network::create_node_network(&mut bed.state, name, &conf_dir)?;
            (net, bed.containerd.endpoint())
        }
        Runtime::Gantry(cri) => (cri.network.clone(), cri.endpoint()),
    };

    let cgroup_root = register_node(bed, name)?;

    let mut config = kubelet_config(bed, &net, &cgroup_root, &dir)?;
    config["containerRuntimeEndpoint"] = json!(endpoint);
    let config_path = dir.join("kubelet-config.json");
    fs::write(&config_path, serde_json::to_vec_pretty(&config)?)?;

    let mut cmd = Command::new(paths::tool("kubelet")?);
    cmd.arg("--config")
        .arg(&config_path)
        .arg("--bootstrap-kubeconfig")
        .arg(&bed.control_plane.bootstrap_kubeconfig)
        .arg("--kubeconfig")
        .arg(dir.join("kubelet.kubeconfig"))
        .arg("--cert-dir")
        .arg(dir.join("pki"))
        .arg("--root-dir")
        .arg(dir.join("kubelet"))
        .args([
            "--hostname-override",
            name,
            "--node-ip",
            &net.gateway,
            "--v",
            "1",
        ]);
    let kubelet = bed.state.spawn(&format!("kubelet-{name}"), cmd)?;

    let kubectl = bed.kubectl()?;
    wait::until(
        &format!("node {name} to be Ready"),
        Duration::from_secs(180),
        || {
            kubelet.ensure_alive()?;
            match kubectl.node_condition(name, "Ready")? {
                Some((status, _)) if status == "True" => Ok(Some(())),
                Some((status, why)) => bail!("Ready={status} ({why})"),
                None => bail!("node {name} is not registered yet"),
            }
        },
    )?;
    Ok(ReferenceNode {
        name: name.to_string(),
        dir,
        kubelet,
        network: net,
        cgroup_root,
    })
}
