//! The workloads of manifests/examples on a Gantry node, checked as a user sees them
//! with kubectl: a Deployment scaled up and down, a Job, init and sidecar containers,
//! a crash loop with `logs --previous`, a missing image, a missing configMap key, a
//! static pod with its mirror, port-forward and describe; then a kill -9 of the agent
//! that restarts no container, and kubelet API calls without credentials or rights.

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use crate::bed::{free_port, Bed};
use crate::gantry_node::GantryNode;
use crate::kubectl::Kubectl;
use crate::{paths, wait};

mod health;

fn example(name: &str) -> String {
    paths::repo_root()
        .join("manifests/examples")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

fn pod(k: &Kubectl, name: &str) -> Result<Value> {
    k.get_json(&["pod", name])
}

/// The status of container `c` in pod JSON (app or init).
fn container_status<'a>(pod: &'a Value, c: &str) -> Option<&'a Value> {
    ["containerStatuses", "initContainerStatuses"]
        .iter()
        .filter_map(|k| pod["status"][k].as_array())
        .flatten()
        .find(|s| s["name"] == c)
}

fn waiting_reason(pod: &Value, c: &str) -> String {
    container_status(pod, c)
        .and_then(|s| s["state"]["waiting"]["reason"].as_str())
        .unwrap_or("")
        .to_string()
}

/// Names of the pods with label `selector` that are Running on `node`.
fn running_pods(k: &Kubectl, selector: &str, node: &str) -> Result<Vec<String>> {
    let list = k.get_json(&["pods", "-l", selector])?;
    Ok(list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["status"]["phase"] == "Running" && p["spec"]["nodeName"] == node)
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
        .collect())
}

pub fn node_runs_workloads(bed: &mut Bed, node: &mut GantryNode) -> Result<()> {
    let k = bed.kubectl()?;
    for m in [
        "deployment.yaml",
        "job.yaml",
        "init-sidecar.yaml",
        "crashloop.yaml",
        "missing-image.yaml",
        "missing-configmap-key.yaml",
        "ticker.yaml",
        "chatty.yaml",
        "emptydir.yaml",
        "dns-hosts.yaml",
    ] {
        k.run(&["apply", "-f", &example(m)])?;
    }
    std::fs::copy(
        paths::repo_root().join("manifests/static/static-web.yaml"),
        node.dir.join("manifests/static-web.yaml"),
    )?;

    deployment_scales(&k, &node.name)?;
    job_completes(&k)?;
    init_and_sidecar_run_in_order(&k)?;
    crash_loop_backs_off(&k, node)?;
    missing_image_backs_off(&k)?;
    missing_key_is_a_config_error(&k)?;
    static_pod_has_a_mirror(&k, &node.name)?;
    port_forward_reaches_a_pod(&k)?;
    interactive_commands_work(&k)?;
    stats_and_metrics_answer(&k, &node.name)?;
    logs_rotate(&k, node)?;
    empty_dir_outlives_containers(&k, node)?;
    dns_and_hosts_follow_the_pod_spec(&k)?;
    health::probes_drive_restarts_and_readiness(&k)?;
    health::probe_kinds_pass_and_fail(&k)?;
    health::hooks_run_around_the_container(&k)?;
    health::unready_pods_hold_a_rollout(&k)?;
    kubelet_api_refuses_strangers(&k, node)?;
    sandbox_is_recreated_when_it_stops(&k, node)?;
    restart_adopts_every_container(bed, node)?;
    Ok(())
}

fn deployment_scales(k: &Kubectl, node: &str) -> Result<()> {
    for replicas in [3usize, 5, 1] {
        k.run(&["scale", "deployment/web", &format!("--replicas={replicas}")])?;
        wait::until(
            &format!("deployment web to run {replicas} pods on {node}"),
            Duration::from_secs(120),
            || {
                let all = k.get_json(&["pods", "-l", "app=web"])?;
                let total = all["items"].as_array().map_or(0, |a| a.len());
                let running = running_pods(k, "app=web", node)?;
                if running.len() == replicas && total == replicas {
                    return Ok(Some(()));
                }
                bail!("{} running, {total} listed", running.len())
            },
        )?;
    }
    println!("{}", k.run(&["get", "deployment", "web"])?);
    Ok(())
}

fn job_completes(k: &Kubectl) -> Result<()> {
    k.run(&[
        "wait",
        "--for=condition=Complete",
        "job/compute",
        "--timeout=120s",
    ])?;
    let logs = k.run(&["logs", "job/compute"])?;
    ensure!(logs.trim() == "result=42", "job logs: {logs:?}");
    let pods = k.get_json(&["pods", "-l", "job-name=compute"])?;
    let phase = &pods["items"][0]["status"]["phase"];
    ensure!(phase == "Succeeded", "job pod phase {phase}");
    let code = &pods["items"][0]["status"]["containerStatuses"][0]["state"]["terminated"]["reason"];
    ensure!(code == "Completed", "job container reason {code}");
    Ok(())
}

fn init_and_sidecar_run_in_order(k: &Kubectl) -> Result<()> {
    k.run(&[
        "wait",
        "--for=condition=Ready",
        "pod/init-sidecar",
        "--timeout=120s",
    ])?;
    let p = pod(k, "init-sidecar")?;
    let setup = container_status(&p, "setup").context("no status for init container setup")?;
    ensure!(
        setup["state"]["terminated"]["exitCode"] == 0,
        "setup did not complete: {setup}"
    );
    let logger = container_status(&p, "logger").context("no status for sidecar logger")?;
    ensure!(
        !logger["state"]["running"].is_null() && logger["started"] == true,
        "sidecar logger not running: {logger}"
    );
    let app = container_status(&p, "app").context("no status for app")?;
    ensure!(!app["state"]["running"].is_null(), "app not running: {app}");
    // The init container finished before the app started.
    let finished = setup["state"]["terminated"]["finishedAt"]
        .as_str()
        .unwrap_or("");
    let started = app["state"]["running"]["startedAt"].as_str().unwrap_or("");
    ensure!(
        finished <= started,
        "app started ({started}) before setup finished ({finished})"
    );
    let conditions = k.run(&[
        "get",
        "pod",
        "init-sidecar",
        "-o",
        "jsonpath={range .status.conditions[*]}{.type}={.status} {end}",
    ])?;
    for c in [
        "Initialized=True",
        "ContainersReady=True",
        "Ready=True",
        "PodScheduled=True",
    ] {
        ensure!(conditions.contains(c), "conditions {conditions:?} lack {c}");
    }
    ensure!(k
        .run(&["logs", "init-sidecar", "-c", "setup"])?
        .contains("setup done"));
    ensure!(k
        .run(&["logs", "init-sidecar", "-c", "logger"])?
        .contains("sidecar up"));
    Ok(())
}

fn crash_loop_backs_off(k: &Kubectl, node: &GantryNode) -> Result<()> {
    let p = wait::until(
        "crashloop to be restarted twice and back off",
        Duration::from_secs(120),
        || {
            let p = pod(k, "crashloop")?;
            let s = container_status(&p, "crasher").cloned().unwrap_or_default();
            let restarts = s["restartCount"].as_u64().unwrap_or(0);
            Ok((restarts >= 2 && waiting_reason(&p, "crasher") == "CrashLoopBackOff").then_some(p))
        },
    )?;
    let s = container_status(&p, "crasher").context("no crasher status")?;
    let last = &s["lastState"]["terminated"];
    ensure!(
        last["exitCode"] == 3 && last["reason"] == "Error",
        "lastState: {s}"
    );
    let previous = k.run(&["logs", "crashloop", "--previous"])?;
    ensure!(
        previous.contains("run started at"),
        "logs --previous: {previous:?}"
    );
    // Dead container GC (upstream's MaxPerPodContainer 1): of the attempts so far, only
    // the newest exited one stays in the runtime.
    wait::until(
        "older crasher attempts to be garbage collected",
        Duration::from_secs(30),
        || {
            let out = node
                .crictl()?
                .args([
                    "ps",
                    "-a",
                    "-q",
                    "--label",
                    "io.kubernetes.pod.name=crashloop",
                ])
                .output()?;
            let ids = String::from_utf8_lossy(&out.stdout).lines().count();
            Ok((out.status.success() && ids == 1).then_some(()))
        },
    )?;
    let describe = k.run(&["describe", "pod", "crashloop"])?;
    for event in [
        "Back-off restarting failed container crasher",
        "Created container: crasher",
        "Started container crasher",
    ] {
        ensure!(
            describe.contains(event),
            "describe lacks {event:?}:\n{describe}"
        );
    }
    Ok(())
}

fn missing_image_backs_off(k: &Kubectl) -> Result<()> {
    let mut seen_err = false;
    wait::until(
        "missing-image to go from ErrImagePull to ImagePullBackOff",
        Duration::from_secs(90),
        || {
            let reason = waiting_reason(&pod(k, "missing-image")?, "app");
            seen_err |= reason == "ErrImagePull";
            Ok((seen_err && reason == "ImagePullBackOff").then_some(()))
        },
    )
    .or_else(|e| {
        // ErrImagePull may have been shown between two polls only; the event says so.
        let describe = k.run(&["describe", "pod", "missing-image"])?;
        if describe.contains("ErrImagePull") && describe.contains("ImagePullBackOff") {
            Ok(())
        } else {
            Err(e.context(describe))
        }
    })?;
    let describe = k.run(&["describe", "pod", "missing-image"])?;
    for needle in [
        "Pulling image \"registry.k8s.io/e2e-test-images/does-not-exist:1.0\"",
        "Failed to pull image",
        "Back-off pulling image",
    ] {
        ensure!(
            describe.contains(needle),
            "describe lacks {needle:?}:\n{describe}"
        );
    }
    Ok(())
}

fn missing_key_is_a_config_error(k: &Kubectl) -> Result<()> {
    let p = wait::until(
        "missing-key to show CreateContainerConfigError",
        Duration::from_secs(60),
        || {
            let p = pod(k, "missing-key")?;
            Ok((waiting_reason(&p, "app") == "CreateContainerConfigError").then_some(p))
        },
    )?;
    let message = container_status(&p, "app")
        .and_then(|s| s["state"]["waiting"]["message"].as_str())
        .unwrap_or("")
        .to_string();
    ensure!(
        message.contains("color") && message.contains("app-config"),
        "message does not name the key and configMap: {message:?}"
    );
    Ok(())
}

fn static_pod_has_a_mirror(k: &Kubectl, node: &str) -> Result<()> {
    let name = format!("static-web-{node}");
    let p = wait::until(
        &format!("mirror pod {name} to be Running"),
        Duration::from_secs(120),
        || {
            let p = pod(k, &name)?;
            Ok((p["status"]["phase"] == "Running").then_some(p))
        },
    )?;
    ensure!(
        !p["metadata"]["annotations"]["kubernetes.io/config.mirror"].is_null(),
        "pod {name} is not a mirror pod: {}",
        p["metadata"]
    );
    Ok(())
}

fn port_forward_reaches_a_pod(k: &Kubectl) -> Result<()> {
    let port = free_port()?;
    let mut child = Command::new(&k.bin)
        .arg("--kubeconfig")
        .arg(&k.kubeconfig)
        .args(["port-forward", "deployment/web", &format!("{port}:80")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let result = wait::until(
        "port-forward to the web pod to answer",
        Duration::from_secs(30),
        || {
            Ok(crate::http::http_status(&format!("127.0.0.1:{port}"), "/")
                .ok()
                .filter(|s| *s == 200))
        },
    );
    let _ = child.kill();
    let _ = child.wait();
    result.map(|_| ())
}

/// `kubectl logs -f`, `attach`, `exec -it` (under a pseudo-terminal) and `cp`.
fn interactive_commands_work(k: &Kubectl) -> Result<()> {
    k.run(&[
        "wait",
        "--for=condition=Ready",
        "pod/ticker",
        "--timeout=120s",
    ])?;
    let kubectl_for = |secs: &str, args: &[&str]| -> Result<String> {
        let out = Command::new("timeout")
            .args(["-s", "KILL", secs])
            .arg(&k.bin)
            .arg("--kubeconfig")
            .arg(&k.kubeconfig)
            .args(args)
            .stdin(Stdio::null())
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    // Following: lines keep coming while the command runs.
    let followed = kubectl_for("5", &["logs", "-f", "ticker"])?;
    let ticks = followed.lines().filter(|l| l.starts_with("tick ")).count();
    ensure!(ticks >= 4, "logs -f showed {ticks} ticks:\n{followed}");
    let attached = kubectl_for("5", &["attach", "ticker"])?;
    ensure!(
        attached.contains("tick "),
        "attach showed no output: {attached:?}"
    );

    // exec -it needs a terminal: script(1) gives kubectl one.
    let exec_it = format!(
        "{} --kubeconfig {} exec -it ticker -- sh -c 'test -t 0 && echo tty:yes'",
        k.bin.display(),
        k.kubeconfig.display()
    );
    let out = Command::new("script")
        .args(["-qec", &exec_it, "/dev/null"])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        text.contains("tty:yes"),
        "exec -it did not get a terminal: {text:?}"
    );

    let dir = std::env::temp_dir().join(format!("gantry-cp-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let local = dir.join("note.txt");
    std::fs::write(&local, "copied by kubectl cp\n")?;
    let result = (|| -> Result<()> {
        k.run(&["cp", &local.to_string_lossy(), "ticker:/tmp/note.txt"])?;
        let inside = k.run(&["exec", "ticker", "--", "cat", "/tmp/note.txt"])?;
        ensure!(inside == "copied by kubectl cp\n", "inside: {inside:?}");
        let back = dir.join("back.txt");
        k.run(&["cp", "ticker:/tmp/note.txt", &back.to_string_lossy()])?;
        ensure!(std::fs::read_to_string(&back)? == "copied by kubectl cp\n");
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// /stats/summary and /metrics through the API server's node proxy, as
/// metrics-server and Prometheus read them: the node's pods with memory and CPU from
/// the kernel's accounting, and the running-pod gauge.
fn stats_and_metrics_answer(k: &Kubectl, node: &str) -> Result<()> {
    let summary: Value = serde_json::from_str(&k.run(&[
        "get",
        "--raw",
        &format!("/api/v1/nodes/{node}/proxy/stats/summary"),
    ])?)?;
    ensure!(
        summary["node"]["nodeName"] == node,
        "summary node: {}",
        summary["node"]
    );
    ensure!(
        summary["node"]["memory"]["workingSetBytes"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "node memory: {}",
        summary["node"]["memory"]
    );
    let ticker = summary["pods"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["podRef"]["name"] == "ticker")
        .with_context(|| format!("no ticker in /stats/summary: {}", summary["pods"]))?;
    let memory = ticker["containers"][0]["memory"]["workingSetBytes"]
        .as_u64()
        .unwrap_or(0);
    ensure!(
        memory > 0,
        "ticker's container memory: {}",
        ticker["containers"]
    );
    let metrics = k.run(&[
        "get",
        "--raw",
        &format!("/api/v1/nodes/{node}/proxy/metrics"),
    ])?;
    let running = metrics
        .lines()
        .find(|l| l.starts_with("kubelet_running_pods "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .with_context(|| format!("no kubelet_running_pods in /metrics:\n{metrics}"))?;
    ensure!(running >= 3.0, "kubelet_running_pods {running}");
    Ok(())
}

/// With containerLogMaxSize 1Mi and containerLogMaxFiles 3, chatty's 4 MiB of output
/// is rotated: at most 2 rotated files beside the live one, and `kubectl logs` still
/// answers.
fn logs_rotate(k: &Kubectl, node: &GantryNode) -> Result<()> {
    let uid = pod(k, "chatty")?["metadata"]["uid"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let dir = node
        .dir
        .join("pod-logs")
        .join(format!("default_chatty_{uid}"))
        .join("chatty");
    // The last line may sit in the live file or, if a rotation came after it, in
    // the newest rotated one (kubectl logs reads the live file only, as upstream).
    let files = wait::until(
        "chatty to finish writing and its log to be rotated",
        Duration::from_secs(120),
        || {
            let names: Vec<String> = std::fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            let rotated = names.iter().filter(|n| n.starts_with("0.log.")).count();
            let done = names.iter().any(|n| {
                std::fs::read_to_string(dir.join(n)).is_ok_and(|t| t.contains("done writing"))
            });
            Ok((done && rotated >= 1).then_some(names))
        },
    )?;
    k.run(&["logs", "chatty", "--tail", "5"])?;
    let rotated = files.iter().filter(|n| n.starts_with("0.log.")).count();
    ensure!(
        rotated <= 2,
        "more rotated files than containerLogMaxFiles allows: {files:?}"
    );
    ensure!(
        files.iter().any(|n| n == "0.log"),
        "no live log file: {files:?}"
    );
    Ok(())
}

/// emptyDir: the writer's run count grows across its restarts (the data outlives the
/// container), the reader sees it read-only, /cache is a tmpfs, and deleting the pod
/// removes its volumes from the node.
fn empty_dir_outlives_containers(k: &Kubectl, node: &GantryNode) -> Result<()> {
    let in_reader = |args: &[&str]| {
        let mut all = vec!["exec", "emptydir", "-c", "reader", "--"];
        all.extend_from_slice(args);
        k.run(&all)
    };
    let count = wait::until(
        "the writer to have run three times",
        Duration::from_secs(120),
        || {
            Ok(in_reader(&["cat", "/data/count"])
                .ok()
                .and_then(|o| o.trim().parse::<u32>().ok())
                .filter(|n| *n >= 3))
        },
    )?;
    let p = pod(k, "emptydir")?;
    let restarts = container_status(&p, "writer")
        .and_then(|s| s["restartCount"].as_u64())
        .unwrap_or(0);
    ensure!(
        restarts + 1 >= u64::from(count) - 1,
        "count {count} but {restarts} restarts"
    );
    let mounts = in_reader(&["cat", "/proc/mounts"])?;
    ensure!(
        mounts
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some("/cache") && l.contains("tmpfs")),
        "/cache is not a tmpfs:\n{mounts}"
    );
    let write = in_reader(&["sh", "-c", "echo x > /data/x 2>&1 || echo refused"])?;
    ensure!(
        write.contains("refused") || write.contains("Read-only"),
        "a read-only mount took a write: {write:?}"
    );
    let uid = p["metadata"]["uid"].as_str().unwrap_or("").to_string();
    let pod_dir = node.dir.join("root/pods").join(&uid);
    ensure!(pod_dir.exists(), "no pod directory {}", pod_dir.display());
    k.run(&["delete", "pod", "emptydir", "--wait=true", "--timeout=60s"])?;
    ensure!(
        !pod_dir.exists(),
        "{} is left after the pod was deleted",
        pod_dir.display()
    );
    Ok(())
}

/// resolv.conf, /etc/hosts and the hostname of each pod in dns-hosts.yaml, as the
/// upstream kubelet writes them.
fn dns_and_hosts_follow_the_pod_spec(k: &Kubectl) -> Result<()> {
    for name in ["dns-cluster", "dns-hostnet", "dns-none"] {
        wait::until(&format!("{name} to run"), Duration::from_secs(90), || {
            Ok((pod(k, name)?["status"]["phase"] == "Running").then_some(()))
        })?;
    }
    let read = |pod: &str, file: &str| k.run(&["exec", pod, "--", "cat", file]);
    let lines = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect()
    };

    let p = pod(k, "dns-cluster")?;
    let ip = p["status"]["podIP"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let resolv = lines(&read("dns-cluster", "/etc/resolv.conf")?);
    ensure!(
        resolv
            .first()
            .is_some_and(|l| l
                .starts_with("search default.svc.cluster.local svc.cluster.local cluster.local"))
            && resolv.contains(&format!("nameserver {}", crate::network::CLUSTER_DNS_IP))
            && resolv.contains(&"options ndots:2".to_string()),
        "dns-cluster's resolv.conf: {resolv:?}"
    );
    let hosts = read("dns-cluster", "/etc/hosts")?;
    ensure!(
        hosts.starts_with("# Kubernetes-managed hosts file.\n")
            && hosts.contains(&format!("{ip}\tdb-0.db.default.svc.cluster.local\tdb-0\n"))
            && hosts
                .contains("# Entries added by HostAliases.\n198.18.250.1\tfoo.local\tbar.local\n"),
        "dns-cluster's /etc/hosts (pod IP {ip}):\n{hosts}"
    );
    let hostname = k.run(&["exec", "dns-cluster", "--", "hostname"])?;
    ensure!(
        hostname.trim() == "db-0",
        "dns-cluster's hostname is {hostname:?}"
    );

    let p = pod(k, "dns-hostnet")?;
    ensure!(
        p["status"]["podIP"] == p["status"]["hostIP"],
        "a hostNetwork pod's IP is not the node's: {} vs {}",
        p["status"]["podIP"],
        p["status"]["hostIP"]
    );
    let resolv = lines(&read("dns-hostnet", "/etc/resolv.conf")?);
    ensure!(
        resolv.contains(&format!("nameserver {}", crate::network::CLUSTER_DNS_IP)),
        "ClusterFirstWithHostNet did not give cluster DNS: {resolv:?}"
    );
    let hosts = read("dns-hostnet", "/etc/hosts")?;
    ensure!(
        hosts.starts_with("# Kubernetes-managed hosts file (host network).\n")
            && hosts.ends_with("# Entries added by HostAliases.\n127.0.0.2\talias.local\n"),
        "dns-hostnet's /etc/hosts:\n{hosts}"
    );
    let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname")?;
    let hostname = k.run(&["exec", "dns-hostnet", "--", "hostname"])?;
    ensure!(
        hostname.trim() == host_name.trim(),
        "a hostNetwork pod's hostname is {hostname:?}, the host's {host_name:?}"
    );

    let resolv = lines(&read("dns-none", "/etc/resolv.conf")?);
    ensure!(
        resolv
            == [
                "search example.test",
                "nameserver 198.18.250.53",
                "options edns0"
            ],
        "dnsPolicy None: {resolv:?}"
    );
    for name in ["dns-cluster", "dns-hostnet", "dns-none"] {
        k.run(&["delete", "pod", name, "--wait=false"])?;
    }
    Ok(())
}

/// kubelet API calls without credentials get 401; with a valid token of an identity
/// that may not use the node's API, 403.
fn kubelet_api_refuses_strangers(k: &Kubectl, node: &GantryNode) -> Result<()> {
    let url = format!("https://{}:{}/pods", node.address, node.port);
    let code = |extra: &[&str]| -> Result<String> {
        let out = Command::new("curl")
            .args([
                "-sk",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "10",
            ])
            .args(extra)
            .arg(&url)
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let anonymous = code(&[])?;
    ensure!(anonymous == "401", "anonymous /pods answered {anonymous}");
    let token = wait::until(
        "a token for the default service account",
        Duration::from_secs(60),
        || Ok(k.run(&["create", "token", "default"]).ok()),
    )?;
    let header = format!("Authorization: Bearer {}", token.trim());
    let stranger = code(&["-H", &header])?;
    ensure!(
        stranger == "403",
        "/pods with a service account's token answered {stranger}"
    );
    Ok(())
}

/// A pod sandbox stopped behind the node's back (`crictl stopp`, as if it died) is
/// replaced: a SandboxChanged event, a new sandbox, the container restarted in it.
fn sandbox_is_recreated_when_it_stops(k: &Kubectl, node: &GantryNode) -> Result<()> {
    let crictl = |args: &[&str]| -> Result<String> {
        let out = node.crictl()?.args(args).output()?;
        ensure!(
            out.status.success(),
            "crictl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let before = crictl(&["pods", "--name", "^ticker$", "--state", "Ready", "-q"])?;
    ensure!(
        before.lines().count() == 1,
        "ready ticker sandboxes: {before:?}"
    );
    let restarts = |p: &Value| {
        container_status(p, "ticker")
            .and_then(|s| s["restartCount"].as_u64())
            .unwrap_or(0)
    };
    let restarts_before = restarts(&pod(k, "ticker")?);
    crictl(&["stopp", &before])?;
    wait::until(
        "ticker to run again in a new sandbox",
        Duration::from_secs(90),
        || {
            let now = crictl(&["pods", "--name", "^ticker$", "--state", "Ready", "-q"])?;
            let p = pod(k, "ticker")?;
            let running =
                container_status(&p, "ticker").is_some_and(|s| !s["state"]["running"].is_null());
            Ok(
                (!now.is_empty() && now != before && running && restarts(&p) > restarts_before)
                    .then_some(()),
            )
        },
    )?;
    let describe = k.run(&["describe", "pod", "ticker"])?;
    ensure!(
        describe.contains("Pod sandbox changed, it will be killed and re-created."),
        "no SandboxChanged event:\n{describe}"
    );
    Ok(())
}

/// Container IDs and restart counts of every pod on the node.
fn containers_on(k: &Kubectl, node: &str) -> Result<Vec<(String, String, u64)>> {
    let list = k.get_json(&[
        "pods",
        "-A",
        "--field-selector",
        &format!("spec.nodeName={node}"),
    ])?;
    let mut out = Vec::new();
    for p in list["items"].as_array().into_iter().flatten() {
        for s in p["status"]["containerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if s["state"]["running"].is_null() {
                continue;
            }
            out.push((
                format!(
                    "{}/{}",
                    p["metadata"]["name"].as_str().unwrap_or(""),
                    s["name"].as_str().unwrap_or("")
                ),
                s["containerID"].as_str().unwrap_or("").to_string(),
                s["restartCount"].as_u64().unwrap_or(0),
            ));
        }
    }
    out.sort();
    Ok(out)
}

/// A pod with a secret volume (a tmpfs) and a memory emptyDir that runs until the agent
/// is killed and is force-deleted while it is down.
const ORPHAN_POD: &str = r#"
apiVersion: v1
kind: Secret
metadata: {name: orphan-secret}
stringData: {password: hunter2}
---
apiVersion: v1
kind: Pod
metadata: {name: orphan}
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - name: c
      image: registry.k8s.io/e2e-test-images/busybox:1.29-2
      command: ["sh", "-c", "sleep 100000"]
      volumeMounts:
        - {name: secret, mountPath: /secret}
        - {name: mem, mountPath: /mem}
  volumes:
    - {name: secret, secret: {secretName: orphan-secret}}
    - {name: mem, emptyDir: {medium: Memory}}
"#;

/// kill -9 of the agent and a restart: every running container is adopted as it was;
/// a pod force-deleted while the agent was down has its containers and its volumes
/// (tmpfs mounts included) removed, and no other pod's volume is touched.
fn restart_adopts_every_container(bed: &mut Bed, node: &mut GantryNode) -> Result<()> {
    // The crash-looping pod restarts on its own; leave it out of the comparison.
    let k = bed.kubectl()?;
    k.run(&["delete", "pod", "crashloop", "--wait=true", "--timeout=60s"])?;
    k.apply_yaml(ORPHAN_POD)?;
    wait::until("the orphan-to-be to run", Duration::from_secs(90), || {
        Ok(pod(&k, "orphan")?["status"]["phase"]
            .as_str()
            .filter(|p| *p == "Running")
            .map(|_| ()))
    })?;
    let orphan_uid = pod(&k, "orphan")?["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let pods_dir = node.dir.join("root/pods");
    let orphan_dir = pods_dir.join(&orphan_uid);
    let orphan_mounts = crate::host::mounts_below(&orphan_dir);
    ensure!(
        orphan_mounts.len() >= 3,
        "the orphan's secret, token and memory volumes are not all mounted: {orphan_mounts:?}"
    );
    let ticker_uid = pod(&k, "ticker")?["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let ticker_mounts = crate::host::mounts_below(&pods_dir.join(&ticker_uid));
    ensure!(
        !ticker_mounts.is_empty(),
        "the ticker has no volume mounted"
    );
    let before: Vec<_> = containers_on(&k, &node.name)?
        .into_iter()
        .filter(|(pod, _, _)| !pod.starts_with("orphan/"))
        .collect();
    ensure!(
        before.len() >= 3,
        "too few running containers to compare: {before:?}"
    );
    node.restart_with(bed, libc::SIGKILL, || {
        k.run(&["delete", "pod", "orphan", "--grace-period=0", "--force"])?;
        Ok(())
    })?;
    wait::until(
        "the force-deleted pod's volumes to be unmounted and removed",
        Duration::from_secs(60),
        || {
            Ok(
                (!orphan_dir.exists() && crate::host::mounts_below(&orphan_dir).is_empty())
                    .then_some(()),
            )
        },
    )?;
    ensure!(
        crate::host::mounts_below(&pods_dir.join(&ticker_uid)) == ticker_mounts,
        "a running pod's volume mounts changed across the restart"
    );
    // Give the restarted agent time to act on anything it thought was wrong.
    std::thread::sleep(Duration::from_secs(15));
    let after = containers_on(&k, &node.name)?;
    if before != after {
        bail!("containers changed across the restart:\nbefore {before:?}\nafter  {after:?}");
    }
    Ok(())
}
