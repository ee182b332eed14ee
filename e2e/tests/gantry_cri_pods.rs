//! Pods and containers through `gantry cri`, driven by crictl as a user drives it:
//! sandboxes with their own network (pod-to-pod traffic, hostPort), containers with
//! logs in the CRI format, exec, exit codes and reasons, stop with a grace period,
//! errors with the codes the kubelet acts on, a crash and restart of `gantry cri` that
//! loses nothing, and removal that leaves nothing behind.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use gantry_e2e::gantry_cri::GantryCri;
use gantry_e2e::{host, wait, Bed, BedOptions};
use serde_json::{json, Value};

const BUSYBOX: &str = "registry.k8s.io/e2e-test-images/busybox:1.29-2";
const NGINX: &str = "registry.k8s.io/e2e-test-images/nginx:1.14-2";

struct Crictl<'a> {
    cri: &'a GantryCri,
    dir: &'a Path,
}

impl Crictl<'_> {
    fn run(&self, args: &[&str]) -> Result<Output> {
        Ok(self.cri.crictl()?.args(args).output()?)
    }

    fn ok(&self, args: &[&str]) -> Result<String> {
        let out = self.run(args)?;
        ensure!(
            out.status.success(),
            "crictl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Runs crictl expecting failure; returns its stderr.
    fn fails(&self, args: &[&str]) -> Result<String> {
        let out = self.run(args)?;
        ensure!(!out.status.success(), "crictl {} succeeded", args.join(" "));
        Ok(String::from_utf8_lossy(&out.stderr).into_owned())
    }

    fn json(&self, args: &[&str]) -> Result<Value> {
        let text = self.ok(args)?;
        serde_json::from_str(&text)
            .with_context(|| format!("crictl {} printed {text}", args.join(" ")))
    }

    /// Writes `config` to a file and returns its path, for runp/create.
    fn file(&self, name: &str, config: &Value) -> Result<String> {
        let path = self.dir.join(name);
        std::fs::write(&path, serde_json::to_vec_pretty(config)?)?;
        Ok(path.display().to_string())
    }

    fn run_pod(&self, name: &str, extra: Value) -> Result<(String, String)> {
        let mut config = json!({
            "metadata": {"name": name, "namespace": "e2e", "uid": format!("uid-{name}"), "attempt": 0},
            "hostname": name,
            "log_directory": self.dir.join("pods").join(name).display().to_string(),
            "linux": {},
        });
        merge(&mut config, extra);
        let file = self.file(&format!("{name}-pod.json"), &config)?;
        let id = self.ok(&["runp", &file])?;
        Ok((id, file))
    }

    fn run_container(&self, pod: &(String, String), name: &str, extra: Value) -> Result<String> {
        let mut config = json!({
            "metadata": {"name": name},
            "image": {"image": BUSYBOX},
            "log_path": format!("{name}.log"),
            "linux": {},
        });
        merge(&mut config, extra);
        let file = self.file(&format!("{name}-ctr.json"), &config)?;
        let id = self.ok(&["create", &pod.0, &file, &pod.1])?;
        self.ok(&["start", &id])?;
        Ok(id)
    }

    fn inspect(&self, id: &str) -> Result<Value> {
        self.json(&["inspect", "-o", "json", id])
    }

    fn wait_state(&self, id: &str, want: &str) -> Result<Value> {
        wait::until(
            &format!("container {id} to be {want}"),
            Duration::from_secs(60),
            || {
                let v = self.inspect(id)?;
                Ok((v["status"]["state"] == want).then_some(v))
            },
        )
    }
}

fn merge(base: &mut Value, extra: Value) {
    if let (Value::Object(b), Value::Object(e)) = (base, extra) {
        for (k, v) in e {
            b.insert(k, v);
        }
    }
}

fn pod_ip(c: &Crictl, pod: &str) -> Result<String> {
    let v = c.json(&["inspectp", "-o", "json", pod])?;
    Ok(v["status"]["network"]["ip"]
        .as_str()
        .unwrap_or_default()
        .to_string())
}

#[test]
fn pods_and_containers_run_through_gantry_cri() -> Result<()> {
    let mut bed = Bed::start(&BedOptions::named("e2e-gantry-pods"))?;
    let mut cri = bed.start_gantry_cri("gantry-cri")?;
    let work = bed.dir().join("crictl");
    std::fs::create_dir_all(&work)?;
    let c = Crictl {
        cri: &cri,
        dir: &work,
    };
    c.ok(&["pull", BUSYBOX])?;
    c.ok(&["pull", NGINX])?;

    // A sandbox gets an IP on the node's network, its hostname and its DNS config.
    let web = c.run_pod(
        "web",
        json!({"port_mappings": [{"protocol": 0, "container_port": 80, "host_port": 18081}]}),
    )?;
    let client = c.run_pod(
        "client",
        json!({"dns_config": {"servers": ["198.19.0.10"], "searches": ["e2e.svc.cluster.local"], "options": ["ndots:5"]}}),
    )?;
    let pods = c.json(&["pods", "-o", "json"])?;
    ensure!(
        pods["items"].as_array().map(Vec::len) == Some(2),
        "two pods listed: {pods}"
    );
    let web_ip = pod_ip(&c, &web.0)?;
    let client_ip = pod_ip(&c, &client.0)?;
    let prefix = cri
        .network
        .subnet
        .rsplit_once('.')
        .map(|p| p.0)
        .unwrap_or("");
    for ip in [&web_ip, &client_ip] {
        ensure!(
            ip.starts_with(&format!("{prefix}.")),
            "pod IP {ip} is not in the node subnet {}",
            cri.network.subnet
        );
    }
    ensure!(web_ip != client_ip, "two pods got one IP {web_ip}");
    let mut leased = cri.network.leased_ips();
    leased.sort();
    let mut want = vec![web_ip.clone(), client_ip.clone()];
    want.sort();
    ensure!(
        leased == want,
        "host-local's leases {leased:?} are the pods' IPs {want:?}"
    );

    // Containers: a web server and a client that logs to stdout and stderr.
    let nginx = c.run_container(&web, "nginx", json!({"image": {"image": NGINX}}))?;
    let shell = c.run_container(
        &client,
        "shell",
        json!({"command": ["sh", "-c", "echo hello from stdout; echo hello from stderr >&2; exec sleep 3600"]}),
    )?;
    c.wait_state(&nginx, "CONTAINER_RUNNING")?;
    c.wait_state(&shell, "CONTAINER_RUNNING")?;

    wait::until("the client's log", Duration::from_secs(20), || {
        let out = c.run(&["logs", &shell])?;
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok((all.contains("hello from stdout") && all.contains("hello from stderr")).then_some(all))
    })?;
    let log_file = work.join("pods/client/shell.log");
    let raw = std::fs::read_to_string(&log_file)
        .with_context(|| format!("read {}", log_file.display()))?;
    ensure!(
        raw.lines().any(|l| {
            let f: Vec<&str> = l.splitn(4, ' ').collect();
            f.len() == 4 && f[1] == "stderr" && f[2] == "F" && f[3] == "hello from stderr"
        }),
        "the log file is in the CRI format (time stream tag content): {raw}"
    );

    // exec: the pod's hostname and resolv.conf; traffic pod to pod.
    ensure!(
        c.ok(&["exec", "-s", &shell, "hostname"])? == "client",
        "hostname in the pod"
    );
    let resolv = c.ok(&["exec", "-s", &shell, "cat", "/etc/resolv.conf"])?;
    ensure!(
        resolv.contains("nameserver 198.19.0.10")
            && resolv.contains("search e2e.svc.cluster.local")
            && resolv.contains("options ndots:5"),
        "resolv.conf from the DNS config: {resolv}"
    );
    let fetched = c.ok(&[
        "exec",
        "-s",
        &shell,
        "sh",
        "-c",
        &format!("wget -q -O - http://{web_ip}/ >/dev/null && echo reached"),
    ])?;
    ensure!(fetched == "reached", "pod-to-pod HTTP: {fetched}");
    // crictl shows a failed `exec -s` only by failing; the streaming exec carries the
    // code itself.
    c.fails(&["exec", "-s", &shell, "sh", "-c", "exit 7"])?;
    let said = c.fails(&["exec", &shell, "sh", "-c", "exit 7"])?;
    ensure!(said.contains("exit code 7"), "exec of exit 7: {said}");
    let streamed = c.ok(&["exec", &shell, "echo", "streamed"])?;
    ensure!(streamed == "streamed", "streaming exec: {streamed}");

    // hostPort on the node address.
    let addr = format!("{}:18081", cri.network.gateway);
    let status = gantry_e2e::http::http_status(&addr, "/")?;
    ensure!(status == 200, "hostPort {addr} answered {status}");

    // Exit codes and reasons.
    let fails = c.run_container(&client, "fails", json!({"command": ["sh", "-c", "exit 3"]}))?;
    let v = c.wait_state(&fails, "CONTAINER_EXITED")?;
    ensure!(
        v["status"]["exitCode"] == 3 && v["status"]["reason"] == "Error",
        "exit 3: {}",
        v["status"]
    );
    // Lifecycle events reach `crictl events` (GetContainerEvents).
    let events = cri
        .crictl()?
        .args(["events", "-o", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(500));
    let done = c.run_container(&client, "done", json!({"command": ["true"]}))?;
    let v = c.wait_state(&done, "CONTAINER_EXITED")?;
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(events.id() as i32, libc::SIGKILL) };
    let streamed = String::from_utf8_lossy(&events.wait_with_output()?.stdout).into_owned();
    for kind in [
        "CONTAINER_CREATED_EVENT",
        "CONTAINER_STARTED_EVENT",
        "CONTAINER_STOPPED_EVENT",
    ] {
        ensure!(
            streamed.contains(kind) && streamed.contains(&done),
            "crictl events shows {kind} for {done}: {streamed}"
        );
    }
    ensure!(
        v["status"]["exitCode"] == 0 && v["status"]["reason"] == "Completed",
        "exit 0: {}",
        v["status"]
    );

    // Errors a user can act on.
    let missing_cmd = c.file(
        "nocmd-ctr.json",
        &json!({"metadata": {"name": "nocmd"}, "image": {"image": BUSYBOX}, "command": ["/no/such/binary"], "linux": {}}),
    )?;
    let nocmd = c.ok(&["create", &client.0, &missing_cmd, &client.1])?;
    let err = c.fails(&["start", &nocmd])?;
    ensure!(
        err.contains("/no/such/binary"),
        "start error names the command: {err}"
    );
    let v = c.inspect(&nocmd)?;
    ensure!(
        v["status"]["reason"] == "StartError" && v["status"]["exitCode"] == 128,
        "a failed start is exited with StartError: {}",
        v["status"]
    );
    let err = c.fails(&["inspect", "0123456789ab"])?;
    ensure!(err.contains("NotFound"), "unknown container: {err}");
    let unpulled = c.file(
        "unpulled-ctr.json",
        &json!({"metadata": {"name": "unpulled"}, "image": {"image": "gcr.io/k8s-staging-cri-tools/test-image-1"}, "linux": {}}),
    )?;
    let err = c.fails(&["create", "--no-pull", &client.0, &unpulled, &client.1])?;
    ensure!(
        err.contains("NotFound") && err.contains("test-image-1"),
        "create with an image not pulled: {err}"
    );
    // crictl fills in what a pod config leaves out; an unknown runtime handler it
    // passes on.
    let err = c.fails(&["runp", "--runtime", "nope", &client.1])?;
    ensure!(
        err.contains("InvalidArgument") && err.contains("runtime handler") && err.contains("nope"),
        "a sandbox for an unknown runtime handler: {err}"
    );
    let dup = c.file(
        "dup-pod.json",
        &json!({"metadata": {"name": "client", "namespace": "e2e", "uid": "uid-client", "attempt": 0}, "linux": {}}),
    )?;
    let err = c.fails(&["runp", &dup])?;
    ensure!(
        err.contains("AlreadyExists"),
        "a second sandbox of one name: {err}"
    );

    // Stop: a process that ignores SIGTERM gets SIGKILL after the grace period.
    let stubborn = c.run_container(
        &client,
        "stubborn",
        json!({"command": ["sh", "-c", "trap '' TERM; sleep 3600"]}),
    )?;
    c.wait_state(&stubborn, "CONTAINER_RUNNING")?;
    c.ok(&["stop", "--timeout", "1", &stubborn])?;
    let v = c.inspect(&stubborn)?;
    ensure!(
        v["status"]["state"] == "CONTAINER_EXITED" && v["status"]["exitCode"] == 137,
        "stopped by SIGKILL after the grace period: {}",
        v["status"]
    );

    // A crash of gantry cri loses nothing: the ticker keeps running and every line it
    // wrote meanwhile reaches its log.
    let ticker = c.run_container(
        &client,
        "ticker",
        json!({"command": ["sh", "-c", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done"]}),
    )?;
    c.wait_state(&ticker, "CONTAINER_RUNNING")?;
    let before = c.json(&["ps", "-a", "-o", "json"])?;
    cri.restart(&mut bed, libc::SIGKILL)?;
    let c = Crictl {
        cri: &cri,
        dir: &work,
    };
    let after = c.json(&["ps", "-a", "-o", "json"])?;
    let states = |v: &Value| -> Vec<(String, String)> {
        let mut s: Vec<(String, String)> = v["containers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|c| {
                (
                    c["id"].as_str().unwrap_or("").to_string(),
                    c["state"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        s.sort();
        s
    };
    ensure!(
        states(&before) == states(&after),
        "containers and states before and after the restart:\n{:?}\n{:?}",
        states(&before),
        states(&after)
    );
    ensure!(
        pod_ip(&c, &client.0)? == client_ip,
        "the pod IP survives the restart"
    );
    let ticker_log = work.join("pods/client/ticker.log");
    wait::until("ticks after the restart", Duration::from_secs(20), || {
        let n = std::fs::read_to_string(&ticker_log)?.lines().count();
        Ok((n > 30).then_some(()))
    })?;
    // A restart of containerd loses nothing either: the shims keep the containers.
    bed.containerd.restart(&mut bed.state)?;
    let count = || -> Result<usize> { Ok(std::fs::read_to_string(&ticker_log)?.lines().count()) };
    let seen = count()?;
    wait::until(
        "ticks after containerd's restart",
        Duration::from_secs(30),
        || Ok((count()? > seen + 10).then_some(())),
    )?;
    ensure!(
        c.inspect(&ticker)?["status"]["state"] == "CONTAINER_RUNNING",
        "the ticker runs on after containerd's restart"
    );
    ensure!(
        c.ok(&["exec", "-s", &ticker, "echo", "still here"])? == "still here",
        "exec after containerd's restart"
    );

    // crictl update: a new memory limit reaches the running container's cgroup.
    c.ok(&["update", "--memory", "67108864", &ticker])?;
    let info = c.inspect(&ticker)?;
    let cgroup = info["info"]["cgroupsPath"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let limit_file = Path::new("/sys/fs/cgroup/memory")
        .join(cgroup.trim_start_matches('/'))
        .join("memory.limit_in_bytes");
    let limit = std::fs::read_to_string(&limit_file)
        .with_context(|| format!("read {}", limit_file.display()))?;
    ensure!(
        limit.trim() == "67108864",
        "memory limit after crictl update: {limit}"
    );
    ensure!(
        info["status"]["resources"]["linux"]["memoryLimitInBytes"] == "67108864",
        "crictl inspect shows the updated limit: {}",
        info["status"]["resources"]
    );

    // Stats from the cgroups: CPU and memory of the running containers.
    let stats = c.json(&["stats", "-o", "json"])?;
    let entry = stats["stats"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|s| s["attributes"]["id"] == ticker.as_str())
                .cloned()
        })
        .with_context(|| format!("crictl stats lists the ticker: {stats}"))?;
    let number = |v: &Value| v.as_str().and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    ensure!(
        number(&entry["cpu"]["usageCoreNanoSeconds"]["value"]) > 0
            && number(&entry["memory"]["workingSetBytes"]["value"]) > 0,
        "the ticker's stats show CPU and memory use: {entry}"
    );

    // port-forward to the web pod, as `crictl port-forward` users do.
    let local = gantry_e2e::bed::free_port()?;
    let mut forward = cri
        .crictl()?
        .args(["port-forward", &web.0, &format!("{local}:80")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let forwarded = wait::until("port-forward to answer", Duration::from_secs(20), || {
        Ok(gantry_e2e::http::http_status(&format!("127.0.0.1:{local}"), "/").ok())
    });
    let _ = forward.kill();
    let _ = forward.wait();
    ensure!(forwarded? == 200, "HTTP through crictl port-forward");

    // attach: the ticker's output reaches an attached client.
    let attached = std::process::Command::new("timeout")
        .args(["--signal=KILL", "3"])
        .arg(gantry_e2e::paths::tool("crictl")?)
        .args(["--runtime-endpoint", &cri.endpoint(), "attach", &ticker])
        .output()?;
    let text = String::from_utf8_lossy(&attached.stdout);
    ensure!(
        text.contains("tick "),
        "crictl attach shows the ticker's output: {text}"
    );

    c.ok(&["stop", "--timeout", "0", &ticker])?;
    let ticks: Vec<u64> = std::fs::read_to_string(&ticker_log)?
        .lines()
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    ensure!(
        ticks.windows(2).all(|w| w[1] == w[0] + 1) && ticks.first() == Some(&0),
        "the ticker's log has every line, in order, across the crash: {ticks:?}"
    );
    ensure!(
        c.ok(&["exec", "-s", &shell, "echo", "alive"])? == "alive",
        "exec after restart"
    );

    // Removal releases everything: containers, sandboxes, IPs, mounts, records. Each
    // pod's network is torn down once (CNI DEL), however often it is stopped, and not
    // again by its removal, as containerd does.
    let cni_dels = || -> Result<f64> {
        let (_, text) = gantry_e2e::http::http_get(&cri.metrics_addr, "/metrics")?;
        Ok(gantry_e2e::prom::sample(
            &text,
            "gantry_cri_cni_duration_seconds_count",
            &[("operation", "del")],
        )
        .unwrap_or(0.0))
    };
    let dels_before = cni_dels()?;
    for pod in [&web.0, &client.0] {
        c.ok(&["stopp", pod])?;
        c.ok(&["stopp", pod])?; // idempotent
        c.ok(&["rmp", pod])?;
    }
    let dels = cni_dels()? - dels_before;
    ensure!(dels == 2.0, "CNI DEL ran {dels} times for two pods");
    ensure!(c.ok(&["ps", "-a", "-q"])?.is_empty(), "containers left");
    ensure!(c.ok(&["pods", "-q"])?.is_empty(), "pods left");
    let mounts = host::mounts_below(&cri.state_dir);
    ensure!(
        mounts.is_empty(),
        "mounts left below the state dir: {mounts:?}"
    );
    let ctr_out = std::process::Command::new("ctr")
        .arg("--address")
        .arg(&bed.containerd.socket)
        .args(["-n", &cri.namespace, "containers", "ls", "-q"])
        .output()?;
    let records = String::from_utf8_lossy(&ctr_out.stdout);
    ensure!(
        records.trim().is_empty(),
        "containerd records left: {records}"
    );
    let ips = cri.network.leased_ips();
    if !ips.is_empty() {
        bail!("IP leases left on {}: {ips:?}", cri.network.name);
    }
    bed.teardown()?;
    Ok(())
}

/// A crash in the middle of RunPodSandbox or CreateContainer leaves nothing that a
/// restart does not find and release: no namespace pin, no IP, no snapshot, no lease.
/// Restarts the CRI (SIGKILL) and checks that crictl lists no container, for `why`.
fn restart_listing_no_container(
    bed: &mut Bed,
    cri: &mut GantryCri,
    work: &Path,
    why: &str,
) -> Result<()> {
    cri.restart(bed, libc::SIGKILL)?;
    let c = Crictl { cri, dir: work };
    ensure!(c.ok(&["ps", "-a", "-q"])?.is_empty(), "{why}");
    Ok(())
}

#[test]
fn crashes_in_the_middle_of_creation_leave_nothing_behind() -> Result<()> {
    let mut bed = Bed::start(&BedOptions::named("e2e-gantry-crash"))?;
    let mut cri = bed.start_gantry_cri("gantry-cri")?;
    let work = bed.dir().join("crictl");
    std::fs::create_dir_all(&work)?;
    // Per-container PID namespaces: no infra process, so every snapshot is a container's.
    let own_pid = json!({"linux": {"security_context": {"namespace_options": {"pid": 1}}}});
    let socket = bed.containerd.socket.clone();
    let ctr = move |cri: &GantryCri, args: &[&str]| -> Result<String> {
        let out = std::process::Command::new("ctr")
            .arg("--address")
            .arg(&socket)
            .args(["-n", &cri.namespace])
            .args(args)
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    {
        let c = Crictl {
            cri: &cri,
            dir: &work,
        };
        c.ok(&["pull", BUSYBOX])?;
    }

    // Crash after the namespaces are pinned and CNI ADD gave the pod an IP.
    cri.restart_with_failpoint(&mut bed, libc::SIGTERM, Some("sandbox-after-network"))?;
    {
        let c = Crictl {
            cri: &cri,
            dir: &work,
        };
        let err = c
            .run_pod("torn", own_pid.clone())
            .err()
            .map(|e| e.to_string());
        ensure!(err.is_some(), "RunPodSandbox survived its crash point");
    }
    ensure!(
        !cri.network.leased_ips().is_empty() && !host::mounts_below(&cri.state_dir).is_empty(),
        "the crash left an IP lease and namespace pins for the restart to find"
    );
    cri.restart(&mut bed, libc::SIGKILL)?;
    let c = Crictl {
        cri: &cri,
        dir: &work,
    };
    let pods = c.json(&["pods", "-o", "json"])?;
    let items = pods["items"].as_array().cloned().unwrap_or_default();
    ensure!(
        items.len() == 1 && items[0]["state"] == "SANDBOX_NOTREADY",
        "the torn sandbox is listed as not ready, for the kubelet to remove: {pods}"
    );
    let leaked = cri.network.leased_ips();
    ensure!(leaked.is_empty(), "IP leases left by the crash: {leaked:?}");
    let pins = host::mounts_below(&cri.state_dir);
    ensure!(pins.is_empty(), "mounts left by the crash: {pins:?}");
    c.ok(&["rmp", items[0]["id"].as_str().unwrap_or_default()])?;

    // Crash after the container's rootfs snapshot was prepared, before its record.
    let pod = c.run_pod("whole", own_pid)?;
    cri.restart_with_failpoint(&mut bed, libc::SIGTERM, Some("container-after-snapshot"))?;
    let c = Crictl {
        cri: &cri,
        dir: &work,
    };
    let config = c.file(
        "torn-ctr.json",
        &json!({"metadata": {"name": "torn"}, "image": {"image": BUSYBOX}, "command": ["sleep", "60"], "linux": {}}),
    )?;
    ensure!(
        c.run(&["create", &pod.0, &config, &pod.1])?.status.code() != Some(0),
        "CreateContainer survived its crash point"
    );
    ensure!(
        ctr(&cri, &["snapshots", "ls"])?.contains("Active"),
        "the crash point was reached with the snapshot prepared"
    );
    restart_listing_no_container(&mut bed, &mut cri, &work, "no container was recorded")?;
    let c = Crictl {
        cri: &cri,
        dir: &work,
    };
    let snapshots = ctr(&cri, &["snapshots", "ls"])?;
    ensure!(
        !snapshots.contains("Active"),
        "the orphaned rootfs snapshot is collected after the restart: {snapshots}"
    );
    let leases = ctr(&cri, &["leases", "ls", "-q"])?;
    ensure!(leases.trim().is_empty(), "leases left: {leases}");
    // The pod itself is intact and takes containers again.
    let id = c.run_container(&pod, "after", json!({"command": ["sleep", "60"]}))?;
    c.wait_state(&id, "CONTAINER_RUNNING")?;

    // A CreateContainer that went through leaves the next one a lease made ahead; it
    // holds nothing, and a restart deletes it with the rest.
    wait::until(
        "a lease made ahead for the next CreateContainer",
        Duration::from_secs(30),
        || {
            Ok(ctr(&cri, &["leases", "ls", "-q"])?
                .contains("gantry-create-")
                .then_some(()))
        },
    )?;

    // Crash once RemoveContainer has marked the container, before it answered: the
    // restart finishes the removal (task, snapshot, record).
    c.ok(&["stop", "--timeout", "0", &id])?;
    cri.restart_with_failpoint(&mut bed, libc::SIGTERM, Some("container-removing"))?;
    {
        let c = Crictl {
            cri: &cri,
            dir: &work,
        };
        ensure!(
            c.run(&["rm", &id])?.status.code() != Some(0),
            "RemoveContainer survived its crash point"
        );
    }
    ensure!(
        ctr(&cri, &["containers", "ls", "-q"])?.contains(&id),
        "the crash point was reached with the container's record still there"
    );
    restart_listing_no_container(
        &mut bed,
        &mut cri,
        &work,
        "the container whose removal was cut short is not listed after the restart",
    )?;
    let c = Crictl {
        cri: &cri,
        dir: &work,
    };
    wait::until(
        "the interrupted removal to release the record and the snapshot",
        Duration::from_secs(30),
        || {
            let records = ctr(&cri, &["containers", "ls", "-q"])?;
            let snapshots = ctr(&cri, &["snapshots", "ls"])?;
            if records.contains(&id) || snapshots.contains("Active") {
                anyhow::bail!("still there: records {records:?}, snapshots {snapshots:?}");
            }
            Ok(Some(()))
        },
    )?;
    let leases = ctr(&cri, &["leases", "ls", "-q"])?;
    ensure!(
        leases.trim().is_empty(),
        "the lease made ahead is gone after the restarts: {leases}"
    );
    c.ok(&["stopp", &pod.0])?;
    c.ok(&["rmp", &pod.0])?;
    ensure!(
        cri.network.leased_ips().is_empty(),
        "IP leases left after rmp"
    );
    bed.teardown()?;
    Ok(())
}
