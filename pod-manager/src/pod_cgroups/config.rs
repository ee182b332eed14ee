//! The settings of the node's pod cgroups, pure: a pod's requests and limits → its pod
//! cgroup (upstream's ResourceConfigForPod in pkg/kubelet/cm/helpers_linux.go), the
//! Burstable QoS cgroup's CPU weight (qos_container_manager_linux.go) and the node
//! allocatable cgroup `kubepods` (node_container_manager_linux.go, getCgroupConfig).

use k8s_openapi::api::core::v1::{Container, Pod};

use crate::spec::quantity::{self, Quantity};
use crate::spec::resources::{
    containers, init_containers, is_sidecar, limits, milli_cpu_to_quota, milli_cpu_to_shares,
    pod_level_resources, pod_total, requests, ResourceList, BEST_EFFORT, BURSTABLE, CFS_PERIOD_US,
    GUARANTEED,
};

/// What a cgroup is set to; `None` leaves a setting as it is (the kernel's default on
/// a new cgroup). Values as upstream's ResourceConfig: shares in cgroup v1 units,
/// quota and period in µs (quota ≤ 0: unlimited), memory in bytes, pids (≤ 0: max).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResourceConfig {
    pub cpu_shares: Option<u64>,
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    pub memory: Option<i64>,
    pub pids_limit: Option<i64>,
}

impl ResourceConfig {
    /// Each setting at the larger of `self` and `other` (a quota, memory or pids limit
    /// ≤ 0 is unlimited, the largest): a pod cgroup that holds its containers both
    /// before and after a resize.
    pub fn covering(&self, other: &ResourceConfig) -> ResourceConfig {
        let larger = |a: Option<i64>, b: Option<i64>| match (a, b) {
            (Some(a), Some(b)) if a <= 0 || b <= 0 => Some(a.min(b).min(0)),
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        let memory = match (self.memory, other.memory) {
            // 0 leaves memory alone; -1 is unlimited.
            (Some(a), Some(b)) if a < 0 || b < 0 => Some(-1),
            (a, b) => a.max(b),
        };
        ResourceConfig {
            cpu_shares: self.cpu_shares.max(other.cpu_shares),
            cpu_quota: larger(self.cpu_quota, other.cpu_quota),
            cpu_period: self.cpu_period.or(other.cpu_period),
            memory,
            pids_limit: larger(self.pids_limit, other.pids_limit),
        }
    }
}

/// The pod's total of `name` as upstream's PodRequests: pod-level requests when set,
/// else the containers' (sidecars and init containers as the scheduler counts them),
/// plus the pod overhead.
pub(crate) fn pod_requests(pod: &Pod, name: &str) -> Option<Quantity> {
    let level = pod_level_resources(pod).and_then(|r| r.requests.as_ref());
    let total = quantity::of(level, name).or_else(|| pod_total(pod, requests, name));
    let overhead = quantity::of(pod.spec.as_ref().and_then(|s| s.overhead.as_ref()), name);
    match (total, overhead) {
        (Some(t), Some(o)) => Some(t.saturating_add(o)),
        (t, o) => t.or(o),
    }
}

/// upstream's PodLimits: pod-level limits when set, else the containers'; the overhead
/// is added to a non-zero limit only.
fn pod_limits(pod: &Pod, name: &str) -> Option<Quantity> {
    let level = pod_level_resources(pod).and_then(|r| r.limits.as_ref());
    let total = quantity::of(level, name).or_else(|| pod_total(pod, limits, name));
    let overhead = quantity::of(pod.spec.as_ref().and_then(|s| s.overhead.as_ref()), name);
    match (total, overhead) {
        (Some(t), Some(o)) if !t.is_zero() => Some(t.saturating_add(o)),
        (t, _) => t,
    }
}

/// Whether every container declares a non-zero limit of `name`, as upstream's
/// ContainerFn sees them: app containers alone, init containers with the sidecars
/// started before them (and a sidecar with itself); or the pod-level limit is set.
fn limits_declared(pod: &Pod, name: &str) -> bool {
    let level = pod_level_resources(pod).and_then(|r| r.limits.as_ref());
    if quantity::of(level, name).is_some_and(|q| !q.is_zero()) {
        return true;
    }
    let of = |c: &Container| quantity::of(limits(c), name).unwrap_or_default();
    let apps = containers(pod).iter().all(|c| !of(c).is_zero());
    let mut sidecars = Quantity::ZERO;
    let mut inits = true;
    for c in init_containers(pod) {
        let seen = if is_sidecar(c) {
            sidecars = sidecars.saturating_add(of(c));
            sidecars
        } else {
            of(c).saturating_add(sidecars)
        };
        inits &= !seen.is_zero();
    }
    apps && inits
}

/// The pod cgroup's settings (upstream's ResourceConfigForPod with CFS quota enforced):
/// Guaranteed pods get shares, quota and memory; Burstable pods shares, and quota or
/// memory when every container limits that resource; BestEffort pods the minimum
/// shares. `pids_limit` (podPidsLimit) applies when positive.
pub fn resource_config_for_pod(pod: &Pod, pids_limit: i64) -> ResourceConfig {
    let cpu_requests = pod_requests(pod, "cpu").map_or(0, |q| q.milli_value());
    let cpu_limits = pod_limits(pod, "cpu").map_or(0, |q| q.milli_value());
    let memory_limits = pod_limits(pod, "memory").map_or(0, |q| q.value());
    let shares = milli_cpu_to_shares(cpu_requests) as u64;
    let quota = milli_cpu_to_quota(cpu_limits, CFS_PERIOD_US);
    let period = CFS_PERIOD_US as u64;
    let mut config = match crate::spec::qos_class(pod) {
        GUARANTEED => ResourceConfig {
            cpu_shares: Some(shares),
            cpu_quota: Some(quota),
            cpu_period: Some(period),
            memory: Some(memory_limits),
            ..Default::default()
        },
        BURSTABLE => {
            let cpu = limits_declared(pod, "cpu");
            ResourceConfig {
                cpu_shares: Some(shares),
                cpu_quota: cpu.then_some(quota),
                cpu_period: cpu.then_some(period),
                memory: limits_declared(pod, "memory").then_some(memory_limits),
                ..Default::default()
            }
        }
        _ => ResourceConfig {
            cpu_shares: Some(milli_cpu_to_shares(0) as u64),
            ..Default::default()
        },
    };
    if pids_limit > 0 {
        config.pids_limit = Some(pids_limit);
    }
    config
}

/// The pod's CPU request in millicores as the Burstable QoS cgroup counts it
/// (PodRequests, overhead included), or None if the pod is not Burstable.
pub fn burstable_cpu_request(pod: &Pod) -> Option<i64> {
    (crate::spec::qos_class(pod) == BURSTABLE)
        .then(|| pod_requests(pod, "cpu").map_or(0, |q| q.milli_value()))
}

/// The QoS cgroup settings: Burstable's CPU shares follow the sum of its pods' CPU
/// requests; BestEffort gets the minimum.
pub fn qos_config(class: &str, burstable_milli_cpu: i64) -> ResourceConfig {
    let shares = match class {
        BEST_EFFORT => milli_cpu_to_shares(0),
        _ => milli_cpu_to_shares(burstable_milli_cpu),
    };
    ResourceConfig {
        cpu_shares: Some(shares as u64),
        ..Default::default()
    }
}

/// What the node gives pods, the `kubepods` cgroup's limits (enforceNodeAllocatable
/// "pods"): capacity minus kubeReserved and systemReserved, never negative.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeAllocatable {
    pub milli_cpu: i64,
    pub memory: i64,
    pub pids: i64,
}

impl NodeAllocatable {
    /// `capacity` minus the reservations (each a resource list: cpu, memory, pid).
    pub fn from_capacity(capacity: NodeAllocatable, reserved: &[&ResourceList]) -> Self {
        let sum = |name: &str, milli: bool| -> i64 {
            reserved
                .iter()
                .filter_map(|r| quantity::of(Some(r), name))
                .map(|q| if milli { q.milli_value() } else { q.value() })
                .sum()
        };
        NodeAllocatable {
            milli_cpu: (capacity.milli_cpu - sum("cpu", true)).max(0),
            memory: (capacity.memory - sum("memory", false)).max(0),
            pids: (capacity.pids - sum("pid", false)).max(0),
        }
    }

    /// upstream's getCgroupConfig: CPU shares of the allocatable CPU, memory limit,
    /// and pids limit.
    pub fn config(&self) -> ResourceConfig {
        ResourceConfig {
            cpu_shares: Some(milli_cpu_to_shares(self.milli_cpu) as u64),
            memory: (self.memory > 0).then_some(self.memory),
            pids_limit: (self.pids > 0).then_some(self.pids),
            ..Default::default()
        }
    }
}
