//! Pod networking on Gantry nodes (embedded CRI), seen as a user sees it:
//! - two pods on one node reach each other by pod IP (`kubectl exec … wget`);
//! - two nodes, each a host of its own (a network namespace with its own bridge and pod
//!   /24, linked through a bridge on the host, with routes between the pod subnets):
//!   pods pinned to each reach the other across nodes, and the apiserver reaches both
//!   kubelets (`kubectl logs`, `exec`);
//! - 200 sandbox create/delete cycles through the node's CRI socket (crictl, in
//!   parallel) and batches of real pods through kubectl leave host-local holding exactly
//!   the IPs of live pods, and no veth or namespace pin of a deleted pod;
//! - a crash of `gantry node` in the middle of sandbox creation, then a normal restart:
//!   the pod runs and no IP leaked.
//!
//! Every address is in 198.18.0.0/16 on bridges and namespaces the bed makes (see
//! gantry_e2e::network and gantry_e2e::multinode); teardown leaves nothing behind.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use gantry_e2e::gantry_node::{self, GantryNode, NodeRuntime};
use gantry_e2e::kubectl::Kubectl;
use gantry_e2e::network::NodeNetwork;
use gantry_e2e::{host, multinode, wait, Bed, BedOptions};
use serde_json::{json, Value};

const BUSYBOX: &str = "registry.k8s.io/e2e-test-images/busybox:1.29-2";
/// Create/delete cycles of bare sandboxes through the CRI socket, and how many crictl
/// clients run them at once.
const CRI_CYCLES: usize = 200;
const CRI_CLIENTS: usize = 4;
/// Batches of real pods through kubectl, and pods per batch.
const POD_BATCHES: usize = 2;
const PODS_PER_BATCH: usize = 10;

/// Where a pod goes: a node by name (no scheduler), or the scheduler with a selector on
/// the node's hostname label.
enum Place<'a> {
    NodeName(&'a str),
    Hostname(&'a str),
}

/// A busybox pod running `script` under `sh -c`; it stops at once on SIGTERM.
fn pod_yaml(name: &str, place: Place, labels: &[(&str, &str)], script: &str) -> String {
    let placement = match place {
        Place::NodeName(n) => json!({ "nodeName": n }),
        Place::Hostname(n) => json!({ "nodeSelector": { "kubernetes.io/hostname": n } }),
    };
    let labels: serde_json::Map<String, Value> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let mut spec = json!({
        "terminationGracePeriodSeconds": 5,
        "containers": [{
            "name": "main",
            "image": BUSYBOX,
            "command": ["sh", "-c", format!("trap 'exit 0' TERM\n{script}\nwhile true; do sleep 1; done")],
        }],
    });
    if let (Some(s), Some(p)) = (spec.as_object_mut(), placement.as_object()) {
        s.extend(p.clone());
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "labels": labels },
        "spec": spec,
    })
    .to_string()
}

/// A pod serving "hello from <its hostname>" over HTTP on port 8080 (busybox httpd, in
/// the background so the shell's trap ends the pod quickly).
fn web_pod(name: &str, place: Place) -> String {
    pod_yaml(
        name,
        place,
        &[("app", "net-e2e")],
        "mkdir -p /www && echo \"hello from $(hostname)\" > /www/index.html && httpd -p 8080 -h /www && echo serving on port 8080",
    )
}

fn wait_running(k: &Kubectl, selector: &str, count: usize) -> Result<Vec<Value>> {
    wait::until(
        &format!("{count} pods {selector} to be Running"),
        Duration::from_secs(180),
        || {
            let pods = k.get_json(&["pods", "-l", selector])?;
            let items = pods["items"].as_array().cloned().unwrap_or_default();
            let running = items
                .iter()
                .filter(|p| p["status"]["phase"] == "Running" && p["status"]["podIP"].is_string())
                .count();
            if items.len() == count && running == count {
                return Ok(Some(items));
            }
            let states: Vec<String> = items
                .iter()
                .map(|p| {
                    format!(
                        "{}={} {}",
                        p["metadata"]["name"].as_str().unwrap_or("?"),
                        p["status"]["phase"].as_str().unwrap_or("?"),
                        p["status"]["containerStatuses"][0]["state"]
                    )
                })
                .collect();
            bail!("{running}/{count} running: {}", states.join("; "))
        },
    )
    .map_err(|e| {
        let describe = k
            .run(&["describe", "pods", "-l", selector])
            .unwrap_or_else(|d| format!("{d:#}"));
        e.context(format!("kubectl describe pods -l {selector}:\n{describe}"))
    })
}

fn pod_ip(pod: &Value) -> String {
    pod["status"]["podIP"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The IPs of the pods on `node` that still exist, as kubectl shows them.
fn live_pod_ips(k: &Kubectl, node: &str) -> Result<BTreeSet<String>> {
    let pods = k.get_json(&[
        "pods",
        "--all-namespaces",
        "--field-selector",
        &format!("spec.nodeName={node}"),
    ])?;
    Ok(pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["spec"]["hostNetwork"] != true)
        .map(pod_ip)
        .filter(|ip| !ip.is_empty())
        .collect())
}

fn in_subnet(ip: &str, net: &NodeNetwork) -> bool {
    let prefix = net.gateway.rsplit_once('.').map(|p| p.0).unwrap_or("");
    ip.starts_with(&format!("{prefix}.")) && ip != net.gateway
}

/// `kubectl exec POD -- wget` of http://IP:8080/, given 10 seconds (busybox timeout:
/// this busybox's own `wget -T` crashes).
fn fetch(k: &Kubectl, pod: &str, ip: &str) -> Result<String> {
    Ok(k.run(&[
        "exec",
        pod,
        "--",
        "timeout",
        "10",
        "wget",
        "-qO-",
        &format!("http://{ip}:8080/"),
    ])?
    .trim()
    .to_string())
}

/// What is left of pods on a node: the IPs host-local holds, the veths on its bridge
/// (`ip link show master BRIDGE`, in the node's namespace), the network namespace pins
/// below its CRI state directory, and (when the node answers) crictl's ready sandboxes.
#[derive(Debug, PartialEq, Eq)]
struct NodeLeftovers {
    leased: BTreeSet<String>,
    veths: usize,
    netns_pins: usize,
    ready_sandboxes: Option<usize>,
}

impl NodeLeftovers {
    /// What `live` pods (their IPs) need: one of each per pod.
    fn for_live(live: BTreeSet<String>, with_crictl: bool) -> Self {
        NodeLeftovers {
            veths: live.len(),
            netns_pins: live.len(),
            ready_sandboxes: with_crictl.then_some(live.len()),
            leased: live,
        }
    }
}

fn leftovers(node: &GantryNode, with_crictl: bool) -> Result<NodeLeftovers> {
    let args = ["-o", "link", "show", "master", node.network.bridge.as_str()];
    let links = match &node.netns {
        Some(ns) => host::run_in_netns(ns, "ip", &args)?,
        None => host::run("ip", &args)?,
    };
    let netns_pins = host::mounts_below(&node.dir.join("cri-state"))
        .iter()
        .filter(|m| m.file_name().is_some_and(|n| n == "net"))
        .count();
    let ready_sandboxes = if with_crictl {
        let out = node
            .crictl()?
            .args(["pods", "--state", "Ready", "-q"])
            .output()?;
        let pods = host::stdout_of("crictl pods --state Ready -q", out)?;
        Some(pods.lines().filter(|l| !l.trim().is_empty()).count())
    } else {
        None
    };
    Ok(NodeLeftovers {
        leased: node.network.leased_ips().into_iter().collect(),
        veths: links.lines().filter(|l| !l.trim().is_empty()).count(),
        netns_pins,
        ready_sandboxes,
    })
}

/// Waits until the node holds exactly what its live pods need: their IPs leased, one
/// veth and one namespace pin each, one ready sandbox each.
fn wait_nothing_leaked(k: &Kubectl, node: &GantryNode, after: &str) -> Result<()> {
    let result = wait::until(
        &format!("the node to hold only its live pods' network after {after}"),
        Duration::from_secs(90),
        || {
            let want = NodeLeftovers::for_live(live_pod_ips(k, &node.name)?, true);
            let have = leftovers(node, true)?;
            if have == want {
                Ok(Some(()))
            } else {
                bail!("live pods need {want:?}; the node has {have:?}")
            }
        },
    );
    node.explain(result)
}

#[test]
fn pods_on_one_node_reach_each_other_and_cycles_leak_no_ip() -> Result<()> {
    let mut bed = Bed::start(&BedOptions::named("e2e-net-one"))?;
    let node = gantry_node::start(&mut bed, "net-one", NodeRuntime::Embedded)?;
    let result = one_node(&bed, &node);
    node.explain(result)?;
    bed.teardown()?;
    Ok(())
}

fn one_node(bed: &Bed, node: &GantryNode) -> Result<()> {
    let k = bed.kubectl()?;
    k.apply_yaml(&web_pod("web", Place::NodeName(&node.name)))?;
    k.apply_yaml(&pod_yaml(
        "client",
        Place::NodeName(&node.name),
        &[("app", "net-e2e")],
        "",
    ))?;
    let pods = wait_running(&k, "app=net-e2e", 2)?;
    let ip_of = |name: &str| {
        pods.iter()
            .find(|p| p["metadata"]["name"] == name)
            .map(pod_ip)
            .unwrap_or_default()
    };
    let (web_ip, client_ip) = (ip_of("web"), ip_of("client"));
    ensure!(
        in_subnet(&web_ip, &node.network) && in_subnet(&client_ip, &node.network),
        "pod IPs {web_ip} and {client_ip} are not both in the node's subnet {}",
        node.network.subnet
    );
    ensure!(web_ip != client_ip, "two pods got one IP {web_ip}");
    let got = wait::until("the web pod to answer", Duration::from_secs(30), || {
        fetch(&k, "client", &web_ip).map(Some)
    })?;
    ensure!(
        got == "hello from web",
        "client fetched {got:?} from web at {web_ip}"
    );
    // And the other way: the web pod reaches the client's address (ping, busybox).
    let ping = k.run(&[
        "exec", "web", "--", "ping", "-c", "1", "-W", "5", &client_ip,
    ])?;
    ensure!(
        ping.contains("1 packets received"),
        "web pings client at {client_ip}: {ping}"
    );
    wait_nothing_leaked(&k, node, "the first pods")?;

    // Real pods, in batches, through kubectl.
    let mut pod_ips = BTreeSet::new();
    for batch in 0..POD_BATCHES {
        let label = format!("batch=b{batch}");
        let yaml: Vec<String> = (0..PODS_PER_BATCH)
            .map(|i| {
                pod_yaml(
                    &format!("b{batch}-{i}"),
                    Place::NodeName(&node.name),
                    &[("batch", &format!("b{batch}"))],
                    "",
                )
            })
            .collect();
        k.apply_yaml(&yaml.join("\n---\n"))?;
        let pods = wait_running(&k, &label, PODS_PER_BATCH)?;
        let ips: BTreeSet<String> = pods.iter().map(pod_ip).collect();
        ensure!(
            ips.len() == PODS_PER_BATCH && ips.iter().all(|ip| in_subnet(ip, &node.network)),
            "batch {batch}: {PODS_PER_BATCH} distinct IPs in {}: {ips:?}",
            node.network.subnet
        );
        ensure!(
            !ips.contains(&web_ip) && !ips.contains(&client_ip),
            "batch {batch} reuses a live pod's IP: {ips:?}"
        );
        pod_ips.extend(ips);
        k.run(&[
            "delete",
            "pods",
            "-l",
            &label,
            "--wait=true",
            "--timeout=120s",
        ])?;
        wait_nothing_leaked(&k, node, &format!("pod batch {batch}"))?;
    }

    // Bare sandboxes through the node's CRI socket, several crictl clients at once.
    let work = bed.dir().join("crictl");
    fs::create_dir_all(&work)?;
    let per_client = CRI_CYCLES / CRI_CLIENTS;
    let started = std::time::Instant::now();
    let sandbox_ips: Vec<String> = std::thread::scope(|s| {
        let clients: Vec<_> = (0..CRI_CLIENTS)
            .map(|c| {
                let work = &work;
                s.spawn(move || cri_cycles(node, work, c, per_client))
            })
            .collect();
        let mut all = Vec::new();
        for client in clients {
            match client.join() {
                Ok(r) => all.extend(r?),
                Err(_) => bail!("a crictl client thread panicked"),
            }
        }
        Ok(all)
    })?;
    println!(
        "{} sandbox cycles through crictl in {:.1?} ({} pods through kubectl before)",
        sandbox_ips.len(),
        started.elapsed(),
        pod_ips.len()
    );
    ensure!(sandbox_ips.len() == CRI_CYCLES, "every cycle ran");
    for ip in &sandbox_ips {
        ensure!(
            in_subnet(ip, &node.network) && *ip != web_ip && *ip != client_ip,
            "a sandbox got {ip}: outside {} or a live pod's",
            node.network.subnet
        );
    }
    let distinct: BTreeSet<&String> = sandbox_ips.iter().chain(&pod_ips).collect();
    println!(
        "{} distinct addresses handed out in {}",
        distinct.len(),
        node.network.subnet
    );
    wait_nothing_leaked(&k, node, "the sandbox cycles")?;
    let ips = live_pod_ips(&k, &node.name)?;
    ensure!(
        ips == BTreeSet::from([web_ip.clone(), client_ip.clone()]),
        "the first pods keep their IPs: {ips:?}"
    );
    ensure!(
        fetch(&k, "client", &web_ip)? == "hello from web",
        "the web pod still answers after the cycles"
    );
    Ok(())
}

/// `cycles` RunPodSandbox/StopPodSandbox/RemovePodSandbox rounds through crictl, each
/// sandbox with its own network (and its own PID namespace per container, as pods
/// without shareProcessNamespace); returns the IP each sandbox got.
fn cri_cycles(node: &GantryNode, work: &Path, client: usize, cycles: usize) -> Result<Vec<String>> {
    let crictl = |args: &[&str]| -> Result<String> {
        let out = node.crictl()?.args(args).output()?;
        Ok(host::stdout_of(&format!("crictl {}", args.join(" ")), out)?
            .trim()
            .to_string())
    };
    let mut ips = Vec::new();
    for i in 0..cycles {
        let name = format!("cycle-{client}-{i}");
        let config = json!({
            "metadata": {"name": name, "namespace": "net-e2e", "uid": format!("uid-{name}"), "attempt": 0},
            "hostname": name,
            "log_directory": work.join("pods").join(&name),
            "linux": {"security_context": {"namespace_options": {"pid": 1}}},
        });
        let file = work.join(format!("{name}.json"));
        fs::write(&file, serde_json::to_vec(&config)?)?;
        let id = crictl(&["runp", &file.to_string_lossy()])?;
        let status: Value = serde_json::from_str(&crictl(&["inspectp", "-o", "json", &id])?)?;
        let ip = status["status"]["network"]["ip"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        ensure!(
            !ip.is_empty(),
            "sandbox {name} has no IP: {}",
            status["status"]
        );
        ips.push(ip);
        crictl(&["stopp", &id])?;
        crictl(&["rmp", &id])?;
        fs::remove_file(&file)?;
    }
    Ok(ips)
}

#[test]
fn pods_on_two_nodes_in_their_own_network_namespaces_reach_each_other() -> Result<()> {
    let mut bed = Bed::start(&BedOptions::named("e2e-net-two"))?;
    let mut underlay = multinode::create_underlay(&mut bed)?;
    let (host_a, node_a) = underlay.start_node(&mut bed, "net-a")?;
    let (host_b, node_b) = underlay.start_node(&mut bed, "net-b")?;
    let result = two_nodes(&bed, (&host_a, &node_a), (&host_b, &node_b));
    let result = node_a.explain(result);
    node_b.explain(result)?;
    let links = [
        underlay.bridge.clone(),
        host_a.link.clone(),
        host_b.link.clone(),
    ];
    // The forwarders hold sockets in the nodes' namespaces: closed before teardown.
    drop((host_a, host_b));
    // Teardown checks its own record (processes, mounts such as the namespace pins,
    // bridges, links); the host's interface list is checked here as a user would.
    bed.teardown()?;
    let ifaces = host::run("ip", &["-br", "link"])?;
    for link in &links {
        ensure!(
            !ifaces
                .lines()
                .any(|l| l.split(['@', ' ']).next() == Some(link.as_str())),
            "{link} is still on the host after teardown:\n{ifaces}"
        );
    }
    Ok(())
}

fn two_nodes(
    bed: &Bed,
    (host_a, node_a): (&multinode::NodeHost, &GantryNode),
    (host_b, node_b): (&multinode::NodeHost, &GantryNode),
) -> Result<()> {
    let k = bed.kubectl()?;
    // Each node registered its own address, on the link between the hosts.
    let nodes = k.run(&["get", "nodes", "-o", "wide"])?;
    println!("{nodes}");
    for (host, node) in [(host_a, node_a), (host_b, node_b)] {
        ensure!(
            nodes.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.first() == Some(&node.name.as_str())
                    && f.get(1) == Some(&"Ready")
                    && f.contains(&host.address.as_str())
            }),
            "kubectl get nodes -o wide shows {} Ready at {}:\n{nodes}",
            node.name,
            host.address
        );
        // The node's pod bridge is inside its namespace, not on the host.
        ensure!(
            !host::link_exists(&node.network.bridge),
            "bridge {} of {} is on the host",
            node.network.bridge,
            node.name
        );
        host.ip(&["link", "show", "dev", &node.network.bridge])?;
    }

    // One web pod per node, placed by the scheduler through the hostname label.
    k.apply_yaml(&web_pod("web-a", Place::Hostname(&node_a.name)))?;
    k.apply_yaml(&web_pod("web-b", Place::Hostname(&node_b.name)))?;
    let pods = wait_running(&k, "app=net-e2e", 2)?;
    let find = |name: &str| -> Result<&Value> {
        pods.iter()
            .find(|p| p["metadata"]["name"] == name)
            .with_context(|| format!("pod {name} is listed"))
    };
    let (pod_a, pod_b) = (find("web-a")?, find("web-b")?);
    ensure!(
        pod_a["spec"]["nodeName"] == node_a.name.as_str()
            && pod_b["spec"]["nodeName"] == node_b.name.as_str(),
        "the scheduler placed web-a on {} and web-b on {}",
        pod_a["spec"]["nodeName"],
        pod_b["spec"]["nodeName"]
    );
    let (ip_a, ip_b) = (pod_ip(pod_a), pod_ip(pod_b));
    ensure!(
        in_subnet(&ip_a, &node_a.network) && in_subnet(&ip_b, &node_b.network),
        "web-a has {ip_a} (node subnet {}), web-b has {ip_b} (node subnet {})",
        node_a.network.subnet,
        node_b.network.subnet
    );
    // The apiserver reaches each kubelet at its address: logs through the kubelet API.
    for pod in ["web-a", "web-b"] {
        let logs = wait::until(
            &format!("kubectl logs {pod}"),
            Duration::from_secs(30),
            || {
                let logs = k.run(&["logs", pod])?;
                Ok(logs.contains("serving on port 8080").then_some(logs))
            },
        )?;
        println!("{pod}: {}", logs.trim());
    }

    // Without routes between the nodes, a pod cannot reach the other node's pods: the
    // traffic below is carried by the routes and the link, nothing else.
    let err = fetch(&k, "web-a", &ip_b).err().map(|e| format!("{e:#}"));
    ensure!(
        err.is_some(),
        "web-a reached web-b at {ip_b} before any route between the nodes"
    );
    host_a.route(&node_b.network.subnet, &host_b.address)?;
    host_b.route(&node_a.network.subnet, &host_a.address)?;
    let routes = host_a.ip(&["route", "show", &node_b.network.subnet])?;
    ensure!(
        routes.contains(&format!("via {}", host_b.address)),
        "route to {} on {}: {routes}",
        node_b.network.subnet,
        node_a.name
    );

    let got = wait::until("web-a to reach web-b", Duration::from_secs(30), || {
        fetch(&k, "web-a", &ip_b).map(Some)
    })?;
    ensure!(
        got == "hello from web-b",
        "web-a fetched {got:?} from {ip_b}"
    );
    let got = fetch(&k, "web-b", &ip_a)?;
    ensure!(
        got == "hello from web-a",
        "web-b fetched {got:?} from {ip_a}"
    );
    // The packets were routed, not translated: while web-a holds a connection open,
    // web-b sees web-a's pod IP as its peer.
    let mut holder = std::process::Command::new(&k.bin)
        .arg("--kubeconfig")
        .arg(&k.kubeconfig)
        .args(["exec", "web-a", "--", "sh", "-c"])
        .arg(format!("sleep 10 | nc {ip_b} 8080"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let seen = wait::until(
        "web-b to see web-a's connection",
        Duration::from_secs(20),
        || {
            let n = k.run(&["exec", "web-b", "--", "netstat", "-tn"])?;
            // httpd listens on a dual-stack socket: IPv4 peers show as ::ffff:A.B.C.D.
            let from_a = n.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() == 6
                    && f[5] == "ESTABLISHED"
                    && f[3].ends_with(":8080")
                    && f[4]
                        .trim_start_matches("::ffff:")
                        .rsplit_once(':')
                        .map(|p| p.0)
                        == Some(ip_a.as_str())
            });
            if from_a {
                Ok(Some(()))
            } else {
                bail!("netstat -tn in web-b:\n{n}")
            }
        },
    );
    let _ = holder.kill();
    let _ = holder.wait();
    seen?;
    // The nodes' namespaces route only the pod range: no default route to leave by.
    for host in [host_a, host_b] {
        let default = host.ip(&["route", "show", "default"])?;
        ensure!(
            default.trim().is_empty(),
            "{} has a default route: {default}",
            host.name
        );
    }

    // Deleting the pods releases their addresses and veths inside the nodes' namespaces.
    k.run(&[
        "delete",
        "pods",
        "-l",
        "app=net-e2e",
        "--wait=true",
        "--timeout=120s",
    ])?;
    for node in [node_a, node_b] {
        wait_nothing_leaked(&k, node, "deleting the pods")?;
    }
    Ok(())
}

#[test]
fn a_crash_in_the_middle_of_sandbox_creation_leaks_no_ip() -> Result<()> {
    let mut bed = Bed::start(&BedOptions::named("e2e-net-crash"))?;
    let mut node = gantry_node::start(&mut bed, "net-crash", NodeRuntime::Embedded)?;
    let result = crash_mid_sandbox(&mut bed, &mut node);
    node.explain(result)?;
    bed.teardown()?;
    Ok(())
}

fn crash_mid_sandbox(bed: &mut Bed, node: &mut GantryNode) -> Result<()> {
    let k = bed.kubectl()?;
    // A pod that runs through both crashes, so "nothing leaked" is not "nothing left".
    k.apply_yaml(&web_pod("web", Place::NodeName(&node.name)))?;
    let web = wait_running(&k, "app=net-e2e", 1)?;
    let web_ip = pod_ip(&web[0]);

    for (n, point) in ["sandbox-after-namespaces", "sandbox-after-network"]
        .into_iter()
        .enumerate()
    {
        node.restart_with_failpoint(bed, libc::SIGTERM, Some(point), || Ok(()))?;
        let name = format!("torn-{n}");
        k.apply_yaml(&pod_yaml(
            &name,
            Place::NodeName(&node.name),
            &[("torn", &name)],
            "",
        ))?;
        wait::until(
            &format!("gantry node to abort at {point} while creating {name}'s sandbox"),
            Duration::from_secs(120),
            || Ok((!node.process.is_alive()).then_some(())),
        )?;
        let log = fs::read_to_string(&node.process.log)?;
        ensure!(
            log.contains(&format!("failpoint {point}: aborting")),
            "gantry node died at {point}: {}",
            node.process.log_tail(20)
        );
        // What the crash left for the restart to find: the torn sandbox's namespace
        // pin and, past CNI ADD, its veth and an address no pod shows.
        let have = leftovers(node, false)?;
        let live = live_pod_ips(&k, &node.name)?;
        let past_cni_add = point == "sandbox-after-network";
        let extra = usize::from(past_cni_add);
        ensure!(
            have.netns_pins == live.len() + 1
                && have.veths == live.len() + extra
                && have.leased.len() == live.len() + extra
                && live.is_subset(&have.leased),
            "after the crash at {point}, the live pods {live:?} and the torn sandbox hold {have:?}"
        );
        let phase = k.get_json(&["pod", &name])?["status"]["phase"].clone();
        ensure!(
            phase == "Pending",
            "{name} is Pending while its node is down: {phase}"
        );

        node.restart(bed, libc::SIGKILL)?;
        let pods = wait_running(&k, &format!("torn={name}"), 1)?;
        let ip = pod_ip(&pods[0]);
        ensure!(
            in_subnet(&ip, &node.network) && ip != web_ip,
            "{name} runs with {ip}, in {} and not web's",
            node.network.subnet
        );
        wait_nothing_leaked(&k, node, &format!("the crash at {point}"))?;
        let got = wait::until(
            &format!("{name} to reach web"),
            Duration::from_secs(30),
            || fetch(&k, &name, &web_ip).map(Some),
        )?;
        ensure!(got == "hello from web", "{name} fetched {got:?} from web");
    }
    let ips = live_pod_ips(&k, &node.name)?;
    ensure!(ips.contains(&web_ip), "web kept its IP {web_ip}: {ips:?}");
    Ok(())
}
