//! Node-pressure eviction on a real node: a Gantry node whose memory.available hard
//! threshold sits a few hundred MiB under what the machine has available now. A BestEffort
//! pod filling a memory-backed emptyDir pushes the node under it: the node reports
//! MemoryPressure, the controller-manager taints it, the hog is evicted (Failed, reason
//! Evicted, upstream's message, DisruptionTarget), a Guaranteed pod keeps running, a
//! BestEffort pod sent to the node meanwhile is rejected, and once the memory is back the
//! pressure clears after the (short) transition period.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use gantry_e2e::gantry_node::{self, GantryNode, NodeRuntime};
use gantry_e2e::kubectl::Kubectl;
use gantry_e2e::{wait, Bed, BedOptions};
use serde_json::json;

/// What the hog writes into its tmpfs, MiB (tmpfs pages are charged to its memory cgroup
/// and, being swap-backed, are never "inactive file": all of it is working set).
const HOG_MIB: i64 = 1536;
/// How far under the machine's available memory the threshold is set, MiB. The machine
/// is shared with other builds and tests, so memory.available moves by a few hundred MiB
/// on its own: 700 MiB of headroom keeps the idle node above the threshold, and the hog
/// takes it 1536 − 700 = 836 MiB below, far enough that others freeing memory meanwhile
/// does not hide it.
const HEADROOM_MIB: i64 = 700;
/// evictionPressureTransitionPeriod for this node: long enough to send a pod while the
/// node is still under pressure after the eviction, short enough to wait out.
const TRANSITION: &str = "60s";

/// memory.available as upstream documents computing it by hand on cgroup v1
/// (memory-available.sh): MemTotal − (root memory.usage_in_bytes − total_inactive_file).
fn memory_available_mib() -> Result<i64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo")?;
    let total_kib: i64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("MemTotal")?;
    let usage: i64 = std::fs::read_to_string("/sys/fs/cgroup/memory/memory.usage_in_bytes")
        .context("this test needs the cgroup v1 memory controller")?
        .trim()
        .parse()?;
    let stat = std::fs::read_to_string("/sys/fs/cgroup/memory/memory.stat")?;
    let inactive: i64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("total_inactive_file "))
        .and_then(|v| v.trim().parse().ok())
        .context("total_inactive_file")?;
    Ok((total_kib * 1024 - (usage - inactive)) >> 20)
}

#[test]
fn memory_pressure_evicts_the_best_effort_hog_and_keeps_the_guaranteed_pod() -> Result<()> {
    let mut bed = Bed::start(&BedOptions::named("eviction-memory"))?;
    let available = memory_available_mib()?;
    let threshold_mib = available - HEADROOM_MIB;
    ensure!(
        threshold_mib > 1024,
        "only {available} MiB available: too little to run this test safely"
    );
    let node = gantry_node::start_tuned(&mut bed, "gantry-evict", NodeRuntime::Embedded, &|c| {
        c["evictionHard"] = json!({"memory.available": format!("{threshold_mib}Mi")});
        c["evictionPressureTransitionPeriod"] = json!(TRANSITION);
    })?;
    let result = checks(&bed, &node, threshold_mib);
    node.explain(result)?;
    bed.teardown()?;
    Ok(())
}

fn pod_json(k: &Kubectl, name: &str) -> Result<serde_json::Value> {
    k.get_json(&["pod", name, "-n", "default"])
}

fn checks(bed: &Bed, node: &GantryNode, threshold_mib: i64) -> Result<()> {
    let k = bed.kubectl()?;
    let n = &node.name;
    // Idle, the node is above its threshold.
    let idle = k.node_condition(n, "MemoryPressure")?;
    ensure!(
        idle.as_ref().is_some_and(|(s, _)| s == "False"),
        "idle node: MemoryPressure {idle:?}"
    );
    k.apply_yaml(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: steady, namespace: default}}
spec:
  nodeName: {n}
  terminationGracePeriodSeconds: 1
  containers:
  - name: steady
    image: registry.k8s.io/e2e-test-images/busybox:1.29-2
    command: ["sleep", "3600"]
    resources:
      requests: {{cpu: 100m, memory: 64Mi}}
      limits: {{cpu: 100m, memory: 64Mi}}
"#
    ))?;
    wait::until(
        "the Guaranteed pod to run",
        Duration::from_secs(120),
        || {
            let p = pod_json(&k, "steady")?;
            Ok((p["status"]["phase"] == "Running").then_some(()))
        },
    )?;
    // The hog: BestEffort, no limit, but its script writes a bounded amount into a
    // tmpfs that is itself bounded (sizeLimit), so it cannot take the machine down.
    k.apply_yaml(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: hog, namespace: default}}
spec:
  nodeName: {n}
  restartPolicy: Never
  terminationGracePeriodSeconds: 30
  containers:
  - name: hog
    image: registry.k8s.io/e2e-test-images/busybox:1.29-2
    command: ["sh", "-c", "dd if=/dev/zero of=/fill/zeros bs=1M count={HOG_MIB} && sleep 3600"]
    volumeMounts: [{{name: fill, mountPath: /fill}}]
  volumes:
  - name: fill
    emptyDir: {{medium: Memory, sizeLimit: {limit}Mi}}
"#,
        limit = HOG_MIB + 64
    ))?;

    let (status, why) = wait::until("MemoryPressure True", Duration::from_secs(180), || {
        Ok(k.node_condition(n, "MemoryPressure")?
            .filter(|(s, _)| s == "True"))
    })?;
    ensure!(
        why == "KubeletHasInsufficientMemory: kubelet has insufficient memory available",
        "MemoryPressure {status}: {why}"
    );

    // The hog is evicted with upstream's reason, message and condition.
    let hog = wait::until("the hog to be evicted", Duration::from_secs(120), || {
        let p = pod_json(&k, "hog")?;
        Ok((p["status"]["phase"] == "Failed").then_some(p))
    })?;
    let status = &hog["status"];
    ensure!(status["reason"] == "Evicted", "hog status: {status}");
    let message = status["message"].as_str().unwrap_or("");
    let prefix = format!(
        "The node was low on resource: memory. Threshold quantity: {threshold_mib}Mi, available: "
    );
    ensure!(message.starts_with(&prefix), "message: {message:?}");
    ensure!(
        message.contains(". Container hog was using ")
            && message.ends_with(", request is 0, has larger consumption of memory. "),
        "message: {message:?}"
    );
    let disruption = status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "DisruptionTarget")
        .cloned()
        .unwrap_or_default();
    ensure!(
        disruption["status"] == "True" && disruption["reason"] == "TerminationByKubelet",
        "DisruptionTarget: {disruption}"
    );

    // Still under pressure (transition period): the controller-manager has tainted the
    // node, and a BestEffort pod sent straight to it is turned away.
    wait::until("the memory-pressure taint", Duration::from_secs(60), || {
        let node = k.get_json(&["node", n])?;
        let tainted = node["spec"]["taints"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|t| {
                t["key"] == "node.kubernetes.io/memory-pressure" && t["effect"] == "NoSchedule"
            });
        Ok(tainted.then_some(()))
    })?;
    k.apply_yaml(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: latecomer, namespace: default}}
spec:
  nodeName: {n}
  containers:
  - name: latecomer
    image: registry.k8s.io/e2e-test-images/busybox:1.29-2
    command: ["sleep", "3600"]
"#
    ))?;
    let late = wait::until(
        "the latecomer to be rejected",
        Duration::from_secs(60),
        || {
            let p = pod_json(&k, "latecomer")?;
            Ok((p["status"]["phase"] == "Failed").then_some(p))
        },
    )?;
    ensure!(
        late["status"]["reason"] == "Evicted"
            && late["status"]["message"] == "The node had condition: [MemoryPressure]. ",
        "latecomer status: {}",
        late["status"]
    );

    // The Guaranteed pod was spared.
    let steady = pod_json(&k, "steady")?;
    ensure!(
        steady["status"]["phase"] == "Running",
        "steady: {}",
        steady["status"]
    );

    // Events: Evicted on the pod, EvictionThresholdMet on the node.
    let events = k.get_json(&["events", "-n", "default"])?;
    let has_event = |kind: &str, name: &str, reason: &str| {
        events["items"].as_array().into_iter().flatten().any(|e| {
            e["involvedObject"]["kind"] == kind
                && e["involvedObject"]["name"] == name
                && e["reason"] == reason
        })
    };
    ensure!(
        has_event("Pod", "hog", "Evicted"),
        "no Evicted event on the hog"
    );
    ensure!(
        has_event("Node", n, "EvictionThresholdMet"),
        "no EvictionThresholdMet event on the node"
    );
    // And /metrics counts it under its signal.
    let metrics = k.run(&["get", "--raw", &format!("/api/v1/nodes/{n}/proxy/metrics")])?;
    ensure!(
        metrics
            .lines()
            .any(|l| l == r#"kubelet_evictions{eviction_signal="memory.available"} 1"#),
        "/metrics does not count one memory.available eviction:\n{}",
        metrics
            .lines()
            .filter(|l| l.contains("evictions"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // With the hog's memory back, pressure clears after the transition period.
    let (_, why) = wait::until(
        "MemoryPressure False again",
        Duration::from_secs(150),
        || {
            Ok(k.node_condition(n, "MemoryPressure")?
                .filter(|(s, _)| s == "False"))
        },
    )?;
    ensure!(
        why == "KubeletHasSufficientMemory: kubelet has sufficient memory available",
        "MemoryPressure False: {why}"
    );
    for pod in ["hog", "latecomer", "steady"] {
        k.run(&["delete", "pod", pod, "-n", "default", "--wait=false"])?;
    }
    Ok(())
}
