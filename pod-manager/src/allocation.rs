//! In-place pod resize: what the node has admitted for each pod's containers (upstream's
//! allocation manager) and what their running containers were last given (its actuated
//! state).
//!
//! A pod's spec may ask for other CPU and memory than its containers run with
//! (`kubectl patch pod --subresource resize`). The node admits such a change when the
//! pod still fits the node's allocatable beside every other pod's admitted requests
//! (else the resize is Deferred and tried again), and from then on runs the pod with
//! the admitted resources. Both records survive an agent restart in the pod's
//! directory (`<root>/pods/<uid>/resources.json`), so a resize deferred or half done
//! when the agent stopped is neither admitted unchecked nor forgotten.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::{Container, Pod, ResourceRequirements};
use serde::{Deserialize, Serialize};

use crate::pod_cgroups::config::pod_requests;
use crate::spec::quantity;

/// The file a pod's records live in, inside its directory.
const FILE: &str = "resources.json";

/// What the node decided about the resources a pod's spec asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum Admission {
    /// The spec asks for what was admitted: nothing to decide.
    Unchanged,
    /// A resize was admitted now: the pod runs with the spec's resources from here on.
    Accepted,
    /// A resize that does not fit now (upstream's reason `Deferred`, with the
    /// admission's message); the pod keeps what was admitted before.
    Deferred(String),
}

/// The node's records for every pod it runs.
pub struct Allocations {
    /// `<root>/pods`: each pod's records go in its directory.
    pods_dir: PathBuf,
    /// The node's allocatable CPU (millicores) and memory (bytes); 0 when unknown,
    /// which admits any resize.
    allocatable_milli_cpu: i64,
    allocatable_memory: i64,
    pods: Mutex<HashMap<String, Record>>,
}

/// One pod's records, as stored.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Record {
    /// The admitted resources of each resizable container (app containers and
    /// sidecars), by name.
    allocated: BTreeMap<String, ResourceRequirements>,
    /// What each container's running attempt was created with or last updated to.
    actuated: BTreeMap<String, ResourceRequirements>,
    /// The pod's admitted CPU (millicores) and memory requests, for the fit of other
    /// pods' resizes.
    #[serde(skip)]
    requests: (i64, i64),
}

impl Allocations {
    pub fn new(root: &str, allocatable_milli_cpu: i64, allocatable_memory: i64) -> Self {
        Allocations {
            pods_dir: PathBuf::from(root).join("pods"),
            allocatable_milli_cpu,
            allocatable_memory,
            pods: Mutex::new(HashMap::new()),
        }
    }

    /// The pod as the node runs it (its containers with their admitted resources), and
    /// what the node decided about a resize its spec asks for. A pod seen for the first
    /// time is admitted as it is (the scheduler placed it); after an agent restart its
    /// stored records decide.
    pub fn allocate(&self, pod: &Pod) -> (Pod, Admission) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let mut pods = lock(&self.pods);
        let record = match pods.get(&uid) {
            Some(r) => r.clone(),
            None => {
                let record = self.load(&uid).unwrap_or_else(|| Record::admit(pod));
                self.store(&uid, &record);
                record
            }
        };
        let mut allocated = record.apply(pod);
        let mut record = record;
        record.requests = requests_of(&allocated);
        if allocated.spec == pod.spec {
            pods.insert(uid, record);
            return (allocated, Admission::Unchanged);
        }
        if let Some(message) = self.misfit(&pods, &uid, pod) {
            pods.insert(uid, record);
            return (allocated, Admission::Deferred(message));
        }
        record.allocated = resizable(pod)
            .map(|c| (c.name.clone(), c.resources.clone().unwrap_or_default()))
            .collect();
        record.requests = requests_of(pod);
        self.store(&uid, &record);
        pods.insert(uid, record);
        allocated = pod.clone();
        (allocated, Admission::Accepted)
    }

    /// What container `name` of pod `uid` runs with now, if recorded.
    pub fn actuated(&self, uid: &str, name: &str) -> Option<ResourceRequirements> {
        lock(&self.pods).get(uid)?.actuated.get(name).cloned()
    }

    /// Records that container `name` of pod `uid` now runs with `resources` (it was
    /// created with them, or updated to them). Stored only when it changed.
    pub fn set_actuated(&self, uid: &str, name: &str, resources: &ResourceRequirements) {
        let mut pods = lock(&self.pods);
        let Some(record) = pods.get_mut(uid) else {
            return;
        };
        if record.actuated.get(name) == Some(resources) {
            return;
        }
        record.actuated.insert(name.to_string(), resources.clone());
        let record = record.clone();
        drop(pods);
        self.store(uid, &record);
    }

    /// Forgets pod `uid` (it is gone from the node; its directory goes with it).
    pub fn remove(&self, uid: &str) {
        lock(&self.pods).remove(uid);
    }

    /// Why `pod`'s requests do not fit beside every other pod's admitted ones, in
    /// upstream's words: "Node didn't have enough resource: cpu, requested: 3000, used:
    /// 500, capacity: 2000" (millicores for CPU, bytes for memory).
    fn misfit(&self, pods: &HashMap<String, Record>, uid: &str, pod: &Pod) -> Option<String> {
        let (cpu, memory) = requests_of(pod);
        let others = pods.iter().filter(|(u, _)| u.as_str() != uid);
        let (used_cpu, used_memory) = others.fold((0, 0), |(c, m), (_, r)| {
            (c + r.requests.0, m + r.requests.1)
        });
        let checks = [
            ("cpu", cpu, used_cpu, self.allocatable_milli_cpu),
            ("memory", memory, used_memory, self.allocatable_memory),
        ];
        checks
            .into_iter()
            .find(|(_, requested, used, capacity)| {
                *capacity > 0 && *requested > 0 && *requested > capacity - used
            })
            .map(|(name, requested, used, capacity)| {
                format!(
                    "Node didn't have enough resource: {name}, requested: {requested}, used: {used}, capacity: {capacity}"
                )
            })
    }

    fn path(&self, uid: &str) -> Option<PathBuf> {
        // A UID names a directory only if it is one plain path component.
        let plain = !uid.is_empty() && !uid.contains('/') && uid != "." && uid != "..";
        plain.then(|| self.pods_dir.join(uid).join(FILE))
    }

    fn load(&self, uid: &str) -> Option<Record> {
        let bytes = std::fs::read(self.path(uid)?).ok()?;
        match serde_json::from_slice(&bytes) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(pod_uid = %uid, error = %e, "unreadable pod resource records: the spec's resources are taken as admitted");
                None
            }
        }
    }

    /// Writes the records whole (a temporary file renamed over the old one).
    fn store(&self, uid: &str, record: &Record) {
        let Some(path) = self.path(uid) else {
            return;
        };
        let written = (|| -> std::io::Result<()> {
            std::fs::create_dir_all(path.parent().expect("a pod directory"))?;
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, serde_json::to_vec(record)?)?;
            std::fs::rename(&tmp, &path)
        })();
        if let Err(e) = written {
            tracing::warn!(pod_uid = %uid, error = %e, "store the pod's resource records");
        }
    }
}

impl Record {
    /// A pod admitted as its spec says: what its containers run with is what they ask.
    fn admit(pod: &Pod) -> Record {
        let allocated: BTreeMap<_, _> = resizable(pod)
            .map(|c| (c.name.clone(), c.resources.clone().unwrap_or_default()))
            .collect();
        Record {
            actuated: allocated.clone(),
            allocated,
            requests: (0, 0),
        }
    }

    /// `pod` with its resizable containers' resources replaced by the admitted ones.
    fn apply(&self, pod: &Pod) -> Pod {
        let mut pod = pod.clone();
        let Some(spec) = pod.spec.as_mut() else {
            return pod;
        };
        let init = spec.init_containers.iter_mut().flatten();
        for c in spec.containers.iter_mut().chain(init) {
            if let Some(r) = self.allocated.get(&c.name) {
                let empty = ResourceRequirements::default();
                if c.resources.as_ref().unwrap_or(&empty) != r {
                    c.resources = (r != &empty).then(|| r.clone());
                }
            }
        }
        pod
    }
}

/// The containers a resize can change: app containers and sidecars (upstream's
/// IsResizableContainer; other init containers have run by then).
pub fn resizable(pod: &Pod) -> impl Iterator<Item = &Container> {
    let spec = pod.spec.as_ref();
    let apps = spec.map(|s| s.containers.iter()).into_iter().flatten();
    let sidecars = spec
        .and_then(|s| s.init_containers.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| crate::spec::resources::is_sidecar(c));
    apps.chain(sidecars)
}

/// The pod's CPU (millicores) and memory requests as the scheduler counts them.
fn requests_of(pod: &Pod) -> (i64, i64) {
    (
        pod_requests(pod, "cpu").map_or(0, |q| q.milli_value()),
        pod_requests(pod, "memory").map_or(0, |q| q.value()),
    )
}

/// A container's CPU and memory as a runtime applies them (upstream's
/// containerResourcesFromRequirements): what a resize compares.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Effective {
    pub cpu_request: i64,
    pub cpu_limit: i64,
    pub memory_request: i64,
    pub memory_limit: i64,
}

impl Effective {
    pub fn of(r: &ResourceRequirements) -> Self {
        let milli =
            |l: Option<&BTreeMap<_, _>>| quantity::of(l, "cpu").map_or(0, |q| q.milli_value());
        let bytes = |l: Option<&BTreeMap<_, _>>| quantity::of(l, "memory").map_or(0, |q| q.value());
        Effective {
            cpu_request: milli(r.requests.as_ref()),
            cpu_limit: milli(r.limits.as_ref()),
            memory_request: bytes(r.requests.as_ref()),
            memory_limit: bytes(r.limits.as_ref()),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity as Q;

    fn pod(uid: &str, cpu: &str, memory: &str) -> Pod {
        let list = BTreeMap::from([
            ("cpu".to_string(), Q(cpu.into())),
            ("memory".to_string(), Q(memory.into())),
        ]);
        Pod {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                uid: Some(uid.into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "app".into(),
                    resources: Some(ResourceRequirements {
                        requests: Some(list.clone()),
                        limits: Some(list),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn cpu_of(p: &Pod) -> String {
        let r = p.spec.as_ref().unwrap().containers[0].resources.as_ref();
        r.unwrap().requests.as_ref().unwrap()["cpu"].0.clone()
    }

    #[test]
    fn a_resize_that_fits_is_admitted_and_one_that_does_not_is_deferred() {
        let root = tempfile::tempdir().unwrap();
        // 2 CPUs, 4 GiB allocatable.
        let a = Allocations::new(root.path().to_str().unwrap(), 2000, 4 << 30);
        assert_eq!(a.allocate(&pod("p", "500m", "1Gi")).1, Admission::Unchanged);
        assert_eq!(a.allocate(&pod("q", "1", "1Gi")).1, Admission::Unchanged);

        let (running, admission) = a.allocate(&pod("p", "1", "1Gi"));
        assert_eq!(admission, Admission::Accepted);
        assert_eq!(cpu_of(&running), "1");

        let (running, admission) = a.allocate(&pod("p", "1500m", "1Gi"));
        assert_eq!(
            admission,
            Admission::Deferred(
                "Node didn't have enough resource: cpu, requested: 1500, used: 1000, capacity: 2000"
                    .into()
            )
        );
        assert_eq!(cpu_of(&running), "1", "the pod keeps what was admitted");

        // Once the other pod is gone, it fits.
        a.remove("q");
        assert_eq!(a.allocate(&pod("p", "1500m", "1Gi")).1, Admission::Accepted);
    }

    #[test]
    fn records_survive_a_restart_so_a_deferred_resize_is_not_admitted_unchecked() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().to_str().unwrap();
        let a = Allocations::new(dir, 2000, 4 << 30);
        a.allocate(&pod("p", "500m", "1Gi"));
        a.allocate(&pod("q", "1", "1Gi"));
        a.set_actuated("p", "app", &ResourceRequirements::default());

        let b = Allocations::new(dir, 2000, 4 << 30);
        b.allocate(&pod("q", "1", "1Gi"));
        let (running, admission) = b.allocate(&pod("p", "1500m", "1Gi"));
        assert!(matches!(admission, Admission::Deferred(_)), "{admission:?}");
        assert_eq!(cpu_of(&running), "500m");
        assert_eq!(
            b.actuated("p", "app"),
            Some(ResourceRequirements::default()),
            "what the container runs with is remembered too"
        );
    }

    #[test]
    fn a_spec_back_at_the_admitted_resources_is_unchanged() {
        let root = tempfile::tempdir().unwrap();
        let a = Allocations::new(root.path().to_str().unwrap(), 1000, 1 << 30);
        a.allocate(&pod("p", "500m", "256Mi"));
        assert!(matches!(
            a.allocate(&pod("p", "2", "256Mi")).1,
            Admission::Deferred(_)
        ));
        assert_eq!(
            a.allocate(&pod("p", "500m", "256Mi")).1,
            Admission::Unchanged
        );
    }

    #[test]
    fn effective_values_compare_quantities_not_spellings() {
        let a = pod("p", "1", "1Gi");
        let b = pod("p", "1000m", "1073741824");
        let of = |p: &Pod| {
            Effective::of(
                p.spec.as_ref().unwrap().containers[0]
                    .resources
                    .as_ref()
                    .unwrap(),
            )
        };
        assert_eq!(of(&a), of(&b));
        assert_eq!(of(&a).cpu_limit, 1000);
        assert_eq!(of(&a).memory_limit, 1 << 30);
    }
}
