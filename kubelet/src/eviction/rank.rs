//! Which pod goes first, and what its eviction says: upstream's rankMemoryPressure,
//! rankDiskPressureFunc and rankPIDPressure (helpers.go) and evictionMessage.
//!
//! Memory: pods whose working set exceeds their memory request first, then by priority
//! (lowest first), then by how far their usage exceeds their request (most first). Disk:
//! the same with the pod's ephemeral storage use. PIDs: by priority, then by process
//! count. For memory and disk, a pod without stats goes before any pod with them, as
//! upstream.

use std::cmp::Ordering;
use std::collections::HashMap;

use gantry_pod_manager::spec::pod_request;
use gantry_pod_manager::spec::quantity::Quantity;
use k8s_openapi::api::core::v1::Pod;

use super::thresholds::{format_quantity, Amount, Signal};

/// What a pod uses, from the summary's pod stats.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodUsage {
    /// The pod's memory working set.
    pub memory: Option<i64>,
    /// Containers in the order the stats list them.
    pub containers: Vec<ContainerUsage>,
    /// Processes in the pod.
    pub processes: Option<i64>,
    /// Used bytes and inodes of each volume the summary lists, by volume name.
    pub volumes: HashMap<String, (i64, i64)>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ContainerUsage {
    pub name: String,
    pub memory: Option<i64>,
    /// Writable layer bytes and inodes.
    pub rootfs: Option<i64>,
    pub rootfs_inodes: Option<i64>,
    pub logs: Option<i64>,
}

impl PodUsage {
    /// Ephemeral storage the pod uses: its containers' writable layers and logs, and
    /// its local ephemeral volumes on the node's disk (upstream's
    /// podLocalEphemeralStorageUsage).
    fn disk(&self, pod: &Pod) -> i64 {
        let containers: i64 = self
            .containers
            .iter()
            .map(|c| c.rootfs.unwrap_or(0) + c.logs.unwrap_or(0))
            .sum();
        containers + self.local_volumes(pod).map(|(bytes, _)| bytes).sum::<i64>()
    }

    fn inodes(&self, pod: &Pod) -> i64 {
        let containers: i64 = self
            .containers
            .iter()
            .map(|c| c.rootfs_inodes.unwrap_or(0))
            .sum();
        containers
            + self
                .local_volumes(pod)
                .map(|(_, inodes)| inodes)
                .sum::<i64>()
    }

    /// Usage of the pod's volumes that live on the node's disk: emptyDir not backed by
    /// memory, configMap and downwardAPI (upstream's IsLocalEphemeralVolume).
    fn local_volumes<'a>(&'a self, pod: &'a Pod) -> impl Iterator<Item = (i64, i64)> + 'a {
        pod.spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten())
            .filter(|v| {
                v.empty_dir
                    .as_ref()
                    .is_some_and(|e| e.medium.as_deref() != Some("Memory"))
                    || v.config_map.is_some()
                    || v.downward_api.is_some()
            })
            .filter_map(|v| self.volumes.get(&v.name).copied())
    }
}

pub type Usage = HashMap<String, PodUsage>;

fn uid(pod: &Pod) -> &str {
    pod.metadata.uid.as_deref().unwrap_or("")
}

fn priority(pod: &Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

/// true before false (upstream's cmpBool).
fn true_first(a: bool, b: bool) -> Ordering {
    b.cmp(&a)
}

/// The pod's use of what `signal` measures, and its request of it.
fn use_and_request(signal: Signal, pod: &Pod, u: &PodUsage) -> (i64, i64) {
    match signal {
        Signal::MemoryAvailable => (u.memory.unwrap_or(0), pod_request(pod, "memory")),
        Signal::NodeFsInodesFree | Signal::ImageFsInodesFree => (u.inodes(pod), 0),
        _ => (u.disk(pod), pod_request(pod, "ephemeral-storage")),
    }
}

/// Orders `pods` for eviction on `signal`, first to go first.
pub fn rank(signal: Signal, pods: &mut [Pod], usage: &Usage) {
    pods.sort_by(|a, b| {
        let (ua, ub) = (usage.get(uid(a)), usage.get(uid(b)));
        if signal == Signal::PidAvailable {
            let processes = |u: Option<&PodUsage>| u.and_then(|u| u.processes).unwrap_or(0);
            return priority(a)
                .cmp(&priority(b))
                .then_with(|| processes(ub).cmp(&processes(ua)));
        }
        let (Some(ua), Some(ub)) = (ua, ub) else {
            // Unmeasured first; between two, by priority (upstream's orderedBy goes on).
            return true_first(ua.is_none(), ub.is_none())
                .then_with(|| priority(a).cmp(&priority(b)));
        };
        let (used_a, req_a) = use_and_request(signal, a, ua);
        let (used_b, req_b) = use_and_request(signal, b, ub);
        true_first(used_a > req_a, used_b > req_b)
            .then_with(|| priority(a).cmp(&priority(b)))
            .then_with(|| (used_b - req_b).cmp(&(used_a - req_a)))
    });
}

/// upstream's evictionMessage: "The node was low on resource: memory. Threshold
/// quantity: 100Mi, available: 92Mi. Container hog was using 1Gi, request is 0, has
/// larger consumption of memory. " — one sentence per container over its request.
pub fn eviction_message(
    resource: &str,
    pod: &Pod,
    usage: Option<&PodUsage>,
    threshold: Option<(Amount, Amount)>,
) -> String {
    let mut message = format!("The node was low on resource: {resource}. ");
    if let Some((quantity, available)) = threshold {
        message += &format!("Threshold quantity: {quantity}, available: {available}. ");
    }
    let Some(usage) = usage else {
        return message;
    };
    let spec = pod.spec.as_ref();
    let containers = spec
        .map(|s| s.containers.iter())
        .into_iter()
        .flatten()
        .chain(
            spec.and_then(|s| s.init_containers.as_ref())
                .into_iter()
                .flatten(),
        );
    let containers: Vec<_> = containers.collect();
    for stats in &usage.containers {
        let Some(c) = containers.iter().find(|c| c.name == stats.name) else {
            continue;
        };
        let request = c
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get(resource));
        let (request_value, request_text) = match request {
            Some(q) => match Quantity::parse(&q.0) {
                Ok(v) => (v.value(), format_quantity(v.value(), q.0.ends_with('i'))),
                Err(_) => (0, q.0.clone()),
            },
            None => (0, "0".to_string()),
        };
        let used = match resource {
            "memory" => stats.memory,
            "ephemeral-storage" => stats.rootfs.zip(stats.logs).map(|(r, l)| r + l),
            _ => None,
        };
        if let Some(used) = used.filter(|u| *u > request_value) {
            message += &format!(
                "Container {} was using {}, request is {request_text}, has larger consumption of {resource}. ",
                c.name,
                format_quantity(used, true)
            );
        }
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, priority: i32, memory_request: Option<&str>) -> Pod {
        let resources = match memory_request {
            Some(r) => json!({"requests": {"memory": r}, "limits": {"memory": r}}),
            None => json!({}),
        };
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "uid": name},
            "spec": {"priority": priority, "containers": [{"name": "app", "image": "busybox", "resources": resources}]}
        }))
        .unwrap()
    }

    fn using(memory: i64) -> PodUsage {
        PodUsage {
            memory: Some(memory),
            containers: vec![ContainerUsage {
                name: "app".into(),
                memory: Some(memory),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn names(pods: &[Pod]) -> Vec<&str> {
        pods.iter()
            .map(|p| p.metadata.name.as_deref().unwrap())
            .collect()
    }

    #[test]
    fn memory_ranks_over_request_then_priority_then_usage_above_request() {
        let mut pods = vec![
            pod("guaranteed-big", 0, Some("2Gi")),
            pod("besteffort-small", 0, None),
            pod("besteffort-important", 1000, None),
            pod("besteffort-big", 0, None),
            pod("burstable-over", 0, Some("100Mi")),
        ];
        let usage: Usage = [
            ("guaranteed-big", using(1 << 30)),
            ("besteffort-small", using(10 << 20)),
            ("besteffort-important", using(3 << 30)),
            ("besteffort-big", using(1 << 30)),
            ("burstable-over", using(900 << 20)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        rank(Signal::MemoryAvailable, &mut pods, &usage);
        assert_eq!(
            names(&pods),
            [
                // Over their requests, priority 0, by usage above request.
                "besteffort-big",
                "burstable-over",
                "besteffort-small",
                // Over its request but of higher priority.
                "besteffort-important",
                // Within its request: last, whatever it uses.
                "guaranteed-big",
            ]
        );
    }

    #[test]
    fn a_pod_without_stats_goes_first() {
        let mut pods = vec![pod("measured", 0, None), pod("unmeasured", 0, None)];
        let usage: Usage = [("measured".to_string(), using(1 << 30))].into();
        rank(Signal::MemoryAvailable, &mut pods, &usage);
        assert_eq!(names(&pods), ["unmeasured", "measured"]);
        // Two without stats: the lower priority first.
        let mut pods = vec![pod("important", 1000, None), pod("ordinary", 0, None)];
        rank(Signal::MemoryAvailable, &mut pods, &Usage::new());
        assert_eq!(names(&pods), ["ordinary", "important"]);
    }

    #[test]
    fn pids_rank_by_priority_then_processes_measured_or_not() {
        let mut pods = vec![
            pod("unmeasured-important", 1000, None),
            pod("few", 0, None),
            pod("many", 0, None),
        ];
        let procs = |n: i64| PodUsage {
            processes: Some(n),
            ..Default::default()
        };
        let usage: Usage = [
            ("few".to_string(), procs(3)),
            ("many".to_string(), procs(300)),
        ]
        .into();
        rank(Signal::PidAvailable, &mut pods, &usage);
        assert_eq!(names(&pods), ["many", "few", "unmeasured-important"]);
    }

    #[test]
    fn disk_counts_disk_backed_emptydirs_but_not_memory_ones() {
        let with_volume = |name: &str, medium: Option<&str>| -> Pod {
            let mut p = pod(name, 0, None);
            p.spec.as_mut().unwrap().volumes = Some(vec![serde_json::from_value(json!({
                "name": "scratch", "emptyDir": {"medium": medium}
            }))
            .unwrap()]);
            p
        };
        let mut pods = vec![
            with_volume("tmpfs-hog", Some("Memory")),
            with_volume("disk-hog", None),
            pod("layer", 0, None),
        ];
        let filled = |volume: i64, rootfs: i64| PodUsage {
            containers: vec![ContainerUsage {
                name: "app".into(),
                rootfs: Some(rootfs),
                logs: Some(0),
                ..Default::default()
            }],
            volumes: [("scratch".to_string(), (volume, 1))].into(),
            ..Default::default()
        };
        let usage: Usage = [
            ("tmpfs-hog".to_string(), filled(1 << 30, 0)),
            ("disk-hog".to_string(), filled(1 << 30, 0)),
            ("layer".to_string(), filled(0, 100 << 20)),
        ]
        .into();
        rank(Signal::NodeFsAvailable, &mut pods, &usage);
        assert_eq!(names(&pods), ["disk-hog", "layer", "tmpfs-hog"]);
    }

    #[test]
    fn disk_ranks_by_writable_layer_and_logs() {
        let mut pods = vec![pod("small", 0, None), pod("big", 0, None)];
        let disk = |bytes: i64| PodUsage {
            containers: vec![ContainerUsage {
                name: "app".into(),
                rootfs: Some(bytes),
                logs: Some(0),
                ..Default::default()
            }],
            ..Default::default()
        };
        let usage: Usage = [
            ("small".to_string(), disk(1 << 20)),
            ("big".to_string(), disk(1 << 30)),
        ]
        .into();
        rank(Signal::NodeFsAvailable, &mut pods, &usage);
        assert_eq!(names(&pods), ["big", "small"]);
    }

    #[test]
    fn the_message_names_the_threshold_and_the_containers_over_their_requests() {
        let p = pod("hog", 0, None);
        let threshold = Some((
            Amount {
                value: 100 << 20,
                binary: true,
            },
            Amount {
                value: 92 << 20,
                binary: true,
            },
        ));
        assert_eq!(
            eviction_message("memory", &p, Some(&using(1 << 30)), threshold),
            "The node was low on resource: memory. Threshold quantity: 100Mi, available: 92Mi. Container app was using 1Gi, request is 0, has larger consumption of memory. "
        );
        // Within its request: no container sentence.
        let g = pod("fits", 0, Some("2Gi"));
        assert_eq!(
            eviction_message("memory", &g, Some(&using(1 << 30)), threshold),
            "The node was low on resource: memory. Threshold quantity: 100Mi, available: 92Mi. "
        );
        let over = pod("over", 0, Some("64Mi"));
        assert!(eviction_message("memory", &over, Some(&using(100 << 20)), None)
            .ends_with("Container app was using 100Mi, request is 64Mi, has larger consumption of memory. "));
    }
}
