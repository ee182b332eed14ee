//! ContainerStats, ListContainerStats, PodSandboxStats and ListPodSandboxStats: CPU and
//! memory from the cgroups (v1 or v2, see cgroup_stats), the writable layer from the
//! snapshotter. CPU rates (nano-cores) come from the previous sample of each cgroup.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use containerd_client::services::v1::snapshots::UsageRequest;

use crate::api;
use crate::cgroup_stats::{self, CgroupLayout, CgroupStats};
use crate::engine::Engine;
use crate::error::Result;
use crate::store::{Container, ContainerPhase, Sandbox};

/// The last sample of each cgroup path, for CPU rates.
#[derive(Clone, Default)]
pub struct Samples(Arc<Mutex<HashMap<String, CgroupStats>>>);

impl Samples {
    /// Reads the cgroup and returns (this sample, the previous one).
    fn sample(
        &self,
        layout: &CgroupLayout,
        path: &str,
    ) -> Option<(CgroupStats, Option<CgroupStats>)> {
        let now = cgroup_stats::read(layout, path).ok()?;
        let prev = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path.to_string(), now.clone());
        Some((now, prev))
    }

    fn forget(&self, keep: &dyn Fn(&str) -> bool) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|k, _| keep(k));
    }
}

impl Engine {
    pub async fn container_stats(&self, id: &str) -> Result<api::ContainerStats> {
        let c = self.store.container(id)?;
        Ok(self.stats_of(&c).await)
    }

    pub async fn list_container_stats(
        &self,
        filter: Option<api::ContainerStatsFilter>,
    ) -> Result<Vec<api::ContainerStats>> {
        let f = filter.unwrap_or_default();
        let mut out = Vec::new();
        let picked = self.store.map_containers(|c| {
            let keep = c.state.phase == ContainerPhase::Running
                && (f.id.is_empty() || c.id.starts_with(&f.id))
                && (f.pod_sandbox_id.is_empty() || c.sandbox_id.starts_with(&f.pod_sandbox_id))
                && crate::sandbox::labels_match(&f.label_selector, &c.config.labels);
            keep.then(|| c.clone())
        });
        for c in picked {
            out.push(self.stats_of(&c).await);
        }
        let mut live: std::collections::HashSet<String> = self
            .store
            .map_containers(|c| Some(c.state.cgroups_path.clone()))
            .into_iter()
            .collect();
        live.extend(self.store.map_sandboxes(pod_cgroup));
        self.samples.forget(&|k| live.contains(k));
        Ok(out)
    }

    async fn stats_of(&self, c: &Container) -> api::ContainerStats {
        let (cpu, memory) = match (c.state.phase == ContainerPhase::Running)
            .then(|| self.samples.sample(&self.cgroups, &c.state.cgroups_path))
            .flatten()
        {
            Some((now, prev)) => (
                Some(now.to_cri_cpu(prev.as_ref())),
                Some(now.to_cri_memory()),
            ),
            None => (None, None),
        };
        api::ContainerStats {
            attributes: Some(api::ContainerAttributes {
                id: c.id.clone(),
                metadata: Some(c.metadata()),
                labels: c.config.labels.clone(),
                annotations: c.config.annotations.clone(),
            }),
            cpu,
            memory,
            writable_layer: self.writable_layer(&c.id).await,
            swap: None,
            io: None,
        }
    }

    /// The container's writable layer: its active snapshot's usage.
    async fn writable_layer(&self, id: &str) -> Option<api::FilesystemUsage> {
        let u = self
            .ctd
            .snapshots()
            .usage(self.ctd.req(UsageRequest {
                snapshotter: self.config.snapshotter.clone(),
                key: id.to_string(),
            }))
            .await
            .ok()?
            .into_inner();
        Some(api::FilesystemUsage {
            timestamp: crate::store::now_ns(),
            fs_id: Some(api::FilesystemIdentifier {
                mountpoint: self
                    .config
                    .containerd_root
                    .join(format!(
                        "io.containerd.snapshotter.v1.{}",
                        self.config.snapshotter
                    ))
                    .display()
                    .to_string(),
            }),
            used_bytes: Some(api::UInt64Value {
                value: u.size.max(0) as u64,
            }),
            inodes_used: Some(api::UInt64Value {
                value: u.inodes.max(0) as u64,
            }),
        })
    }

    pub async fn pod_sandbox_stats(&self, id: &str) -> Result<api::PodSandboxStats> {
        let sb = self.store.sandbox(id)?;
        Ok(self.sandbox_stats_of(&sb).await)
    }

    pub async fn list_pod_sandbox_stats(
        &self,
        filter: Option<api::PodSandboxStatsFilter>,
    ) -> Result<Vec<api::PodSandboxStats>> {
        let f = filter.unwrap_or_default();
        let mut out = Vec::new();
        let picked = self.store.map_sandboxes(|sb| {
            let keep = sb.ready()
                && (f.id.is_empty() || sb.id.starts_with(&f.id))
                && crate::sandbox::labels_match(&f.label_selector, &sb.config.labels);
            keep.then(|| sb.clone())
        });
        for sb in picked {
            out.push(self.sandbox_stats_of(&sb).await);
        }
        Ok(out)
    }

    /// A pod's usage: its pod cgroup (the cgroup parent the kubelet gave) when it has
    /// one, else the sum of its running containers.
    async fn sandbox_stats_of(&self, sb: &Sandbox) -> api::PodSandboxStats {
        let mut containers = Vec::new();
        for c in self.store.containers_of(&sb.id) {
            if c.state.phase == ContainerPhase::Running {
                containers.push(self.stats_of(&c).await);
            }
        }
        let pod = pod_cgroup(sb).and_then(|p| self.samples.sample(&self.cgroups, &p));
        let (cpu, memory) = match pod {
            Some((now, prev)) => (
                Some(now.to_cri_cpu(prev.as_ref())),
                Some(now.to_cri_memory()),
            ),
            None => sum_of(&containers),
        };
        api::PodSandboxStats {
            attributes: Some(api::PodSandboxAttributes {
                id: sb.id.clone(),
                metadata: Some(sb.metadata()),
                labels: sb.config.labels.clone(),
                annotations: sb.config.annotations.clone(),
            }),
            linux: Some(api::LinuxPodSandboxStats {
                cpu,
                memory,
                network: None,
                process: Some(api::ProcessUsage {
                    timestamp: crate::store::now_ns(),
                    process_count: None,
                }),
                containers,
                ..Default::default()
            }),
            windows: None,
        }
    }
}

/// The pod-level cgroup: the sandbox's cgroup parent, if the kubelet gave one.
fn pod_cgroup(sb: &Sandbox) -> Option<String> {
    sb.config
        .linux
        .as_ref()
        .map(|l| l.cgroup_parent.clone())
        .filter(|p| !p.is_empty())
}

/// Sums the containers' CPU and memory, for pods without a pod cgroup.
fn sum_of(stats: &[api::ContainerStats]) -> (Option<api::CpuUsage>, Option<api::MemoryUsage>) {
    if stats.is_empty() {
        return (None, None);
    }
    let add = |a: &Option<api::UInt64Value>, b: &Option<api::UInt64Value>| match (a, b) {
        (None, None) => None,
        _ => Some(api::UInt64Value {
            value: a.as_ref().map_or(0, |v| v.value) + b.as_ref().map_or(0, |v| v.value),
        }),
    };
    let now = crate::store::now_ns();
    let mut cpu = api::CpuUsage {
        timestamp: now,
        ..Default::default()
    };
    let mut mem = api::MemoryUsage {
        timestamp: now,
        ..Default::default()
    };
    for s in stats {
        if let Some(c) = &s.cpu {
            cpu.usage_core_nano_seconds =
                add(&cpu.usage_core_nano_seconds, &c.usage_core_nano_seconds);
            cpu.usage_nano_cores = add(&cpu.usage_nano_cores, &c.usage_nano_cores);
        }
        if let Some(m) = &s.memory {
            mem.working_set_bytes = add(&mem.working_set_bytes, &m.working_set_bytes);
            mem.usage_bytes = add(&mem.usage_bytes, &m.usage_bytes);
            mem.rss_bytes = add(&mem.rss_bytes, &m.rss_bytes);
        }
    }
    (Some(cpu), Some(mem))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_usage_without_a_pod_cgroup_is_the_sum_of_its_containers() {
        let one = |cpu: u64, mem: u64| api::ContainerStats {
            cpu: Some(api::CpuUsage {
                usage_core_nano_seconds: Some(api::UInt64Value { value: cpu }),
                ..Default::default()
            }),
            memory: Some(api::MemoryUsage {
                working_set_bytes: Some(api::UInt64Value { value: mem }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let (cpu, mem) = sum_of(&[one(10, 100), one(5, 50)]);
        assert_eq!(cpu.unwrap().usage_core_nano_seconds.unwrap().value, 15);
        assert_eq!(mem.unwrap().working_set_bytes.unwrap().value, 150);
        assert_eq!(sum_of(&[]), (None, None));
    }
}
