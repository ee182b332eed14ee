//! Resources on `gantry node` with its embedded CRI (cgroup v1, cgroupfs driver): the
//! QoS hierarchy under the node's cgroup root, one cgroup per pod sized from its spec,
//! containers nested in it, podPidsLimit, OOM kills reported as upstream, in-place
//! resize (`kubectl patch --subresource resize`), and pod cgroups removed with their pods (also those of pods deleted while the node was
//! down). Expected values are derived here from the pods' specs and the node's
//! capacity with the documented formulas, and compared with the files on disk.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use gantry_e2e::gantry_node::{self, GantryNode, NodeRuntime};
use gantry_e2e::kubectl::Kubectl;
use gantry_e2e::quantity::{bytes, milli};
use gantry_e2e::wait::until;
use gantry_e2e::{Bed, BedOptions};
use serde_json::{json, Value};

const PIDS_LIMIT: i64 = 64;
const RESERVED_CPU_MILLI: i64 = 100;
const RESERVED_MEMORY: i64 = 256 << 20;
const BUSYBOX: &str = "registry.k8s.io/e2e-test-images/busybox:1.29-2";

#[test]
fn pod_cgroups_follow_qos_requests_and_limits_and_go_with_their_pods() -> Result<()> {
    let mut bed = Bed::start(&BedOptions::named("cgroups-resources"))?;
    let mut node = gantry_node::start_tuned(&mut bed, "res", NodeRuntime::Embedded, &|c| {
        c["podPidsLimit"] = json!(PIDS_LIMIT);
        c["systemReserved"] = json!({"cpu": format!("{RESERVED_CPU_MILLI}m"), "memory": "256Mi"});
    })?;
    let result = resource_checks(&mut bed, &mut node);
    node.explain(result)?;
    bed.teardown()?;
    Ok(())
}

fn resource_checks(bed: &mut Bed, node: &mut GantryNode) -> Result<()> {
    ensure!(
        !std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists(),
        "this suite reads cgroup v1 files; the host is cgroup v2"
    );
    let k = bed.kubectl()?;
    let cg = Cgroups {
        root: format!("/{}", node.cgroup_root),
    };
    node_allocatable_cgroup_is_capacity_minus_reserved(&k, &cg, &node.name)?;

    let pods = [
        pod_manifest(
            "guaranteed",
            &node.name,
            json!([]),
            resources("200m", "200m", "64Mi", "64Mi"),
        ),
        pod_manifest(
            "burstable",
            &node.name,
            json!([{"name": "init", "image": BUSYBOX, "command": ["sh", "-c", "true"],
                    "resources": resources("500m", "500m", "128Mi", "128Mi")}]),
            resources("100m", "300m", "32Mi", "96Mi"),
        ),
        pod_manifest("besteffort", &node.name, json!([]), json!({})),
    ];
    for p in &pods {
        k.apply_yaml(&p.to_string())?;
    }
    for p in &pods {
        let name = p["metadata"]["name"].as_str().unwrap_or_default();
        let pod = wait_running(&k, name)?;
        pod_cgroup_matches_its_spec(&cg, &pod).with_context(|| format!("pod {name}"))?;
    }
    burstable_qos_shares_are_the_sum_of_requests(&k, &cg)?;
    in_place_resize(&k, &cg, &node.name)?;

    fork_bomb_stays_within_pods_limit(&k, &cg, &node.name)?;
    memory_hog_is_oom_killed_and_restarted(&k, &node.name)?;

    // Deleted pods take their cgroups with them, in every hierarchy.
    for name in ["guaranteed", "burstable"] {
        let pod = k.get_json(&["pod", name])?;
        k.run(&["delete", "pod", name, "--wait=true", "--timeout=120s"])?;
        let dirs = cg.pod_dirs(&pod);
        until(
            &format!("the cgroup of deleted pod {name} to go"),
            Duration::from_secs(60),
            || {
                let left: Vec<_> = dirs.iter().filter(|d| d.exists()).collect();
                if left.is_empty() {
                    return Ok(Some(()));
                }
                bail!("still there: {left:?}")
            },
        )?;
    }
    let shares = cg.read("cpu", "kubepods/burstable", "cpu.shares")?;
    ensure!(
        shares == "2",
        "burstable cpu.shares with no Burstable pod left: {shares}, want 2 (MinShares)"
    );

    // A pod force-deleted while the node is down: after the restart its containers
    // are killed and its cgroup removed.
    let pod = k.get_json(&["pod", "besteffort"])?;
    let dirs = cg.pod_dirs(&pod);
    ensure!(
        dirs.iter().all(|d| d.exists()),
        "besteffort's cgroup exists before the test"
    );
    node.restart_with(bed, libc::SIGKILL, || {
        k.run(&["delete", "pod", "besteffort", "--force", "--grace-period=0"])
            .map(|_| ())
    })?;
    until(
        "the force-deleted pod's cgroup to go after the restart",
        Duration::from_secs(90),
        || Ok(dirs.iter().all(|d| !d.exists()).then_some(())),
    )?;
    Ok(())
}

/// In-place resize as a user asks for it: the running containers and their pod cgroup
/// take the new size without a restart (unless resizePolicy asks for one), the status
/// reports it, and a resize the node cannot hold is Deferred with upstream's message
/// while the pod keeps its size.
fn in_place_resize(k: &Kubectl, cg: &Cgroups, node: &str) -> Result<()> {
    let before = k.get_json(&["pod", "guaranteed"])?;
    let id_before = before["status"]["containerStatuses"][0]["containerID"].clone();

    // CPU up and memory down at once (the pod cgroup covers both while they change).
    let grown = resources("300m", "300m", "48Mi", "48Mi");
    resize(k, "guaranteed", &grown)?;
    let pod = wait_resized(k, "guaranteed", &grown)?;
    let status = &pod["status"]["containerStatuses"][0];
    ensure!(
        status["containerID"] == id_before && status["restartCount"] == 0,
        "resized in place: container {} restarts {}, was {id_before}",
        status["containerID"],
        status["restartCount"]
    );
    pod_cgroup_matches_its_spec(cg, &pod).context("guaranteed pod after its resize")?;
    for reason in ["ResizeStarted", "ResizeCompleted"] {
        let events = pod_events(k, "guaranteed", reason)?;
        ensure!(
            events.iter().any(|m| m.contains(r#""cpu":"300m""#)),
            "a {reason} event naming the new size, got {events:?}"
        );
    }

    // A Burstable pod's CPU down: its pod cgroup, and the Burstable QoS cgroup's sum.
    let shrunk = resources("50m", "150m", "32Mi", "96Mi");
    resize(k, "burstable", &shrunk)?;
    let pod = wait_resized(k, "burstable", &shrunk)?;
    pod_cgroup_matches_its_spec(cg, &pod).context("burstable pod after its resize")?;
    burstable_qos_shares_are_the_sum_of_requests(k, cg)?;

    // All the node's allocatable CPU, which other pods' requests already use some of:
    // Deferred, and the pod keeps its size. (The apiserver refuses more than the
    // node's allocatable outright.)
    let allocatable = k.get_json(&["node", node])?["status"]["allocatable"]["cpu"].clone();
    let all_cpu = milli(allocatable.as_str().unwrap_or("0"))?;
    let all = format!("{all_cpu}m");
    let too_big = resources(&all, &all, "48Mi", "48Mi");
    resize(k, "guaranteed", &too_big)?;
    let pending = until(
        "the oversized resize to be Deferred",
        Duration::from_secs(60),
        || {
            let p = k.get_json(&["pod", "guaranteed"])?;
            let c = p["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == "PodResizePending")
                .cloned();
            Ok(c)
        },
    )?;
    let message = pending["message"].as_str().unwrap_or_default();
    ensure!(
        pending["reason"] == "Deferred"
            && message.starts_with(&format!(
                "Node didn't have enough resource: cpu, requested: {all_cpu}, used: "
            ))
            && message.ends_with(&format!(", capacity: {all_cpu}")),
        "PodResizePending {pending}, allocatable cpu {allocatable}"
    );
    let p = k.get_json(&["pod", "guaranteed"])?;
    let status = &p["status"]["containerStatuses"][0];
    ensure!(
        status["allocatedResources"]["cpu"] == "300m"
            && status["resources"]["limits"]["cpu"] == "300m",
        "a deferred resize leaves the admitted size: {status}"
    );
    let quota = cg.read("cpu", &cg.pod_cgroup(&p), "cpu.cfs_quota_us")?;
    ensure!(
        quota == "30000",
        "pod cpu.cfs_quota_us {quota} while deferred, want 30000"
    );
    ensure!(
        !pod_events(k, "guaranteed", "ResizeDeferred")?.is_empty(),
        "a ResizeDeferred event"
    );
    // Asking for the admitted size again ends the pending resize.
    resize(k, "guaranteed", &grown)?;
    wait_resized(k, "guaranteed", &grown)?;

    // resizePolicy RestartContainer for memory: the container restarts with the new size.
    let mut restarting = pod_manifest(
        "resize-restart",
        node,
        json!([]),
        resources("100m", "100m", "32Mi", "32Mi"),
    );
    restarting["spec"]["containers"][0]["resizePolicy"] = json!([
        {"resourceName": "memory", "restartPolicy": "RestartContainer"}
    ]);
    k.apply_yaml(&restarting.to_string())?;
    wait_running(k, "resize-restart")?;
    let bigger = resources("100m", "100m", "40Mi", "40Mi");
    resize(k, "resize-restart", &bigger)?;
    let pod = wait_resized(k, "resize-restart", &bigger)?;
    let restarts = &pod["status"]["containerStatuses"][0]["restartCount"];
    ensure!(
        restarts == 1,
        "restartCount {restarts} after a RestartContainer resize, want 1"
    );
    pod_cgroup_matches_its_spec(cg, &pod).context("resize-restart after its resize")?;
    k.run(&[
        "delete",
        "pod",
        "resize-restart",
        "--wait=true",
        "--timeout=120s",
    ])?;
    memory_shrink_below_usage_is_refused(k, cg, node)
}

/// A memory limit below what the container uses is refused, as upstream refuses it:
/// PodResizeInProgress with reason Error and a ResizeError event; the container keeps
/// its limit.
fn memory_shrink_below_usage_is_refused(k: &Kubectl, cg: &Cgroups, node: &str) -> Result<()> {
    let busy = shell_pod(
        "resize-refused",
        node,
        resources("100m", "100m", "64Mi", "64Mi"),
        "dd if=/dev/zero of=/dev/shm/fill bs=1M count=40 && sleep 3600",
    );
    k.apply_yaml(&busy.to_string())?;
    let pod = wait_running(k, "resize-refused")?;
    let id = pod["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .unwrap_or_default();
    let dir = format!(
        "{}/{}",
        cg.pod_cgroup(&pod),
        id.split("://").nth(1).unwrap_or_default()
    );
    until(
        "the container to fill 40 MiB",
        Duration::from_secs(60),
        || {
            let used: i64 = cg.read("memory", &dir, "memory.usage_in_bytes")?.parse()?;
            Ok((used > 32 << 20).then_some(()))
        },
    )?;
    resize(
        k,
        "resize-refused",
        &resources("100m", "100m", "32Mi", "32Mi"),
    )?;
    let error = until(
        "the shrink below usage to be refused",
        Duration::from_secs(60),
        || {
            let p = k.get_json(&["pod", "resize-refused"])?;
            Ok(p["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == "PodResizeInProgress" && c["reason"] == "Error")
                .cloned())
        },
    )?;
    let message = error["message"].as_str().unwrap_or_default();
    ensure!(
        message.starts_with(
            "cannot decrease memory limits: attempting to set container \"app\" memory limit (33554432) below current usage ("
        ),
        "PodResizeInProgress {error}"
    );
    let limit = cg.read("memory", &dir, "memory.limit_in_bytes")?;
    ensure!(
        limit == (64u64 << 20).to_string(),
        "the refused shrink left memory.limit_in_bytes {limit}"
    );
    ensure!(
        !pod_events(k, "resize-refused", "ResizeError")?.is_empty(),
        "a ResizeError event"
    );
    k.run(&[
        "delete",
        "pod",
        "resize-refused",
        "--wait=true",
        "--timeout=120s",
    ])?;
    Ok(())
}

/// `kubectl patch pod NAME --subresource resize` with the app container's new resources.
fn resize(k: &Kubectl, name: &str, resources: &Value) -> Result<()> {
    let patch = json!({"spec": {"containers": [{"name": "app", "resources": resources}]}});
    k.run(&[
        "patch",
        "pod",
        name,
        "--subresource",
        "resize",
        "-p",
        &patch.to_string(),
    ])?;
    Ok(())
}

/// Waits until the pod's status says its running container has `want` (resources and
/// allocatedResources) and no resize is pending or in progress.
fn wait_resized(k: &Kubectl, name: &str, want: &Value) -> Result<Value> {
    until(
        &format!("pod {name} to be resized"),
        Duration::from_secs(90),
        || {
            let p = k.get_json(&["pod", name])?;
            let s = &p["status"]["containerStatuses"][0];
            let resizing = p["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| {
                    c["type"]
                        .as_str()
                        .is_some_and(|t| t.starts_with("PodResize"))
                });
            let done = s["state"]["running"].is_object()
                && &s["resources"] == want
                && s["allocatedResources"] == want["requests"]
                && !resizing;
            if done {
                return Ok(Some(p));
            }
            bail!("status {s}, conditions {}", p["status"]["conditions"])
        },
    )
}

/// The messages of the pod's events with `reason`.
fn pod_events(k: &Kubectl, pod: &str, reason: &str) -> Result<Vec<String>> {
    let selector = format!("involvedObject.name={pod},reason={reason}");
    let events = k.get_json(&["events", "--field-selector", &selector])?;
    Ok(events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["message"].as_str().map(String::from))
        .collect())
}

/// `kubepods`: cpu.shares of the allocatable CPU, memory and pids limited to capacity
/// minus systemReserved.
fn node_allocatable_cgroup_is_capacity_minus_reserved(
    k: &Kubectl,
    cg: &Cgroups,
    node: &str,
) -> Result<()> {
    let n = k.get_json(&["node", node])?;
    let cpu_capacity = milli(n["status"]["capacity"]["cpu"].as_str().unwrap_or_default())?;
    let memory_capacity = bytes(
        n["status"]["capacity"]["memory"]
            .as_str()
            .unwrap_or_default(),
    )?;
    let want_shares = (cpu_capacity - RESERVED_CPU_MILLI) * 1024 / 1000;
    let shares: i64 = cg.read("cpu", "kubepods", "cpu.shares")?.parse()?;
    ensure!(
        shares == want_shares,
        "kubepods cpu.shares {shares}, want {want_shares}"
    );
    // The kernel keeps memory limits in whole pages.
    let want_memory = (memory_capacity - RESERVED_MEMORY) / 4096 * 4096;
    let memory: i64 = cg
        .read("memory", "kubepods", "memory.limit_in_bytes")?
        .parse()?;
    ensure!(
        memory == want_memory,
        "kubepods memory.limit_in_bytes {memory}, want {want_memory}"
    );
    let read = |p: &str| -> Result<i64> { Ok(std::fs::read_to_string(p)?.trim().parse()?) };
    let want_pids = read("/proc/sys/kernel/pid_max")?.min(read("/proc/sys/kernel/threads-max")?);
    let pids: i64 = cg.read("pids", "kubepods", "pids.max")?.parse()?;
    ensure!(
        pids == want_pids,
        "kubepods pids.max {pids}, want {want_pids}"
    );
    let got = cg.read("cpu", "kubepods/besteffort", "cpu.shares")?;
    ensure!(
        got == "2",
        "besteffort cpu.shares {got}, want 2 (MinShares)"
    );
    // The Node's allocatable (what the scheduler fits pods into) also keeps the hard
    // eviction threshold back: the bed's evictionHard memory.available.
    let hard_memory = bytes(gantry_e2e::reference_node::EVICTION_HARD_MEMORY)?;
    let allocatable_cpu = milli(
        n["status"]["allocatable"]["cpu"]
            .as_str()
            .unwrap_or_default(),
    )?;
    let allocatable_memory = bytes(
        n["status"]["allocatable"]["memory"]
            .as_str()
            .unwrap_or_default(),
    )?;
    let want_memory = (memory_capacity - RESERVED_MEMORY - hard_memory) / 1024 * 1024;
    ensure!(
        allocatable_cpu == cpu_capacity - RESERVED_CPU_MILLI
            && allocatable_memory == want_memory,
        "Node allocatable cpu {allocatable_cpu}m memory {allocatable_memory}, want {}m and {want_memory}",
        cpu_capacity - RESERVED_CPU_MILLI
    );
    Ok(())
}

/// The pod cgroup's settings from the pod's totals, and each container's below it.
fn pod_cgroup_matches_its_spec(cg: &Cgroups, pod: &Value) -> Result<()> {
    let qos = pod["status"]["qosClass"].as_str().unwrap_or_default();
    let pod_cgroup = cg.pod_cgroup(pod);
    let totals = PodTotals::of(pod)?;
    let shares: i64 = cg.read("cpu", &pod_cgroup, "cpu.shares")?.parse()?;
    let quota: i64 = cg.read("cpu", &pod_cgroup, "cpu.cfs_quota_us")?.parse()?;
    let memory: i64 = cg
        .read("memory", &pod_cgroup, "memory.limit_in_bytes")?
        .parse()?;
    let pids = cg.read("pids", &pod_cgroup, "pids.max")?;
    let unlimited_memory: i64 = cg.read("memory", "", "memory.limit_in_bytes")?.parse()?;
    let (want_shares, want_quota, want_memory) = match qos {
        "BestEffort" => (2, -1, unlimited_memory),
        _ => (
            totals.cpu_request * 1024 / 1000,
            totals.cpu_limit.map_or(-1, |l| l * 100_000 / 1000),
            totals.memory_limit.unwrap_or(unlimited_memory),
        ),
    };
    ensure!(
        shares == want_shares,
        "{qos} pod cpu.shares {shares}, want {want_shares}"
    );
    ensure!(
        quota == want_quota,
        "{qos} pod cpu.cfs_quota_us {quota}, want {want_quota}"
    );
    ensure!(
        memory == want_memory,
        "{qos} pod memory.limit_in_bytes {memory}, want {want_memory}"
    );
    ensure!(
        pids == PIDS_LIMIT.to_string(),
        "{qos} pod pids.max {pids}, want {PIDS_LIMIT}"
    );

    // The running container's cgroup is inside the pod's.
    for (spec, status) in containers_with_status(pod) {
        let id = status["containerID"].as_str().unwrap_or_default();
        let id = id.split("://").nth(1).context("containerID")?;
        let dir = format!("{pod_cgroup}/{id}");
        let r = &spec["resources"];
        let request = r["requests"]["cpu"].as_str().map(milli).transpose()?;
        let limit = r["limits"]["cpu"].as_str().map(milli).transpose()?;
        let want_shares = request.or(limit).map_or(2, |m| m * 1024 / 1000);
        let shares: i64 = cg.read("cpu", &dir, "cpu.shares")?.parse()?;
        ensure!(
            shares == want_shares,
            "container cpu.shares {shares}, want {want_shares}"
        );
        let want_quota = limit.map_or(-1, |l| l * 100_000 / 1000);
        let quota: i64 = cg.read("cpu", &dir, "cpu.cfs_quota_us")?.parse()?;
        ensure!(
            quota == want_quota,
            "container cpu.cfs_quota_us {quota}, want {want_quota}"
        );
        let want_memory = match r["limits"]["memory"].as_str() {
            Some(m) => bytes(m)?,
            None => unlimited_memory,
        };
        let memory: i64 = cg.read("memory", &dir, "memory.limit_in_bytes")?.parse()?;
        ensure!(
            memory == want_memory,
            "container memory.limit_in_bytes {memory}, want {want_memory}"
        );
    }
    Ok(())
}

/// The Burstable QoS cgroup's shares follow the CPU requests of its pods.
fn burstable_qos_shares_are_the_sum_of_requests(k: &Kubectl, cg: &Cgroups) -> Result<()> {
    let pods = k.get_json(&["pods"])?;
    let mut sum = 0;
    for p in pods["items"].as_array().into_iter().flatten() {
        if p["status"]["qosClass"] == "Burstable" {
            sum += PodTotals::of(p)?.cpu_request;
        }
    }
    let want = (sum * 1024 / 1000).max(2);
    let shares: i64 = cg
        .read("cpu", "kubepods/burstable", "cpu.shares")?
        .parse()?;
    ensure!(
        shares == want,
        "burstable cpu.shares {shares}, want {want} (requests {sum}m)"
    );
    Ok(())
}

/// A pod forking sleeps without end reaches podPidsLimit and no further: its shell
/// says "can't fork" after fewer than podPidsLimit processes (busybox sh then exits,
/// and the container restarts); the node still starts other pods meanwhile.
fn fork_bomb_stays_within_pods_limit(k: &Kubectl, cg: &Cgroups, node: &str) -> Result<()> {
    let bomb = shell_pod(
        "forkbomb",
        node,
        json!({}),
        "n=0; while true; do sleep 3600 & n=$((n+1)); echo forked $n; done",
    );
    k.apply_yaml(&bomb.to_string())?;
    let pod = until(
        "the fork bomb's pod to exist",
        Duration::from_secs(60),
        || {
            let p = k.get_json(&["pod", "forkbomb"])?;
            Ok(p["status"]["qosClass"].is_string().then_some(p))
        },
    )?;
    let pod_cgroup = cg.pod_cgroup(&pod);
    let max = cg.read("pids", &pod_cgroup, "pids.max")?;
    ensure!(
        max == PIDS_LIMIT.to_string(),
        "the fork bomb's pod cgroup has pids.max {max}, want podPidsLimit {PIDS_LIMIT}"
    );
    until(
        "the fork bomb to stop at the limit and restart",
        Duration::from_secs(90),
        || {
            let p = k.get_json(&["pod", "forkbomb"])?;
            let restarts = p["status"]["containerStatuses"][0]["restartCount"].as_i64();
            Ok((restarts.unwrap_or(0) >= 1).then_some(()))
        },
    )?;
    let log = k.run(&["logs", "forkbomb", "--previous"])?;
    ensure!(
        log.contains("can't fork"),
        "the bomb's log does not say a fork was refused:\n{log}"
    );
    let forked = log
        .lines()
        .filter_map(|l| l.strip_prefix("forked ")?.trim().parse::<i64>().ok())
        .max()
        .unwrap_or(0);
    // The shell and the sleeps it forked: within the limit, and near it (the limit,
    // not something else, stopped the bomb).
    ensure!(
        forked < PIDS_LIMIT && forked + 4 >= PIDS_LIMIT,
        "the bomb forked {forked} sleeps; podPidsLimit is {PIDS_LIMIT}"
    );
    // The node still runs new pods while the bomb goes on.
    k.apply_yaml(&pod_manifest("after-bomb", node, json!([]), json!({})).to_string())?;
    wait_running(k, "after-bomb")?;
    k.run(&[
        "delete",
        "pod",
        "forkbomb",
        "after-bomb",
        "--wait=true",
        "--timeout=120s",
    ])?;
    Ok(())
}

/// A container allocating far beyond its 32Mi limit: OOMKilled, exit code 137, and
/// restarted again and again.
fn memory_hog_is_oom_killed_and_restarted(k: &Kubectl, node: &str) -> Result<()> {
    let hog = shell_pod(
        "hog",
        node,
        resources("100m", "100m", "32Mi", "32Mi"),
        "x=0123456789abcdef; while true; do x=\"$x$x\"; done",
    );
    k.apply_yaml(&hog.to_string())?;
    let seen = until(
        "the hog to be OOMKilled and restarted twice",
        Duration::from_secs(150),
        || {
            let p = k.get_json(&["pod", "hog"])?;
            let s = &p["status"]["containerStatuses"][0];
            let restarts = s["restartCount"].as_i64().unwrap_or(0);
            let last = &s["lastState"]["terminated"];
            if restarts >= 2 && last["reason"] == "OOMKilled" {
                return Ok(Some(last.clone()));
            }
            bail!("restartCount {restarts}, lastState {last}")
        },
    );
    let last = match seen {
        Ok(l) => l,
        Err(e) => {
            // The last observation is in the error; keep the pod's events too.
            let events = k.run(&[
                "get",
                "events",
                "--field-selector",
                "involvedObject.name=hog",
            ])?;
            bail!("{e:#}\nevents:\n{events}");
        }
    };
    ensure!(
        last["exitCode"] == 137,
        "OOMKilled exit code {}, want 137",
        last["exitCode"]
    );
    k.run(&["delete", "pod", "hog", "--wait=true", "--timeout=120s"])?;
    Ok(())
}

struct Cgroups {
    /// The node's cgroupRoot ("/gantry-e2e-…").
    root: String,
}

impl Cgroups {
    fn path(&self, controller: &str, rel: &str, file: &str) -> PathBuf {
        let mut p = PathBuf::from("/sys/fs/cgroup").join(controller);
        if !rel.is_empty() {
            p = p.join(self.root.trim_start_matches('/')).join(rel);
        }
        p.join(file)
    }

    fn read(&self, controller: &str, rel: &str, file: &str) -> Result<String> {
        let p = self.path(controller, rel, file);
        Ok(std::fs::read_to_string(&p)
            .with_context(|| format!("read {}", p.display()))?
            .trim()
            .to_string())
    }

    /// `kubepods[/burstable|/besteffort]/pod<uid>` from the API's QoS class and UID.
    fn pod_cgroup(&self, pod: &Value) -> String {
        let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
        match pod["status"]["qosClass"].as_str() {
            Some("Burstable") => format!("kubepods/burstable/pod{uid}"),
            Some("BestEffort") => format!("kubepods/besteffort/pod{uid}"),
            _ => format!("kubepods/pod{uid}"),
        }
    }

    /// The pod's cgroup directory in every hierarchy mounted on the host.
    fn pod_dirs(&self, pod: &Value) -> Vec<PathBuf> {
        let rel = self.pod_cgroup(pod);
        gantry_e2e::host::cgroup_mounts()
            .into_iter()
            .map(|m| m.join(self.root.trim_start_matches('/')).join(&rel))
            .collect()
    }
}

/// The pod's CPU request, CPU and memory limits as the kubelet sizes a pod cgroup
/// (no sidecars in these pods): the larger of the app containers' sum and the largest
/// init container. A limit is None unless every container has one.
struct PodTotals {
    cpu_request: i64,
    cpu_limit: Option<i64>,
    memory_limit: Option<i64>,
}

impl PodTotals {
    fn of(pod: &Value) -> Result<PodTotals> {
        let spec = &pod["spec"];
        let list = |key: &str| spec[key].as_array().cloned().unwrap_or_default();
        let (apps, inits) = (list("containers"), list("initContainers"));
        let get = |c: &Value, kind: &str, res: &str, parse: fn(&str) -> Result<i64>| {
            c["resources"][kind][res].as_str().map(parse).transpose()
        };
        let total =
            |kind: &str, res: &str, parse: fn(&str) -> Result<i64>| -> Result<Option<i64>> {
                let mut sum = Some(0);
                for c in &apps {
                    sum = match (sum, get(c, kind, res, parse)?) {
                        (Some(s), Some(v)) => Some(s + v),
                        _ if kind == "requests" => sum,
                        _ => None,
                    };
                }
                for c in &inits {
                    let v = get(c, kind, res, parse)?;
                    sum = match (sum, v) {
                        (Some(s), Some(v)) => Some(s.max(v)),
                        _ if kind == "requests" => sum,
                        _ => None,
                    };
                }
                Ok(sum)
            };
        Ok(PodTotals {
            cpu_request: total("requests", "cpu", milli)?.unwrap_or(0),
            cpu_limit: total("limits", "cpu", milli)?,
            memory_limit: total("limits", "memory", bytes)?,
        })
    }
}

fn containers_with_status(pod: &Value) -> Vec<(Value, Value)> {
    let statuses = pod["status"]["containerStatuses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| {
            let s = statuses.iter().find(|s| s["name"] == c["name"])?;
            Some((c.clone(), s.clone()))
        })
        .collect()
}

fn resources(cpu_req: &str, cpu_lim: &str, mem_req: &str, mem_lim: &str) -> Value {
    json!({"requests": {"cpu": cpu_req, "memory": mem_req}, "limits": {"cpu": cpu_lim, "memory": mem_lim}})
}

fn pod_manifest(name: &str, node: &str, init: Value, resources: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 1,
            "initContainers": init,
            "containers": [{
                "name": "app",
                "image": BUSYBOX,
                "command": ["sleep", "3600"],
                "resources": resources,
            }],
        },
    })
}

/// A one-container pod (no init containers) whose app runs `script` in busybox sh.
fn shell_pod(name: &str, node: &str, resources: Value, script: &str) -> Value {
    let mut pod = pod_manifest(name, node, json!([]), resources);
    pod["spec"]["containers"][0]["command"] = json!(["sh", "-c", script]);
    pod
}

fn wait_running(k: &Kubectl, name: &str) -> Result<Value> {
    until(
        &format!("pod {name} to run"),
        Duration::from_secs(120),
        || {
            let p = k.get_json(&["pod", name])?;
            let running = p["status"]["containerStatuses"]
                .as_array()
                .is_some_and(|s| {
                    !s.is_empty() && s.iter().all(|c| c["state"]["running"].is_object())
                });
            if running {
                return Ok(Some(p));
            }
            bail!(
                "phase {}, containers {}",
                p["status"]["phase"],
                p["status"]["containerStatuses"]
            )
        },
    )
}
