//! In-place pod resize in the pod worker (upstream's handlePodResourcesResize and
//! doPodResizeAction): a resize the node admits is carried to the running containers
//! through the CRI's UpdateContainerResources (or by restarting the containers whose
//! resizePolicy asks for it), with the pod cgroup raised before them and lowered after
//! them. The pod's PodResizePending and PodResizeInProgress conditions and the
//! ResizeStarted, ResizeDeferred, ResizeCompleted and ResizeError events say how far
//! it got, in upstream's words.

use std::collections::BTreeMap;
use std::time::Duration;

use gantry_cri::api;
use k8s_openapi::api::core::v1::{Container, Pod, PodCondition, ResourceRequirements};

use super::{field_path, now, termination_grace, Worker};
use crate::allocation::{self, Admission, Effective};
use crate::cluster::Cluster;
use crate::runtime_state::{PodRuntime, Sandbox};
use crate::spec;
use crate::status::ContainerState;

pub(super) const PENDING: &str = "PodResizePending";
pub(super) const IN_PROGRESS: &str = "PodResizeInProgress";

/// The pod's resize conditions as the worker holds them between passes.
#[derive(Default)]
pub(super) struct ResizeConditions {
    pending: Option<PodCondition>,
    in_progress: Option<PodCondition>,
}

impl ResizeConditions {
    /// The conditions to report, PodResizePending first (upstream's order).
    pub(super) fn list(&self) -> Vec<PodCondition> {
        self.pending
            .iter()
            .chain(self.in_progress.iter())
            .cloned()
            .collect()
    }
}

/// A resize condition (status True); its transition time stays while its reason does.
fn resize_condition(
    type_: &str,
    old: Option<&PodCondition>,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) -> PodCondition {
    let same = old.filter(|o| o.reason.as_deref().unwrap_or_default() == reason);
    let now = now();
    PodCondition {
        type_: type_.to_string(),
        status: "True".into(),
        reason: Some(reason.to_string()).filter(|r| !r.is_empty()),
        message: Some(message.to_string()).filter(|m| !m.is_empty()),
        last_probe_time: Some(
            same.and_then(|o| o.last_probe_time.clone())
                .unwrap_or_else(|| now.clone()),
        ),
        last_transition_time: Some(
            same.and_then(|o| o.last_transition_time.clone())
                .unwrap_or(now),
        ),
        observed_generation: generation,
    }
}

/// A running container whose resources differ from what it was given.
struct Change<'a> {
    container: &'a Container,
    id: String,
    attempt: u32,
    want: Effective,
    have: Effective,
}

impl Change<'_> {
    /// Whether the container's resizePolicy asks for a restart for a resource that
    /// changes (the default is NotRequired).
    fn needs_restart(&self) -> bool {
        let restart = |resource: &str| {
            self.container
                .resize_policy
                .iter()
                .flatten()
                .any(|p| p.resource_name == resource && p.restart_policy == "RestartContainer")
        };
        let cpu = self.want.cpu_request != self.have.cpu_request
            || self.want.cpu_limit != self.have.cpu_limit;
        let memory = self.want.memory_request != self.have.memory_request
            || self.want.memory_limit != self.have.memory_limit;
        (cpu && restart("cpu")) || (memory && restart("memory"))
    }

    /// Whether the container's memory limit shrinks (or is set where there was none).
    fn memory_limit_shrinks(&self) -> bool {
        self.want.memory_limit != 0
            && (self.have.memory_limit == 0 || self.want.memory_limit < self.have.memory_limit)
    }

    /// Whether the change lowers anything: such changes go first, as upstream orders them.
    fn decreases(&self) -> bool {
        self.want.cpu_limit < self.have.cpu_limit
            || self.want.memory_limit < self.have.memory_limit
            || self.want.cpu_request < self.have.cpu_request
    }
}

impl<C: Cluster> Worker<C> {
    /// The pod as the node runs it (its containers with their admitted resources),
    /// after deciding on a resize its spec asks for; the decision is announced as
    /// upstream does.
    pub(super) fn allocate(&mut self, pod: &Pod) -> Pod {
        let (allocated, admission) = self.allocations.allocate(pod);
        let generation = pod.metadata.generation;
        match admission {
            Admission::Unchanged => {
                // A spec put back to the admitted resources ends a pending resize.
                self.resize.pending = None;
            }
            Admission::Accepted => {
                self.resize.pending = None;
                self.resize.in_progress =
                    Some(resize_condition(IN_PROGRESS, None, "", "", generation));
                self.cluster.event(
                    pod,
                    None,
                    "Normal",
                    "ResizeStarted",
                    &resize_message("Pod resize started", &allocated, generation, ""),
                );
            }
            Admission::Deferred(message) => {
                let old = self.resize.pending.take();
                let changed = old.as_ref().is_none_or(|o| {
                    o.message.as_deref() != Some(message.as_str())
                        || o.observed_generation != generation
                });
                self.resize.pending = Some(resize_condition(
                    PENDING,
                    old.as_ref(),
                    "Deferred",
                    &message,
                    generation,
                ));
                if changed {
                    self.cluster.event(
                        pod,
                        None,
                        "Warning",
                        "ResizeDeferred",
                        &resize_message("Pod resize Deferred", pod, generation, &message),
                    );
                }
            }
        }
        allocated
    }

    /// The pod as its running containers are sized now, when that differs from `pod`
    /// (a resize not carried out yet): what the pod cgroup must still hold.
    pub(super) fn running_pod(&self, pod: &Pod) -> Option<Pod> {
        // Every pass asks: compare first, copy the pod only when a container differs.
        let empty = ResourceRequirements::default();
        let differing: BTreeMap<String, ResourceRequirements> = allocation::resizable(pod)
            .filter_map(|c| {
                let actuated = self.allocations.actuated(&self.uid, &c.name)?;
                let admitted = c.resources.as_ref().unwrap_or(&empty);
                (Effective::of(&actuated) != Effective::of(admitted))
                    .then(|| (c.name.clone(), actuated))
            })
            .collect();
        if differing.is_empty() {
            return None;
        }
        let mut running = pod.clone();
        let spec = running.spec.as_mut()?;
        let init = spec.init_containers.iter_mut().flatten();
        for c in spec.containers.iter_mut().chain(init) {
            if let Some(actuated) = differing.get(&c.name) {
                c.resources = Some(actuated.clone());
            }
        }
        Some(running)
    }

    /// What each running container was given, by name (status.containerStatuses[].resources).
    pub(super) fn actuated_resources(&self, pod: &Pod) -> BTreeMap<String, ResourceRequirements> {
        allocation::resizable(pod)
            .filter_map(|c| {
                Some((
                    c.name.clone(),
                    self.allocations.actuated(&self.uid, &c.name)?,
                ))
            })
            .collect()
    }

    /// Brings the running containers to their admitted resources: restarts those whose
    /// resizePolicy asks for it, updates the others in place (decreases first), then
    /// settles the pod cgroup. Returns when to look again if it could not finish.
    pub(super) async fn resize_running(
        &mut self,
        pod: &Pod,
        rt: &PodRuntime,
        sandbox: &Sandbox,
    ) -> Option<Duration> {
        let empty = ResourceRequirements::default();
        let mut changes: Vec<Change> = Vec::new();
        for c in allocation::resizable(pod) {
            let Some(latest) = rt
                .latest(&c.name)
                .filter(|l| l.state == ContainerState::Running)
            else {
                continue;
            };
            let allocated = c.resources.as_ref().unwrap_or(&empty);
            let actuated = self.allocations.actuated(&self.uid, &c.name);
            let want = Effective::of(allocated);
            // Unknown: what the container was made with is not recorded (made before
            // this agent kept records); updating it to the same values is harmless.
            let have = actuated.as_ref().map(Effective::of).unwrap_or_default();
            if actuated.is_some() && want == have {
                continue;
            }
            changes.push(Change {
                container: c,
                id: latest.id.clone(),
                attempt: latest.attempt,
                want,
                have,
            });
        }
        changes.sort_by_key(|c| !c.decreases());
        let (restarts, updates): (Vec<Change>, Vec<Change>) =
            changes.into_iter().partition(|c| c.needs_restart());

        for change in &restarts {
            let c = change.container;
            self.cluster.event(
                pod,
                Some(field_path(pod, &c.name)),
                "Normal",
                "Killing",
                &format!("Container {} resize requires restart", c.name),
            );
            self.acted = true;
            if let Err(e) = self
                .kill_container(pod, Some(c), &change.id, termination_grace(pod))
                .await
            {
                return self
                    .resize_failed(pod, &format!("kill container {}: {}", c.name, e.message()));
            }
            if let Some(retry) = self.start_new(pod, c, sandbox, change.attempt + 1).await {
                return Some(retry);
            }
        }

        if let Some(error) = self.memory_decrease_refused(&updates).await {
            return self.resize_failed(pod, &error);
        }
        for change in &updates {
            let c = change.container;
            let linux = spec::resources::container_resources(pod, c, &self.node);
            self.acted = true;
            let updated = self
                .cri
                .runtime
                .clone()
                .update_container_resources(api::UpdateContainerResourcesRequest {
                    container_id: change.id.clone(),
                    linux: Some(linux),
                    ..Default::default()
                })
                .await;
            if let Err(e) = updated {
                return self.resize_failed(pod, e.message());
            }
            let allocated = c.resources.clone().unwrap_or_default();
            self.allocations
                .set_actuated(&self.uid, &c.name, &allocated);
        }
        // The containers have followed: the pod cgroup now lowers what it must.
        if let Some(cgroups) = &self.pod_cgroups {
            if let Err(e) = cgroups.ensure(pod) {
                return self.resize_failed(pod, &e.to_string());
            }
        }
        self.resize_done(pod);
        None
    }

    /// upstream's validateMemoryResizeAction: a memory limit may not go below what the
    /// container uses now (the kernel would have to reclaim or OOM-kill at once).
    async fn memory_decrease_refused(&self, updates: &[Change<'_>]) -> Option<String> {
        let mut errors = Vec::new();
        for change in updates.iter().filter(|c| c.memory_limit_shrinks()) {
            let stats = self
                .cri
                .runtime
                .clone()
                .container_stats(api::ContainerStatsRequest {
                    container_id: change.id.clone(),
                })
                .await;
            let usage = stats
                .ok()
                .and_then(|r| Some(r.into_inner().stats?.memory?.usage_bytes?.value));
            let name = &change.container.name;
            match usage {
                None => errors.push(format!("missing container {name:?} memory usage")),
                Some(used) if used >= change.want.memory_limit as u64 => errors.push(format!(
                    "attempting to set container {name:?} memory limit ({}) below current usage ({used})",
                    change.want.memory_limit
                )),
                Some(_) => {}
            }
        }
        match errors.len() {
            0 => None,
            1 => Some(format!("cannot decrease memory limits: {}", errors[0])),
            _ => Some(format!(
                "cannot decrease memory limits: [{}]",
                errors.join(", ")
            )),
        }
    }

    /// A resize that could not be carried out now: PodResizeInProgress with reason
    /// Error and a ResizeError event (once per message); tried again later.
    fn resize_failed(&mut self, pod: &Pod, message: &str) -> Option<Duration> {
        let generation = pod.metadata.generation;
        let old = self.resize.in_progress.take();
        let changed = old
            .as_ref()
            .is_none_or(|o| o.message.as_deref() != Some(message));
        self.resize.in_progress = Some(resize_condition(
            IN_PROGRESS,
            old.as_ref(),
            "Error",
            message,
            generation,
        ));
        if changed {
            tracing::warn!(pod = %super::pod_name(pod), error = %message, "resize");
            self.cluster.event(
                pod,
                None,
                "Warning",
                "ResizeError",
                &resize_message("Pod resize error", pod, generation, message),
            );
        }
        Some(Duration::from_secs(5))
    }

    /// Every running container has its admitted resources: a resize in progress ends
    /// with upstream's ResizeCompleted event.
    fn resize_done(&mut self, pod: &Pod) {
        let Some(done) = self.resize.in_progress.take() else {
            return;
        };
        let generation = done.observed_generation.or(pod.metadata.generation);
        self.cluster.event(
            pod,
            None,
            "Normal",
            "ResizeCompleted",
            &resize_message("Pod resize completed", pod, generation, ""),
        );
    }

    /// A pod that has finished has no resize to report.
    pub(super) fn forget_resize(&mut self) {
        self.resize = ResizeConditions::default();
    }
}

/// upstream's podResizeMessage: the prefix, then the containers' resources as JSON in
/// Go's field order: `Pod resize started: {"containers":[{"name":"app","resources":
/// {"limits":{"cpu":"200m"},"requests":{"cpu":"200m"}}}],"generation":2}`.
pub(super) fn resize_message(
    prefix: &str,
    pod: &Pod,
    generation: Option<i64>,
    error: &str,
) -> String {
    let spec = pod.spec.as_ref();
    let list = |containers: &mut dyn Iterator<Item = &Container>| {
        let items: Vec<String> = containers
            .map(|c| {
                format!(
                    "{{\"name\":{},\"resources\":{}}}",
                    json(&c.name),
                    requirements_json(c.resources.as_ref())
                )
            })
            .collect();
        items.join(",")
    };
    let mut fields = Vec::new();
    let inits = spec.and_then(|s| s.init_containers.as_ref());
    if inits.is_some_and(|i| !i.is_empty()) {
        fields.push(format!(
            "\"initContainers\":[{}]",
            list(&mut inits.into_iter().flatten())
        ));
    }
    let apps = spec.map(|s| s.containers.as_slice()).unwrap_or_default();
    if !apps.is_empty() {
        fields.push(format!("\"containers\":[{}]", list(&mut apps.iter())));
    }
    fields.push(format!("\"generation\":{}", generation.unwrap_or(0)));
    if !error.is_empty() {
        fields.push(format!("\"error\":{}", json(error)));
    }
    format!("{prefix}: {{{}}}", fields.join(","))
}

/// A ResourceRequirements as Go marshals it: limits, requests, claims, empty ones left out.
fn requirements_json(r: Option<&ResourceRequirements>) -> String {
    let Some(r) = r else {
        return "{}".into();
    };
    let mut fields = Vec::new();
    for (name, list) in [("limits", &r.limits), ("requests", &r.requests)] {
        if let Some(list) = list.as_ref().filter(|l| !l.is_empty()) {
            let items: Vec<String> = list
                .iter()
                .map(|(k, v)| format!("{}:{}", json(k), json(&v.0)))
                .collect();
            fields.push(format!("\"{name}\":{{{}}}", items.join(",")));
        }
    }
    if let Some(claims) = r.claims.as_ref().filter(|c| !c.is_empty()) {
        fields.push(format!(
            "\"claims\":{}",
            serde_json::to_string(claims).unwrap_or_else(|_| "[]".into())
        ));
    }
    format!("{{{}}}", fields.join(","))
}

fn json(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_messages_are_upstreams_json_in_gos_field_order() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "generation": 2},
            "spec": {"containers": [
                {"name": "app", "resources": {
                    "requests": {"memory": "64Mi", "cpu": "100m"},
                    "limits": {"cpu": "200m"}}},
                {"name": "plain"}
            ]}
        }))
        .unwrap();
        assert_eq!(
            resize_message("Pod resize started", &pod, Some(2), ""),
            r#"Pod resize started: {"containers":[{"name":"app","resources":{"limits":{"cpu":"200m"},"requests":{"cpu":"100m","memory":"64Mi"}}},{"name":"plain","resources":{}}],"generation":2}"#
        );
        assert_eq!(
            resize_message("Pod resize Deferred", &pod, Some(3), "no \"room\""),
            r#"Pod resize Deferred: {"containers":[{"name":"app","resources":{"limits":{"cpu":"200m"},"requests":{"cpu":"100m","memory":"64Mi"}}},{"name":"plain","resources":{}}],"generation":3,"error":"no \"room\""}"#
        );
    }
}
