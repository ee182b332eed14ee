//! `gantry node` on its embedded CRI and on containerd's CRI plugin: it joins by TLS
//! bootstrap and turns Ready, then passes the same checks as the reference node
//! (busybox demo with logs and exec through the kubelet API, a hostPort pod, deletion)
//! and runs the example workloads (e2e/src/workloads.rs); tearing the bed down leaves nothing on the host.

use anyhow::Result;
use gantry_e2e::gantry_node::{self, NodeRuntime};
use gantry_e2e::{checks, workloads, Bed, BedOptions};

#[test]
fn gantry_node_on_its_embedded_cri_runs_the_demo_pods() -> Result<()> {
    let mut bed = Bed::start(&BedOptions::named("e2e-node-embedded"))?;
    let mut node = gantry_node::start(&mut bed, "gantry", NodeRuntime::Embedded)?;
    node.explain(checks::node_runs_demo_pods(&bed, &node.name, &node.network))?;
    let result = workloads::node_runs_workloads(&mut bed, &mut node);
    node.explain(result)?;
    bed.teardown()?;
    Ok(())
}

#[test]
fn gantry_node_on_containerd_cri_runs_the_demo_pods() -> Result<()> {
    let mut bed = Bed::start(&BedOptions::named("e2e-node-containerd"))?;
    let mut node = gantry_node::start(&mut bed, "gantry-ctd", NodeRuntime::Containerd)?;
    node.explain(checks::node_runs_demo_pods(&bed, &node.name, &node.network))?;
    let result = workloads::node_runs_workloads(&mut bed, &mut node);
    node.explain(result)?;
    bed.teardown()?;
    Ok(())
}
