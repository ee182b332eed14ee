//! Checks a node must pass, whatever kubelet and runtime it runs: shared by the e2e
//! suites so the reference node and Gantry's nodes are held to the same bar.

use std::time::Duration;

use anyhow::{ensure, Result};

use crate::bed::Bed;
use crate::network::NodeNetwork;
use crate::{paths, teardown, wait};

/// The node is Ready after TLS bootstrap; the busybox demo pod runs on it with logs,
/// exec and an IP from the node's network; a hostPort pod answers on the node address;
/// both pods are deleted.
pub fn node_runs_demo_pods(bed: &Bed, node_name: &str, network: &NodeNetwork) -> Result<()> {
    let kubectl = bed.kubectl()?;

    // The node joined by TLS bootstrap: its client certificate was issued through a CSR
    // that the controller-manager approved.
    let nodes = kubectl.run(&["get", "nodes"])?;
    println!("{nodes}");
    ensure!(
        nodes
            .lines()
            .any(|l| l.split_whitespace().take(2).eq([node_name, "Ready"])),
        "kubectl get nodes does not show node {} Ready:\n{nodes}",
        node_name
    );
    let csrs = kubectl.get_json(&["csr"])?;
    let approved_node_csr = csrs["items"].as_array().into_iter().flatten().any(|c| {
        c["spec"]["signerName"] == "kubernetes.io/kube-apiserver-client-kubelet"
            && c["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|k| k["type"] == "Approved")
    });
    ensure!(approved_node_csr, "no approved node client CSR: {csrs}");

    let manifest = paths::repo_root().join("manifests/demo/busybox.yaml");
    kubectl.run(&["apply", "-f", &manifest.to_string_lossy()])?;
    wait::until(
        "pod busybox to be Running",
        Duration::from_secs(120),
        || {
            let pod = kubectl.get_json(&["pod", "busybox"])?;
            let phase = pod["status"]["phase"].as_str().unwrap_or("").to_string();
            Ok((phase == "Running").then_some(()).or_else(|| {
                eprintln!(
                    "busybox phase {phase:?}: {}",
                    pod["status"]["containerStatuses"]
                );
                None
            }))
        },
    )
    .map_err(|e| {
        let describe = kubectl
            .run(&["describe", "pod", "busybox"])
            .unwrap_or_else(|d| format!("{d:#}"));
        let node = kubectl
            .run(&["describe", "node", node_name])
            .unwrap_or_else(|d| format!("{d:#}"));
        e.context(format!(
            "kubectl describe pod busybox:\n{describe}\nkubectl describe node:\n{node}"
        ))
    })?;
    let pods = kubectl.run(&["get", "pod", "busybox", "-o", "wide"])?;
    println!("{pods}");
    ensure!(
        pods.contains("Running") && pods.contains(node_name),
        "unexpected pod listing:\n{pods}"
    );

    let logs = wait::until(
        "kubectl logs busybox to show the greeting",
        Duration::from_secs(30),
        || {
            let logs = kubectl.run(&["logs", "busybox"])?;
            Ok(logs.contains("hello from busybox").then_some(logs))
        },
    )?;
    println!("logs: {logs}");

    let exec = kubectl.run(&[
        "exec",
        "busybox",
        "--",
        "sh",
        "-c",
        "echo exec:$(hostname):$((6*7))",
    ])?;
    ensure!(
        exec.trim() == "exec:busybox:42",
        "kubectl exec printed {exec:?}"
    );

    // The pod's address comes from the node's CNI network, inside the pod range.
    let pod = kubectl.get_json(&["pod", "busybox"])?;
    let ip = pod["status"]["podIP"].as_str().unwrap_or("");
    let prefix = network
        .gateway
        .rsplit_once('.')
        .map(|(p, _)| format!("{p}."))
        .unwrap_or_default();
    ensure!(
        ip.starts_with(&prefix),
        "pod IP {ip:?} is not in the node's subnet {}",
        network.subnet
    );

    // A hostPort answers on the node's address (portmap DNAT rules, tagged with the
    // node's CNI network name, which teardown must remove).
    let hostport = paths::repo_root().join("manifests/examples/nginx-hostport.yaml");
    kubectl.run(&["apply", "-f", &hostport.to_string_lossy()])?;
    kubectl.run(&[
        "wait",
        "--for=condition=Ready",
        "pod/nginx-hostport",
        "--timeout=120s",
    ])?;
    let node_addr = format!("{}:18080", network.gateway);
    wait::until(
        "nginx-hostport to answer on the node's hostPort",
        Duration::from_secs(30),
        || {
            Ok(crate::http::http_status(&node_addr, "/")
                .ok()
                .filter(|s| *s == 200))
        },
    )?;
    let nat = crate::host::run("iptables", &["-w", "-t", "nat", "-S"])?;
    ensure!(
        nat.contains(&teardown::portmap_tag(&network.name)),
        "no portmap rule tagged with network {} in:\n{nat}",
        network.name
    );

    kubectl.run(&["delete", "pod", "busybox", "--wait=true", "--timeout=90s"])?;
    kubectl.run(&[
        "delete",
        "pod",
        "nginx-hostport",
        "--wait=true",
        "--timeout=90s",
    ])?;
    let gone = kubectl.run(&["get", "pod", "busybox", "--ignore-not-found"])?;
    ensure!(
        gone.trim().is_empty(),
        "pod busybox still listed after delete: {gone}"
    );

    Ok(())
}
