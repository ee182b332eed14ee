//! Node-pressure eviction, as upstream's pkg/kubelet/eviction: every 10 s the manager
//! observes the signals (memory, node and image filesystems, PIDs) from the kernel,
//! compares them with the configured thresholds, reports the pressure conditions the
//! node status shows (MemoryPressure, DiskPressure, PIDPressure), and while a threshold
//! is met (a soft one for its grace period) first tries to reclaim node-level resources,
//! then evicts one pod per round: the first in upstream's ranking that is not critical
//! (static, mirror, or of system priority). The evicted pod is killed (1 s grace for a
//! hard threshold, upstream's immediateEvictionGracePeriodSeconds; evictionMaxPodGracePeriod
//! for a soft one) and reported Failed with reason Evicted and the DisruptionTarget
//! condition; the manager waits up to 30 s for it to be cleaned up before the next round.
//!
//! Under pressure, admission rejects new pods as upstream's eviction admit handler does.

pub mod rank;
pub mod signals;
pub mod state;
pub mod thresholds;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gantry_pod_manager::cluster::Cluster;
use gantry_pod_manager::manager::{AdmitFn, PodManager};
use gantry_pod_manager::spec::{is_critical_pod, qos_class};
use gantry_pod_manager::worker::Eviction;
use k8s_openapi::api::core::v1::{Pod, PodCondition, Toleration};

use crate::events::Recorder;
use crate::server::{self, summary};
use rank::{ContainerUsage, PodUsage, Usage};
use signals::{Observation, Observations};
use state::State;
use thresholds::{Signal, Thresholds};

/// upstream's evictionMonitoringPeriod.
const MONITORING_INTERVAL: Duration = Duration::from_secs(10);
/// upstream's podCleanupTimeout and podCleanupPollFreq.
const POD_CLEANUP_TIMEOUT: Duration = Duration::from_secs(30);
const POD_CLEANUP_POLL: Duration = Duration::from_secs(1);
/// upstream's immediateEvictionGracePeriodSeconds, the kill's grace under a hard threshold.
const IMMEDIATE_GRACE_SECONDS: i64 = 1;
/// status.reason of evicted and rejected pods.
pub const REASON: &str = "Evicted";

/// The pressure conditions the node reports now, shared with the node status and with
/// admission.
#[derive(Clone, Default)]
pub struct Pressure(Arc<Mutex<Vec<&'static str>>>);

impl Pressure {
    pub fn conditions(&self) -> Vec<&'static str> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn has(&self, condition: &str) -> bool {
        self.conditions().contains(&condition)
    }

    fn set(&self, conditions: Vec<&'static str>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = conditions;
    }
}

/// Node-level reclaim tried before any pod is evicted for disk pressure (upstream:
/// delete unused containers and images). Returns the bytes it freed.
pub trait NodeReclaimer: Send + Sync {
    fn reclaim(
        &self,
        signal: Signal,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = u64> + Send + '_>>;
}

pub struct EvictionManager<C: Cluster> {
    pub config: Thresholds,
    pub pressure: Pressure,
    pub pods: Arc<PodManager<C>>,
    /// For the pods' usage (the /stats/summary computation).
    pub backend: server::Backend,
    pub events: Recorder,
    /// The kubelet's root directory: its filesystem is nodefs.
    pub root_dir: PathBuf,
    pub reclaimer: Box<dyn NodeReclaimer>,
}

impl<C: Cluster> EvictionManager<C> {
    /// Runs until the task is dropped.
    pub async fn run(self) {
        let mut state = State::default();
        loop {
            match self.synchronize(&mut state).await {
                Some(uid) => self.wait_for_cleanup(&uid).await,
                None => tokio::time::sleep(MONITORING_INTERVAL).await,
            }
        }
    }

    async fn wait_for_cleanup(&self, uid: &str) {
        let deadline = Instant::now() + POD_CLEANUP_TIMEOUT;
        while Instant::now() < deadline {
            tokio::time::sleep(POD_CLEANUP_POLL).await;
            if self.pods.eviction_finished(uid) {
                tracing::info!(uid, "eviction manager: pod successfully cleaned up");
                return;
            }
        }
        tracing::info!(
            uid,
            "eviction manager: timed out waiting for the pod to be cleaned up"
        );
    }

    /// One round; returns the UID of the pod it evicted.
    async fn synchronize(&self, state: &mut State) -> Option<String> {
        if self.config.thresholds.is_empty() {
            return None;
        }
        // The signals are node-level; the pods' stats (a cgroup sample and a
        // writable-layer usage per container) are read only once a threshold is met,
        // to rank the pods, so an untroubled node's round stays cheap.
        let node = self.backend.summaries.node(&self.backend).await;
        let obs = self.observe(&node);
        let act = state.observe(&self.config, &obs, Instant::now());
        self.pressure.set(state.conditions.clone());
        let threshold = act.first()?.clone();
        // As upstream: without the pods' stats nothing can be ranked, so no eviction.
        let summary = self.summary().await?;
        let resource = threshold.signal.resource();
        tracing::info!(resource, "eviction manager: attempting to reclaim");
        self.events.node_event(
            "Warning",
            "EvictionThresholdMet",
            &format!("Attempting to reclaim {resource}"),
        );
        if self.reclaimer.reclaim(threshold.signal).await > 0 {
            // Observed afresh (imagefs from the node's runtime stats), against the
            // threshold reclaimed for (upstream's reclaimNodeLevelResources).
            let fresh = self.backend.summaries.node(&self.backend).await;
            let after = self.observe(&fresh);
            if state::thresholds_met(std::slice::from_ref(&threshold), &after, true).is_empty() {
                tracing::info!(
                    resource,
                    "eviction manager: able to reduce resource pressure without evicting pods"
                );
                return None;
            }
        }
        let mut pods = self.pods.active_pods();
        if pods.is_empty() {
            tracing::warn!("eviction manager: eviction thresholds have been met, but no pods are active to evict");
            return None;
        }
        let usage = pod_usage(&summary);
        rank::rank(threshold.signal, &mut pods, &usage);
        let met_info = act
            .iter()
            .filter(|t| t.signal.resource() == resource)
            .find_map(|t| {
                let o = obs.get(&t.signal)?;
                let available = thresholds::Amount {
                    value: o.available,
                    binary: t.signal.in_bytes(),
                };
                Some((t.value.quantity(o.capacity), available))
            });
        for pod in pods {
            let name = gantry_pod_manager::worker::pod_name(&pod);
            if is_critical_pod(&pod) {
                tracing::warn!(pod = %name, "eviction manager: cannot evict a critical pod");
                continue;
            }
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            let message = rank::eviction_message(resource, &pod, usage.get(&uid), met_info);
            let grace = if threshold.is_hard() {
                IMMEDIATE_GRACE_SECONDS
            } else {
                self.config.max_pod_grace_seconds
            };
            let eviction = Eviction {
                reason: REASON.to_string(),
                message: message.clone(),
                grace_seconds: grace,
                condition: Some(PodCondition {
                    type_: "DisruptionTarget".to_string(),
                    status: "True".to_string(),
                    reason: Some("TerminationByKubelet".to_string()),
                    message: Some(message),
                    ..Default::default()
                }),
            };
            if self.pods.evict(&uid, eviction) {
                tracing::info!(pod = %name, "eviction manager: evicting the pod");
                crate::metrics::record_eviction(threshold.signal.name());
                return Some(uid);
            }
        }
        tracing::info!("eviction manager: unable to evict any pods from the node");
        None
    }

    async fn summary(&self) -> Option<summary::Summary> {
        match self.backend.summaries.summary(&self.backend).await {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = ?e, "eviction manager: pod stats");
                None
            }
        }
    }

    fn observe(&self, node: &summary::NodeStats) -> Observations {
        let mut obs = Observations::new();
        match signals::memory(std::path::Path::new("/")) {
            Ok(o) => {
                obs.insert(Signal::MemoryAvailable, o);
            }
            Err(e) => tracing::warn!(error = %e, "eviction manager: memory.available"),
        }
        match signals::filesystem(&self.root_dir) {
            Ok((bytes, inodes)) => {
                obs.insert(Signal::NodeFsAvailable, bytes);
                obs.insert(Signal::NodeFsInodesFree, inodes);
            }
            Err(e) => tracing::warn!(error = %e, "eviction manager: nodefs"),
        }
        let image_fs = node.runtime.as_ref().and_then(|r| r.image_fs.as_ref());
        if let Some(fs) = image_fs {
            let pair = |a: Option<u64>, c: Option<u64>| {
                Some(Observation {
                    available: a? as i64,
                    capacity: c? as i64,
                })
            };
            if let Some(o) = pair(fs.available_bytes, fs.capacity_bytes) {
                obs.insert(Signal::ImageFsAvailable, o);
            }
            if let Some(o) = pair(fs.inodes_free, fs.inodes) {
                obs.insert(Signal::ImageFsInodesFree, o);
            }
        }
        match signals::pids(std::path::Path::new("/")) {
            Ok(o) => {
                obs.insert(Signal::PidAvailable, o);
            }
            Err(e) => tracing::warn!(error = %e, "eviction manager: pid.available"),
        }
        obs
    }
}

/// The pods' usage from the summary's pod stats, by UID.
pub fn pod_usage(summary: &summary::Summary) -> Usage {
    let n = |v: Option<u64>| v.map(|v| v as i64);
    summary
        .pods
        .iter()
        .map(|p| {
            let usage = PodUsage {
                memory: n(p.memory.as_ref().and_then(|m| m.working_set_bytes)),
                containers: p
                    .containers
                    .iter()
                    .map(|c| ContainerUsage {
                        name: c.name.clone(),
                        memory: n(c.memory.as_ref().and_then(|m| m.working_set_bytes)),
                        rootfs: n(c.rootfs.as_ref().and_then(|f| f.used_bytes)),
                        rootfs_inodes: n(c.rootfs.as_ref().and_then(|f| f.inodes_used)),
                        // The summary has no per-container log stats yet: counted as 0.
                        logs: Some(0),
                    })
                    .collect(),
                processes: n(p.process_stats.as_ref().and_then(|s| s.process_count)),
                volumes: p
                    .volumes
                    .iter()
                    .map(|v| {
                        let used = n(v.fs.used_bytes).unwrap_or(0);
                        (v.name.clone(), (used, n(v.fs.inodes_used).unwrap_or(0)))
                    })
                    .collect(),
            };
            (p.pod_ref.uid.clone(), usage)
        })
        .collect::<HashMap<_, _>>()
}

/// upstream's eviction admit handler: under pressure a new pod is rejected unless it is
/// critical; under memory pressure alone only BestEffort pods that do not tolerate the
/// memory-pressure taint are. "The node had condition: [MemoryPressure]. "
pub fn admit_handler(pressure: Pressure) -> AdmitFn {
    Arc::new(move |pod: &Pod| {
        let conditions = pressure.conditions();
        admit(&conditions, pod)
    })
}

fn admit(conditions: &[&str], pod: &Pod) -> Option<Eviction> {
    if conditions.is_empty() || is_critical_pod(pod) {
        return None;
    }
    if conditions == ["MemoryPressure"] {
        if qos_class(pod) != "BestEffort" {
            return None;
        }
        let tolerations = pod.spec.as_ref().and_then(|s| s.tolerations.as_ref());
        if tolerations
            .into_iter()
            .flatten()
            .any(|t| tolerates(t, "node.kubernetes.io/memory-pressure", "NoSchedule"))
        {
            return None;
        }
    }
    Some(Eviction {
        reason: REASON.to_string(),
        message: format!("The node had condition: [{}]. ", conditions.join(" ")),
        grace_seconds: 0,
        condition: None,
    })
}

/// Whether a toleration tolerates a taint with no value (upstream's ToleratesTaint).
fn tolerates(t: &Toleration, key: &str, effect: &str) -> bool {
    let effect_ok = t
        .effect
        .as_deref()
        .is_none_or(|e| e.is_empty() || e == effect);
    let key_ok = match t.key.as_deref() {
        None | Some("") => t.operator.as_deref() == Some("Exists"),
        Some(k) => k == key,
    };
    let value_ok = match t.operator.as_deref() {
        Some("Exists") => true,
        None | Some("") | Some("Equal") => t.value.as_deref().unwrap_or("").is_empty(),
        _ => false,
    };
    effect_ok && key_ok && value_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p", "uid": "u"}, "spec": spec}))
            .unwrap()
    }

    #[test]
    fn admission_under_memory_pressure_rejects_best_effort_pods_only() {
        let best_effort = pod(json!({"containers": [{"name": "a"}]}));
        let burstable = pod(
            json!({"containers": [{"name": "a", "resources": {"requests": {"memory": "10Mi"}}}]}),
        );
        let tolerating = pod(json!({"containers": [{"name": "a"}], "tolerations": [
            {"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"}]}));
        assert_eq!(admit(&[], &best_effort), None);
        let rejected = admit(&["MemoryPressure"], &best_effort).unwrap();
        assert_eq!(rejected.reason, "Evicted");
        assert_eq!(
            rejected.message,
            "The node had condition: [MemoryPressure]. "
        );
        assert_eq!(admit(&["MemoryPressure"], &burstable), None);
        assert_eq!(admit(&["MemoryPressure"], &tolerating), None);
        // Disk pressure turns every pod away, tolerations or not.
        assert_eq!(
            admit(&["MemoryPressure", "DiskPressure"], &burstable)
                .unwrap()
                .message,
            "The node had condition: [MemoryPressure DiskPressure]. "
        );
        let critical = pod(json!({"priority": 2000001000, "containers": [{"name": "a"}]}));
        assert_eq!(admit(&["DiskPressure"], &critical), None);
    }
}
