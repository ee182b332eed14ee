//! A pod's volumes, as upstream's volume manager keeps them for a pod worker: every
//! volume is set up before the pod's sandbox is created (a volume that cannot be set
//! up keeps the pod in ContainerCreating with a FailedMount event naming it, and is
//! retried); the content of configMap, secret, downwardAPI and projected volumes is
//! written again when their objects or the pod's labels and annotations change
//! (checked every `REFRESH`, and at once on a metadata change); the volumes are
//! removed with the pod's directory once its containers are gone.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use gantry_volumes::Layout;
use k8s_openapi::api::core::v1::{Pod, Volume};

use crate::cluster::Cluster;
use crate::spec::NodeContext;

mod mounts;
pub mod refs;
mod set_up;

pub use mounts::container_mounts;
pub use set_up::HostVolume;

/// How often projected contents are compared with the API (upstream propagates a
/// configMap change within its sync period plus its cache's TTL, about a minute).
pub const REFRESH: Duration = Duration::from_secs(20);

/// The pod's volumes on the host and when their content was last refreshed.
#[derive(Default)]
pub struct PodVolumes {
    ready: BTreeMap<String, HostVolume>,
    refreshed: Option<Instant>,
    /// The labels and annotations the downward API content was written from.
    written_meta: Option<Meta>,
}

/// What a pass over the volumes found.
#[derive(Debug, Default, PartialEq)]
pub struct Outcome {
    /// `MountVolume.SetUp failed for volume "NAME" : why`, one per failed volume.
    pub failures: Vec<String>,
    /// Every volume is set up (its content may be stale if a refresh failed).
    pub all_ready: bool,
}

impl PodVolumes {
    /// The volumes set up so far, by name.
    pub fn host_volumes(&self) -> &BTreeMap<String, HostVolume> {
        &self.ready
    }

    /// Sets up the volumes not yet set up, and refreshes projected content when due.
    pub async fn ensure<C: Cluster>(
        &mut self,
        cluster: &C,
        layout: &Layout,
        pod: &Pod,
        node: &NodeContext,
    ) -> Outcome {
        let volumes: Vec<&Volume> = pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.as_ref())
            .into_iter()
            .flatten()
            .collect();
        let meta = label_meta(pod);
        let due = self.refreshed.is_none_or(|t| t.elapsed() >= REFRESH)
            || self.written_meta.as_ref() != Some(&meta);
        let pending: Vec<&Volume> = volumes
            .iter()
            .copied()
            .filter(|v| !self.ready.contains_key(&v.name) || (due && set_up::is_projection(v)))
            .collect();
        if pending.is_empty() {
            return Outcome {
                failures: Vec::new(),
                all_ready: true,
            };
        }
        let wanted = refs::volume_refs(pending.iter().copied());
        let sources = if wanted.is_empty() {
            Default::default()
        } else {
            match cluster.volume_sources(pod, &wanted).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(pod = %crate::worker::pod_name(pod), error = %e, "fetch what the pod's volumes reference");
                    return Outcome {
                        failures: Vec::new(),
                        all_ready: volumes.iter().all(|v| self.ready.contains_key(&v.name)),
                    };
                }
            }
        };
        let allocatable = crate::spec::node_allocatable(node);
        let inputs = set_up::Inputs {
            layout,
            pod,
            sources: &sources,
            node_allocatable: &allocatable,
        };
        let mut failures = Vec::new();
        for v in pending {
            match set_up::set_up(&inputs, v) {
                Ok(host) => {
                    self.ready.insert(v.name.clone(), host);
                }
                Err(e) => {
                    failures.push(format!(
                        "MountVolume.SetUp failed for volume {:?} : {e}",
                        v.name
                    ));
                }
            }
        }
        if due {
            self.refreshed = Some(Instant::now());
            self.written_meta = Some(meta);
        }
        Outcome {
            failures,
            all_ready: volumes.iter().all(|v| self.ready.contains_key(&v.name)),
        }
    }

    /// Forgets every volume (the pod's directory was removed).
    pub fn forget(&mut self) {
        *self = PodVolumes::default();
    }
}

type Meta = (
    Option<BTreeMap<String, String>>,
    Option<BTreeMap<String, String>>,
);

/// The metadata downward API volumes project that can change: labels and annotations.
fn label_meta(pod: &Pod) -> Meta {
    (
        pod.metadata.labels.clone(),
        pod.metadata.annotations.clone(),
    )
}

/// Makes the kubelet's root directory a shared mount (see
/// `gantry_volumes::shared_root`); called once at start.
pub fn share_root_dir(dir: &std::path::Path) -> std::io::Result<()> {
    gantry_volumes::shared_root::make_rshared(dir)
}

/// `<root>/pods/<uid>/etc-hosts`: the pod's managed hosts file.
pub fn hosts_file_path(layout: &Layout, uid: &str) -> Option<PathBuf> {
    layout.pod_dir(uid).ok().map(|d| d.join("etc-hosts"))
}
