//! The upstream kubelet on containerd's CRI plugin (the reference node) and on Gantry's
//! CRI: each node joins by TLS bootstrap and turns Ready, a busybox pod from manifests/
//! runs, its logs and an exec answer through the apiserver and the kubelet, a hostPort
//! answers, the pods are deleted, and tearing the bed down leaves nothing on the host.

use anyhow::Result;
use gantry_e2e::{checks, Bed, BedOptions};

#[test]
fn reference_node_joins_and_runs_busybox_from_manifests() -> Result<()> {
    let mut bed = Bed::start(&BedOptions::named("e2e-reference"))?;
    let node = bed.start_reference_node("reference")?;
    checks::node_runs_demo_pods(&bed, &node.name, &node.network)?;
    // Teardown fails if any process, mount, cgroup, bridge or iptables rule of the
    // bed is left.
    bed.teardown()?;
    Ok(())
}

/// Gantry's CRI serves the upstream kubelet: the same checks as the reference node.
#[test]
fn upstream_kubelet_runs_pods_on_gantry_cri() -> Result<()> {
    let mut bed = Bed::start(&BedOptions::named("e2e-kubelet-gantry"))?;
    let cri = bed.start_gantry_cri("gantry-cri")?;
    let node = bed.start_upstream_kubelet_on("kubelet-gantry", &cri)?;
    checks::node_runs_demo_pods(&bed, &node.name, &node.network)?;
    bed.teardown()?;
    Ok(())
}
