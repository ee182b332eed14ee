//! Stats and metrics of `gantry node` on its embedded CRI, checked against what the
//! kernel says: /stats/summary and /metrics/resource against the containers' cgroup
//! files, an emptyDir's volume entry against statfs and the bytes the test wrote, and
//! /metrics' counters against the pods the test started.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use gantry_e2e::gantry_node::{self, GantryNode, NodeRuntime};
use gantry_e2e::kubectl::Kubectl;
use gantry_e2e::prom::sample;
use gantry_e2e::{wait, Bed, BedOptions};
use serde_json::{json, Value};

const BUSYBOX: &str = "registry.k8s.io/e2e-test-images/busybox:1.29-2";
/// What the memory pod holds in its /dev/shm (tmpfs pages are charged to the writer's
/// memory cgroup and sit on the anon LRU, so they count in the working set).
const HELD: u64 = 48 << 20;
/// What the test writes into the emptyDir.
const WRITTEN: u64 = 5 << 20;

#[test]
fn stats_and_metrics_agree_with_the_kernel() -> Result<()> {
    let mut bed = Bed::start(&BedOptions::named("metrics-stats"))?;
    // Volume usage walked every 2 s instead of upstream's 1 min, so the test's write
    // shows up soon.
    let node = gantry_node::start_tuned(&mut bed, "stats", NodeRuntime::Embedded, &|c| {
        c["volumeStatsAggPeriod"] = json!("2s");
    })?;
    let result = checks(&bed, &node);
    node.explain(result)?;
    bed.teardown()?;
    Ok(())
}

fn checks(bed: &Bed, node: &GantryNode) -> Result<()> {
    let k = bed.kubectl()?;
    let before = metrics(&k, &node.name)?;
    let pods = start_pods(&k, &node.name)?;
    cpu_matches_cpuacct(&k, node)?;
    memory_matches_the_memory_cgroup(&k, node)?;
    empty_dir_volume_is_reported(&k, node)?;
    metrics_count_what_happened(&k, node, &before, pods)?;
    Ok(())
}

fn pod_yaml(node: &str, name: &str, script: &str, volumes: &str, mounts: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: default
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {BUSYBOX}
    command: ["sh", "-c", {script:?}]
{mounts}
{volumes}
"#
    )
}

/// Three pods: one burning CPU, one holding HELD bytes, one with an emptyDir. Returns
/// how many pods it started.
fn start_pods(k: &Kubectl, node: &str) -> Result<usize> {
    let pods = [
        pod_yaml(node, "burn", "while :; do :; done", "", ""),
        pod_yaml(
            node,
            "hold",
            &format!("head -c {HELD} /dev/zero > /dev/shm/held && sleep 3600"),
            "",
            "",
        ),
        pod_yaml(
            node,
            "scratch",
            "sleep 3600",
            "  volumes:\n  - name: data\n    emptyDir: {}",
            "    volumeMounts:\n    - name: data\n      mountPath: /data",
        ),
    ];
    for p in &pods {
        k.apply_yaml(p)?;
    }
    for name in ["burn", "hold", "scratch"] {
        k.run(&[
            "wait",
            "--for=condition=Ready",
            &format!("pod/{name}"),
            "--timeout=180s",
        ])?;
    }
    // The memory pod has written what it holds once its file has the full size.
    wait::until(
        "hold to fill /dev/shm/held",
        Duration::from_secs(60),
        || {
            let out = k.run(&["exec", "hold", "--", "wc", "-c", "/dev/shm/held"])?;
            Ok((out.split_whitespace().next() == Some(&HELD.to_string())).then_some(()))
        },
    )?;
    Ok(pods.len())
}

fn raw(k: &Kubectl, node: &str, path: &str) -> Result<String> {
    k.run(&[
        "get",
        "--raw",
        &format!("/api/v1/nodes/{node}/proxy/{path}"),
    ])
}

fn summary(k: &Kubectl, node: &str) -> Result<Value> {
    Ok(serde_json::from_str(&raw(k, node, "stats/summary")?)?)
}

fn metrics(k: &Kubectl, node: &str) -> Result<String> {
    raw(k, node, "metrics")
}

fn pod_in<'a>(summary: &'a Value, name: &str) -> Result<&'a Value> {
    summary["pods"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["podRef"]["name"] == name)
        .with_context(|| format!("no pod {name} in /stats/summary: {}", summary["pods"]))
}

/// The host directories of the `main` container's cpuacct and memory cgroups, from
/// /proc/<pid>/cgroup of its process (crictl inspect gives the pid).
fn container_cgroups(node: &GantryNode, pod: &str) -> Result<(PathBuf, PathBuf)> {
    let out = node
        .crictl()?
        .args([
            "ps",
            "--pod",
            &sandbox_id(node, pod)?,
            "--name",
            "main",
            "-q",
        ])
        .output()?;
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    ensure!(!id.is_empty(), "no container main of {pod} in crictl ps");
    let out = node.crictl()?.args(["inspect", &id]).output()?;
    let info: Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "crictl inspect {id}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    let pid = info["info"]["pid"]
        .as_u64()
        .with_context(|| format!("no pid in crictl inspect {id}"))?;
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    let mut cpu = None;
    let mut mem = None;
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next(), parts.next(), parts.next());
        let (Some(controllers), Some(path)) = (controllers, path) else {
            continue;
        };
        let rel = path.trim_start_matches('/');
        if controllers.split(',').any(|c| c == "cpuacct") {
            cpu = Some(Path::new("/sys/fs/cgroup/cpuacct").join(rel));
        }
        if controllers == "memory" {
            mem = Some(Path::new("/sys/fs/cgroup/memory").join(rel));
        }
    }
    match (cpu, mem) {
        (Some(c), Some(m)) => Ok((c, m)),
        _ => bail!("no cpuacct or memory cgroup for pid {pid}:\n{cgroups}"),
    }
}

fn sandbox_id(node: &GantryNode, pod: &str) -> Result<String> {
    let out = node
        .crictl()?
        .args([
            "pods",
            "--name",
            pod,
            "--namespace",
            "default",
            "--state",
            "Ready",
            "-q",
        ])
        .output()?;
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    ensure!(!id.is_empty(), "no ready sandbox for {pod}");
    Ok(id)
}

fn read_u64(path: &Path) -> Result<u64> {
    let s = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    s.trim()
        .parse()
        .with_context(|| format!("{}: {s:?}", path.display()))
}

/// The burning container's usageCoreNanoSeconds in the summary (and its
/// container_cpu_usage_seconds_total in /metrics/resource) lies between cpuacct.usage
/// read just before and just after the fetch: the summary reads that very file.
fn cpu_matches_cpuacct(k: &Kubectl, node: &GantryNode) -> Result<()> {
    let (cpu, _) = container_cgroups(node, "burn")?;
    let usage = cpu.join("cpuacct.usage");
    let before = read_u64(&usage)?;
    let s = summary(k, &node.name)?;
    let after = read_u64(&usage)?;
    ensure!(after > before, "burn uses no CPU: {before} then {after}");
    let burn = pod_in(&s, "burn")?;
    let got = burn["containers"][0]["cpu"]["usageCoreNanoSeconds"]
        .as_u64()
        .with_context(|| format!("no usageCoreNanoSeconds: {}", burn["containers"]))?;
    ensure!(
        before <= got && got <= after,
        "usageCoreNanoSeconds {got} not within cpuacct.usage {before}..{after}"
    );

    let before = read_u64(&usage)?;
    let text = raw(k, &node.name, "metrics/resource")?;
    let after = read_u64(&usage)?;
    let secs = sample(
        &text,
        "container_cpu_usage_seconds_total",
        &[
            ("container", "main"),
            ("namespace", "default"),
            ("pod", "burn"),
        ],
    )
    .with_context(|| format!("no container_cpu_usage_seconds_total for burn:\n{text}"))?;
    // Seconds printed as a float: allow a microsecond of rounding either way.
    let ns = secs * 1e9;
    ensure!(
        before as f64 - 1e3 <= ns && ns <= after as f64 + 1e3,
        "container_cpu_usage_seconds_total {secs} not within cpuacct.usage {before}..{after} ns"
    );
    Ok(())
}

/// usage_in_bytes − total_inactive_file of the memory cgroup, as cAdvisor computes the
/// working set.
fn working_set(mem: &Path) -> Result<u64> {
    let usage = read_u64(&mem.join("memory.usage_in_bytes"))?;
    let stat = std::fs::read_to_string(mem.join("memory.stat"))?;
    let inactive = stat
        .lines()
        .find_map(|l| l.strip_prefix("total_inactive_file "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    Ok(usage.saturating_sub(inactive))
}

/// The holding container's workingSetBytes agrees with its memory cgroup. The summary
/// and the test read the cgroup at different moments, so they may differ by what an
/// idle `sleep` and the kernel's per-cgroup bookkeeping change in between: the check
/// brackets the summary between readings before and after and allows 4 MiB beyond
/// them, a small fraction of the 48 MiB the pod holds (which must be in it).
fn memory_matches_the_memory_cgroup(k: &Kubectl, node: &GantryNode) -> Result<()> {
    const SLACK: u64 = 4 << 20;
    let (_, mem) = container_cgroups(node, "hold")?;
    let before = working_set(&mem)?;
    let s = summary(k, &node.name)?;
    let after = working_set(&mem)?;
    let hold = pod_in(&s, "hold")?;
    let got = hold["containers"][0]["memory"]["workingSetBytes"]
        .as_u64()
        .with_context(|| format!("no workingSetBytes: {}", hold["containers"]))?;
    let (lo, hi) = (before.min(after), before.max(after));
    ensure!(
        lo.saturating_sub(SLACK) <= got && got <= hi + SLACK,
        "workingSetBytes {got} vs the cgroup's {before} (before) and {after} (after)"
    );
    ensure!(got >= HELD, "workingSetBytes {got} < the {HELD} bytes held");

    let before = working_set(&mem)?;
    let text = raw(k, &node.name, "metrics/resource")?;
    let after = working_set(&mem)?;
    let v = sample(
        &text,
        "container_memory_working_set_bytes",
        &[
            ("container", "main"),
            ("namespace", "default"),
            ("pod", "hold"),
        ],
    )
    .with_context(|| format!("no container_memory_working_set_bytes for hold:\n{text}"))?;
    let (lo, hi) = (before.min(after), before.max(after));
    ensure!(
        (lo.saturating_sub(SLACK) as f64) <= v && v <= (hi + SLACK) as f64,
        "container_memory_working_set_bytes {v} vs the cgroup's {before}..{after}"
    );
    Ok(())
}

/// After the test writes WRITTEN bytes into the emptyDir, the pod's volume entry shows
/// at least that much used; capacity and inodes are the filesystem's (statfs of the
/// volume's host directory, which do not change), and available/free inodes lie
/// between statfs readings taken around the fetch (other work on the machine writes to
/// the same filesystem meanwhile), with 64 MiB / 1024 inodes of slack for the
/// moment between a reading and the node's own statfs.
fn empty_dir_volume_is_reported(k: &Kubectl, node: &GantryNode) -> Result<()> {
    k.run(&[
        "exec",
        "scratch",
        "--",
        "sh",
        "-c",
        &format!("head -c {WRITTEN} /dev/zero > /data/blob && sync"),
    ])?;
    let uid = k.get_json(&["pod", "scratch"])?["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let dir = node
        .dir
        .join("root/pods")
        .join(&uid)
        .join("volumes/kubernetes.io~empty-dir/data");
    ensure!(dir.is_dir(), "no volume directory {}", dir.display());
    let (volume, st_before, st_after) = wait::until(
        "the emptyDir's usage to include the written bytes",
        Duration::from_secs(90),
        || {
            let st_before = statfs(&dir)?;
            let s = summary(k, &node.name)?;
            let st_after = statfs(&dir)?;
            let pod = pod_in(&s, "scratch")?;
            let Some(v) = pod["volume"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|v| v["name"] == "data")
            else {
                bail!("no volume data in {pod}");
            };
            let used = v["usedBytes"].as_u64().unwrap_or(0);
            Ok((used >= WRITTEN).then(|| (v.clone(), st_before, st_after)))
        },
    )?;
    let capacity = st_before.capacity;
    ensure!(
        volume["capacityBytes"].as_u64() == Some(capacity),
        "capacityBytes {} vs statfs {capacity}",
        volume["capacityBytes"]
    );
    ensure!(
        volume["inodes"].as_u64() == Some(st_before.inodes),
        "inodes {} vs statfs {}",
        volume["inodes"],
        st_before.inodes
    );
    let (a, b) = (st_before.available, st_after.available);
    let got = volume["availableBytes"].as_u64().unwrap_or(0);
    ensure!(
        a.min(b).saturating_sub(64 << 20) <= got && got <= a.max(b) + (64 << 20),
        "availableBytes {got} vs statfs {a}..{b}"
    );
    let (a, b) = (st_before.inodes_free, st_after.inodes_free);
    let got = volume["inodesFree"].as_u64().unwrap_or(0);
    ensure!(
        a.min(b).saturating_sub(1024) <= got && got <= a.max(b) + 1024,
        "inodesFree {got} vs statfs {a}..{b}"
    );
    ensure!(
        volume["inodesUsed"].as_u64().unwrap_or(0) >= 2,
        "inodesUsed: the directory and the blob: {volume}"
    );
    ensure!(
        volume.get("pvcRef").is_none(),
        "an emptyDir has no pvcRef: {volume}"
    );
    Ok(())
}

struct Statfs {
    capacity: u64,
    available: u64,
    inodes: u64,
    inodes_free: u64,
}

/// statvfs(2) of `path`, as `df` and `df -i` read it.
fn statfs(path: &Path) -> Result<Statfs> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a NUL-terminated path and st a properly sized out-parameter.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        bail!(
            "statvfs {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    let frag = st.f_frsize as u64;
    Ok(Statfs {
        capacity: st.f_blocks as u64 * frag,
        available: st.f_bavail as u64 * frag,
        inodes: st.f_files as u64,
        inodes_free: st.f_ffree as u64,
    })
}

/// /metrics after the pods started: the running-pod gauge equals the pods on the node,
/// every started pod was observed once in the pod start histogram, the kubelet
/// counted its RunPodSandbox calls, and the CRI counted its calls and an error the test
/// caused (crictl inspect of an unknown container: NotFound).
fn metrics_count_what_happened(
    k: &Kubectl,
    node: &GantryNode,
    before: &str,
    started: usize,
) -> Result<()> {
    let out = node
        .crictl()?
        .args(["inspect", "no-such-container"])
        .output()?;
    ensure!(!out.status.success(), "crictl inspect of nothing succeeded");
    let after = metrics(k, &node.name)?;
    let get =
        |text: &str, name: &str, labels: &[(&str, &str)]| sample(text, name, labels).unwrap_or(0.0);
    let on_node = k.get_json(&[
        "pods",
        "-A",
        "--field-selector",
        &format!("spec.nodeName={},status.phase=Running", node.name),
    ])?["items"]
        .as_array()
        .map_or(0, |a| a.len());
    let running = sample(&after, "kubelet_running_pods", &[])
        .with_context(|| format!("no kubelet_running_pods:\n{after}"))?;
    ensure!(
        running == on_node as f64,
        "kubelet_running_pods {running}, {on_node} running pods on the node"
    );
    let starts = get(&after, "kubelet_pod_start_duration_seconds_count", &[])
        - get(before, "kubelet_pod_start_duration_seconds_count", &[]);
    ensure!(
        starts == started as f64,
        "kubelet_pod_start_duration_seconds_count grew by {starts}, {started} pods started"
    );
    let sandboxes = |t: &str| {
        get(
            t,
            "kubelet_runtime_operations_total",
            &[("operation_type", "run_podsandbox")],
        )
    };
    ensure!(
        sandboxes(&after) - sandboxes(before) >= started as f64,
        "kubelet_runtime_operations_total{{operation_type=\"run_podsandbox\"}} grew by {}",
        sandboxes(&after) - sandboxes(before)
    );
    let started_pods = get(&after, "kubelet_started_pods_total", &[])
        - get(before, "kubelet_started_pods_total", &[]);
    ensure!(
        started_pods == started as f64,
        "kubelet_started_pods_total grew by {started_pods}, {started} pods started"
    );
    ensure!(
        get(&after, "kubelet_node_name", &[("node", &node.name)]) == 1.0,
        "kubelet_node_name{{node={:?}}} is not 1",
        node.name
    );
    let cri = |t: &str| {
        get(
            t,
            "gantry_cri_operations_total",
            &[("operation_type", "run_podsandbox")],
        )
    };
    ensure!(
        cri(&after) - cri(before) >= started as f64,
        "gantry_cri_operations_total{{operation_type=\"run_podsandbox\"}} grew by {}",
        cri(&after) - cri(before)
    );
    let not_found = |t: &str| {
        get(
            t,
            "gantry_cri_operations_errors_total",
            &[("operation_type", "container_status"), ("code", "NotFound")],
        )
    };
    ensure!(
        not_found(&after) > not_found(before),
        "the NotFound from crictl inspect is not counted:\n{}",
        after
            .lines()
            .filter(|l| l.starts_with("gantry_cri_operations_errors_total"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    for family in [
        "process_resident_memory_bytes",
        "process_start_time_seconds",
    ] {
        ensure!(
            sample(&after, family, &[]).is_some_and(|v| v > 0.0),
            "no {family} in /metrics"
        );
    }
    // The prometheus crate counts whole CPU seconds: a young agent may show 0.
    ensure!(
        sample(&after, "process_cpu_seconds_total", &[]).is_some(),
        "no process_cpu_seconds_total in /metrics"
    );
    Ok(())
}
