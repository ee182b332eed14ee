//! Nodes that are hosts of their own: each `gantry node` runs in a network namespace the
//! bed pins below its directory (`<bed>/netns/<node>`), with its own CNI bridge and pod
//! /24 inside it. A bridge in the host's namespace (the "underlay", a /24 of the pod
//! range) links them: every node namespace has a veth on it and an address there, which
//! is the node's InternalIP and the kubelet API's listen address, so the apiserver on the
//! host reaches each kubelet directly. Routes in each namespace send another node's pod
//! /24 to that node's underlay address. The nodes reach the apiserver and the image
//! mirror through [`Forwarder`]s on 127.0.0.1 of their namespace.
//!
//! Network rule: every address is in 198.18.0.0/16; a node namespace has no default
//! route, so a pod packet for any other destination is unreachable there; the host
//! routes nothing for the nodes' pod subnets.
//!
//! Teardown: the namespace pins are mounts below the bed directory (unmounted with the
//! rest), the underlay bridge is among the bed's bridges and each host-side veth among
//! its links, all recorded before they are made; routes and the nodes' iptables rules go
//! with their namespace.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::bed::Bed;
use crate::forward::Forwarder;
use crate::gantry_node::{self, GantryNode, NetnsPlacement};
use crate::host;
use crate::network::{self, HostSnapshot};
use crate::teardown::HostLock;

/// The link between node hosts: a bridge on the host with a /24 of the pod range.
#[derive(Debug)]
pub struct Underlay {
    pub bridge: String,
    pub subnet: String,
    /// The host's own address on it.
    pub gateway: String,
    index: u8,
    hosts: u8,
}

/// A node's network namespace, its link to the underlay and its forwarders.
#[derive(Debug)]
pub struct NodeHost {
    pub name: String,
    pub netns: PathBuf,
    /// Its address on the underlay.
    pub address: String,
    /// The host end of its veth.
    pub link: String,
    _forwarders: Vec<Forwarder>,
}

/// Creates the underlay bridge, recorded in the bed's state first.
pub fn create_underlay(bed: &mut Bed) -> Result<Underlay> {
    let _lock = HostLock::acquire()?;
    HostSnapshot::ensure_guard()?;
    let index = network::free_subnet_index()?;
    let u = Underlay {
        bridge: format!("gte-ul{index}"),
        subnet: format!("198.18.{index}.0/24"),
        gateway: format!("198.18.{index}.1"),
        index,
        hosts: 0,
    };
    bed.state.bridges.push(u.bridge.clone());
    bed.state.pod_subnets.push(u.subnet.clone());
    bed.state.save()?;
    host::run("ip", &["link", "add", &u.bridge, "type", "bridge"])?;
    host::run(
        "ip",
        &[
            "addr",
            "add",
            &format!("{}/24", u.gateway),
            "dev",
            &u.bridge,
        ],
    )?;
    host::run("ip", &["link", "set", &u.bridge, "up"])?;
    Ok(u)
}

impl Underlay {
    /// Pins a network namespace for node `name`, links it to the underlay and forwards
    /// the apiserver's and the mirror's ports into it.
    pub fn add_host(&mut self, bed: &mut Bed, name: &str) -> Result<NodeHost> {
        self.hosts += 1;
        let k = self.hosts;
        let address = format!("198.18.{}.{}", self.index, k + 1);
        let link = format!("{}h{k}", self.bridge);
        let netns = bed.dir().join("netns").join(name);
        fs::create_dir_all(netns.parent().unwrap_or(bed.dir()))?;
        fs::write(&netns, b"")?;
        // A bind mount below the bed directory: teardown unmounts it with the rest.
        host::run("unshare", &[&format!("--net={}", netns.display()), "true"])
            .with_context(|| format!("pin a network namespace at {}", netns.display()))?;
        let in_ns = |args: &[&str]| host::run_in_netns(&netns, "ip", args);
        in_ns(&["link", "set", "lo", "up"])?;
        host::run_in_netns(&netns, "sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;

        bed.state.links.push(link.clone());
        bed.state.save()?;
        let ns = netns.display().to_string();
        host::run(
            "ip",
            &[
                "link", "add", &link, "type", "veth", "peer", "name", "ul0", "netns", &ns,
            ],
        )?;
        host::run("ip", &["link", "set", &link, "master", &self.bridge, "up"])?;
        in_ns(&["addr", "add", &format!("{address}/24"), "dev", "ul0"])?;
        in_ns(&["link", "set", "ul0", "up"])?;

        let mut forwarders = Vec::new();
        for port in [apiserver_port(bed)?, registry_port(bed)?] {
            forwarders.push(Forwarder::start(&netns, port)?);
        }
        Ok(NodeHost {
            name: name.to_string(),
            netns,
            address,
            link,
            _forwarders: forwarders,
        })
    }

    /// A host for node `name` with its pod network, and `gantry node` (embedded CRI)
    /// running there; returns once the node is Ready.
    pub fn start_node(&mut self, bed: &mut Bed, name: &str) -> Result<(NodeHost, GantryNode)> {
        let host = self.add_host(bed, name)?;
        // Where gantry_node puts an embedded node's CNI configuration.
        let conf_dir = bed.dir().join("nodes").join(name).join("net.d");
        let network =
            network::create_node_network_in(&mut bed.state, name, &conf_dir, Some(&host.netns))?;
        let placement = NetnsPlacement {
            netns: host.netns.clone(),
            address: host.address.clone(),
            network,
        };
        let node = gantry_node::start_in_netns(bed, name, placement)
            .with_context(|| format!("start gantry node {name} in {}", host.netns.display()))?;
        Ok((host, node))
    }
}

impl NodeHost {
    /// Routes `subnet` (another node's pods) to that node's underlay address `via`.
    pub fn route(&self, subnet: &str, via: &str) -> Result<()> {
        host::run_in_netns(&self.netns, "ip", &["route", "replace", subnet, "via", via])?;
        Ok(())
    }

    /// `ip ARGS` inside the node's namespace, for what a user would look at there.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        host::run_in_netns(&self.netns, "ip", args)
    }

    pub fn netns(&self) -> &Path {
        &self.netns
    }
}

fn apiserver_port(bed: &Bed) -> Result<u16> {
    let url = &bed.control_plane.apiserver_url;
    url.rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .with_context(|| format!("no port in the apiserver URL {url}"))
}

fn registry_port(bed: &Bed) -> Result<u16> {
    let addr = &bed.registry_addr;
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("no port in the registry address {addr}"))
}
