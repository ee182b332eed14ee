//! Runtime state → pod status: the pure computation of what the API shows for a pod
//! (phase, conditions, container statuses), following the upstream kubelet's
//! generateAPIPodStatus and getPhase.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerState as ApiState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodSpec, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::spec::{is_sidecar, pod_ips as spec_pod_ips, qos_class};

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
    /// What each running container was created with or last resized to, by name
    /// (status.containerStatuses[].resources); the pod's admitted resources otherwise.
    pub resources: BTreeMap<String, k8s_openapi::api::core::v1::ResourceRequirements>,
    /// The pod's PodResizePending and PodResizeInProgress conditions, if any.
    pub resize_conditions: Vec<k8s_openapi::api::core::v1::PodCondition>,
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
    let sandbox_ips = match &view.sandbox {
        Some(sandbox) if sandbox.ready => sandbox.ips.as_slice(),
        _ => &[],
    };
    let mut pod_ips = spec_pod_ips(pod, sandbox_ips, &host_ips);
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
        // As upstream's convertContainerStatusResources: a running container shows
        // what it was given, any other the admitted resources; allocatedResources are
        // the admitted requests.
        let admitted = c.resources.clone().unwrap_or_default();
        status.allocated_resources = admitted.requests.clone().filter(|r| !r.is_empty());
        status.resources = Some(match cv.state {
            ContainerState::Running => self
                .facts
                .resources
                .get(&c.name)
                .cloned()
                .unwrap_or(admitted),
            _ => admitted,
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
mod conditions;
pub use conditions::transition_time;
mod phase;
#[cfg(test)]
mod tests;

use phase::phase;

/// Every container of the status runs and has a start time (upstream's
/// hasPodStartedSLO, the pod startup SLI's "started").
pub fn all_containers_running(status: &PodStatus) -> bool {
    status.container_statuses.iter().flatten().all(|cs| {
        cs.state
            .as_ref()
            .and_then(|s| s.running.as_ref())
            .is_some_and(|r| r.started_at.is_some())
    })
}
