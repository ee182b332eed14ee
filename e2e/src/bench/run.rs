//! The benchmark run: one bed with both nodes registered at once, measured A B A B.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use jiff::Timestamp;

use super::pods::{self, Pods, IMAGE};
use super::results::{CpuResult, MemoryResult, Results, SetupResults};
use super::{audit, critest, floor, procs, report};
use crate::containerd::PAUSE_IMAGE;
use crate::gantry_node::{self, NodeRuntime};
use crate::{paths, prom, Bed, BedOptions};

pub const BED: &str = "bench";
pub const GANTRY: &str = "bench-gantry";
pub const REFERENCE: &str = "bench-reference";

#[derive(Clone, Debug)]
pub struct Options {
    pub rounds: u32,
    pub out: PathBuf,
    pub quick: bool,
    pub p5_only: bool,
}

/// How much of each measurement a run does.
#[derive(Clone, Copy, Debug)]
struct Scale {
    p1_pods: usize,
    p2_pods: usize,
    steady_pods: usize,
    window: Duration,
    settle: Duration,
    critest_samples: u32,
    floor_runs: usize,
}

impl Scale {
    fn of(quick: bool) -> Scale {
        if quick {
            Scale {
                p1_pods: 10,
                p2_pods: 20,
                steady_pods: 20,
                window: Duration::from_secs(20),
                settle: Duration::from_secs(10),
                critest_samples: 5,
                floor_runs: 10,
            }
        } else {
            Scale {
                p1_pods: 50,
                p2_pods: 100,
                steady_pods: 100,
                window: Duration::from_secs(60),
                settle: Duration::from_secs(30),
                critest_samples: 30,
                floor_runs: 50,
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Gantry,
    Reference,
}

/// One side of the comparison.
struct Setup {
    kind: Kind,
    node: String,
    agent_pid: i32,
    /// The CRI the node's pods run on (crictl's endpoint).
    endpoint: String,
    /// The containerd namespace of its containers (its shims carry it).
    namespace: String,
}

impl Setup {
    fn label(&self) -> &'static str {
        match self.kind {
            Kind::Gantry => "gantry",
            Kind::Reference => "reference",
        }
    }

    fn crictl(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(paths::tool("crictl")?)
            .args(["--runtime-endpoint", &self.endpoint])
            .args(["--image-endpoint", &self.endpoint])
            .args(["--timeout", "60s"])
            .args(args)
            .output()?;
        crate::host::stdout_of(&format!("crictl {}", args.join(" ")), out)
    }
}

/// Runs the benchmark; the results gathered so far come back with the outcome, so a
/// failed run still reports what it measured. The bed is torn down in every case
/// (Ctrl-C included, once the current step yields).
pub async fn run(opts: &Options) -> (Results, Result<()>) {
    let started = Instant::now();
    let scale = Scale::of(opts.quick);
    let mut res = Results {
        date: Timestamp::now().to_string(),
        machine: report::machine(),
        versions: report::versions(),
        rounds: opts.rounds,
        quick: opts.quick,
        p1_pods: scale.p1_pods,
        p2_pods: scale.p2_pods,
        steady_pods: scale.steady_pods,
        window_seconds: scale.window.as_secs_f64(),
        ..Default::default()
    };
    let outcome = run_on_bed(&scale, opts, &mut res, &started).await;
    res.wall_seconds = started.elapsed().as_secs_f64();
    (res, outcome)
}

async fn run_on_bed(
    scale: &Scale,
    opts: &Options,
    res: &mut Results,
    started: &Instant,
) -> Result<()> {
    std::fs::create_dir_all(&opts.out)?;
    let mut bed = Bed::start(&BedOptions {
        name: BED.to_string(),
        audit_users: vec![
            format!("system:node:{GANTRY}"),
            format!("system:node:{REFERENCE}"),
        ],
    })?;
    say(started, "bed up");
    let outcome = tokio::select! {
        r = measure(&mut bed, scale, opts, res, started) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    say(started, "tearing the bed down");
    let down = bed.teardown();
    outcome?;
    down.context("tear down the benchmark bed")
}

fn say(started: &Instant, what: &str) {
    eprintln!("bench [{:>6.1}s] {what}", started.elapsed().as_secs_f64());
}

async fn measure(
    bed: &mut Bed,
    scale: &Scale,
    opts: &Options,
    res: &mut Results,
    started: &Instant,
) -> Result<()> {
    // P5 and the floor come first, before any kubelet runs: a kubelet kills the
    // sandboxes it does not know, and critest's would be such.
    p5(bed, scale, &opts.out, res)?;
    say(started, "P5 (critest -benchmark) done");
    if opts.p5_only {
        return Ok(());
    }
    let fl = floor::prepare(bed, IMAGE)?;
    for i in 0..scale.floor_runs {
        res.floor.push(fl.start_once(i)?);
    }
    say(started, "floor done");

    let g = gantry_node::start(bed, GANTRY, NodeRuntime::Embedded)?;
    let r = bed.start_reference_node(REFERENCE)?;
    say(started, "both nodes Ready");
    let setups = [
        Setup {
            kind: Kind::Gantry,
            node: GANTRY.to_string(),
            agent_pid: g.process.pid,
            endpoint: format!("unix://{}", g.cri_socket.display()),
            namespace: format!("gantry-{GANTRY}"),
        },
        Setup {
            kind: Kind::Reference,
            node: REFERENCE.to_string(),
            agent_pid: r.kubelet.pid,
            endpoint: bed.containerd.endpoint(),
            namespace: "k8s.io".to_string(),
        },
    ];
    for s in &setups {
        s.crictl(&["pull", IMAGE])?;
        if s.kind == Kind::Reference {
            s.crictl(&["pull", PAUSE_IMAGE])?;
        }
    }
    let client = pods::client(&bed.control_plane.admin_kubeconfig).await?;
    let pods = Pods::start(client).await?;
    // A first pod on each node: the first sandbox of a node is slower for reasons
    // (caches, first cgroups) that a benchmark of the steady state should not count.
    for s in &setups {
        let name = format!("warmup-{}", s.label());
        pods.create(&name, &s.node).await?;
        let names = [name];
        pods.wait(&names, "Ready", Duration::from_secs(180), |p| {
            p.ready.is_some()
        })
        .await?;
        pods.delete_all(&names).await?;
        wait_idle(&pods, s, &names).await?;
    }
    say(started, "warm-up pods done");

    for round in 0..opts.rounds {
        for s in &setups {
            let out = setup_results(res, s.kind);
            p1_p6(bed, &pods, s, round, scale.p1_pods, out).await?;
            say(
                started,
                &format!("round {round}: P1 and P6 on {} done", s.label()),
            );
            p2(&pods, s, round, scale.p2_pods, out).await?;
            say(started, &format!("round {round}: P2 on {} done", s.label()));
        }
    }

    // P7 with no benchmark pods: both nodes counted over the same window.
    tokio::time::sleep(scale.settle).await;
    let log = bed
        .control_plane
        .audit_log
        .clone()
        .context("the bed has no audit log")?;
    let from = Timestamp::now();
    tokio::time::sleep(scale.window).await;
    let counts = audit::count(&log, from, Timestamp::now())?;
    for s in &setups {
        setup_results(res, s.kind).requests_idle = Some(
            counts
                .get(&format!("system:node:{}", s.node))
                .cloned()
                .unwrap_or_default(),
        );
    }
    say(started, "P7 (idle) done");

    for s in &setups {
        steady(bed, &pods, s, scale, &log, setup_results(res, s.kind)).await?;
        say(started, &format!("P3, P4 on {} done", s.label()));
    }
    Ok(())
}

fn setup_results(res: &mut Results, kind: Kind) -> &mut SetupResults {
    match kind {
        Kind::Gantry => &mut res.gantry,
        Kind::Reference => &mut res.reference,
    }
}

/// critest -benchmark on containerd's CRI plugin (with a pod network it reads from
/// its conf dir, removed afterwards so the reference node's is the only one) and on a
/// `gantry cri` of the same build (stopped afterwards).
fn p5(bed: &mut Bed, scale: &Scale, out: &Path, res: &mut Results) -> Result<()> {
    let conf_dir = bed.containerd.cni_conf_dir.clone();
    let net = crate::network::create_node_network(&mut bed.state, "critest", &conf_dir)?;
    let ctd = critest::run(
        &bed.containerd.endpoint(),
        &out.join("critest-reference"),
        scale.critest_samples,
    );
    std::fs::remove_file(conf_dir.join(format!("10-{}.conflist", net.name)))?;
    res.reference.p5 = ctd?;
    let cri = bed.start_gantry_cri("bench-cri")?;
    let g = critest::run(
        &cri.endpoint(),
        &out.join("critest-gantry"),
        scale.critest_samples,
    );
    cri.process.stop(Duration::from_secs(10));
    res.gantry.p5 = g?;
    Ok(())
}

/// The node's runtime-operation duration sums (and Gantry's CNI ADD) from its /metrics.
fn op_sums(bed: &Bed, node: &str) -> Result<BTreeMap<String, f64>> {
    let text = bed.kubectl()?.run(&[
        "get",
        "--raw",
        &format!("/api/v1/nodes/{node}/proxy/metrics"),
    ])?;
    let mut sums = BTreeMap::new();
    let prefix = "kubelet_runtime_operations_duration_seconds_sum{operation_type=\"";
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(prefix) {
            if let Some((op, _)) = rest.split_once('"') {
                if let Some(v) = prom::sample(
                    &text,
                    "kubelet_runtime_operations_duration_seconds_sum",
                    &[("operation_type", op)],
                ) {
                    sums.insert(op.to_string(), v);
                }
            }
        }
    }
    if let Some(v) = prom::sample(
        &text,
        "gantry_cri_cni_duration_seconds_sum",
        &[("operation", "add")],
    ) {
        sums.insert("cni_add".to_string(), v);
    }
    Ok(sums)
}

/// P1: `n` pods one after another, each created once the previous one is Ready; then
/// P6: each deleted with grace period 0, one after another.
async fn p1_p6(
    bed: &Bed,
    pods: &Pods,
    s: &Setup,
    round: u32,
    n: usize,
    out: &mut SetupResults,
) -> Result<()> {
    let before = op_sums(bed, &s.node)?;
    let mut names = Vec::new();
    for i in 0..n {
        let name = format!("p1-{}-{round}-{i}", s.label());
        let t = pods.create(&name, &s.node).await?;
        let one = [name.clone()];
        pods.wait(&one, "Ready", Duration::from_secs(120), |p| {
            p.running.is_some() && p.ready.is_some()
        })
        .await?;
        let seen = pods.seen(&name);
        if let (Some(run), Some(ready)) = (seen.running, seen.ready) {
            out.p1_running.push((run - t).as_secs_f64());
            out.p1_ready.push((ready - t).as_secs_f64());
        }
        names.push(name);
    }
    let after = op_sums(bed, &s.node)?;
    for (op, v) in &after {
        *out.phase_sums.entry(op.clone()).or_default() += v - before.get(op).unwrap_or(&0.0);
    }
    out.phase_pods += n;
    for name in &names {
        let t = pods.delete_now(name).await?;
        let one = [name.clone()];
        pods.wait(&one, "deleted", Duration::from_secs(60), |p| {
            p.deleted.is_some()
        })
        .await?;
        if let Some(gone) = pods.seen(name).deleted {
            out.p6_delete.push((gone - t).as_secs_f64());
        }
    }
    wait_idle(pods, s, &names).await
}

/// P2: `n` pods created at once; the time until all are Running (and Ready).
async fn p2(pods: &Pods, s: &Setup, round: u32, n: usize, out: &mut SetupResults) -> Result<()> {
    let names: Vec<String> = (0..n)
        .map(|i| format!("p2-{}-{round}-{i}", s.label()))
        .collect();
    let t = pods.create_all(&names, &s.node).await?;
    pods.wait(&names, "Ready", Duration::from_secs(600), |p| {
        p.running.is_some() && p.ready.is_some()
    })
    .await?;
    let last = |f: &dyn Fn(&pods::Seen) -> Option<Instant>| {
        names
            .iter()
            .filter_map(|nm| f(&pods.seen(nm)))
            .max()
            .map(|m| (m - t).as_secs_f64())
    };
    if let Some(v) = last(&|p| p.running) {
        out.p2_all_running.push(v);
    }
    if let Some(v) = last(&|p| p.ready) {
        out.p2_all_ready.push(v);
    }
    pods.delete_all(&names).await?;
    wait_idle(pods, s, &names).await
}

/// P3, P4 and P7 (busy) with `steady_pods` running on the node.
async fn steady(
    bed: &Bed,
    pods: &Pods,
    s: &Setup,
    scale: &Scale,
    log: &Path,
    out: &mut SetupResults,
) -> Result<()> {
    let names: Vec<String> = (0..scale.steady_pods)
        .map(|i| format!("steady-{}-{i}", s.label()))
        .collect();
    pods.create_all(&names, &s.node).await?;
    pods.wait(&names, "Ready", Duration::from_secs(600), |p| {
        p.ready.is_some()
    })
    .await?;
    tokio::time::sleep(scale.settle).await;
    let address = bed.containerd.socket.display().to_string();
    let containerd = bed.containerd.process.pid;
    let shims = procs::shims(&address, &s.namespace);
    // Memory: the median of five readings a second apart (per component).
    let mut readings = Vec::new();
    for _ in 0..5 {
        readings.push((
            procs::memory(s.agent_pid),
            procs::memory(containerd),
            procs::total_memory(&shims),
        ));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    readings.sort_by_key(|r| r.0.rss_bytes);
    let (agent, _, _) = readings[2];
    readings.sort_by_key(|r| r.1.rss_bytes);
    let (_, ctd, _) = readings[2];
    readings.sort_by_key(|r| r.2.rss_bytes);
    let (_, _, shim_mem) = readings[2];
    out.memory = Some(MemoryResult {
        pods: names.len(),
        agent,
        containerd: ctd,
        shims: shim_mem,
        shim_count: shims.len(),
    });

    let cpu = || {
        (
            procs::cpu_seconds(s.agent_pid),
            procs::cpu_seconds(containerd),
            procs::total_cpu(&shims),
        )
    };
    let from = Timestamp::now();
    let t0 = Instant::now();
    let c0 = cpu();
    tokio::time::sleep(scale.window).await;
    let c1 = cpu();
    let window = t0.elapsed().as_secs_f64();
    let to = Timestamp::now();
    out.cpu = Some(CpuResult {
        window_seconds: window,
        agent_seconds: c1.0 - c0.0,
        containerd_seconds: c1.1 - c0.1,
        shims_seconds: c1.2 - c0.2,
    });
    out.requests_busy = audit::count(log, from, to)?
        .get(&format!("system:node:{}", s.node))
        .cloned();
    pods.delete_all(&names).await?;
    wait_idle(pods, s, &names).await
}

/// Waits until every pod of `names` is gone from the API and the node's runtime has no
/// ready sandbox and no running container left, so the next measurement starts quiet.
async fn wait_idle(pods: &Pods, s: &Setup, names: &[String]) -> Result<()> {
    pods.wait(names, "deleted", Duration::from_secs(300), |p| {
        p.deleted.is_some()
    })
    .await?;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let sandboxes = s.crictl(&["pods", "-q", "--state", "ready"])?;
        let containers = s.crictl(&["ps", "-q"])?;
        if sandboxes.trim().is_empty() && containers.trim().is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "{} still runs sandboxes or containers 300 s after its pods were deleted",
                s.node
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
