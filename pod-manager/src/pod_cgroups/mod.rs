//! The node's pod cgroups with the cgroupfs driver, as upstream's pkg/kubelet/cm
//! (cgroupsPerQOS): `<cgroupRoot>/kubepods` limited to the node's allocatable
//! resources, QoS cgroups `kubepods/burstable` and `kubepods/besteffort` below it, and
//! one cgroup `pod<uid>` per pod under its QoS class (Guaranteed pods directly in
//! kubepods), sized from the pod's requests and limits. The pod cgroup is made before
//! the sandbox, whose cgroup parent it is, and removed after the pod's containers and
//! sandbox; pod cgroups of pods the node no longer has are removed once empty.
//!
//! `fs` touches the cgroup filesystem (v1 or v2) through the hierarchies' roots;
//! `config` computes the settings without I/O.

use std::collections::BTreeMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Pod;

pub mod config;
pub mod fs;
#[cfg(test)]
mod tests;

pub use config::{NodeAllocatable, ResourceConfig};
pub use fs::{CgroupError, CgroupFs};

use crate::spec::resources::{BEST_EFFORT, BURSTABLE};

/// The prefix of a pod cgroup's name (upstream's podCgroupNamePrefix).
pub const POD_CGROUP_PREFIX: &str = "pod";

/// The node's pod cgroups.
pub struct PodCgroups {
    fs: CgroupFs,
    /// `<cgroupRoot>/kubepods`.
    kubepods: String,
    /// podPidsLimit (≤ 0: none).
    pod_pids_limit: i64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The settings last written to each pod's cgroup, by pod UID.
    applied: BTreeMap<String, (String, ResourceConfig)>,
    /// The CPU request (millicores) of each Burstable pod, by UID.
    burstable: BTreeMap<String, i64>,
    /// The Burstable QoS cgroup's shares as last written.
    burstable_applied: Option<ResourceConfig>,
}

/// The name (cgroupfs path) of the node allocatable cgroup under `cgroup_root`.
pub fn kubepods_name(cgroup_root: &str) -> String {
    format!("{}/kubepods", cgroup_root.trim_end_matches('/'))
}

/// The name of the QoS cgroup of `class` under `kubepods` (Guaranteed: kubepods).
pub fn qos_cgroup(kubepods: &str, class: &str) -> String {
    match class {
        BURSTABLE => format!("{kubepods}/burstable"),
        BEST_EFFORT => format!("{kubepods}/besteffort"),
        _ => kubepods.to_string(),
    }
}

/// The name of `pod`'s cgroup under `kubepods` (upstream's GetPodContainerName).
pub fn pod_cgroup_name(kubepods: &str, pod: &Pod) -> String {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    format!(
        "{}/{POD_CGROUP_PREFIX}{uid}",
        qos_cgroup(kubepods, crate::spec::qos_class(pod))
    )
}

impl PodCgroups {
    /// Sets up the hierarchy at node start (upstream's createNodeAllocatableCgroups
    /// and QOSContainerManager Start): kubepods limited to `allocatable`, then the
    /// Burstable and BestEffort cgroups. `cgroup_root` must exist, as upstream checks.
    pub fn start(
        fs: CgroupFs,
        cgroup_root: &str,
        allocatable: NodeAllocatable,
        pod_pids_limit: i64,
    ) -> Result<PodCgroups, StartError> {
        if !fs.exists(cgroup_root) {
            return Err(StartError::NoRoot(cgroup_root.to_string()));
        }
        let kubepods = kubepods_name(cgroup_root);
        fs.create(&kubepods)?;
        fs.apply(&kubepods, &allocatable.config())?;
        for class in [BURSTABLE, BEST_EFFORT] {
            let name = qos_cgroup(&kubepods, class);
            fs.create(&name)?;
            fs.apply(&name, &config::qos_config(class, 0))?;
        }
        Ok(PodCgroups {
            fs,
            kubepods,
            pod_pids_limit,
            state: Mutex::new(State {
                burstable_applied: Some(config::qos_config(BURSTABLE, 0)),
                ..Default::default()
            }),
        })
    }

    pub fn kubepods(&self) -> &str {
        &self.kubepods
    }

    pub fn fs(&self) -> &CgroupFs {
        &self.fs
    }

    /// Makes `pod`'s cgroup exist with the settings its spec asks for (creating it,
    /// or writing only what changed since the last call), after counting a Burstable
    /// pod's CPU request in its QoS cgroup. Returns the cgroup's name. Cheap when
    /// nothing changed: one stat.
    pub fn ensure(&self, pod: &Pod) -> Result<String, CgroupError> {
        self.ensure_covering(pod, None)
    }

    /// As `ensure`, while a resize has yet to reach the pod's running containers
    /// (`running`: the pod as they are sized now): each setting is the larger of the
    /// two, so the pod cgroup holds its containers before and after they change (the
    /// kernel refuses a child's CPU quota above its parent's). Upstream raises the pod
    /// cgroup before its containers and lowers it after them; `ensure(pod)` once they
    /// have followed does the lowering.
    pub fn ensure_covering(&self, pod: &Pod, running: Option<&Pod>) -> Result<String, CgroupError> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let name = pod_cgroup_name(&self.kubepods, pod);
        let mut wanted = config::resource_config_for_pod(pod, self.pod_pids_limit);
        if let Some(running) = running {
            wanted = wanted.covering(&config::resource_config_for_pod(
                running,
                self.pod_pids_limit,
            ));
        }
        let mut state = lock(&self.state);
        match config::burstable_cpu_request(pod) {
            Some(milli) => state.burstable.insert(uid.clone(), milli),
            None => state.burstable.remove(&uid),
        };
        self.update_burstable(&mut state)?;
        let same = state
            .applied
            .get(&uid)
            .is_some_and(|(n, c)| *n == name && *c == wanted);
        if same && self.fs.exists(&name) {
            return Ok(name);
        }
        self.fs.create(&name)?;
        self.fs.apply(&name, &wanted)?;
        state.applied.insert(uid, (name.clone(), wanted));
        Ok(name)
    }

    /// Removes pod `uid`'s cgroup (whatever its QoS class) once nothing runs in it,
    /// and stops counting it in its QoS cgroup. Safe to call twice.
    pub fn remove(&self, uid: &str) -> Result<(), CgroupError> {
        self.remove_locked(&mut lock(&self.state), uid)
    }

    fn remove_locked(&self, state: &mut State, uid: &str) -> Result<(), CgroupError> {
        // Forgotten first: if a removal fails (a process still in it), the orphan sweep
        // finds the cgroup and removes it once it is empty.
        state.applied.remove(uid);
        state.burstable.remove(uid);
        self.update_burstable(state)?;
        for class in ["", BURSTABLE, BEST_EFFORT] {
            let name = format!(
                "{}/{POD_CGROUP_PREFIX}{uid}",
                qos_cgroup(&self.kubepods, class)
            );
            self.fs.remove(&name)?;
        }
        Ok(())
    }

    /// Pod cgroups of pods not in `live` (by UID) and not made by this process for a
    /// pod still running, whose processes are all gone: removed (upstream's
    /// cleanupOrphanedPodCgroups). Returns the UIDs removed.
    pub fn remove_orphans(&self, live: &std::collections::HashSet<String>) -> Vec<String> {
        let mut state = lock(&self.state);
        let mut removed = Vec::new();
        for class in ["", BURSTABLE, BEST_EFFORT] {
            let parent = qos_cgroup(&self.kubepods, class);
            for child in self.fs.children(&parent) {
                let Some(uid) = child.strip_prefix(POD_CGROUP_PREFIX) else {
                    continue;
                };
                if uid.is_empty() || live.contains(uid) || state.applied.contains_key(uid) {
                    continue;
                }
                if self.fs.has_processes(&format!("{parent}/{child}")) {
                    continue;
                }
                match self.remove_locked(&mut state, uid) {
                    Ok(()) => removed.push(uid.to_string()),
                    Err(e) => tracing::warn!(error = %e, "remove an orphaned pod cgroup"),
                }
            }
        }
        removed
    }

    /// Writes the Burstable QoS cgroup's shares when the sum of requests changed.
    fn update_burstable(&self, state: &mut State) -> Result<(), CgroupError> {
        let sum = state.burstable.values().copied().sum();
        let wanted = config::qos_config(BURSTABLE, sum);
        if state.burstable_applied.as_ref() == Some(&wanted) {
            return Ok(());
        }
        self.fs
            .apply(&qos_cgroup(&self.kubepods, BURSTABLE), &wanted)?;
        state.burstable_applied = Some(wanted);
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration: cgroup-root {0:?} doesn't exist")]
    NoRoot(String),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
