//! GET /stats/summary: upstream's stats/v1alpha1 Summary, the node from the kernel
//! (node_stats) and the pods from the CRI (ListPodSandboxStats, ListContainerStats),
//! as upstream's CRI stats provider builds it. Every number comes from the kernel or
//! the runtime; a field neither gives is left out, never reported as zero.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use gantry_cri::api;
use gantry_cri::container_log::format_rfc3339_nano;
use serde::Serialize;
use time::OffsetDateTime;

use super::reply::ApiError;
use super::Backend;
use crate::node_stats;
use crate::volume_stats::UsageCache;
use k8s_openapi::api::core::v1::{Pod, Volume};

/// The filesystem upstream reports as the node's: the one holding the kubelet's root
/// directory (/var/lib/kubelet).
const NODE_FS: &str = "/var/lib";
/// Without a recent earlier sample, the node's CPU rate is measured over this window.
const CPU_WINDOW: Duration = Duration::from_millis(200);
/// An earlier sample older than this is too stale for a rate.
const CPU_SAMPLE_MAX_AGE: Duration = Duration::from_secs(120);

#[derive(Debug, Serialize)]
pub struct Summary {
    pub node: NodeStats,
    pub pods: Vec<PodStats>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStats {
    pub node_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fs: Option<FsStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeStats>,
}

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CpuStats {
    pub time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_nano_cores: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_core_nano_seconds: Option<u64>,
}

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryStats {
    pub time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_set_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page_faults: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub major_page_faults: Option<u64>,
}

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FsStats {
    pub time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub used_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inodes_free: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inodes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inodes_used: Option<u64>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeStats {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_fs: Option<FsStats>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStats {
    pub pod_ref: PodReference,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    pub containers: Vec<ContainerStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkStats>,
    #[serde(rename = "process_stats", skip_serializing_if = "Option::is_none")]
    pub process_stats: Option<ProcessStats>,
    #[serde(rename = "volume", skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeStats>,
}

/// One of a pod's volumes (upstream's stats/v1alpha1 VolumeStats): its filesystem's
/// size from statfs, what it holds from the last walk.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeStats {
    #[serde(flatten)]
    pub fs: FsStats,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pvc_ref: Option<PvcReference>,
}

#[derive(Debug, Serialize)]
pub struct PvcReference {
    pub name: String,
    pub namespace: String,
}

#[derive(Debug, Serialize)]
pub struct PodReference {
    pub name: String,
    pub namespace: String,
    pub uid: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStats {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<FsStats>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkStats {
    pub time: String,
    #[serde(flatten)]
    pub default: InterfaceStats,
    pub interfaces: Vec<InterfaceStats>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InterfaceStats {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rx_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rx_errors: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tx_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tx_errors: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct ProcessStats {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process_count: Option<u64>,
}

/// metav1.Time's JSON form: RFC 3339 in UTC, whole seconds.
fn rfc3339(t: OffsetDateTime) -> String {
    format_rfc3339_nano(t.truncate_to_second())
}

fn from_nanos(ns: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
        .map(rfc3339)
        .unwrap_or_default()
}

fn value(v: &Option<api::UInt64Value>) -> Option<u64> {
    v.as_ref().map(|v| v.value)
}

fn cpu_of(c: &api::CpuUsage) -> CpuStats {
    CpuStats {
        time: from_nanos(c.timestamp),
        usage_nano_cores: value(&c.usage_nano_cores),
        usage_core_nano_seconds: value(&c.usage_core_nano_seconds),
    }
}

fn memory_of(m: &api::MemoryUsage) -> MemoryStats {
    MemoryStats {
        time: from_nanos(m.timestamp),
        available_bytes: value(&m.available_bytes),
        usage_bytes: value(&m.usage_bytes),
        working_set_bytes: value(&m.working_set_bytes),
        rss_bytes: value(&m.rss_bytes),
        page_faults: value(&m.page_faults),
        major_page_faults: value(&m.major_page_faults),
    }
}

fn interface_of(i: &api::NetworkInterfaceUsage) -> InterfaceStats {
    InterfaceStats {
        name: i.name.clone(),
        rx_bytes: value(&i.rx_bytes),
        rx_errors: value(&i.rx_errors),
        tx_bytes: value(&i.tx_bytes),
        tx_errors: value(&i.tx_errors),
    }
}

/// A sum over containers, only when every container reports the field (upstream's
/// fallback for pod CPU and memory when there is no pod-level sample).
fn sum_all(values: impl Iterator<Item = Option<u64>>) -> Option<u64> {
    let mut total = 0u64;
    let mut any = false;
    for v in values {
        total = total.checked_add(v?)?;
        any = true;
    }
    any.then_some(total)
}

/// Collects summaries; keeps the node's last CPU sample for its rate and the last
/// walk of each volume.
#[derive(Default)]
pub struct SummaryProvider {
    /// (when, busy CPU nanoseconds since boot).
    last_cpu: Mutex<Option<(Instant, u64)>>,
    volume_usage: UsageCache,
}

/// The volume types whose usage upstream reports (MetricsDu or statfs-backed), by
/// the pod spec's field: local directories under the pod's volumes directory.
fn reported_volume(v: &Volume) -> bool {
    v.empty_dir.is_some()
        || v.config_map.is_some()
        || v.secret.is_some()
        || v.projected.is_some()
        || v.downward_api.is_some()
        || v.persistent_volume_claim.is_some()
}

impl SummaryProvider {
    pub async fn summary(&self, backend: &Backend) -> Result<Summary, ApiError> {
        let node = self.node(backend).await;
        let mut pods = pods(backend).await?;
        let specs: HashMap<String, Pod> = (backend.pods)()
            .into_iter()
            .filter_map(|p| Some((p.metadata.uid.clone()?, p)))
            .collect();
        for p in &mut pods {
            if let Some(pod) = specs.get(&p.pod_ref.uid) {
                p.volumes = self.volumes(backend, pod, &p.pod_ref.uid);
            }
        }
        Ok(Summary { node, pods })
    }

    /// The pod's volumes that have a directory on this node, in spec order.
    pub fn volumes(&self, backend: &Backend, pod: &Pod, uid: &str) -> Vec<VolumeStats> {
        let Some(root) = &backend.volumes_root else {
            return Vec::new();
        };
        let Ok(dir) = gantry_volumes::Layout::new(root).pod_volumes_dir(uid) else {
            return Vec::new();
        };
        // <pod>/volumes/<plugin>/<name>: the plugin directory depends on the volume's
        // type (and for a PVC on its PV's), so the name is looked for under each.
        let plugins: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let mut out = Vec::new();
        for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
            if !reported_volume(v) {
                continue;
            }
            let Some(path) = plugins.iter().map(|p| p.join(&v.name)).find(|p| p.is_dir()) else {
                continue;
            };
            let Ok(fs) = node_stats::fs_usage(&path) else {
                continue;
            };
            let used = self.volume_usage.get(&path, backend.volume_stats_every);
            let now = rfc3339(OffsetDateTime::now_utc());
            out.push(VolumeStats {
                fs: FsStats {
                    time: now,
                    available_bytes: Some(fs.available),
                    capacity_bytes: Some(fs.capacity),
                    used_bytes: used.map(|u| u.bytes),
                    inodes_free: Some(fs.inodes_free),
                    inodes: Some(fs.inodes),
                    inodes_used: used.map(|u| u.inodes),
                },
                name: v.name.clone(),
                pvc_ref: v.persistent_volume_claim.as_ref().map(|c| PvcReference {
                    name: c.claim_name.clone(),
                    namespace: namespace.clone(),
                }),
            });
        }
        out
    }

    pub async fn node(&self, backend: &Backend) -> NodeStats {
        let now = rfc3339(OffsetDateTime::now_utc());
        let stat = node_stats::proc_stat();
        let start_time = stat
            .as_ref()
            .ok()
            .and_then(|s| OffsetDateTime::from_unix_timestamp(s.boot_time).ok())
            .map(rfc3339);
        let cpu = self.node_cpu().await.map(|(total, rate)| CpuStats {
            time: now.clone(),
            usage_nano_cores: rate,
            usage_core_nano_seconds: Some(total),
        });
        let faults = node_stats::page_faults();
        let memory = node_stats::node_memory().ok().map(|m| MemoryStats {
            time: now.clone(),
            available_bytes: Some(m.available),
            usage_bytes: Some(m.usage),
            working_set_bytes: Some(m.working_set),
            rss_bytes: None,
            page_faults: faults.map(|f| f.0),
            major_page_faults: faults.map(|f| f.1),
        });
        let fs = match node_stats::fs_usage(Path::new(NODE_FS)) {
            Ok(u) => Some(fs_of(&u, &now)),
            Err(e) => {
                tracing::debug!(error = %e, "node filesystem stats");
                None
            }
        };
        NodeStats {
            node_name: backend.node_name.clone(),
            start_time,
            cpu,
            memory,
            fs,
            runtime: image_fs(backend).await.map(|image_fs| RuntimeStats {
                image_fs: Some(image_fs),
            }),
        }
    }

    /// (busy nanoseconds since boot, nano-cores since the previous sample). The first
    /// call measures the rate over a short window.
    async fn node_cpu(&self) -> Option<(u64, Option<u64>)> {
        let per_tick = node_stats::nanos_per_tick();
        let sample = || {
            node_stats::proc_stat()
                .ok()
                .map(|s| (Instant::now(), s.busy_ticks.saturating_mul(per_tick)))
        };
        let prev = {
            let last = self.last_cpu.lock().unwrap_or_else(|e| e.into_inner());
            last.filter(|(at, _)| at.elapsed() < CPU_SAMPLE_MAX_AGE)
        };
        let prev = match prev {
            Some(p) => Some(p),
            None => {
                let first = sample();
                tokio::time::sleep(CPU_WINDOW).await;
                first
            }
        };
        let now = sample()?;
        *self.last_cpu.lock().unwrap_or_else(|e| e.into_inner()) = Some(now);
        let rate = prev.and_then(|(at, busy)| {
            let secs = now.0.duration_since(at).as_secs_f64();
            (secs > 0.0 && now.1 >= busy).then(|| ((now.1 - busy) as f64 / secs) as u64)
        });
        Some((now.1, rate))
    }
}

fn fs_of(u: &node_stats::FsUsage, time: &str) -> FsStats {
    FsStats {
        time: time.to_string(),
        available_bytes: Some(u.available),
        capacity_bytes: Some(u.capacity),
        used_bytes: Some(u.used),
        inodes_free: Some(u.inodes_free),
        inodes: Some(u.inodes),
        inodes_used: Some(u.inodes.saturating_sub(u.inodes_free)),
    }
}

/// The image filesystem: the runtime's own usage (ImageFsInfo), the size of the
/// filesystem it sits on from statvfs, as upstream combines them.
async fn image_fs(backend: &Backend) -> Option<FsStats> {
    let info = backend.cri_calls().image_fs_info().await.ok()?;
    let fs = info.image_filesystems.first()?;
    let mount = fs.fs_id.as_ref().map(|id| id.mountpoint.clone());
    let disk = mount.and_then(|m| node_stats::fs_usage(Path::new(&m)).ok());
    Some(FsStats {
        time: from_nanos(fs.timestamp),
        available_bytes: disk.map(|d| d.available),
        capacity_bytes: disk.map(|d| d.capacity),
        used_bytes: value(&fs.used_bytes),
        inodes_free: disk.map(|d| d.inodes_free),
        inodes: disk.map(|d| d.inodes),
        inodes_used: value(&fs.inodes_used),
    })
}

/// The pods with a ready sandbox and their running containers.
async fn pods(backend: &Backend) -> Result<Vec<PodStats>, ApiError> {
    let cri = backend.cri_calls();
    let cri_err = |what: &str, e: &tonic::Status| ApiError::from_cri(what, e);
    let sandboxes = cri
        .list_pod_sandbox(Some(api::PodSandboxFilter {
            state: Some(api::PodSandboxStateValue {
                state: api::PodSandboxState::SandboxReady as i32,
            }),
            ..Default::default()
        }))
        .await
        .map_err(|e| cri_err("list pod sandboxes", &e))?;
    let containers = cri
        .list_containers(Some(api::ContainerFilter {
            state: Some(api::ContainerStateValue {
                state: api::ContainerState::ContainerRunning as i32,
            }),
            ..Default::default()
        }))
        .await
        .map_err(|e| cri_err("list containers", &e))?;
    let container_stats: HashMap<String, api::ContainerStats> = cri
        .list_container_stats()
        .await
        .map_err(|e| cri_err("list container stats", &e))?
        .into_iter()
        .filter_map(|s| Some((s.attributes.as_ref()?.id.clone(), s)))
        .collect();
    // Pod-level samples are optional in CRI; without them pods sum their containers.
    let sandbox_stats: HashMap<String, api::PodSandboxStats> =
        match cri.list_pod_sandbox_stats().await {
            Ok(stats) => stats
                .into_iter()
                .filter_map(|s| Some((s.attributes.as_ref()?.id.clone(), s)))
                .collect(),
            Err(e) => {
                tracing::debug!(error = %e, "ListPodSandboxStats");
                HashMap::new()
            }
        };
    Ok(sandboxes
        .iter()
        .map(|sb| pod_stats(sb, &containers, &container_stats, sandbox_stats.get(&sb.id)))
        .collect())
}

fn pod_stats(
    sb: &api::PodSandbox,
    containers: &[api::Container],
    stats: &HashMap<String, api::ContainerStats>,
    sandbox: Option<&api::PodSandboxStats>,
) -> PodStats {
    let meta = sb.metadata.clone().unwrap_or_default();
    let cs: Vec<ContainerStats> = containers
        .iter()
        .filter(|c| c.pod_sandbox_id == sb.id)
        .map(|c| {
            let s = stats.get(&c.id);
            ContainerStats {
                name: c
                    .metadata
                    .as_ref()
                    .map(|m| m.name.clone())
                    .unwrap_or_default(),
                start_time: Some(from_nanos(c.created_at)),
                cpu: s.and_then(|s| s.cpu.as_ref()).map(cpu_of),
                memory: s.and_then(|s| s.memory.as_ref()).map(memory_of),
                rootfs: s.and_then(|s| s.writable_layer.as_ref()).map(|w| FsStats {
                    time: from_nanos(w.timestamp),
                    used_bytes: value(&w.used_bytes),
                    inodes_used: value(&w.inodes_used),
                    ..Default::default()
                }),
            }
        })
        .collect();
    let linux = sandbox.and_then(|s| s.linux.as_ref());
    let cpu = linux
        .and_then(|l| l.cpu.as_ref())
        .map(cpu_of)
        .or_else(|| summed_cpu(&cs));
    let memory = linux
        .and_then(|l| l.memory.as_ref())
        .map(memory_of)
        .or_else(|| summed_memory(&cs));
    let network = linux.and_then(|l| l.network.as_ref()).and_then(|n| {
        Some(NetworkStats {
            time: from_nanos(n.timestamp),
            default: interface_of(n.default_interface.as_ref()?),
            interfaces: n.interfaces.iter().map(interface_of).collect(),
        })
    });
    let process_stats = linux
        .and_then(|l| l.process.as_ref())
        .map(|p| ProcessStats {
            process_count: value(&p.process_count),
        });
    PodStats {
        pod_ref: PodReference {
            name: meta.name,
            namespace: meta.namespace,
            uid: meta.uid,
        },
        start_time: Some(from_nanos(sb.created_at)),
        containers: cs,
        cpu,
        memory,
        network,
        process_stats,
        volumes: Vec::new(),
    }
}

fn summed_cpu(cs: &[ContainerStats]) -> Option<CpuStats> {
    let cpus: Vec<&CpuStats> = cs.iter().map(|c| c.cpu.as_ref()).collect::<Option<_>>()?;
    let first = cpus.first()?;
    Some(CpuStats {
        time: first.time.clone(),
        usage_nano_cores: sum_all(cpus.iter().map(|c| c.usage_nano_cores)),
        usage_core_nano_seconds: sum_all(cpus.iter().map(|c| c.usage_core_nano_seconds)),
    })
}

fn summed_memory(cs: &[ContainerStats]) -> Option<MemoryStats> {
    let mems: Vec<&MemoryStats> = cs
        .iter()
        .map(|c| c.memory.as_ref())
        .collect::<Option<_>>()?;
    let first = mems.first()?;
    Some(MemoryStats {
        time: first.time.clone(),
        available_bytes: None,
        usage_bytes: sum_all(mems.iter().map(|m| m.usage_bytes)),
        working_set_bytes: sum_all(mems.iter().map(|m| m.working_set_bytes)),
        rss_bytes: sum_all(mems.iter().map(|m| m.rss_bytes)),
        page_faults: sum_all(mems.iter().map(|m| m.page_faults)),
        major_page_faults: sum_all(mems.iter().map(|m| m.major_page_faults)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_need_every_container_to_report() {
        assert_eq!(sum_all([Some(1), Some(2)].into_iter()), Some(3));
        assert_eq!(sum_all([Some(1), None].into_iter()), None);
        assert_eq!(sum_all(std::iter::empty()), None);
    }

    #[test]
    fn times_are_whole_seconds_in_utc() {
        assert_eq!(
            from_nanos(1_714_557_600_900_000_000),
            "2024-05-01T10:00:00Z"
        );
    }

    #[test]
    fn fields_the_runtime_leaves_out_are_left_out() {
        let sb = api::PodSandbox {
            id: "sb".into(),
            metadata: Some(api::PodSandboxMetadata {
                name: "p".into(),
                uid: "u".into(),
                namespace: "ns".into(),
                attempt: 0,
            }),
            created_at: 1_714_557_600_000_000_000,
            ..Default::default()
        };
        let c = api::Container {
            id: "c1".into(),
            pod_sandbox_id: "sb".into(),
            metadata: Some(api::ContainerMetadata {
                name: "app".into(),
                attempt: 0,
            }),
            ..Default::default()
        };
        let stats = HashMap::from([(
            "c1".to_string(),
            api::ContainerStats {
                cpu: Some(api::CpuUsage {
                    timestamp: 1_714_557_600_000_000_000,
                    usage_core_nano_seconds: Some(api::UInt64Value { value: 5 }),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )]);
        let p = pod_stats(&sb, &[c], &stats, None);
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["podRef"]["namespace"], "ns");
        assert_eq!(json["containers"][0]["cpu"]["usageCoreNanoSeconds"], 5);
        assert!(json["containers"][0]["cpu"].get("usageNanoCores").is_none());
        assert!(json["containers"][0].get("memory").is_none());
        // The pod sums its containers' CPU when the runtime has no pod sample.
        assert_eq!(json["cpu"]["usageCoreNanoSeconds"], 5);
        assert!(json.get("memory").is_none());
    }
}
