//! `gantry node` on its embedded CRI and on containerd's CRI plugin: it joins by TLS
//! bootstrap and turns Ready, then passes the same checks as the reference node
//! (busybox demo with logs and exec through the kubelet API, a hostPort pod, deletion)
//! and runs the example workloads (e2e/src/workloads.rs); tearing the bed down leaves nothing on the host.

use anyhow::Result;
use gantry_e2e::gantry_node::{self, NodeRuntime};
use gantry_e2e::{checks, volumes, workloads, Bed, BedOptions};

#[test]
fn gantry_node_on_its_embedded_cri_runs_the_demo_pods() -> Result<()> {
    node_runs_demo_pods_and_workloads("e2e-node-embedded", "gantry", NodeRuntime::Embedded)
}

#[test]
fn gantry_node_on_containerd_cri_runs_the_demo_pods() -> Result<()> {
    node_runs_demo_pods_and_workloads("e2e-node-containerd", "gantry-ctd", NodeRuntime::Containerd)
}

/// One bed, one node on `runtime`: the reference node's checks, then the workloads.
fn node_runs_demo_pods_and_workloads(
    bed_name: &str,
    node_name: &str,
    runtime: NodeRuntime,
) -> Result<()> {
    let mut bed = Bed::start(&BedOptions::named(bed_name))?;
    let mut node = gantry_node::start(&mut bed, node_name, runtime)?;
    node.explain(checks::node_runs_demo_pods(&bed, &node.name, &node.network))?;
    let result = workloads::node_runs_workloads(&mut bed, &mut node);
    node.explain(result)?;
    bed.teardown()?;
    Ok(())
}

/// With no kubeconfig at all, `gantry node` runs its static pods standalone: no API
/// server, the pod seen through crictl, and a removed manifest stops its pod.
#[test]
fn gantry_node_standalone_runs_static_pods_without_an_api_server() -> Result<()> {
    let mut bed = Bed::start(&BedOptions::named("e2e-node-standalone"))?;
    let manifest = std::fs::read_to_string(
        gantry_e2e::paths::repo_root().join("manifests/static/static-web.yaml"),
    )?;
    let node = gantry_node::start_standalone(&mut bed, "alone", &[("static-web.yaml", &manifest)])?;
    let result = standalone_checks(&node);
    node.explain(result)?;
    bed.teardown()?;
    Ok(())
}

fn standalone_checks(node: &gantry_node::GantryNode) -> Result<()> {
    use std::time::Duration;
    let crictl = |args: &[&str]| -> Result<String> {
        let out = node.crictl()?.args(args).output()?;
        anyhow::ensure!(
            out.status.success(),
            "crictl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    gantry_e2e::wait::until(
        "the static pod's container to run",
        Duration::from_secs(120),
        || {
            let ps = crictl(&["ps", "--name", "web", "--state", "Running", "-q"])?;
            Ok((!ps.trim().is_empty()).then_some(()))
        },
    )?;
    let pods = crictl(&[
        "pods",
        "--name",
        "static-web-alone",
        "--state",
        "Ready",
        "-q",
    ])?;
    anyhow::ensure!(
        !pods.trim().is_empty(),
        "no ready sandbox named static-web-alone"
    );
    // The node never registered: there is no kubeconfig to write one with.
    anyhow::ensure!(!node.dir.join("kubelet.kubeconfig").exists());
    std::fs::remove_file(node.dir.join("manifests/static-web.yaml"))?;
    gantry_e2e::wait::until(
        "the removed static pod to be gone",
        Duration::from_secs(90),
        || {
            let all = crictl(&["pods", "-q"])?;
            Ok(all.trim().is_empty().then_some(()))
        },
    )?;
    Ok(())
}

/// Volumes as users write them (manifests/examples/volumes): configMap, secret,
/// downwardAPI, projected (with a TokenRequest token), hostPath, a claim on a static PV,
/// subPath and subPathExpr, fsGroup; live updates, FailedMount, subPath escapes refused,
/// and nothing left on the node after the pods go. See e2e/src/volumes.rs.
#[test]
fn gantry_node_mounts_volumes() -> Result<()> {
    let mut bed = Bed::start(&BedOptions::named("e2e-node-volumes"))?;
    let node = gantry_node::start(&mut bed, "gantry-vol", NodeRuntime::Embedded)?;
    let result = volumes::node_mounts_volumes(&bed, &node);
    node.explain(result)?;
    bed.teardown()?;
    Ok(())
}
