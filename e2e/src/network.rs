//! Pod networks of the test bed, following the network rule: pods get addresses in
//! 198.18.0.0/16 (one /24 and one bridge per node), services in 198.19.0.0/16, there is
//! no masquerade, the service range is a blackhole route (there is no kube-proxy), and a
//! FORWARD rule drops any pod packet headed outside the pod range, so no pod packet can
//! leave the machine even though the CNI bridge plugin turns on IP forwarding.
//!
//! Host-wide changes are recorded first in a [`HostSnapshot`] and undone when the last
//! bed is torn down.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::host;
use crate::paths::BED_ROOT;
use crate::state::BedState;
use crate::teardown::{all_beds, HostLock};

pub const POD_RANGE: &str = "198.18.0.0/16";
pub const SERVICE_RANGE: &str = "198.19.0.0/16";
/// The first address of the service range: the `kubernetes` service.
pub const KUBERNETES_SERVICE_IP: &str = "198.19.0.1";
/// Pods are told to use this DNS server; it is inside the blackholed service range.
pub const CLUSTER_DNS_IP: &str = "198.19.0.10";

const GUARD_COMMENT: &str = "gantry-e2e: pod packets stay on this machine";

/// Sysctls that the kubelet (kernel tunables) and the CNI bridge plugin (forwarding) set.
const SYSCTLS: &[&str] = &[
    "net.ipv4.ip_forward",
    "net.ipv6.conf.all.forwarding",
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
];

/// The host as it was before the first bed: written once, restored by the last teardown.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct HostSnapshot {
    pub sysctls: BTreeMap<String, String>,
    /// "BIN TABLE CHAIN" of every chain that existed before.
    pub iptables_chains: Vec<String>,
    pub blackhole_added: bool,
}

impl HostSnapshot {
    fn path() -> PathBuf {
        Path::new(BED_ROOT).join("host-snapshot.json")
    }

    /// Records the host (once) and installs the guard rule and the blackhole route.
    /// The caller holds the [`HostLock`].
    pub fn ensure_guard() -> Result<()> {
        fs::create_dir_all(BED_ROOT)?;
        let path = Self::path();
        let mut snapshot = if path.exists() {
            serde_json::from_slice(&fs::read(&path)?)
                .with_context(|| format!("parse {}", path.display()))?
        } else {
            let mut s = HostSnapshot::default();
            for key in SYSCTLS {
                if let Some(v) = host::read_sysctl(key) {
                    s.sysctls.insert(key.to_string(), v);
                }
            }
            s.iptables_chains = current_chains();
            s
        };
        if !blackhole_present()? {
            snapshot.blackhole_added = true;
            // Saved before the change: a crash right after still undoes it.
            fs::write(&path, serde_json::to_vec_pretty(&snapshot)?)?;
            host::run("ip", &["route", "add", "blackhole", SERVICE_RANGE])?;
        }
        fs::write(&path, serde_json::to_vec_pretty(&snapshot)?)?;
        let guard = guard_rule();
        let mut check = vec!["-w", "-C"];
        check.extend(guard.iter().map(String::as_str));
        if host::run("iptables", &check).is_err() {
            let mut insert = vec!["-w", "-I"];
            insert.extend(guard.iter().map(String::as_str));
            host::run("iptables", &insert).context("install the pod egress guard rule")?;
        }
        Ok(())
    }

    /// Undoes every host-wide change of the beds. The caller holds the [`HostLock`] and
    /// has checked that no bed is left.
    pub fn restore() -> Result<()> {
        let path = Self::path();
        let snapshot: HostSnapshot = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
            Err(_) => HostSnapshot::default(),
        };
        let guard = guard_rule();
        let mut delete = vec!["-w", "-D"];
        delete.extend(guard.iter().map(String::as_str));
        while host::run("iptables", &delete).is_ok() {}
        if !path.exists() {
            return Ok(());
        }
        if snapshot.blackhole_added && blackhole_present().unwrap_or(false) {
            host::run("ip", &["route", "del", "blackhole", SERVICE_RANGE])?;
        }
        // Chains made by the kubelet (KUBE-*) and the CNI plugins (CNI-*) since. A name
        // that existed before in any table is kept: foreign chains are left alone.
        let before = snapshot.iptables_chains.clone();
        host::iptables_remove(None, &|chain: &str| {
            (chain.starts_with("KUBE-") || chain.starts_with("CNI-"))
                && !before.iter().any(|b| b.rsplit(' ').next() == Some(chain))
        });
        for (key, value) in &snapshot.sysctls {
            if host::read_sysctl(key).as_deref() != Some(value.as_str()) {
                let _ = host::write_sysctl(key, value);
            }
        }
        remove_dead_shim_sockets();
        fs::remove_file(&path)?;
        Ok(())
    }
}

fn guard_rule() -> Vec<String> {
    [
        "FORWARD",
        "-s",
        POD_RANGE,
        "!",
        "-d",
        POD_RANGE,
        "-m",
        "comment",
        "--comment",
        GUARD_COMMENT,
        "-j",
        "DROP",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn blackhole_present() -> Result<bool> {
    let out = host::run("ip", &["route", "show", "type", "blackhole", SERVICE_RANGE])?;
    Ok(!out.trim().is_empty())
}

fn current_chains() -> Vec<String> {
    let mut chains = Vec::new();
    for bin in ["iptables", "ip6tables"] {
        for table in host::IPTABLES_TABLES {
            if let Ok(dump) = host::run(bin, &["-w", "-t", table, "-S"]) {
                for chain in dump.lines().filter_map(|l| l.strip_prefix("-N ")) {
                    chains.push(format!("{bin} {table} {chain}"));
                }
            }
        }
    }
    chains
}

/// containerd keeps shim sockets in /run/containerd/s whatever its state directory;
/// those whose shim was killed are removed (a connect that is refused means no shim).
fn remove_dead_shim_sockets() {
    let Ok(entries) = fs::read_dir("/run/containerd/s") else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if std::os::unix::net::UnixStream::connect(&path).is_err() {
            let _ = fs::remove_file(&path);
        }
    }
}

/// One node's pod network: a bridge with the gateway address and a CNI conflist.
#[derive(Clone, Debug)]
pub struct NodeNetwork {
    /// The CNI network name; also the tag on the portmap plugin's iptables rules.
    pub name: String,
    pub bridge: String,
    pub subnet: String,
    pub gateway: String,
    pub conf_dir: PathBuf,
    /// host-local's data directory (its `dataDir`).
    pub ipam_dir: PathBuf,
}

impl NodeNetwork {
    /// The addresses host-local has handed out on this network and not released.
    pub fn leased_ips(&self) -> Vec<String> {
        let dir = self.ipam_dir.join(&self.name);
        let Ok(entries) = fs::read_dir(&dir) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
            .collect()
    }
}

/// Allocates a free /24 of the pod range for `node`, records it, creates its bridge and
/// writes the conflist (bridge + host-local + portmap) into `conf_dir`.
pub fn create_node_network(
    state: &mut BedState,
    node: &str,
    conf_dir: &Path,
) -> Result<NodeNetwork> {
    create_node_network_in(state, node, conf_dir, None)
}

/// Like [`create_node_network`], with the bridge inside the network namespace pinned at
/// `netns` (a node that is a host of its own, see [`crate::multinode`]). That bridge
/// goes with its namespace, so it is not recorded among the bed's host bridges.
pub fn create_node_network_in(
    state: &mut BedState,
    node: &str,
    conf_dir: &Path,
    netns: Option<&Path>,
) -> Result<NodeNetwork> {
    let _lock = HostLock::acquire()?;
    HostSnapshot::ensure_guard()?;
    let index = free_subnet_index()?;
    let ipam_dir = state.dir.join("cni").join(node).join("ipam");
    let net = NodeNetwork {
        ipam_dir: ipam_dir.clone(),
        name: format!("gte-{}-{node}", state.name),
        bridge: format!("gte-br{index}"),
        subnet: format!("198.18.{index}.0/24"),
        gateway: format!("198.18.{index}.1"),
        conf_dir: conf_dir.to_path_buf(),
    };
    if netns.is_none() {
        state.bridges.push(net.bridge.clone());
    }
    state.cni_networks.push(net.name.clone());
    state.pod_subnets.push(net.subnet.clone());
    state.save()?;

    let ip = |args: &[&str]| match netns {
        None => host::run("ip", args),
        Some(ns) => host::run_in_netns(ns, "ip", args),
    };
    if ip(&["link", "show", "dev", &net.bridge]).is_err() {
        ip(&["link", "add", &net.bridge, "type", "bridge"])?;
    }
    ip(&[
        "addr",
        "replace",
        &format!("{}/24", net.gateway),
        "dev",
        &net.bridge,
    ])?;
    ip(&["link", "set", &net.bridge, "up"])?;

    fs::create_dir_all(&ipam_dir)?;
    fs::create_dir_all(conf_dir)?;
    let conflist = json!({
        "cniVersion": "1.0.0",
        "name": net.name,
        "plugins": [
            {
                "type": "bridge",
                "bridge": net.bridge,
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": net.subnet, "gateway": net.gateway }]],
                    "routes": [{ "dst": "0.0.0.0/0" }],
                    "dataDir": ipam_dir,
                }
            },
            { "type": "portmap", "capabilities": { "portMappings": true } }
        ]
    });
    let file = conf_dir.join(format!("10-{}.conflist", net.name));
    fs::write(&file, serde_json::to_vec_pretty(&conflist)?)
        .with_context(|| format!("write {}", file.display()))?;
    Ok(net)
}

/// The lowest N in 1..=254 such that 198.18.N.0/24 is neither on an interface nor held
/// by any bed on this machine. The caller holds the [`HostLock`] until it has recorded
/// the subnet in its bed's `pod_subnets`.
pub fn free_subnet_index() -> Result<u8> {
    let mut used = std::collections::BTreeSet::new();
    let addrs = host::run("ip", &["-4", "-o", "addr", "show"])?;
    for word in addrs.split_whitespace() {
        if let Some(rest) = word.strip_prefix("198.18.") {
            if let Some(n) = rest.split('.').next().and_then(|n| n.parse::<u8>().ok()) {
                used.insert(n);
            }
        }
    }
    for dir in all_beds() {
        if let Ok(s) = BedState::load(&dir) {
            for subnet in s.pod_subnets {
                if let Some(n) = subnet.split('.').nth(2).and_then(|n| n.parse::<u8>().ok()) {
                    used.insert(n);
                }
            }
        }
    }
    (1..=254u8)
        .find(|n| !used.contains(n))
        .map(Ok)
        .unwrap_or_else(|| bail!("no free /24 left in {POD_RANGE}"))
}
