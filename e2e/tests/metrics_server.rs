//! `kubectl top` on a Gantry node: metrics-server, built from its Go module and deployed
//! with manifests/demo/metrics-server.yaml, reads the node's /metrics/resource with its
//! ServiceAccount token (Gantry checks it with TokenReview and SubjectAccessReview), and
//! the apiserver's aggregation layer serves metrics.k8s.io to kubectl.

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use gantry_e2e::gantry_node::{self, GantryNode, NodeRuntime};
use gantry_e2e::kubectl::Kubectl;
use gantry_e2e::prom::sample;
use gantry_e2e::quantity::{bytes, milli};
use gantry_e2e::{paths, wait, Bed, BedOptions};

/// What the memory pod writes into its memory-backed emptyDir and then holds.
const HELD_MIB: u64 = 64;
const MIB: f64 = 1024.0 * 1024.0;

fn workloads() -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: memory-hog
spec:
  terminationGracePeriodSeconds: 1
  volumes:
    - name: hold
      emptyDir:
        medium: Memory
        sizeLimit: 128Mi
  containers:
    - name: hold
      image: registry.k8s.io/e2e-test-images/busybox:1.29-2
      command: ["sh", "-c", "dd if=/dev/zero of=/hold/fill bs=1048576 count={HELD_MIB} && exec sleep 100000"]
      volumeMounts:
        - name: hold
          mountPath: /hold
---
apiVersion: v1
kind: Pod
metadata:
  name: cpu-burner
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - name: burn
      image: registry.k8s.io/e2e-test-images/busybox:1.29-2
      command: ["sh", "-c", "while :; do :; done"]
      # A tenth of a core: visible to metrics-server, gentle on a shared machine.
      resources:
        limits:
          cpu: 100m
"#
    )
}

#[test]
fn kubectl_top_shows_gantry_node_and_pod_usage_from_metrics_server() -> Result<()> {
    let mut bed = Bed::start(&BedOptions::named("mserver-top"))?;
    let node = gantry_node::start(&mut bed, "gantry", NodeRuntime::Embedded)?;
    let result = top_checks(&bed, &node);
    node.explain(result.map_err(|e| explain_metrics_server(&bed, e)))?;
    bed.teardown()?;
    Ok(())
}

fn top_checks(bed: &Bed, node: &GantryNode) -> Result<()> {
    let k = bed.kubectl()?;
    let manifest = paths::repo_root().join("manifests/demo/metrics-server.yaml");
    k.run(&["apply", "-f", &manifest.to_string_lossy()])?;
    k.apply_yaml(&workloads())?;
    for pod in ["memory-hog", "cpu-burner"] {
        k.run(&[
            "wait",
            "--for=condition=Ready",
            "--timeout=120s",
            "pod",
            pod,
        ])?;
    }
    k.run(&[
        "wait",
        "--for=condition=Available",
        "--timeout=180s",
        "-n",
        "kube-system",
        "deployment/metrics-server",
    ])?;
    k.run(&[
        "wait",
        "--for=condition=Available",
        "--timeout=120s",
        "apiservice/v1beta1.metrics.k8s.io",
    ])?;

    // kubectl top node: the Gantry node, with CPU and memory in use.
    let (cpu, memory) = wait::until(
        "kubectl top node to list the gantry node",
        Duration::from_secs(120),
        || {
            let out = k.run(&["top", "node", "--no-headers"])?;
            Ok(top_row(&out, &node.name, 3))
        },
    )?;
    let (cpu_m, memory_b) = (milli(&cpu)?, bytes(&memory)?);
    ensure!(
        cpu_m > 0 && memory_b > 0,
        "kubectl top node shows no usage for {}: cpu {cpu}, memory {memory}",
        node.name
    );

    // kubectl top pod: the memory pod at least at what it holds, the burner using CPU.
    // metrics-server reports a pod once it has two CPU samples (a rate) for it.
    let rows = wait::until(
        "kubectl top pod to list memory-hog and cpu-burner with usage",
        Duration::from_secs(120),
        || {
            let out = k.run(&["top", "pod", "--no-headers"])?;
            let hog = top_row(&out, "memory-hog", 2);
            let burner = top_row(&out, "cpu-burner", 2);
            match (hog, burner) {
                (Some(h), Some(b)) if milli(&b.0)? > 0 => Ok(Some((h, b))),
                _ => bail!("kubectl top pod:\n{out}"),
            }
        },
    )?;
    let ((_, hog_memory), (burner_cpu, _)) = rows;
    let hog_bytes = bytes(&hog_memory)? as f64;
    ensure!(
        hog_bytes >= (HELD_MIB as f64) * MIB,
        "kubectl top pod shows memory-hog at {hog_memory}, below the {HELD_MIB}Mi it holds"
    );
    ensure!(milli(&burner_cpu)? > 0, "cpu-burner at {burner_cpu}");

    // The same number at its source: the node's /metrics/resource, whose container
    // series metrics-server sums into a pod's usage.
    let raw = k.run(&[
        "get",
        "--raw",
        &format!("/api/v1/nodes/{}/proxy/metrics/resource", node.name),
    ])?;
    let source = sample(
        &raw,
        "container_memory_working_set_bytes",
        &[
            ("container", "hold"),
            ("namespace", "default"),
            ("pod", "memory-hog"),
        ],
    )
    .with_context(|| format!("no working set of memory-hog/hold in /metrics/resource:\n{raw}"))?;
    // The two readings are a scrape apart and kubectl rounds down to Mi: a held tmpfs
    // barely moves, so they agree within a few MiB.
    ensure!(
        (source - hog_bytes).abs() <= 4.0 * MIB,
        "memory-hog: kubectl top says {hog_memory} ({hog_bytes} bytes), the node's /metrics/resource {source} bytes for its container"
    );
    kubelet_api_takes_the_service_account_token(&k, node)?;
    Ok(())
}

/// What metrics-server relies on, seen directly: the node's kubelet API serves
/// /metrics/resource to metrics-server's ServiceAccount token (TokenReview, then a
/// SubjectAccessReview for nodes/metrics) and refuses the token of an account without
/// that right (the namespace's `default`) with upstream's 403 message.
fn kubelet_api_takes_the_service_account_token(k: &Kubectl, node: &GantryNode) -> Result<()> {
    let url = format!("https://{}:{}/metrics/resource", node.address, node.port);
    let get = |namespace: &str, account: &str| -> Result<(String, String)> {
        let token = k.run(&["create", "token", account, "-n", namespace])?;
        let out = std::process::Command::new("curl")
            .args(["-sk", "--max-time", "10", "-w", "\n%{http_code}", "-H"])
            .arg(format!("Authorization: Bearer {}", token.trim()))
            .arg(&url)
            .output()
            .context("run curl")?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or((&text, ""));
        Ok((code.to_string(), body.to_string()))
    };
    let (code, body) = get("kube-system", "metrics-server")?;
    ensure!(
        code == "200" && body.contains("container_memory_working_set_bytes{"),
        "GET {url} as metrics-server: {code}\n{body}"
    );
    let (code, body) = get("default", "default")?;
    ensure!(
        code == "403"
            && body.starts_with(
                "Forbidden (user=system:serviceaccount:default:default, verb=get, resource=nodes, subresource(s)=[metrics])"
            ),
        "GET {url} as default/default: {code}\n{body}"
    );
    Ok(())
}

/// The row of `name` in `kubectl top ... --no-headers` output: its CPU column and the
/// memory column at `memory_col` (3 for nodes, after CPU%; 2 for pods).
fn top_row(out: &str, name: &str, memory_col: usize) -> Option<(String, String)> {
    out.lines().find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        (cols.first() == Some(&name) && cols.len() > memory_col)
            .then(|| (cols[1].to_string(), cols[memory_col].to_string()))
    })
}

/// `e`, with metrics-server's state and log tail and the APIService's conditions added.
fn explain_metrics_server(bed: &Bed, e: anyhow::Error) -> anyhow::Error {
    let Ok(k) = bed.kubectl() else { return e };
    let run = |k: &Kubectl, args: &[&str]| k.run(args).unwrap_or_else(|e| format!("{e:#}"));
    let pods = run(&k, &["get", "pods", "-A", "-o", "wide"]);
    let api = run(
        &k,
        &["get", "apiservice", "v1beta1.metrics.k8s.io", "-o", "yaml"],
    );
    let logs = run(
        &k,
        &[
            "logs",
            "-n",
            "kube-system",
            "deployment/metrics-server",
            "--tail=40",
        ],
    );
    e.context(format!(
        "pods:\n{pods}\nAPIService:\n{api}\nmetrics-server log:\n{logs}"
    ))
}
