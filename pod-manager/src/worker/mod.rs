//! One pod's worker: compares the desired pod with what the runtime has and takes the
//! next steps (upstream's SyncPod / computePodActions), then reports the status.
//!
//! A sync reads the runtime's state afresh, so a restarted agent adopts running pods
//! as they are: nothing is restarted that is running.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gantry_cri::api;
use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::backoff::Backoff;
use crate::cluster::Cluster;
use crate::pod_volumes::{self, PodVolumes};
use crate::probe::{self, Probes};
use crate::runtime_state::PodRuntime;
use crate::spec::{self, NodeContext};
use crate::status::{self, ContainerState, ContainerView, WorkerFacts};
use crate::Cri;

mod evict;
mod gc;
mod hooks;
mod pull;
mod resize;
mod terminate;

pub use evict::{Eviction, EvictionSlot, SharedEviction};

/// What the worker does next.
#[derive(Debug, PartialEq)]
pub enum Next {
    /// Sync again after this long, or sooner on a change.
    After(Duration),
    /// Nothing to do until something changes.
    Idle,
    /// The pod is gone from the node: the worker ends.
    Done,
}

/// How often a quiet pod is synced anyway (upstream: syncFrequency, 1 min). Container
/// exits are seen sooner: the runtime's events or the manager's relist wake the worker.
const RESYNC: Duration = Duration::from_secs(60);

/// The desired state of a pod as its sources say.
#[derive(Clone, Debug)]
pub enum Desired {
    /// Run it (or, with a deletionTimestamp, terminate it gracefully).
    Pod(Box<Pod>),
    /// Removed from every source without graceful termination (force-deleted, or
    /// found in the runtime with no source): kill with the given grace and clean up.
    Gone(Box<Pod>),
}

impl Desired {
    pub fn pod(&self) -> &Pod {
        match self {
            Desired::Pod(p) | Desired::Gone(p) => p,
        }
    }
}

pub struct Worker<C> {
    pub uid: String,
    pub cri: Cri,
    pub cluster: Arc<C>,
    pub node: Arc<NodeContext>,
    /// The runtime's name for container IDs (`containerd://<id>`).
    pub runtime_name: String,
    restarts: Backoff,
    pulls: Backoff,
    /// Why a container is not running, when the worker knows better than the runtime.
    waiting: BTreeMap<String, (String, String)>,
    start_time: Option<Time>,
    /// Exited containers whose back-off was announced with an event.
    announced_backoff: std::collections::HashSet<String>,
    /// This pass asked the runtime to create or start something.
    acted: bool,
    volumes: PodVolumes,
    /// Volume set-ups that failed in a row (their retry backs off).
    mount_failures: u32,
    probes: Probes,
    /// The pod's first IP (hooks' default HTTP host), from its ready sandbox: set when
    /// the pod runs and when it is stopped.
    pod_ip: String,
    /// The node's decision to end the pod (eviction, admission rejection), if any.
    eviction: SharedEviction,
    /// The node's pod cgroups (cgroupsPerQOS), when the node manages them.
    pod_cgroups: Option<Arc<crate::pod_cgroups::PodCgroups>>,
    /// When the kubelet first saw the pod (the worker starts then), for
    /// kubelet_pod_start_duration_seconds.
    first_seen: Instant,
    /// The phase last reported (at first, the API object's), so the Pending → Running
    /// transition is observed once.
    last_phase: Option<String>,
    /// The node's records of admitted and applied resources (in-place resize).
    allocations: Arc<crate::allocation::Allocations>,
    /// The pod's resize conditions.
    resize: resize::ResizeConditions,
}

/// What every pod worker of a node shares: the runtime, the cluster, the node's context
/// and its pod cgroups.
pub struct NodeParts<C> {
    pub cri: Cri,
    pub cluster: Arc<C>,
    pub node: Arc<NodeContext>,
    /// The runtime's name for container IDs (`containerd://<id>`).
    pub runtime_name: String,
    /// The node's pod cgroups (cgroupsPerQOS), when the node manages them.
    pub pod_cgroups: Option<Arc<crate::pod_cgroups::PodCgroups>>,
    /// The node's records of admitted and applied resources (in-place resize).
    pub allocations: Arc<crate::allocation::Allocations>,
}

impl<C: Cluster> Worker<C> {
    pub fn new(
        uid: String,
        parts: NodeParts<C>,
        wake: Arc<tokio::sync::Notify>,
        eviction: SharedEviction,
    ) -> Self {
        let NodeParts {
            cri,
            cluster,
            node,
            runtime_name,
            pod_cgroups,
            allocations,
        } = parts;
        Worker {
            uid,
            cri,
            cluster,
            node,
            runtime_name,
            restarts: Backoff::default(),
            pulls: Backoff::default(),
            waiting: BTreeMap::new(),
            start_time: None,
            announced_backoff: Default::default(),
            acted: false,
            volumes: PodVolumes::default(),
            mount_failures: 0,
            probes: Probes::new(wake),
            pod_ip: String::new(),
            eviction,
            pod_cgroups,
            first_seen: Instant::now(),
            last_phase: None,
            allocations,
            resize: Default::default(),
        }
    }

    /// One pass: act toward `desired`, report, and say when to come back.
    pub async fn sync(&mut self, desired: &Desired) -> Next {
        let pod = desired.pod();
        tracing::debug!("sync");
        let rt = match PodRuntime::read(&self.cri, &self.uid, &self.node.node_name).await {
            Ok(rt) => rt,
            Err(e) => {
                tracing::warn!(pod = %pod_name(pod), error = %e.message(), "read the pod's runtime state");
                return Next::After(Duration::from_secs(2));
            }
        };
        let deleting =
            matches!(desired, Desired::Gone(_)) || pod.metadata.deletion_timestamp.is_some();
        if deleting {
            return self.terminate(desired, &rt).await;
        }
        let eviction = evict::lock(&self.eviction).request.clone();
        if let Some(ev) = eviction {
            if self.start_time.is_none() {
                self.start_time = pod.status.as_ref().and_then(|s| s.start_time.clone());
            }
            return self.evict(pod, &rt, &ev).await;
        }
        if self.start_time.is_none() {
            self.start_time = pod
                .status
                .as_ref()
                .and_then(|s| s.start_time.clone())
                .or_else(|| Some(now()));
        }
        if is_terminal(pod) {
            // Upstream stops the sandbox of a finished pod (its IP goes back to the
            // pool) and keeps the containers for their logs until the pod is deleted.
            self.forget_resize();
            self.allocations.remove(&self.uid);
            self.stop_sandboxes(&rt).await;
            return Next::Idle;
        }
        // From here on the pod is what the node admitted (a resize may be pending).
        let allocated = self.allocate(pod);
        let pod = &allocated;
        let next = self.advance(pod, &rt).await;
        // Report what the runtime has now: read again only if this pass changed it.
        let rt = if std::mem::take(&mut self.acted) {
            PodRuntime::read(&self.cri, &self.uid, &self.node.node_name)
                .await
                .unwrap_or(rt)
        } else {
            rt
        };
        self.collect_dead(&rt).await;
        self.sync_probes(pod, &rt);
        let status = self.status(pod, &rt, false);
        let terminal = matches!(status.phase.as_deref(), Some("Succeeded" | "Failed"));
        if terminal {
            self.forget_resize();
            self.allocations.remove(&self.uid);
        }
        self.observe_start(pod, &status);
        self.cluster.report_status(pod, status);
        if terminal {
            self.stop_sandboxes(&rt).await;
            return Next::Idle;
        }
        next
    }

    /// Upstream observes kubelet_pod_start_duration_seconds when a pod's phase goes
    /// from Pending to Running (a pod adopted already running is not a start), and
    /// tells the startup latency tracker once every container runs.
    fn observe_start(&mut self, pod: &Pod, status: &k8s_openapi::api::core::v1::PodStatus) {
        let metrics = crate::metrics::PodMetrics::global();
        let before = self
            .last_phase
            .take()
            .or_else(|| pod.status.as_ref().and_then(|s| s.phase.clone()));
        let now = status.phase.clone();
        if matches!(before.as_deref(), None | Some("Pending")) && now.as_deref() == Some("Running")
        {
            metrics
                .pod_start_duration
                .observe(self.first_seen.elapsed().as_secs_f64());
        }
        self.last_phase = now.or(before);
        if status::all_containers_running(status) {
            metrics.startup.status_all_running(&self.uid);
        }
    }

    fn status(
        &self,
        pod: &Pod,
        rt: &PodRuntime,
        terminal: bool,
    ) -> k8s_openapi::api::core::v1::PodStatus {
        let mut facts = WorkerFacts {
            waiting: self.waiting.clone(),
            start_time: self.start_time.clone(),
            host_ips: self.node.node_ips.clone(),
            qos_class: spec::qos_class(pod).to_string(),
            runtime_name: self.runtime_name.clone(),
            terminal,
            resources: self.actuated_resources(pod),
            resize_conditions: if terminal {
                Vec::new()
            } else {
                self.resize.list()
            },
            ..Default::default()
        };
        // The probes' verdicts on the running attempt of each probed container; the
        // status computation treats an unprobed running container as ready/started.
        for c in all_containers(pod) {
            let Some(latest) = rt.latest(&c.name) else {
                continue;
            };
            let running = latest.state == ContainerState::Running;
            if c.readiness_probe.is_some() {
                let ready =
                    running && self.probes.result(&latest.id, probe::Kind::Readiness) == Some(true);
                facts.ready.insert(c.name.clone(), ready);
            }
            if c.startup_probe.is_some() {
                let started =
                    running && self.probes.result(&latest.id, probe::Kind::Startup) == Some(true);
                facts.started.insert(c.name.clone(), started);
            }
        }
        status::pod_status(pod, &rt.view(), &facts, &now())
    }

    /// Sandbox, then init containers in order, then app containers. Returns when to
    /// come back.
    async fn advance(&mut self, pod: &Pod, rt: &PodRuntime) -> Next {
        let Some(spec) = &pod.spec else {
            return Next::Idle;
        };
        if let Some(retry) = self.mount_volumes(pod).await {
            return retry;
        }
        if let Some(retry) = self.ensure_pod_cgroup(pod) {
            return retry;
        }
        let sandbox = match rt.ready_sandbox() {
            Some(s) => s.clone(),
            None => match self.new_sandbox(pod, rt).await {
                Ok(s) => s,
                Err(retry) => return retry,
            },
        };
        self.pod_ip = first_pod_ip(pod, &sandbox, &self.node);
        let restart_policy = spec.restart_policy.as_deref().unwrap_or("Always");
        let mut soonest: Option<Duration> = None;
        let mut earlier = |d: Option<Duration>| {
            if let Some(d) = d {
                soonest = Some(soonest.map_or(d, |s: Duration| s.min(d)));
            }
        };

        // Init containers, one at a time; sidecars (restartPolicy Always) start in
        // order and keep running, and the next init container starts once they run.
        for c in spec.init_containers.iter().flatten() {
            let sidecar = c.restart_policy.as_deref() == Some("Always");
            let latest = rt.latest(&c.name).cloned();
            // A new sandbox runs the init containers again, as upstream: one that
            // finished in an earlier sandbox counts as not run.
            let earlier_sandbox = latest
                .as_ref()
                .is_some_and(|l| made_in_earlier_sandbox(l, &sandbox.id));
            if earlier_sandbox && latest.as_ref().map(|l| l.state) != Some(ContainerState::Running)
            {
                let attempt = latest.as_ref().map_or(0, |l| l.attempt + 1);
                earlier(self.start_new(pod, c, &sandbox, attempt).await);
                if sidecar {
                    continue;
                }
                return Next::After(soonest.unwrap_or(RESYNC));
            }
            match latest.as_ref().map(|l| l.state) {
                Some(ContainerState::Running) => {
                    self.waiting.remove(&c.name);
                    if sidecar {
                        let id = latest.as_ref().map(|l| l.id.clone()).unwrap_or_default();
                        if self.kill_if_unhealthy(pod, c, &id).await {
                            return Next::After(Duration::from_millis(100));
                        }
                        // The next container starts once the sidecar has started
                        // (passed its startup probe), as upstream.
                        if c.startup_probe.is_some()
                            && self.probes.result(&id, probe::Kind::Startup) != Some(true)
                        {
                            return Next::After(RESYNC);
                        }
                        continue;
                    }
                    return Next::After(RESYNC);
                }
                Some(ContainerState::Exited) if !sidecar => {
                    let l = latest.as_ref().expect("matched Some");
                    if l.exit_code == 0 {
                        continue;
                    }
                    if restart_policy == "Never" {
                        // The pod failed; status computation says so.
                        return Next::Idle;
                    }
                    earlier(self.restart(pod, c, &sandbox, l).await);
                    return Next::After(soonest.unwrap_or(RESYNC));
                }
                Some(ContainerState::Exited) => {
                    let l = latest.as_ref().expect("matched Some");
                    earlier(self.restart(pod, c, &sandbox, l).await);
                    return Next::After(soonest.unwrap_or(RESYNC));
                }
                Some(ContainerState::Created) | Some(ContainerState::Unknown) => {
                    // Made but never started (a crash between create and start).
                    let l = latest.as_ref().expect("matched Some");
                    let _ = self.start_created(pod, c, &l.id).await;
                    return Next::After(Duration::from_secs(1));
                }
                None => {
                    earlier(self.start_new(pod, c, &sandbox, 0).await);
                    if sidecar {
                        continue;
                    }
                    return Next::After(soonest.unwrap_or(RESYNC));
                }
            }
        }

        for c in spec.containers.iter() {
            let latest = rt.latest(&c.name).cloned();
            match latest {
                None => earlier(self.start_new(pod, c, &sandbox, 0).await),
                Some(l) => match l.state {
                    ContainerState::Running => {
                        self.waiting.remove(&c.name);
                        if self.kill_if_unhealthy(pod, c, &l.id).await {
                            earlier(Some(Duration::from_millis(100)));
                        }
                    }
                    // Made in a sandbox that has since stopped (created while that
                    // sandbox was being stopped): it cannot start in this one, so a
                    // new container is made here, as upstream restarts a container
                    // left created.
                    ContainerState::Created | ContainerState::Unknown
                        if made_in_earlier_sandbox(&l, &sandbox.id) =>
                    {
                        earlier(self.start_new(pod, c, &sandbox, l.attempt + 1).await);
                    }
                    ContainerState::Created | ContainerState::Unknown => {
                        let _ = self.start_created(pod, c, &l.id).await;
                    }
                    ContainerState::Exited => {
                        let again = match restart_policy {
                            "Never" => false,
                            "OnFailure" => l.exit_code != 0,
                            _ => true,
                        };
                        if again {
                            earlier(self.restart(pod, c, &sandbox, &l).await);
                        }
                    }
                },
            }
        }
        earlier(self.resize_running(pod, rt, &sandbox).await);
        Next::After(soonest.unwrap_or(RESYNC))
    }

    /// Keeps the probes of the running containers going.
    fn sync_probes(&mut self, pod: &Pod, rt: &PodRuntime) {
        let pod_ip = rt
            .ready_sandbox()
            .map(|sandbox| first_pod_ip(pod, sandbox, &self.node))
            .unwrap_or_default();
        let mut running = Vec::new();
        for c in all_containers(pod) {
            if let Some(latest) = rt.latest(&c.name) {
                if latest.state == ContainerState::Running {
                    running.push(probe::Running {
                        container: c,
                        id: &latest.id,
                        started_at: latest.started_at,
                        field_path: field_path(pod, &c.name),
                    });
                }
            }
        }
        self.probes
            .sync(&self.cri, &self.cluster, pod, &pod_ip, &running);
    }

    /// A running container whose liveness or startup probe failed is killed (then
    /// restarted as its restart policy says), as upstream: "Container NAME failed
    /// liveness probe, will be restarted". Returns whether it killed it.
    async fn kill_if_unhealthy(&mut self, pod: &Pod, c: &Container, id: &str) -> bool {
        let failed = [probe::Kind::Liveness, probe::Kind::Startup]
            .into_iter()
            .find(|k| self.probes.result(id, *k) == Some(false));
        let Some(kind) = failed else {
            return false;
        };
        self.cluster.event(
            pod,
            Some(field_path(pod, &c.name)),
            "Normal",
            "Killing",
            &format!(
                "Container {} failed {} probe, will be restarted",
                c.name,
                kind.name().to_lowercase()
            ),
        );
        self.probes.forget(id);
        let grace = kind
            .of(c)
            .and_then(|p| p.termination_grace_period_seconds)
            .unwrap_or_else(|| termination_grace(pod));
        self.acted = true;
        if let Err(e) = self.kill_container(pod, Some(c), id, grace).await {
            tracing::warn!(pod = %pod_name(pod), container = %c.name, error = %e.message(), "kill the unhealthy container");
        }
        true
    }

    /// Sets up the pod's volumes (and refreshes projected content when due), as
    /// upstream waits for them before the sandbox. A volume that fails gets a
    /// FailedMount event; the pod waits only while one has never been set up.
    async fn mount_volumes(&mut self, pod: &Pod) -> Option<Next> {
        let layout = gantry_volumes::Layout::new(&self.node.volumes_root);
        let outcome = self
            .volumes
            .ensure(&*self.cluster, &layout, pod, &self.node)
            .await;
        for failure in &outcome.failures {
            tracing::warn!(pod = %pod_name(pod), "{failure}");
            self.cluster
                .event(pod, None, "Warning", "FailedMount", failure);
        }
        if outcome.all_ready {
            self.mount_failures = 0;
            return None;
        }
        // Upstream's volume operations back off exponentially to about two minutes.
        let delay = Duration::from_secs(1 << self.mount_failures.min(6));
        self.mount_failures += 1;
        Some(Next::After(delay))
    }

    /// Makes the pod's cgroup exist with its current settings before anything runs in
    /// it, as upstream's SyncPod (pod container manager EnsureExists); a failure is a
    /// FailedCreatePodContainer event and a retry.
    fn ensure_pod_cgroup(&mut self, pod: &Pod) -> Option<Next> {
        let cgroups = self.pod_cgroups.as_ref()?;
        // During a resize the pod cgroup also holds the containers as they run now.
        match cgroups.ensure_covering(pod, self.running_pod(pod).as_ref()) {
            Ok(_) => None,
            Err(e) => {
                let msg = format!("unable to ensure pod container exists: {e}");
                tracing::warn!(pod = %pod_name(pod), "{msg}");
                self.cluster
                    .event(pod, None, "Warning", "FailedCreatePodContainer", &msg);
                Some(Next::After(Duration::from_secs(5)))
            }
        }
    }

    /// A new sandbox for the pod: the old ones (dead) are stopped with their containers
    /// first, as upstream does when "Pod sandbox changed, it will be killed and
    /// re-created".
    async fn new_sandbox(
        &mut self,
        pod: &Pod,
        rt: &PodRuntime,
    ) -> Result<crate::runtime_state::Sandbox, Next> {
        if !rt.sandboxes.is_empty() {
            self.cluster.event(
                pod,
                None,
                "Normal",
                "SandboxChanged",
                "Pod sandbox changed, it will be killed and re-created.",
            );
            for c in rt
                .containers
                .iter()
                .filter(|c| c.state == ContainerState::Running)
            {
                let _ = self.stop_container(&c.id, 0).await;
            }
            self.stop_sandboxes(rt).await;
        }
        let attempt = rt
            .sandboxes
            .iter()
            .map(|s| s.attempt + 1)
            .max()
            .unwrap_or(0);
        let config = spec::sandbox_config(pod, attempt, &self.node);
        if let Err(e) = std::fs::create_dir_all(&config.log_directory) {
            tracing::warn!(dir = %config.log_directory, error = %e, "create the pod's log directory");
        }
        let handler = pod
            .spec
            .as_ref()
            .and_then(|s| s.runtime_class_name.clone())
            .unwrap_or_default();
        self.acted = true;
        let metrics = crate::metrics::PodMetrics::global();
        metrics.started_pods.inc();
        let created = self
            .cri
            .runtime
            .clone()
            .run_pod_sandbox(api::RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: handler,
            })
            .await;
        let id = match created {
            Ok(r) => r.into_inner().pod_sandbox_id,
            Err(e) => {
                metrics.started_pods_errors.inc();
                let msg = format!("Failed to create pod sandbox: {}", e.message());
                tracing::warn!(pod = %pod_name(pod), "{msg}");
                self.cluster
                    .event(pod, None, "Warning", "FailedCreatePodSandBox", &msg);
                return Err(Next::After(Duration::from_secs(5)));
            }
        };
        let rt = PodRuntime::read(&self.cri, &self.uid, &self.node.node_name)
            .await
            .map_err(|_| Next::After(Duration::from_secs(1)))?;
        rt.sandboxes
            .iter()
            .find(|s| s.id == id)
            .cloned()
            .ok_or(Next::After(Duration::from_secs(1)))
    }

    /// An exited container that should run again: now, or after its back-off.
    async fn restart(
        &mut self,
        pod: &Pod,
        c: &Container,
        sandbox: &crate::runtime_state::Sandbox,
        last: &ContainerView,
    ) -> Option<Duration> {
        let key = format!("{}/{}", c.name, spec::container_hash(c));
        let finished = instant_of(last.finished_at);
        // As upstream (KEP-4603): a container that ran for 10 minutes starts afresh.
        if last.finished_at - last.started_at
            >= crate::backoff::RESET_AFTER_RUNNING.as_nanos() as i64
        {
            self.restarts.reset(&key);
        }
        if let Some(left) = self
            .restarts
            .remaining_since(&key, finished, Instant::now())
        {
            let window = self.restarts.window(&key).unwrap_or_default();
            self.waiting.insert(
                c.name.clone(),
                (
                    "CrashLoopBackOff".to_string(),
                    format!(
                        "back-off {} restarting failed container={} pod={}_{}({})",
                        go_duration(window),
                        c.name,
                        pod.metadata.name.as_deref().unwrap_or(""),
                        pod.metadata.namespace.as_deref().unwrap_or(""),
                        self.uid
                    ),
                ),
            );
            // One event per exit; syncs inside the window say nothing new.
            if self.announced_backoff.insert(last.id.clone()) {
                self.cluster.event(
                    pod,
                    Some(field_path(pod, &c.name)),
                    "Warning",
                    "BackOff",
                    &format!(
                        "Back-off restarting failed container {} in pod {}",
                        c.name,
                        pod_name(pod)
                    ),
                );
            }
            return Some(left);
        }
        self.restarts.fail(&key, finished);
        self.start_new(pod, c, sandbox, last.attempt + 1).await
    }

    /// Pull (per policy), build the config, create and start a container. Returns when
    /// to try again if it could not.
    async fn start_new(
        &mut self,
        pod: &Pod,
        c: &Container,
        sandbox: &crate::runtime_state::Sandbox,
        restart_count: u32,
    ) -> Option<Duration> {
        // As upstream's SyncPod: every start attempt past the back-off counts, and a
        // failed one counts as an error under its well-known reason (ErrImagePull,
        // CreateContainerConfigError, CreateContainerError, RunContainerError, ...).
        let metrics = crate::metrics::PodMetrics::global();
        let kind = container_type(pod, &c.name);
        metrics.started_containers.with_label_values(&[kind]).inc();
        let (retry, failure) = self.try_start_new(pod, c, sandbox, restart_count).await;
        if let Some(code) = failure {
            metrics
                .started_containers_errors
                .with_label_values(&[kind, &code])
                .inc();
        }
        retry
    }

    /// `start_new`'s work: when to try again, and why it failed if it did.
    async fn try_start_new(
        &mut self,
        pod: &Pod,
        c: &Container,
        sandbox: &crate::runtime_state::Sandbox,
        restart_count: u32,
    ) -> (Option<Duration>, Option<String>) {
        let fp = field_path(pod, &c.name);
        let image_ref = match self.ensure_image(pod, c, &fp).await {
            Ok(r) => r,
            Err(retry) => {
                let reason = self.waiting.get(&c.name).map(|w| w.0.clone());
                return (
                    Some(retry),
                    Some(reason.unwrap_or_else(|| "ErrImagePull".into())),
                );
            }
        };
        let refs = spec::referenced_sources(pod);
        let sources = match self.cluster.env_sources(pod, &refs).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(pod = %pod_name(pod), error = %e, "read the pod's configMaps and secrets");
                return (
                    Some(Duration::from_secs(2)),
                    Some("CreateContainerConfigError".into()),
                );
            }
        };
        let image_user = self.image_user(&image_ref).await;
        let mut inputs = spec::ContainerInputs {
            image_user,
            image: image_ref,
            restart_count,
            pod_ips: spec::pod_ips(pod, &sandbox.ips, &self.node.node_ips),
            mounts: Vec::new(),
        };
        let config = match self.mounts(pod, c, &sources, &inputs) {
            Ok(mounts) => {
                inputs.mounts = mounts;
                spec::container_config(pod, c, &self.node, &sources, &inputs)
            }
            Err(e) => Err(e),
        };
        let config = match config {
            Ok(cfg) => cfg,
            Err(e) => {
                let retry = self.cannot_create(pod, c, "CreateContainerConfigError", &e.0);
                return (Some(retry), Some("CreateContainerConfigError".into()));
            }
        };
        let sandbox_config = spec::sandbox_config(pod, sandbox.attempt, &self.node);
        self.acted = true;
        let created = self
            .cri
            .runtime
            .clone()
            .create_container(api::CreateContainerRequest {
                pod_sandbox_id: sandbox.id.clone(),
                config: Some(config),
                sandbox_config: Some(sandbox_config),
            })
            .await;
        let id = match created {
            Ok(r) => r.into_inner().container_id,
            Err(e) => {
                let retry = self.cannot_create(pod, c, "CreateContainerError", e.message());
                return (Some(retry), Some("CreateContainerError".into()));
            }
        };
        let resources = c.resources.clone().unwrap_or_default();
        self.allocations
            .set_actuated(&self.uid, &c.name, &resources);
        self.cluster.event(
            pod,
            Some(fp.clone()),
            "Normal",
            "Created",
            &format!("Created container: {}", c.name),
        );
        (None, self.start_created(pod, c, &id).await.err())
    }

    /// A container that could not be created waits with `reason`, and the pod gets
    /// upstream's `Failed` event; the worker tries again after 10 s.
    fn cannot_create(&mut self, pod: &Pod, c: &Container, reason: &str, message: &str) -> Duration {
        self.waiting
            .insert(c.name.clone(), (reason.to_string(), message.to_string()));
        self.cluster.event(
            pod,
            Some(field_path(pod, &c.name)),
            "Warning",
            "Failed",
            &format!("Error: {message}"),
        );
        Duration::from_secs(10)
    }

    /// The container's mounts: its volumeMounts (subPathExpr expanded from its
    /// environment) and the pod's managed /etc/hosts, written afresh for each start
    /// as upstream does.
    fn mounts(
        &self,
        pod: &Pod,
        c: &Container,
        sources: &spec::EnvSources,
        inputs: &spec::ContainerInputs,
    ) -> Result<Vec<api::Mount>, spec::ConfigError> {
        let layout = gantry_volumes::Layout::new(&self.node.volumes_root);
        let env = spec::container_env(pod, c, &self.node, sources, inputs)?;
        let paths: Vec<&str> = c
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| m.mount_path.as_str())
            .collect();
        let hosts = if spec::mounts_hosts_file(&inputs.pod_ips, &paths) {
            let file = pod_volumes::hosts_file_path(&layout, &self.uid).ok_or_else(|| {
                spec::ConfigError(format!("pod uid {:?} cannot name a directory", self.uid))
            })?;
            let (hostname, domain) = spec::hostname_and_domain(pod, &self.node)?;
            let node_hosts = std::fs::read_to_string("/etc/hosts").ok();
            let content = spec::etc_hosts(
                pod,
                &hostname,
                &domain,
                &inputs.pod_ips,
                node_hosts.as_deref(),
            );
            write_file(&file, content.as_bytes())
                .map_err(|e| spec::ConfigError(format!("write {}: {e}", file.display())))?;
            Some(file)
        } else {
            None
        };
        pod_volumes::container_mounts(
            &layout,
            pod,
            c,
            self.volumes.host_volumes(),
            &env,
            hosts.as_deref(),
        )
        .map_err(spec::ConfigError)
    }

    /// Starts a created container; a failure is named as upstream's startContainer
    /// names it (RunContainerError, PostStartHookError).
    async fn start_created(&mut self, pod: &Pod, c: &Container, id: &str) -> Result<(), String> {
        let fp = field_path(pod, &c.name);
        self.acted = true;
        match self
            .cri
            .runtime
            .clone()
            .start_container(api::StartContainerRequest {
                container_id: id.to_string(),
            })
            .await
        {
            Ok(_) => {
                self.waiting.remove(&c.name);
                self.cluster.event(
                    pod,
                    Some(fp),
                    "Normal",
                    "Started",
                    &format!("Started container {}", c.name),
                );
                if !self.post_start(pod, c, id).await {
                    // As upstream: the container is killed; the restart policy decides
                    // whether it runs again.
                    let grace = termination_grace(pod);
                    if let Err(e) = self.kill_container(pod, Some(c), id, grace).await {
                        tracing::warn!(container = %c.name, error = %e.message(), "kill the container whose postStart hook failed");
                    }
                    return Err("PostStartHookError".into());
                }
                Ok(())
            }
            Err(e) => {
                // The runtime records the failure on the container (StartError); the
                // next sync sees it exited and applies the restart policy.
                self.cluster.event(
                    pod,
                    Some(fp),
                    "Warning",
                    "Failed",
                    &format!("Error: {}", e.message()),
                );
                Err("RunContainerError".into())
            }
        }
    }
}

/// Upstream's container_type label: init_container (sidecars too), container.
fn container_type(pod: &Pod, name: &str) -> &'static str {
    let init = pod
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.name == name));
    if init {
        "init_container"
    } else {
        "container"
    }
}

/// The pod's init containers, then its app containers.
fn all_containers(pod: &Pod) -> impl Iterator<Item = &Container> {
    let spec = pod.spec.as_ref();
    spec.and_then(|s| s.init_containers.as_ref())
        .into_iter()
        .flatten()
        .chain(spec.map(|s| s.containers.iter()).into_iter().flatten())
}

/// The pod's first address in the node's family order: where probes and hooks send
/// their requests when they name no host.
fn first_pod_ip(pod: &Pod, sandbox: &crate::runtime_state::Sandbox, node: &NodeContext) -> String {
    spec::pod_ips(pod, &sandbox.ips, &node.node_ips)
        .into_iter()
        .next()
        .unwrap_or_default()
}

/// The pod's terminationGracePeriodSeconds (upstream's default 30).
pub(crate) fn termination_grace(pod: &Pod) -> i64 {
    pod.spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(30)
}

/// Writes `path` whole (a temporary file renamed over it), mode 0644, creating its
/// directory: a container starting meanwhile sees the old or the new file.
fn write_file(path: &std::path::Path, content: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))?;
    std::fs::rename(&tmp, path)
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

pub fn pod_name(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

/// The field path upstream's events name a container by.
pub(crate) fn field_path(pod: &Pod, name: &str) -> String {
    let init = pod
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.name == name);
    if init {
        format!("spec.initContainers{{{name}}}")
    } else {
        format!("spec.containers{{{name}}}")
    }
}

fn now() -> Time {
    Time(jiff::Timestamp::now())
}

/// The monotonic instant of a runtime timestamp (ns since the epoch), for back-off
/// windows that start when a container finished.
pub(crate) fn instant_of(unix_nanos: i64) -> Instant {
    let now_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0);
    let ago = Duration::from_nanos((now_unix - unix_nanos).max(0) as u64);
    Instant::now().checked_sub(ago).unwrap_or_else(Instant::now)
}

/// A duration as Go prints it (`10s`, `1m20s`, `5m0s`, `1.2s`).
pub fn go_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 60 {
        format!("{}m{}s", secs / 60, secs % 60)
    } else if d.subsec_millis() == 0 {
        format!("{secs}s")
    } else {
        let ms = d.as_millis();
        let number = format!("{}.{:03}", ms / 1000, ms % 1000);
        format!("{}s", number.trim_end_matches('0'))
    }
}

/// Whether `c` was made in a sandbox other than `sandbox` (a container whose sandbox is
/// unknown counts as made in the current one).
fn made_in_earlier_sandbox(c: &ContainerView, sandbox: &str) -> bool {
    !c.sandbox_id.is_empty() && c.sandbox_id != sandbox
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_as_go_does() {
        assert_eq!(go_duration(Duration::from_secs(10)), "10s");
        assert_eq!(go_duration(Duration::from_secs(300)), "5m0s");
        assert_eq!(go_duration(Duration::from_secs(80)), "1m20s");
        assert_eq!(go_duration(Duration::from_millis(1250)), "1.25s");
    }

    #[test]
    fn a_container_of_another_sandbox_is_from_an_earlier_one() {
        let c = |sandbox: &str| ContainerView {
            name: "app".into(),
            sandbox_id: sandbox.into(),
            ..Default::default()
        };
        assert!(made_in_earlier_sandbox(&c("old"), "new"));
        assert!(!made_in_earlier_sandbox(&c("new"), "new"));
        assert!(!made_in_earlier_sandbox(&c(""), "new"));
    }
}
