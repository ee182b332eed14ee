//! Requests and limits → the QoS class and the Linux resources of containers and
//! sandboxes, as upstream's pkg/apis/core/v1/helper/qos, pkg/kubelet/qos/policy.go,
//! kuberuntime_container_linux.go and component-helpers' PodRequests/PodLimits.

use std::collections::BTreeMap;

use gantry_cri::api;
use k8s_openapi::api::core::v1::{Container, Pod, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;

use super::quantity::{self, Quantity};
use super::NodeContext;

pub const GUARANTEED: &str = "Guaranteed";
pub const BURSTABLE: &str = "Burstable";
pub const BEST_EFFORT: &str = "BestEffort";

/// cgroup CPU weights and CFS bandwidth, as upstream's cm helpers_linux.go.
const MIN_SHARES: i64 = 2;
const MAX_SHARES: i64 = 262_144;
const SHARES_PER_CPU: i64 = 1024;
pub const CFS_PERIOD_US: i64 = 100_000;
const MIN_QUOTA_US: i64 = 1000;

/// OOM score adjustments of pkg/kubelet/qos/policy.go.
const GUARANTEED_OOM_SCORE_ADJ: i64 = -997;
const BEST_EFFORT_OOM_SCORE_ADJ: i64 = 1000;

pub(crate) type ResourceList = BTreeMap<String, ApiQuantity>;

pub(crate) fn requests(c: &Container) -> Option<&ResourceList> {
    c.resources.as_ref()?.requests.as_ref()
}

pub(crate) fn limits(c: &Container) -> Option<&ResourceList> {
    c.resources.as_ref()?.limits.as_ref()
}

pub(crate) fn init_containers(pod: &Pod) -> &[Container] {
    pod.spec
        .as_ref()
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or_default()
}

pub(crate) fn containers(pod: &Pod) -> &[Container] {
    pod.spec
        .as_ref()
        .map(|s| &s.containers[..])
        .unwrap_or_default()
}

pub fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// The pod's QoS class: the one the API recorded (it never changes once set), else
/// computed as upstream's ComputePodQOS from the cpu and memory requests and limits of
/// the containers and init containers, or of the pod when pod-level resources are set.
pub fn qos_class(pod: &Pod) -> &'static str {
    match pod.status.as_ref().and_then(|s| s.qos_class.as_deref()) {
        Some(GUARANTEED) => return GUARANTEED,
        Some(BURSTABLE) => return BURSTABLE,
        Some(BEST_EFFORT) => return BEST_EFFORT,
        _ => {}
    }
    let mut requests = BTreeMap::<&str, Quantity>::new();
    let mut limits = BTreeMap::<&str, Quantity>::new();
    let mut guaranteed = true;
    let add = |sum: &mut BTreeMap<&str, Quantity>, list: Option<&ResourceList>| {
        let mut found = Vec::new();
        for name in ["cpu", "memory"] {
            if let Some(q) =
                quantity::of(list, name).filter(|q| q.cmp_value(&Quantity::ZERO).is_gt())
            {
                let entry = sum.entry(name).or_insert(Quantity::ZERO);
                *entry = entry.saturating_add(q);
                found.push(name);
            }
        }
        found.len() == 2
    };
    if let Some(pod_level) = pod_level_resources(pod) {
        add(&mut requests, pod_level.requests.as_ref());
        guaranteed = add(&mut limits, pod_level.limits.as_ref());
    } else {
        for c in containers(pod).iter().chain(init_containers(pod)) {
            add(&mut requests, self::requests(c));
            guaranteed &= add(&mut limits, self::limits(c));
        }
    }
    if requests.is_empty() && limits.is_empty() {
        return BEST_EFFORT;
    }
    let equal = requests.iter().all(|(name, req)| {
        limits
            .get(name)
            .is_some_and(|lim| lim.cmp_value(req).is_eq())
    });
    if guaranteed && equal && requests.len() == limits.len() {
        GUARANTEED
    } else {
        BURSTABLE
    }
}

/// The pod-level resources, when they set cpu or memory (PodLevelResources: they
/// then decide the QoS class and the sandbox's resources instead of the containers').
pub(crate) fn pod_level_resources(pod: &Pod) -> Option<&ResourceRequirements> {
    let r = pod.spec.as_ref()?.resources.as_ref()?;
    let sets = |list: Option<&ResourceList>| {
        list.is_some_and(|l| l.contains_key("cpu") || l.contains_key("memory"))
    };
    (sets(r.requests.as_ref()) || sets(r.limits.as_ref())).then_some(r)
}

/// cpu.shares for a CPU request in millicores (upstream's MilliCPUToShares).
pub fn milli_cpu_to_shares(milli: i64) -> i64 {
    if milli == 0 {
        return MIN_SHARES;
    }
    (milli.saturating_mul(SHARES_PER_CPU) / 1000).clamp(MIN_SHARES, MAX_SHARES)
}

/// The CFS quota for a CPU limit in millicores over `period` µs; 0 (none) without a
/// limit (upstream's milliCPUToQuota).
pub fn milli_cpu_to_quota(milli: i64, period: i64) -> i64 {
    if milli == 0 {
        return 0;
    }
    (milli.saturating_mul(period) / 1000).max(MIN_QUOTA_US)
}

/// upstream's calculateLinuxResources: a CPU request defaults to the limit when only
/// the limit is set; the period is always sent so the runtime applies the quota.
fn linux_resources(
    cpu_request: Option<Quantity>,
    cpu_limit: Option<Quantity>,
    memory_limit: Option<Quantity>,
    node: &NodeContext,
) -> api::LinuxContainerResources {
    let request = cpu_request.unwrap_or_default();
    let limit = cpu_limit.unwrap_or_default();
    let shares_from = if request.is_zero() && !limit.is_zero() {
        limit
    } else {
        request
    };
    let mut unified = std::collections::HashMap::new();
    if node.memory_oom_group {
        // cgroup v2 with singleProcessOOMKill false: the kernel kills the whole
        // container on OOM, not one of its processes.
        unified.insert("memory.oom.group".to_string(), "1".to_string());
    }
    api::LinuxContainerResources {
        cpu_shares: milli_cpu_to_shares(shares_from.milli_value()),
        cpu_period: CFS_PERIOD_US,
        cpu_quota: milli_cpu_to_quota(limit.milli_value(), CFS_PERIOD_US),
        memory_limit_in_bytes: memory_limit.map(|m| m.value()).unwrap_or(0),
        unified,
        ..Default::default()
    }
}

/// The Linux resources of `container` (upstream's generateLinuxContainerResources):
/// CPU shares, CFS quota, memory limit and the QoS OOM score adjustment.
pub fn container_resources(
    pod: &Pod,
    container: &Container,
    node: &NodeContext,
) -> api::LinuxContainerResources {
    let mut resources = linux_resources(
        quantity::of(requests(container), "cpu"),
        quantity::of(limits(container), "cpu"),
        quantity::of(limits(container), "memory"),
        node,
    );
    resources.oom_score_adj = oom_score_adj(pod, container, node.memory_capacity);
    resources
}

/// upstream's GetContainerOOMScoreAdjust: node-critical and Guaranteed pods are the
/// last to be killed, BestEffort the first; Burstable containers get 1000 minus their
/// share of the node's memory in thousandths, kept between Guaranteed and BestEffort
/// ([3, 999]); a sidecar scores no higher than the pod's smallest app container.
pub fn oom_score_adj(pod: &Pod, container: &Container, memory_capacity: i64) -> i64 {
    if is_node_critical(pod) {
        return GUARANTEED_OOM_SCORE_ADJ;
    }
    match qos_class(pod) {
        GUARANTEED => return GUARANTEED_OOM_SCORE_ADJ,
        BEST_EFFORT => return BEST_EFFORT_OOM_SCORE_ADJ,
        _ => {}
    }
    if memory_capacity <= 0 {
        // Unknown capacity: the least protected Burstable score.
        return BEST_EFFORT_OOM_SCORE_ADJ - 1;
    }
    let score =
        |request: i64| 1000 - (1000i128 * i128::from(request) / i128::from(memory_capacity)) as i64;
    let memory_request = |c: &Container| {
        quantity::of(requests(c), "memory")
            .map(|q| q.value())
            .unwrap_or(0)
    };
    let mut adj = score(memory_request(container));
    let is_init_sidecar = init_containers(pod)
        .iter()
        .any(|c| c.name == container.name && is_sidecar(c));
    if is_init_sidecar {
        let min_app_request = containers(pod)
            .iter()
            .map(memory_request)
            .filter(|r| *r > 0)
            .min();
        if let Some(min) = min_app_request {
            adj = adj.min(score(min));
        }
    }
    if adj < 1000 + GUARANTEED_OOM_SCORE_ADJ {
        return 1000 + GUARANTEED_OOM_SCORE_ADJ;
    }
    if adj == BEST_EFFORT_OOM_SCORE_ADJ {
        return adj - 1;
    }
    adj
}

/// upstream's IsCriticalPod: a static or mirror pod, or one of system priority
/// (at least 2000000000). The eviction manager never evicts these.
pub fn is_critical_pod(pod: &Pod) -> bool {
    let annotations = pod.metadata.annotations.as_ref();
    let is_static = annotations
        .and_then(|a| a.get("kubernetes.io/config.source"))
        .is_some_and(|s| s != "api");
    let is_mirror = annotations.is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"));
    is_static
        || is_mirror
        || pod
            .spec
            .as_ref()
            .and_then(|s| s.priority)
            .is_some_and(|p| p >= 2_000_000_000)
}

/// The pod's request of resource `name` in whole units as upstream's
/// GetResourceRequestQuantity counts it (app containers and sidecars add up, an init
/// container counts when it is larger); 0 when nothing requests it.
pub fn pod_request(pod: &Pod, name: &str) -> i64 {
    pod_total(pod, requests, name).map_or(0, |q| q.value())
}

/// upstream's IsNodeCriticalPod: a critical pod (static, mirror, or of system
/// priority) of priority class system-node-critical.
fn is_node_critical(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.priority_class_name.as_deref())
        == Some("system-node-critical")
        && is_critical_pod(pod)
}

/// The sum of a resource over the pod as the scheduler counts it (upstream's
/// PodRequests/PodLimits without overhead): app containers and sidecars add up; an
/// init container counts with the sidecars started before it, and the pod needs the
/// largest of that and the sum.
pub(crate) fn pod_total(
    pod: &Pod,
    of: fn(&Container) -> Option<&ResourceList>,
    name: &str,
) -> Option<Quantity> {
    let get = |c: &Container| quantity::of(of(c), name);
    let mut sum: Option<Quantity> = None;
    let add = |a: Option<Quantity>, b: Option<Quantity>| match (a, b) {
        (Some(a), Some(b)) => Some(a.saturating_add(b)),
        (a, b) => a.or(b),
    };
    for c in containers(pod) {
        sum = add(sum, get(c));
    }
    let mut sidecars: Option<Quantity> = None;
    let mut init_peak: Option<Quantity> = None;
    for c in init_containers(pod) {
        let during = if is_sidecar(c) {
            sum = add(sum, get(c));
            sidecars = add(sidecars, get(c));
            sidecars
        } else {
            add(get(c), sidecars)
        };
        init_peak = match (init_peak, during) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
    match (sum, init_peak) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// The sandbox's resources and overhead (upstream's applySandboxResources): the pod's
/// total CPU request and CPU/memory limits, or the pod-level resources when set; the
/// overhead is treated as guaranteed (request = limit).
pub fn sandbox_resources(
    pod: &Pod,
    node: &NodeContext,
) -> (api::LinuxContainerResources, api::LinuxContainerResources) {
    let pod_level = pod_level_resources(pod);
    let pick =
        |of: fn(&Container) -> Option<&ResourceList>, level: Option<&ResourceList>, name: &str| {
            quantity::of(level, name).or_else(|| pod_total(pod, of, name))
        };
    let resources = linux_resources(
        pick(requests, pod_level.and_then(|r| r.requests.as_ref()), "cpu"),
        pick(limits, pod_level.and_then(|r| r.limits.as_ref()), "cpu"),
        pick(limits, pod_level.and_then(|r| r.limits.as_ref()), "memory"),
        node,
    );
    let overhead_list = pod.spec.as_ref().and_then(|s| s.overhead.as_ref());
    let overhead = match overhead_list {
        Some(list) => {
            let cpu = quantity::of(Some(list), "cpu");
            linux_resources(cpu, cpu, quantity::of(Some(list), "memory"), node)
        }
        None => api::LinuxContainerResources::default(),
    };
    (resources, overhead)
}
