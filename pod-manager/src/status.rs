//! Runtime state → pod status: the pure computation of what the API shows for a pod
//! (phase, conditions, container statuses), following the upstream kubelet's
//! generateAPIPodStatus and getPhase.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerState as ApiState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodSpec, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::spec::{is_sidecar, qos_class, sort_pod_ips};

/// What the runtime reports about one pod.
#[derive(Clone, Debug, Default)]
pub struct RuntimeView {
    /// The newest sandbox, if any.
    pub sandbox: Option<SandboxView>,
    /// Every container of the pod the runtime still knows, all attempts.
    pub containers: Vec<ContainerView>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct SandboxView {
    pub id: String,
    pub ready: bool,
    /// Primary IP first.
    pub ips: Vec<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ContainerState {
    Created,
    Running,
    Exited,
    #[default]
    Unknown,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ContainerView {
    pub name: String,
    pub id: String,
    /// CRI metadata attempt = restart count when it was made.
    pub attempt: u32,
    pub state: ContainerState,
    /// Nanoseconds since the epoch; 0 when not set.
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
    /// The image as the spec named it, and the runtime's image ref (repo digest / ID).
    pub image: String,
    pub image_ref: String,
    /// The sandbox the container was made in ("" if unknown: counted as the current
    /// one). Only containers of the current sandbox show that the pod has initialized.
    pub sandbox_id: String,
}

/// What the worker knows beyond the runtime: why a container is waiting, readiness.
#[derive(Clone, Debug, Default)]
pub struct WorkerFacts {
    /// Container name → (reason, message) of a container that is not running because of
    /// the worker: ErrImagePull, ImagePullBackOff, CrashLoopBackOff,
    /// CreateContainerConfigError, CreateContainerError, RunContainerError,
    /// PodInitializing, ContainerCreating.
    pub waiting: BTreeMap<String, (String, String)>,
    /// Containers that passed their readiness probe. A container without a
    /// readinessProbe needs no entry: running, it is ready.
    pub ready: BTreeMap<String, bool>,
    /// When the worker first saw the pod (status.startTime, kept once set).
    pub start_time: Option<Time>,
    /// The node's addresses.
    pub host_ips: Vec<String>,
    /// The pod's QoS class ("" computes it from the spec).
    pub qos_class: String,
    /// The runtime's name, the scheme of container IDs: `containerd://<id>`.
    pub runtime_name: String,
    /// Containers that passed their startup probe. A container without a
    /// startupProbe needs no entry: running, it has started.
    pub started: BTreeMap<String, bool>,
    /// The worker has stopped the pod for good (deleted, evicted, or nothing left to
    /// restart): upstream's podIsTerminal, which lets the phase become terminal even
    /// under restartPolicy Always.
    pub terminal: bool,
}

/// Container state reasons upstream's kubelet writes.
const POD_INITIALIZING: &str = "PodInitializing";
const CONTAINER_CREATING: &str = "ContainerCreating";
const STATUS_UNKNOWN: &str = "ContainerStatusUnknown";

/// The status to post for `pod` given the runtime's view and the worker's facts, as
/// upstream's generateAPIPodStatus. Conditions the kubelet does not own (readiness
/// gates, DisruptionTarget) are kept; transition times change only when a condition's
/// status changes; a terminal phase never changes.
pub fn pod_status(pod: &Pod, view: &RuntimeView, facts: &WorkerFacts, now: &Time) -> PodStatus {
    let old = pod.status.clone().unwrap_or_default();
    let default_spec = PodSpec::default();
    let spec = pod.spec.as_ref().unwrap_or(&default_spec);
    let init_specs = spec.init_containers.as_deref().unwrap_or_default();
    let has_init = !init_specs.is_empty();
    let ctx = Ctx {
        pod,
        spec,
        view,
        facts,
    };

    let old_statuses = |list: &Option<Vec<ContainerStatus>>| list.clone().unwrap_or_default();
    let mut statuses = ctx.statuses(
        &spec.containers,
        &old_statuses(&old.container_statuses),
        has_init,
        false,
    );
    let mut init_statuses = ctx.statuses(
        init_specs,
        &old_statuses(&old.init_container_statuses),
        has_init,
        true,
    );
    let ephemeral_specs: Vec<Container> = spec
        .ephemeral_containers
        .iter()
        .flatten()
        .map(|e| Container {
            name: e.name.clone(),
            image: e.image.clone(),
            ..Default::default()
        })
        .collect();
    let ephemeral = ctx.statuses(
        &ephemeral_specs,
        &old_statuses(&old.ephemeral_container_statuses),
        has_init,
        false,
    );
    ctx.probe(&spec.containers, &mut statuses, false);
    ctx.probe(init_specs, &mut init_statuses, true);

    let all: Vec<ContainerStatus> = statuses.iter().chain(&init_statuses).cloned().collect();
    let mut phase = phase(pod, &all, facts.terminal, ctx.any_app_container_started());
    let old_phase = old.phase.clone().unwrap_or_default();
    if is_terminal(&old_phase) {
        // Pods never leave a terminal phase.
        phase = old_phase.clone();
    }
    let (reason, message) = if phase == old_phase {
        (old.reason.clone(), old.message.clone())
    } else {
        (None, None)
    };

    let conditions = ctx.conditions(&old, &all, &phase, now);
    let host_ips: Vec<String> = facts.host_ips.iter().take(2).cloned().collect();
    let mut pod_ips = match &view.sandbox {
        Some(sandbox) if sandbox.ready => sort_pod_ips(&sandbox.ips, &host_ips),
        _ => Vec::new(),
    };
    if pod_ips.is_empty() && spec.host_network == Some(true) {
        // hostNetwork pods have the node's addresses.
        pod_ips = host_ips.clone();
    }
    if pod_ips.is_empty() {
        // The IPs of the last ready sandbox stay until another one is ready.
        pod_ips = old
            .pod_ips
            .iter()
            .flatten()
            .map(|ip| ip.ip.clone())
            .collect();
    }
    let qos = if facts.qos_class.is_empty() {
        qos_class(pod).to_string()
    } else {
        facts.qos_class.clone()
    };

    PodStatus {
        phase: Some(phase),
        reason,
        message,
        conditions: Some(conditions),
        host_ip: host_ips.first().cloned().or(old.host_ip.clone()),
        host_ips: if host_ips.is_empty() {
            old.host_ips.clone()
        } else {
            Some(
                host_ips
                    .iter()
                    .map(|ip| HostIP { ip: ip.clone() })
                    .collect(),
            )
        },
        pod_ip: pod_ips.first().cloned(),
        pod_ips: (!pod_ips.is_empty())
            .then(|| pod_ips.iter().map(|ip| PodIP { ip: ip.clone() }).collect()),
        qos_class: Some(qos),
        start_time: old.start_time.clone().or_else(|| facts.start_time.clone()),
        container_statuses: Some(statuses),
        init_container_statuses: Some(init_statuses),
        ephemeral_container_statuses: (!ephemeral.is_empty()).then_some(ephemeral),
        observed_generation: pod.metadata.generation,
        nominated_node_name: old.nominated_node_name.clone(),
        ..Default::default()
    }
}

fn is_terminal(phase: &str) -> bool {
    phase == "Succeeded" || phase == "Failed"
}

struct Ctx<'a> {
    pod: &'a Pod,
    spec: &'a PodSpec,
    view: &'a RuntimeView,
    facts: &'a WorkerFacts,
}

impl Ctx<'_> {
    /// The runtime's containers named `name`, newest first.
    fn attempts(&self, name: &str) -> Vec<&ContainerView> {
        let mut attempts: Vec<&ContainerView> = self
            .view
            .containers
            .iter()
            .filter(|c| c.name == name)
            .collect();
        attempts.sort_by_key(|a| std::cmp::Reverse((a.created_at, a.attempt)));
        attempts
    }

    /// Statuses of `specs` in spec order, as upstream's convertToAPIContainerStatuses.
    fn statuses(
        &self,
        specs: &[Container],
        old: &[ContainerStatus],
        has_init: bool,
        init: bool,
    ) -> Vec<ContainerStatus> {
        let default_reason = if has_init {
            POD_INITIALIZING
        } else {
            CONTAINER_CREATING
        };
        specs
            .iter()
            .map(|c| {
                let old = old.iter().find(|s| s.name == c.name);
                let mut status = self.status(c, old, default_reason);
                self.apply_waiting_reason(c, &mut status, init);
                status
            })
            .collect()
    }

    fn status(
        &self,
        c: &Container,
        old: Option<&ContainerStatus>,
        default_reason: &str,
    ) -> ContainerStatus {
        let attempts = self.attempts(&c.name);
        let Some(current) = attempts.first() else {
            return self.status_without_container(c, old, default_reason);
        };
        let mut status = self.convert(c, current, old);
        // The previous attempt: the newest exited container older than the current.
        status.last_state = attempts[1..]
            .iter()
            .find(|a| a.state == ContainerState::Exited)
            .map(|a| self.convert(c, a, None).state.unwrap_or_default());
        status
    }

    /// A container the runtime does not know (not made yet, or removed): waiting, with
    /// what the API showed before. One that was running and vanished is shown as
    /// terminated with an unknown status, not as never started (upstream: a pod with
    /// restartPolicy Never must not look as if it could run again).
    fn status_without_container(
        &self,
        c: &Container,
        old: Option<&ContainerStatus>,
        default_reason: &str,
    ) -> ContainerStatus {
        let mut status = ContainerStatus {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            state: Some(waiting(default_reason, "")),
            ..Default::default()
        };
        let Some(old) = old else {
            return status;
        };
        let old_state = old.state.clone().unwrap_or_default();
        if old_state.terminated.is_some() {
            return old.clone();
        }
        status.restart_count = old.restart_count;
        status.last_state = old.last_state.clone();
        let has_last_termination = status
            .last_state
            .as_ref()
            .is_some_and(|s| s.terminated.is_some());
        if old_state.running.is_some() && !has_last_termination {
            status.last_state = Some(ApiState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: 137,
                    reason: Some(STATUS_UNKNOWN.into()),
                    message: Some(
                        "The container could not be located when the pod was deleted.  The container used to be Running".into(),
                    ),
                    ..Default::default()
                }),
                ..Default::default()
            });
            if self.pod.metadata.deletion_timestamp.is_none() {
                status.restart_count += 1;
            }
        }
        status
    }

    /// upstream's convertContainerStatus.
    fn convert(
        &self,
        c: &Container,
        cv: &ContainerView,
        old: Option<&ContainerStatus>,
    ) -> ContainerStatus {
        let id = format!("{}://{}", self.facts.runtime_name, cv.id);
        let time = |nanos: i64| (nanos > 0).then(|| nanos_to_time(nanos));
        let mut status = ContainerStatus {
            name: c.name.clone(),
            restart_count: i32::try_from(cv.attempt).unwrap_or(i32::MAX),
            image: if cv.image.is_empty() {
                c.image.clone().unwrap_or_default()
            } else {
                cv.image.clone()
            },
            image_id: cv.image_ref.clone(),
            container_id: Some(id.clone()),
            ..Default::default()
        };
        let old_running = old
            .and_then(|o| o.state.as_ref())
            .is_some_and(|s| s.running.is_some());
        status.state = Some(match cv.state {
            ContainerState::Running => ApiState {
                running: Some(ContainerStateRunning {
                    started_at: time(cv.started_at),
                }),
                ..Default::default()
            },
            ContainerState::Exited => ApiState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: cv.exit_code,
                    reason: Some(cv.reason.clone()).filter(|r| !r.is_empty()),
                    message: Some(cv.message.clone()).filter(|m| !m.is_empty()),
                    started_at: time(cv.started_at),
                    finished_at: time(cv.finished_at),
                    container_id: Some(id),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ContainerState::Unknown if old_running => {
                // It was running and the runtime lost it: it ran and stopped, it did
                // not fail to start.
                status.restart_count = old.map_or(0, |o| o.restart_count) + 1;
                ApiState {
                    terminated: Some(ContainerStateTerminated {
                        exit_code: 137,
                        reason: Some(STATUS_UNKNOWN.into()),
                        message: Some(
                            "The container could not be located when the pod was terminated".into(),
                        ),
                        ..Default::default()
                    }),
                    ..Default::default()
                }
            }
            // Created but not started, or unknown: waiting to run.
            ContainerState::Created | ContainerState::Unknown => ApiState {
                waiting: Some(ContainerStateWaiting::default()),
                ..Default::default()
            },
        });
        status
    }

    /// A container the worker will (re)start shows why it waits (upstream's
    /// reasonCache): ErrImagePull, CrashLoopBackOff, CreateContainerConfigError...
    fn apply_waiting_reason(&self, c: &Container, status: &mut ContainerStatus, init: bool) {
        let latest = self.attempts(&c.name).first().copied();
        if init {
            // A completed init container stays completed.
            if latest.is_some_and(|l| l.state == ContainerState::Exited && l.exit_code == 0) {
                return;
            }
            // Its container is gone but app containers exist: it must have completed.
            let waiting_now = status.state.as_ref().is_some_and(|s| s.waiting.is_some());
            if latest.is_none() && !is_sidecar(c) && waiting_now && self.any_app_container_created()
            {
                status.state = Some(ApiState {
                    terminated: Some(ContainerStateTerminated {
                        exit_code: 0,
                        reason: Some("Completed".into()),
                        message: Some(
                            "Unable to get init container status from container runtime and pod has been initialized, treat it as exited normally".into(),
                        ),
                        ..Default::default()
                    }),
                    ..Default::default()
                });
                return;
            }
        }
        if !self.should_restart(c, latest) {
            return;
        }
        let Some((reason, message)) = self.facts.waiting.get(&c.name) else {
            return;
        };
        if status
            .state
            .as_ref()
            .is_some_and(|s| s.terminated.is_some())
        {
            status.last_state = status.state.take();
        }
        status.state = Some(waiting(reason, message));
    }

    /// upstream's ShouldContainerBeRestarted.
    fn should_restart(&self, c: &Container, latest: Option<&ContainerView>) -> bool {
        if self.pod.metadata.deletion_timestamp.is_some() {
            return false;
        }
        match latest.map(|l| l.state) {
            None | Some(ContainerState::Unknown) | Some(ContainerState::Created) => true,
            Some(ContainerState::Running) => false,
            Some(ContainerState::Exited) => {
                container_should_restart(c, self.spec, latest.map_or(0, |l| l.exit_code))
            }
        }
    }

    fn any_app_container_created(&self) -> bool {
        self.view
            .containers
            .iter()
            .any(|cv| self.spec.containers.iter().any(|c| c.name == cv.name))
    }

    /// upstream's HasAnyActiveRegularContainerStarted: an app container of the current
    /// sandbox has started, so the pod has been initialized.
    fn any_app_container_started(&self) -> bool {
        let sandbox = self.view.sandbox.as_ref().map(|s| s.id.as_str());
        self.view.containers.iter().any(|cv| {
            let active = cv.sandbox_id.is_empty() || Some(cv.sandbox_id.as_str()) == sandbox;
            active && cv.started_at > 0 && self.spec.containers.iter().any(|c| c.name == cv.name)
        })
    }

    /// Started and Ready, as upstream's prober manager sets them: started when running
    /// and past any startup probe; ready when started, running and past any readiness
    /// probe. A regular init container is ready once it exited 0.
    fn probe(&self, specs: &[Container], statuses: &mut [ContainerStatus], init: bool) {
        for (c, status) in specs.iter().zip(statuses.iter_mut()) {
            let running = status.state.as_ref().is_some_and(|s| s.running.is_some());
            let fact = |facts: &BTreeMap<String, bool>, has_probe: bool| {
                facts.get(&c.name).copied().unwrap_or(!has_probe)
            };
            let started = running && fact(&self.facts.started, c.startup_probe.is_some());
            status.started = Some(started);
            if init && !is_sidecar(c) {
                let terminated = status.state.as_ref().and_then(|s| s.terminated.as_ref());
                status.ready = terminated.is_some_and(|t| t.exit_code == 0);
            } else {
                status.ready = started && fact(&self.facts.ready, c.readiness_probe.is_some());
            }
        }
    }
}

fn waiting(reason: &str, message: &str) -> ApiState {
    ApiState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.to_string()),
            message: Some(message.to_string()).filter(|m| !m.is_empty()),
        }),
        ..Default::default()
    }
}

fn nanos_to_time(nanos: i64) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_nanosecond(i128::from(nanos)).unwrap_or_default())
}

/// upstream's ContainerShouldRestart: the container's own restart rules and policy
/// (sidecars: Always), else the pod's restartPolicy.
pub fn container_should_restart(c: &Container, spec: &PodSpec, exit_code: i32) -> bool {
    if let Some(policy) = c.restart_policy.as_deref() {
        let rule_restarts = c.restart_policy_rules.iter().flatten().any(|rule| {
            let Some(codes) = rule.exit_codes.as_ref() else {
                return false;
            };
            let listed = codes.values.iter().flatten().any(|v| *v == exit_code);
            let matches = match codes.operator.as_str() {
                "In" => listed,
                "NotIn" => !listed,
                _ => false,
            };
            matches && rule.action == "Restart"
        });
        if rule_restarts {
            return true;
        }
        match policy {
            "Always" => return true,
            "OnFailure" => return exit_code != 0,
            "Never" => return false,
            _ => {}
        }
    }
    match spec.restart_policy.as_deref().unwrap_or("Always") {
        "OnFailure" => exit_code != 0,
        "Never" => false,
        _ => true,
    }
}

/// upstream's getPhase (with ContainerRestartRules): Pending until the init containers
/// are done and every app container has started; Running while any runs or will be
/// restarted; Succeeded or Failed once every app container stopped for good. Sidecars
/// only hold the pod in Pending until they have started.
fn phase(
    pod: &Pod,
    statuses: &[ContainerStatus],
    pod_is_terminal: bool,
    initialized: bool,
) -> String {
    let default_spec = PodSpec::default();
    let spec = pod.spec.as_ref().unwrap_or(&default_spec);
    let find = |name: &str| statuses.iter().find(|s| s.name == name);
    let state = |s: &ContainerStatus| s.state.clone().unwrap_or_default();
    let last_exit = |s: &ContainerStatus| {
        s.last_state
            .as_ref()
            .and_then(|l| l.terminated.as_ref())
            .map(|t| t.exit_code)
    };

    let mut pending_init = 0;
    let mut pending_sidecars = 0;
    let mut failed_init_for_good = 0;
    let (mut unknown, mut running, mut waiting, mut stopped, mut stopped_for_good, mut succeeded) =
        (0, 0, 0, 0, 0, 0);

    for c in spec.init_containers.iter().flatten() {
        let Some(s) = find(&c.name) else {
            if is_sidecar(c) {
                unknown += 1;
            } else {
                pending_init += 1;
            }
            continue;
        };
        let st = state(s);
        if is_sidecar(c) {
            if st.running.is_some() {
                if s.started != Some(true) {
                    pending_sidecars += 1;
                }
                running += 1;
            } else if st.terminated.is_some() || (st.waiting.is_some() && last_exit(s).is_some()) {
                // A stopped sidecar does not count for the phase.
            } else if st.waiting.is_some() {
                pending_sidecars += 1;
                waiting += 1;
            } else {
                pending_sidecars += 1;
                unknown += 1;
            }
            continue;
        }
        let exit = st
            .terminated
            .as_ref()
            .map(|t| t.exit_code)
            .or_else(|| st.waiting.as_ref().and(last_exit(s)));
        match exit {
            _ if st.running.is_some() => pending_init += 1,
            // A failure that will not be retried fails the pod; one that will is not
            // pending (the app containers still wait for it).
            Some(code) if code != 0 && !container_should_restart(c, spec, code) => {
                failed_init_for_good += 1
            }
            Some(_) => {}
            None => pending_init += 1,
        }
    }

    for c in &spec.containers {
        let Some(s) = find(&c.name) else {
            unknown += 1;
            continue;
        };
        let st = state(s);
        let exit = st
            .terminated
            .as_ref()
            .map(|t| t.exit_code)
            .or_else(|| st.waiting.as_ref().and(last_exit(s)));
        if st.running.is_some() {
            running += 1;
        } else if let Some(code) = exit {
            stopped += 1;
            if !container_should_restart(c, spec, code) {
                stopped_for_good += 1;
            }
            if st.terminated.is_some() && code == 0 {
                succeeded += 1;
            }
        } else if st.waiting.is_some() {
            waiting += 1;
        } else {
            unknown += 1;
        }
    }

    if failed_init_for_good > 0 {
        return "Failed".into();
    }
    if pending_init > 0 || (pending_sidecars > 0 && !initialized) || waiting > 0 {
        return "Pending".into();
    }
    if running > 0 && unknown == 0 {
        return "Running".into();
    }
    if running == 0 && stopped > 0 && unknown == 0 {
        let is_static = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("kubernetes.io/config.source"))
            .is_some_and(|s| s != "api");
        if pod_is_terminal && !is_static {
            return if stopped == succeeded {
                "Succeeded"
            } else {
                "Failed"
            }
            .into();
        }
        if stopped != stopped_for_good {
            // Some container will run again.
            return "Running".into();
        }
        return if stopped == succeeded {
            "Succeeded"
        } else {
            "Failed"
        }
        .into();
    }
    "Pending".into()
}

/// Condition types and reasons of upstream's pkg/kubelet/status/generate.go.
const READY_TO_START: &str = "PodReadyToStartContainers";
const INITIALIZED: &str = "Initialized";
const READY: &str = "Ready";
const CONTAINERS_READY: &str = "ContainersReady";
const SCHEDULED: &str = "PodScheduled";
const KUBELET_OWNED: [&str; 5] = [
    READY_TO_START,
    INITIALIZED,
    READY,
    CONTAINERS_READY,
    SCHEDULED,
];

impl Ctx<'_> {
    /// Conditions others own first (readiness gates, DisruptionTarget...), then the
    /// kubelet's in upstream's order, each keeping its old transition time while its
    /// status holds.
    fn conditions(
        &self,
        old: &PodStatus,
        all: &[ContainerStatus],
        phase: &str,
        now: &Time,
    ) -> Vec<PodCondition> {
        let old_conditions = old.conditions.as_deref().unwrap_or_default();
        let mut conditions: Vec<PodCondition> = old_conditions
            .iter()
            .filter(|c| !KUBELET_OWNED.contains(&c.type_.as_str()))
            .cloned()
            .collect();
        let host_network = self.spec.host_network == Some(true);
        let sandbox_ready = self
            .view
            .sandbox
            .as_ref()
            .is_some_and(|s| s.ready && (host_network || !s.ips.is_empty()));
        let mut owned = vec![
            condition(READY_TO_START, sandbox_ready, "", ""),
            initialized_condition(self.spec, all, phase),
        ];
        let containers_ready = containers_ready_condition(self.spec, all, phase);
        owned.push(ready_condition(self.spec, &conditions, &containers_ready));
        owned.push(containers_ready);
        owned.push(condition(SCHEDULED, true, "", ""));
        for mut c in owned {
            c.observed_generation = self.pod.metadata.generation;
            let previous = old_conditions
                .iter()
                .find(|o| o.type_ == c.type_ && o.status == c.status);
            c.last_transition_time = Some(
                previous
                    .and_then(|p| p.last_transition_time.clone())
                    .unwrap_or_else(|| now.clone()),
            );
            conditions.push(c);
        }
        conditions
    }
}

fn condition(type_: &str, status: bool, reason: &str, message: &str) -> PodCondition {
    PodCondition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: Some(reason.to_string()).filter(|r| !r.is_empty()),
        message: Some(message.to_string()).filter(|m| !m.is_empty()),
        ..Default::default()
    }
}

/// `[a b]`, as Go prints a list of names in these messages.
fn go_list(names: &[&str]) -> String {
    format!("[{}]", names.join(" "))
}

fn containers_ready_condition(
    spec: &PodSpec,
    all: &[ContainerStatus],
    phase: &str,
) -> PodCondition {
    let mut unknown = Vec::new();
    let mut unready = Vec::new();
    let sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| is_sidecar(c));
    for c in sidecars.chain(&spec.containers) {
        match all.iter().find(|s| s.name == c.name) {
            Some(s) if !s.ready => unready.push(c.name.as_str()),
            Some(_) => {}
            None => unknown.push(c.name.as_str()),
        }
    }
    if phase == "Succeeded" && unknown.is_empty() {
        return condition(CONTAINERS_READY, false, "PodCompleted", "");
    }
    if phase == "Failed" {
        return condition(CONTAINERS_READY, false, "PodFailed", "");
    }
    let mut messages = Vec::new();
    if !unknown.is_empty() {
        messages.push(format!(
            "containers with unknown status: {}",
            go_list(&unknown)
        ));
    }
    if !unready.is_empty() {
        messages.push(format!(
            "containers with unready status: {}",
            go_list(&unready)
        ));
    }
    if messages.is_empty() {
        condition(CONTAINERS_READY, true, "", "")
    } else {
        condition(
            CONTAINERS_READY,
            false,
            "ContainersNotReady",
            &messages.join(", "),
        )
    }
}

/// Ready: ContainersReady, and every readiness gate's condition True.
fn ready_condition(
    spec: &PodSpec,
    conditions: &[PodCondition],
    containers_ready: &PodCondition,
) -> PodCondition {
    if containers_ready.status != "True" {
        let mut ready = containers_ready.clone();
        ready.type_ = READY.into();
        return ready;
    }
    let messages: Vec<String> = spec
        .readiness_gates
        .iter()
        .flatten()
        .filter_map(|gate| {
            let gate = gate.condition_type.as_str();
            match conditions.iter().find(|c| c.type_ == gate) {
                None => Some(format!(
                    "corresponding condition of pod readiness gate {gate:?} does not exist."
                )),
                Some(c) if c.status != "True" => Some(format!(
                    "the status of pod readiness gate {gate:?} is not \"True\", but {}",
                    c.status
                )),
                Some(_) => None,
            }
        })
        .collect();
    if messages.is_empty() {
        condition(READY, true, "", "")
    } else {
        condition(READY, false, "ReadinessGatesNotReady", &messages.join(", "))
    }
}

/// Initialized: every regular init container completed and every sidecar started, or
/// an app container already started (sidecars restarting later do not undo it).
fn initialized_condition(spec: &PodSpec, all: &[ContainerStatus], phase: &str) -> PodCondition {
    let mut unknown = Vec::new();
    let mut incomplete = Vec::new();
    for c in spec.init_containers.iter().flatten() {
        match all.iter().find(|s| s.name == c.name) {
            None => unknown.push(c.name.as_str()),
            Some(s) => {
                let done = if is_sidecar(c) {
                    s.started == Some(true)
                } else {
                    s.ready
                };
                if !done {
                    incomplete.push(c.name.as_str());
                }
            }
        }
    }
    if phase == "Succeeded" && unknown.is_empty() {
        return condition(INITIALIZED, true, "PodCompleted", "");
    }
    let app_started = all.iter().any(|s| {
        let state = s.state.as_ref();
        spec.containers.iter().any(|c| c.name == s.name)
            && state.is_some_and(|st| st.running.is_some() || st.terminated.is_some())
    });
    if app_started {
        return condition(INITIALIZED, true, "", "");
    }
    let mut messages = Vec::new();
    if !unknown.is_empty() {
        messages.push(format!(
            "containers with unknown status: {}",
            go_list(&unknown)
        ));
    }
    if !incomplete.is_empty() {
        messages.push(format!(
            "containers with incomplete status: {}",
            go_list(&incomplete)
        ));
    }
    if messages.is_empty() {
        condition(INITIALIZED, true, "", "")
    } else {
        condition(
            INITIALIZED,
            false,
            "ContainersNotInitialized",
            &messages.join(", "),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    const SEC: i64 = 1_000_000_000;

    fn pod(spec: Value) -> Pod {
        pod_with(spec, json!(null))
    }

    fn pod_with(spec: Value, status: Value) -> Pod {
        let mut full = json!({"containers": [{"name": "app", "image": "nginx:1"}]});
        if let (Value::Object(b), Value::Object(o)) = (&mut full, spec) {
            b.extend(o);
        }
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "uid-1", "generation": 4},
            "spec": full,
            "status": status,
        }))
        .unwrap()
    }

    fn sandbox() -> Option<SandboxView> {
        Some(SandboxView {
            id: "sb1".into(),
            ready: true,
            ips: vec!["10.244.1.7".into()],
        })
    }

    fn running(name: &str, attempt: u32) -> ContainerView {
        ContainerView {
            name: name.into(),
            id: format!("{name}-{attempt}"),
            attempt,
            state: ContainerState::Running,
            created_at: (10 + i64::from(attempt)) * SEC,
            started_at: (11 + i64::from(attempt)) * SEC,
            image: "nginx:1".into(),
            image_ref: "docker.io/library/nginx@sha256:1".into(),
            ..Default::default()
        }
    }

    fn exited(name: &str, attempt: u32, code: i32) -> ContainerView {
        ContainerView {
            state: ContainerState::Exited,
            exit_code: code,
            finished_at: (12 + i64::from(attempt)) * SEC,
            reason: if code == 0 { "Completed" } else { "Error" }.into(),
            ..running(name, attempt)
        }
    }

    fn facts() -> WorkerFacts {
        WorkerFacts {
            runtime_name: "containerd".into(),
            host_ips: vec!["10.0.0.5".into()],
            ..Default::default()
        }
    }

    fn now() -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(1_000).unwrap())
    }

    fn status(pod: &Pod, containers: Vec<ContainerView>, facts: &WorkerFacts) -> PodStatus {
        let view = RuntimeView {
            sandbox: sandbox(),
            containers,
        };
        pod_status(pod, &view, facts, &now())
    }

    fn phase_of(pod: &Pod, containers: Vec<ContainerView>, facts: &WorkerFacts) -> String {
        status(pod, containers, facts).phase.unwrap()
    }

    fn state_of<'a>(s: &'a PodStatus, name: &str) -> &'a ContainerStatus {
        s.container_statuses
            .iter()
            .chain(&s.init_container_statuses)
            .flatten()
            .find(|c| c.name == name)
            .unwrap()
    }

    fn waiting_reason(c: &ContainerStatus) -> Option<&str> {
        c.state.as_ref()?.waiting.as_ref()?.reason.as_deref()
    }

    fn cond<'a>(s: &'a PodStatus, t: &str) -> &'a PodCondition {
        s.conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == t)
            .unwrap()
    }

    fn two_apps(policy: &str) -> Pod {
        pod(
            json!({"restartPolicy": policy, "containers": [{"name": "a", "image": "i"}, {"name": "b", "image": "i"}]}),
        )
    }

    #[test]
    fn phase_follows_upstream_get_phase() {
        let init = json!({"initContainers": [{"name": "init", "image": "i"}]});
        let mut terminal = facts();
        terminal.terminal = true;
        let live = facts();
        let cases: Vec<(&str, Pod, Vec<ContainerView>, &WorkerFacts, &str)> = vec![
            (
                "nothing created yet",
                pod(json!({})),
                vec![],
                &live,
                "Pending",
            ),
            (
                "an init container running",
                pod(init.clone()),
                vec![running("init", 0)],
                &live,
                "Pending",
            ),
            (
                "init done, app created",
                pod(init.clone()),
                vec![exited("init", 0, 0), running("app", 0)],
                &live,
                "Running",
            ),
            (
                "one app running",
                pod(json!({})),
                vec![running("app", 0)],
                &live,
                "Running",
            ),
            (
                "one of two started",
                two_apps("Always"),
                vec![running("a", 0)],
                &live,
                "Pending",
            ),
            (
                "Always: exited containers restart",
                two_apps("Always"),
                vec![exited("a", 0, 0), exited("b", 0, 1)],
                &live,
                "Running",
            ),
            (
                "OnFailure: all succeeded",
                two_apps("OnFailure"),
                vec![exited("a", 0, 0), exited("b", 0, 0)],
                &live,
                "Succeeded",
            ),
            (
                "OnFailure: a failure restarts",
                two_apps("OnFailure"),
                vec![exited("a", 0, 0), exited("b", 0, 1)],
                &live,
                "Running",
            ),
            (
                "Never: all succeeded",
                two_apps("Never"),
                vec![exited("a", 0, 0), exited("b", 0, 0)],
                &live,
                "Succeeded",
            ),
            (
                "Never: one failed",
                two_apps("Never"),
                vec![exited("a", 0, 0), exited("b", 0, 2)],
                &live,
                "Failed",
            ),
            (
                "Never: one still running",
                two_apps("Never"),
                vec![running("a", 0), exited("b", 0, 2)],
                &live,
                "Running",
            ),
            (
                "Never: a failed init container",
                pod(
                    json!({"restartPolicy": "Never", "initContainers": [{"name": "init", "image": "i"}]}),
                ),
                vec![exited("init", 0, 1)],
                &live,
                "Failed",
            ),
            (
                "OnFailure: a failed init container retries",
                pod(
                    json!({"restartPolicy": "OnFailure", "initContainers": [{"name": "init", "image": "i"}]}),
                ),
                vec![exited("init", 0, 1)],
                &live,
                "Pending",
            ),
            (
                "terminal pod under Always, all 0",
                two_apps("Always"),
                vec![exited("a", 0, 0), exited("b", 0, 0)],
                &terminal,
                "Succeeded",
            ),
            (
                "terminal pod under Always, one failed",
                two_apps("Always"),
                vec![exited("a", 0, 0), exited("b", 0, 137)],
                &terminal,
                "Failed",
            ),
            (
                "container restartPolicy Never overrides the pod's Always",
                pod(
                    json!({"restartPolicy": "Always", "containers": [{"name": "app", "image": "i", "restartPolicy": "Never"}]}),
                ),
                vec![exited("app", 0, 3)],
                &live,
                "Failed",
            ),
            (
                "a restart rule on the exit code",
                pod(
                    json!({"restartPolicy": "Never", "containers": [{"name": "app", "image": "i", "restartPolicy": "Never",
                    "restartPolicyRules": [{"action": "Restart", "exitCodes": {"operator": "In", "values": [42]}}]}]}),
                ),
                vec![exited("app", 0, 42)],
                &live,
                "Running",
            ),
        ];
        for (name, pod, containers, facts, want) in cases {
            assert_eq!(phase_of(&pod, containers, facts), want, "{name}");
        }
    }

    #[test]
    fn a_static_pod_does_not_become_terminal_from_the_workers_decision() {
        let mut p = two_apps("Always");
        p.metadata.annotations = Some(
            [(
                "kubernetes.io/config.source".to_string(),
                "file".to_string(),
            )]
            .into(),
        );
        let mut terminal = facts();
        terminal.terminal = true;
        assert_eq!(
            phase_of(&p, vec![exited("a", 0, 0), exited("b", 0, 0)], &terminal),
            "Running"
        );
    }

    #[test]
    fn a_terminal_phase_is_never_left() {
        for old in ["Succeeded", "Failed"] {
            let p = pod_with(
                json!({}),
                json!({"phase": old, "reason": "Evicted", "message": "low memory"}),
            );
            let s = status(&p, vec![running("app", 0)], &facts());
            assert_eq!(
                (s.phase.as_deref(), s.reason.as_deref()),
                (Some(old), Some("Evicted"))
            );
        }
        // A reason belongs to its phase: it goes when the phase changes.
        let p = pod_with(json!({}), json!({"phase": "Pending", "reason": "Waiting"}));
        assert_eq!(status(&p, vec![running("app", 0)], &facts()).reason, None);
    }

    #[test]
    fn sidecars_hold_the_pod_pending_only_until_they_start() {
        let spec = json!({"restartPolicy": "Never", "initContainers": [{"name": "proxy", "image": "p", "restartPolicy": "Always",
            "startupProbe": {"exec": {"command": ["true"]}}}]});
        let p = pod(spec);
        let mut started = facts();
        started.started.insert("proxy".into(), true);
        assert_eq!(phase_of(&p, vec![running("proxy", 0)], &facts()), "Pending");
        assert_eq!(
            phase_of(&p, vec![running("proxy", 0), running("app", 0)], &started),
            "Running"
        );
        // Once an app container started, a sidecar restarting (not yet started) does not
        // put the pod back to Pending.
        assert_eq!(
            phase_of(&p, vec![running("proxy", 1), running("app", 0)], &facts()),
            "Running"
        );
        // A running sidecar keeps the pod Running after the app exits, until the worker
        // stops it; stopped, the sidecar does not count.
        assert_eq!(
            phase_of(&p, vec![running("proxy", 0), exited("app", 0, 0)], &started),
            "Running"
        );
        assert_eq!(
            phase_of(
                &p,
                vec![exited("proxy", 0, 137), exited("app", 0, 0)],
                &started
            ),
            "Succeeded"
        );
    }

    #[test]
    fn containers_not_created_yet_wait_with_the_workers_reason_or_the_default() {
        let p = pod(json!({"initContainers": [{"name": "init", "image": "i"}]}));
        let mut f = facts();
        f.waiting.insert(
            "init".into(),
            ("ErrImagePull".into(), "manifest unknown".into()),
        );
        let s = status(&p, vec![], &f);
        let init = state_of(&s, "init");
        assert_eq!(waiting_reason(init), Some("ErrImagePull"));
        assert_eq!(
            init.state
                .as_ref()
                .unwrap()
                .waiting
                .as_ref()
                .unwrap()
                .message
                .as_deref(),
            Some("manifest unknown")
        );
        assert_eq!(waiting_reason(state_of(&s, "app")), Some("PodInitializing"));
        let s = status(&pod(json!({})), vec![], &facts());
        assert_eq!(
            waiting_reason(state_of(&s, "app")),
            Some("ContainerCreating")
        );
        assert_eq!(
            (
                state_of(&s, "app").image.as_str(),
                state_of(&s, "app").ready
            ),
            ("nginx:1", false)
        );
    }

    #[test]
    fn a_running_container_shows_its_id_image_start_and_attempt() {
        let s = status(
            &pod(json!({})),
            vec![exited("app", 0, 1), running("app", 1)],
            &facts(),
        );
        let app = state_of(&s, "app");
        assert_eq!(app.container_id.as_deref(), Some("containerd://app-1"));
        assert_eq!(app.image_id, "docker.io/library/nginx@sha256:1");
        assert_eq!(app.restart_count, 1);
        let started = app
            .state
            .as_ref()
            .unwrap()
            .running
            .as_ref()
            .unwrap()
            .started_at
            .clone();
        assert_eq!(started.map(|t| t.0.as_second()), Some(12));
        assert_eq!((app.started, app.ready), (Some(true), true));
        // The previous attempt is the last termination.
        let last = app
            .last_state
            .as_ref()
            .unwrap()
            .terminated
            .as_ref()
            .unwrap();
        assert_eq!(
            (last.exit_code, last.container_id.as_deref()),
            (1, Some("containerd://app-0"))
        );
    }

    #[test]
    fn readiness_needs_the_probe_when_there_is_one() {
        let probed = pod(
            json!({"containers": [{"name": "app", "image": "i", "readinessProbe": {"exec": {"command": ["true"]}}}]}),
        );
        let mut f = facts();
        assert!(!state_of(&status(&probed, vec![running("app", 0)], &f), "app").ready);
        f.ready.insert("app".into(), true);
        assert!(state_of(&status(&probed, vec![running("app", 0)], &f), "app").ready);
        // Readiness of an exited container does not count.
        assert!(!state_of(&status(&probed, vec![exited("app", 0, 0)], &f), "app").ready);
        // A startup probe not passed yet: not started, not ready.
        let slow = pod(
            json!({"containers": [{"name": "app", "image": "i", "startupProbe": {"exec": {"command": ["true"]}}}]}),
        );
        let app = status(&slow, vec![running("app", 0)], &facts());
        assert_eq!(
            (state_of(&app, "app").started, state_of(&app, "app").ready),
            (Some(false), false)
        );
    }

    #[test]
    fn a_crashing_container_waits_with_its_last_termination() {
        let mut f = facts();
        f.waiting.insert(
            "app".into(),
            (
                "CrashLoopBackOff".into(),
                "back-off 10s restarting failed container".into(),
            ),
        );
        let s = status(
            &pod(json!({})),
            vec![exited("app", 0, 1), exited("app", 1, 2)],
            &f,
        );
        let app = state_of(&s, "app");
        assert_eq!(waiting_reason(app), Some("CrashLoopBackOff"));
        assert_eq!(
            app.last_state
                .as_ref()
                .unwrap()
                .terminated
                .as_ref()
                .unwrap()
                .exit_code,
            2
        );
        assert_eq!(app.restart_count, 1);
        // Under Never it will not run again: it stays terminated whatever the worker says.
        let s = status(
            &pod(json!({"restartPolicy": "Never"})),
            vec![exited("app", 0, 1)],
            &f,
        );
        assert_eq!(
            state_of(&s, "app")
                .state
                .as_ref()
                .unwrap()
                .terminated
                .as_ref()
                .unwrap()
                .exit_code,
            1
        );
    }

    #[test]
    fn a_created_container_waits_without_reason() {
        let created = ContainerView {
            state: ContainerState::Created,
            started_at: 0,
            ..running("app", 0)
        };
        let s = status(&pod(json!({})), vec![created], &facts());
        let waiting = state_of(&s, "app")
            .state
            .as_ref()
            .unwrap()
            .waiting
            .clone()
            .unwrap();
        assert_eq!(waiting.reason, None);
    }

    #[test]
    fn a_running_container_the_runtime_lost_is_shown_terminated_not_waiting() {
        let old = json!({"phase": "Running", "containerStatuses": [{"name": "app", "image": "nginx:1", "imageID": "", "ready": true,
            "restartCount": 3, "state": {"running": {"startedAt": "2024-01-01T00:00:00Z"}}}]});
        let p = pod_with(json!({}), old.clone());
        let s = status(&p, vec![], &facts());
        let app = state_of(&s, "app");
        let last = app
            .last_state
            .as_ref()
            .unwrap()
            .terminated
            .as_ref()
            .unwrap();
        assert_eq!(
            (last.reason.as_deref(), last.exit_code, app.restart_count),
            (Some("ContainerStatusUnknown"), 137, 4)
        );
        assert_eq!(s.phase.as_deref(), Some("Running"));
        // Reported in an unknown state: terminated, restart counted.
        let unknown = ContainerView {
            state: ContainerState::Unknown,
            ..running("app", 3)
        };
        let s = status(&p, vec![unknown], &facts());
        let term = state_of(&s, "app")
            .state
            .as_ref()
            .unwrap()
            .terminated
            .clone()
            .unwrap();
        assert_eq!(
            (term.reason.as_deref(), state_of(&s, "app").restart_count),
            (Some("ContainerStatusUnknown"), 4)
        );
    }

    #[test]
    fn an_old_terminated_status_is_kept_when_the_container_is_gone() {
        let old = json!({"phase": "Running", "containerStatuses": [{"name": "app", "image": "nginx:1", "imageID": "x", "ready": false,
            "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]});
        let s = status(
            &pod_with(json!({"restartPolicy": "Never"}), old),
            vec![],
            &facts(),
        );
        assert_eq!(state_of(&s, "app").image_id, "x");
        assert_eq!(s.phase.as_deref(), Some("Succeeded"));
    }

    #[test]
    fn an_init_container_removed_after_app_containers_started_counts_as_completed() {
        let p = pod(json!({"initContainers": [{"name": "init", "image": "i"}]}));
        let s = status(&p, vec![running("app", 0)], &facts());
        let init = state_of(&s, "init");
        let term = init.state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!(
            (term.exit_code, term.reason.as_deref(), init.ready),
            (0, Some("Completed"), true)
        );
        assert_eq!(cond(&s, "Initialized").status, "True");
    }

    #[test]
    fn a_deleted_pod_shows_no_restart_reasons() {
        let mut p = pod(json!({}));
        p.metadata.deletion_timestamp = Some(now());
        let mut f = facts();
        f.waiting
            .insert("app".into(), ("CrashLoopBackOff".into(), String::new()));
        let s = status(&p, vec![exited("app", 0, 1)], &f);
        assert!(state_of(&s, "app")
            .state
            .as_ref()
            .unwrap()
            .terminated
            .is_some());
    }

    #[test]
    fn conditions_follow_the_sandbox_init_containers_and_readiness() {
        let p = pod(json!({"initContainers": [{"name": "init1", "image": "i"}],
            "containers": [{"name": "a", "image": "i"}, {"name": "b", "image": "i", "readinessProbe": {"exec": {"command": ["x"]}}}]}));
        let s = status(&p, vec![running("init1", 0)], &facts());
        let i = cond(&s, "Initialized");
        assert_eq!(
            (i.status.as_str(), i.reason.as_deref()),
            ("False", Some("ContainersNotInitialized"))
        );
        assert_eq!(
            i.message.as_deref(),
            Some("containers with incomplete status: [init1]")
        );
        let cr = cond(&s, "ContainersReady");
        assert_eq!(
            (cr.reason.as_deref(), cr.message.as_deref()),
            (
                Some("ContainersNotReady"),
                Some("containers with unready status: [a b]")
            )
        );
        let r = cond(&s, "Ready");
        assert_eq!(
            (r.status.as_str(), r.reason.as_deref(), r.message.clone()),
            ("False", Some("ContainersNotReady"), cr.message.clone())
        );
        assert_eq!(cond(&s, "PodReadyToStartContainers").status, "True");
        assert_eq!(cond(&s, "PodScheduled").status, "True");

        let mut f = facts();
        f.ready.insert("b".into(), true);
        let s = status(
            &p,
            vec![exited("init1", 0, 0), running("a", 0), running("b", 0)],
            &f,
        );
        for t in ["Initialized", "ContainersReady", "Ready"] {
            assert_eq!(cond(&s, t).status, "True", "{t}");
        }
        assert_eq!(cond(&s, "Ready").observed_generation, Some(4));
    }

    #[test]
    fn sandbox_readiness_needs_an_ip_off_the_host_network() {
        let cases = [
            (None, false, "False"),
            (Some((false, vec!["10.244.1.7"])), false, "False"),
            (Some((true, vec![])), false, "False"),
            (Some((true, vec![])), true, "True"),
            (Some((true, vec!["10.244.1.7"])), false, "True"),
        ];
        for (sandbox, host_network, want) in cases {
            let view = RuntimeView {
                sandbox: sandbox.clone().map(|(ready, ips)| SandboxView {
                    id: "sb".into(),
                    ready,
                    ips: ips.into_iter().map(String::from).collect(),
                }),
                containers: vec![],
            };
            let s = pod_status(
                &pod(json!({"hostNetwork": host_network})),
                &view,
                &facts(),
                &now(),
            );
            assert_eq!(
                cond(&s, "PodReadyToStartContainers").status,
                want,
                "{sandbox:?} {host_network}"
            );
        }
    }

    #[test]
    fn a_sidecar_must_start_to_initialize_and_be_ready_for_containers_ready() {
        let p = pod(
            json!({"initContainers": [{"name": "proxy", "image": "p", "restartPolicy": "Always",
            "readinessProbe": {"exec": {"command": ["x"]}}}]}),
        );
        let s = status(&p, vec![running("proxy", 0), running("app", 0)], &facts());
        assert_eq!(cond(&s, "Initialized").status, "True");
        assert_eq!(
            cond(&s, "ContainersReady").message.as_deref(),
            Some("containers with unready status: [proxy]")
        );
    }

    #[test]
    fn readiness_gates_hold_ready_until_their_conditions_are_true() {
        let spec = json!({"readinessGates": [{"conditionType": "example.com/lb"}]});
        let s = status(&pod(spec.clone()), vec![running("app", 0)], &facts());
        let r = cond(&s, "Ready");
        assert_eq!(
            (r.status.as_str(), r.reason.as_deref()),
            ("False", Some("ReadinessGatesNotReady"))
        );
        assert_eq!(
            r.message.as_deref(),
            Some(
                r#"corresponding condition of pod readiness gate "example.com/lb" does not exist."#
            )
        );

        let gate =
            |status: &str| json!({"conditions": [{"type": "example.com/lb", "status": status}]});
        let s = status(
            &pod_with(spec.clone(), gate("False")),
            vec![running("app", 0)],
            &facts(),
        );
        assert_eq!(
            cond(&s, "Ready").message.as_deref(),
            Some(r#"the status of pod readiness gate "example.com/lb" is not "True", but False"#)
        );
        let s = status(
            &pod_with(spec, gate("True")),
            vec![running("app", 0)],
            &facts(),
        );
        assert_eq!(cond(&s, "Ready").status, "True");
        // The gate's condition, owned by someone else, is kept.
        assert_eq!(cond(&s, "example.com/lb").status, "True");
    }

    #[test]
    fn terminal_pods_are_not_ready_with_the_phase_as_reason() {
        let cases = [("Never", 0, "PodCompleted"), ("Never", 1, "PodFailed")];
        for (policy, code, reason) in cases {
            let s = status(
                &pod(json!({"restartPolicy": policy})),
                vec![exited("app", 0, code)],
                &facts(),
            );
            for t in ["ContainersReady", "Ready"] {
                assert_eq!(
                    (cond(&s, t).status.as_str(), cond(&s, t).reason.as_deref()),
                    ("False", Some(reason)),
                    "{t} {code}"
                );
            }
        }
        let s = status(
            &pod(json!({"restartPolicy": "Never"})),
            vec![exited("app", 0, 0)],
            &facts(),
        );
        assert_eq!(
            cond(&s, "Initialized").reason.as_deref(),
            Some("PodCompleted")
        );
    }

    #[test]
    fn transition_times_change_only_with_the_status() {
        let earlier = "2024-01-01T00:00:00Z";
        let old = json!({"phase": "Running", "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": earlier},
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": earlier},
            {"type": "ContainersReady", "status": "False", "lastTransitionTime": earlier},
            {"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI"},
        ]});
        let s = status(&pod_with(json!({}), old), vec![running("app", 0)], &facts());
        let time = |t: &str| {
            cond(&s, t)
                .last_transition_time
                .clone()
                .map(|t| t.0.to_string())
        };
        assert_eq!(time("Ready"), Some(earlier.to_string()));
        assert_eq!(time("PodScheduled"), Some(earlier.to_string()));
        assert_eq!(time("ContainersReady"), Some(now().0.to_string()));
        assert_eq!(
            cond(&s, "DisruptionTarget").reason.as_deref(),
            Some("EvictionByEvictionAPI")
        );
        // Each condition appears once.
        assert_eq!(s.conditions.as_ref().unwrap().len(), 6);
    }

    #[test]
    fn addresses_times_and_qos_are_reported() {
        let mut f = facts();
        f.host_ips = vec!["10.0.0.5".into(), "fd00::5".into()];
        f.start_time = Some(now());
        let view = RuntimeView {
            sandbox: Some(SandboxView {
                id: "sb".into(),
                ready: true,
                ips: vec!["fd00:244::7".into(), "10.244.1.7".into()],
            }),
            containers: vec![running("app", 0)],
        };
        let s = pod_status(&pod(json!({})), &view, &f, &now());
        let ips: Vec<String> = s.pod_ips.iter().flatten().map(|ip| ip.ip.clone()).collect();
        assert_eq!(
            (s.pod_ip.as_deref(), ips),
            (
                Some("10.244.1.7"),
                vec!["10.244.1.7".to_string(), "fd00:244::7".to_string()]
            )
        );
        let host_ips: Vec<String> = s
            .host_ips
            .iter()
            .flatten()
            .map(|ip| ip.ip.clone())
            .collect();
        assert_eq!(
            (s.host_ip.as_deref(), host_ips.len()),
            (Some("10.0.0.5"), 2)
        );
        assert_eq!(s.start_time, Some(now()));
        assert_eq!(s.qos_class.as_deref(), Some("BestEffort"));
        assert_eq!(s.observed_generation, Some(4));

        // A sandbox that is not ready keeps the IPs the API shows.
        let old = json!({"podIP": "10.244.9.9", "podIPs": [{"ip": "10.244.9.9"}], "startTime": "2024-01-01T00:00:00Z"});
        let view = RuntimeView {
            sandbox: Some(SandboxView {
                ready: false,
                ..view.sandbox.clone().unwrap()
            }),
            containers: vec![],
        };
        let s = pod_status(&pod_with(json!({}), old), &view, &f, &now());
        assert_eq!(s.pod_ip.as_deref(), Some("10.244.9.9"));
        assert_eq!(s.start_time.map(|t| t.0.as_second()), Some(1_704_067_200));

        // hostNetwork pods have the node's IPs.
        let s = pod_status(
            &pod(json!({"hostNetwork": true})),
            &RuntimeView::default(),
            &f,
            &now(),
        );
        assert_eq!(s.pod_ip.as_deref(), Some("10.0.0.5"));
    }
}
