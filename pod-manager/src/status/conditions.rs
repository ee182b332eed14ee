//! The pod conditions the kubelet owns, as upstream's status generators.

use super::*;

/// Condition types and reasons of upstream's pkg/kubelet/status/generate.go.
pub(super) const READY_TO_START: &str = "PodReadyToStartContainers";
pub(super) const INITIALIZED: &str = "Initialized";
pub(super) const READY: &str = "Ready";
pub(super) const CONTAINERS_READY: &str = "ContainersReady";
pub(super) const SCHEDULED: &str = "PodScheduled";
/// In-place resize's conditions, owned by the kubelet too (set by the pod worker).
pub(super) const RESIZE: [&str; 2] = ["PodResizePending", "PodResizeInProgress"];
pub(super) const KUBELET_OWNED: [&str; 5] = [
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
    pub(super) fn conditions(
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
            .filter(|c| !RESIZE.contains(&c.type_.as_str()))
            .cloned()
            .collect();
        // The resize conditions come from the worker, before the others it owns.
        conditions.extend(self.facts.resize_conditions.iter().cloned());
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
            c.last_transition_time = Some(transition_time(old_conditions, &c, now));
            conditions.push(c);
        }
        conditions
    }
}

/// When condition `c` last changed: the old one's time while its status holds, else now.
pub fn transition_time(old: &[PodCondition], c: &PodCondition, now: &Time) -> Time {
    old.iter()
        .find(|o| o.type_ == c.type_ && o.status == c.status)
        .and_then(|o| o.last_transition_time.clone())
        .unwrap_or_else(|| now.clone())
}

pub(super) fn condition(type_: &str, status: bool, reason: &str, message: &str) -> PodCondition {
    PodCondition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: Some(reason.to_string()).filter(|r| !r.is_empty()),
        message: Some(message.to_string()).filter(|m| !m.is_empty()),
        ..Default::default()
    }
}

/// `[a b]`, as Go prints a list of names in these messages.
pub(super) fn go_list(names: &[&str]) -> String {
    format!("[{}]", names.join(" "))
}

pub(super) fn containers_ready_condition(
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
pub(super) fn ready_condition(
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
pub(super) fn initialized_condition(
    spec: &PodSpec,
    all: &[ContainerStatus],
    phase: &str,
) -> PodCondition {
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
