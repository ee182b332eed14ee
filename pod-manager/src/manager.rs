//! The pod manager: one worker task per pod (one sync in flight per pod), fed by the
//! pod sources and woken by the runtime's container events or, where the runtime has
//! none, by a relist of its containers every second (upstream's PLEG does the same).
//! Sandboxes and containers of this node whose pod no source knows are orphans: once
//! the sources have listed everything, they are killed and removed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gantry_cri::api;
use k8s_openapi::api::core::v1::Pod;
use tokio::sync::{watch, Notify};
use tokio_stream::StreamExt;

use crate::cluster::Cluster;
use crate::labels;
use crate::spec::NodeContext;
use crate::worker::{pod_name, Desired, Eviction, Next, NodeParts, SharedEviction, Worker};
use crate::Cri;

const RELIST_EVERY: Duration = Duration::from_secs(1);
/// While the runtime's event stream is up, the relist is only the safety net
/// (upstream's evented PLEG relists far less often too).
const RELIST_WITH_EVENTS_EVERY: u32 = 10;

struct Handle {
    desired: watch::Sender<Desired>,
    wake: Arc<Notify>,
    eviction: SharedEviction,
}

/// Decides whether a new pod may run on the node: `Some` rejects it (upstream's pod
/// admit handlers; the eviction manager's under node pressure).
pub type AdmitFn = Arc<dyn Fn(&Pod) -> Option<Eviction> + Send + Sync>;

pub struct PodManager<C: Cluster> {
    cri: Cri,
    cluster: Arc<C>,
    node: Arc<NodeContext>,
    runtime_name: String,
    workers: Mutex<HashMap<String, Handle>>,
    /// Pods whose worker finished (terminated and removed): later updates of the same
    /// UID (the API object's last changes before it goes) start nothing.
    finished: Mutex<HashSet<String>>,
    /// Set once every source has delivered its first full list.
    sources_synced: watch::Sender<bool>,
    /// The runtime's container event stream is connected.
    events_up: std::sync::atomic::AtomicBool,
    /// Sources that have not listed everything yet.
    sources_pending: Mutex<HashSet<&'static str>>,
    admit: Mutex<Option<AdmitFn>>,
    /// The node's pod cgroups, when it manages them (cgroupsPerQOS).
    pod_cgroups: Option<Arc<crate::pod_cgroups::PodCgroups>>,
    /// What the node admitted and applied of each pod's resources (in-place resize).
    allocations: Arc<crate::allocation::Allocations>,
}

impl<C: Cluster> PodManager<C> {
    /// A manager fed by the named pod sources (each calls `sources_synced`).
    pub fn new(
        cri: Cri,
        cluster: Arc<C>,
        node: NodeContext,
        runtime_name: String,
        sources: &[&'static str],
        pod_cgroups: Option<Arc<crate::pod_cgroups::PodCgroups>>,
    ) -> Arc<Self> {
        let allocations = Arc::new(crate::allocation::Allocations::new(
            &node.volumes_root,
            node.allocatable_cpu_millis,
            node.allocatable_memory,
        ));
        Arc::new(PodManager {
            allocations,
            cri,
            cluster,
            node: Arc::new(node),
            runtime_name,
            workers: Mutex::new(HashMap::new()),
            finished: Mutex::new(HashSet::new()),
            sources_synced: watch::channel(false).0,
            sources_pending: Mutex::new(sources.iter().copied().collect()),
            events_up: std::sync::atomic::AtomicBool::new(false),
            admit: Mutex::new(None),
            pod_cgroups,
        })
    }

    /// Installs the admission check new pods go through.
    pub fn set_admit_handler(&self, admit: AdmitFn) {
        *lock(&self.admit) = Some(admit);
    }

    /// Ends a running pod on the node's behalf (node-pressure eviction): its worker kills
    /// it and reports it Failed with the eviction's reason, message and condition.
    /// Returns false when the node has no worker for the pod.
    pub fn evict(&self, uid: &str, eviction: Eviction) -> bool {
        let workers = lock(&self.workers);
        let Some(h) = workers.get(uid) else {
            return false;
        };
        let mut slot = h.eviction.lock().unwrap_or_else(|p| p.into_inner());
        if slot.request.is_none() {
            slot.request = Some(eviction);
        }
        drop(slot);
        h.wake.notify_one();
        true
    }

    /// Whether an evicted pod's containers are stopped and its volumes torn down (or its
    /// worker is gone): upstream's podCleanedUpFunc.
    pub fn eviction_finished(&self, uid: &str) -> bool {
        lock(&self.workers)
            .get(uid)
            .is_none_or(|h| h.eviction.lock().unwrap_or_else(|p| p.into_inner()).done)
    }

    /// The pods that may still run here: not being deleted, not in a terminal phase, not
    /// already evicted (upstream's active pods, the eviction candidates).
    pub fn active_pods(&self) -> Vec<Pod> {
        lock(&self.workers)
            .values()
            .filter(|h| {
                h.eviction
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .request
                    .is_none()
            })
            .filter_map(|h| match &*h.desired.borrow() {
                Desired::Pod(p) if p.metadata.deletion_timestamp.is_none() => {
                    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
                    (!matches!(phase, Some("Succeeded" | "Failed"))).then(|| (**p).clone())
                }
                _ => None,
            })
            .collect()
    }

    /// A pod was added or changed in a source.
    pub fn update(self: &Arc<Self>, pod: Pod) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        // Late updates of a pod whose deletion finished start nothing; a pod that comes
        // back without a deletion (a static manifest put back) runs again.
        if pod.metadata.deletion_timestamp.is_some() && lock(&self.finished).contains(&uid) {
            return;
        }
        lock(&self.finished).remove(&uid);
        observe_startup(&uid, &pod);
        let mut workers = lock(&self.workers);
        if let Some(h) = workers.get(&uid) {
            // A Gone pod stays gone. An update that only carries the status the node
            // posted itself (or other bookkeeping) is kept without waking the worker:
            // otherwise every status patch would come back as another sync.
            h.desired.send_if_modified(|d| match d {
                Desired::Gone(_) => false,
                Desired::Pod(old) => {
                    let wake = !same_intent(old, &pod);
                    *d = Desired::Pod(Box::new(pod));
                    wake
                }
            });
            return;
        }
        // A finished pod that is not being deleted needs no worker... unless the
        // runtime still has something of it; the worker finds out.
        let rejected = self.admission(&pod);
        self.spawn_with(&mut workers, uid, Desired::Pod(Box::new(pod)), rejected);
    }

    /// A pod is gone from its source without waiting for the node (force deletion, or
    /// its API object was removed): kill what is left and clean up.
    pub fn remove(self: &Arc<Self>, pod: Pod) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        let mut workers = lock(&self.workers);
        if let Some(h) = workers.get(&uid) {
            let _ = h.desired.send(Desired::Gone(Box::new(pod)));
        } else if !lock(&self.finished).remove(&uid) {
            self.spawn(&mut workers, uid, Desired::Gone(Box::new(pod)));
        }
    }

    /// Source `name` has listed every pod. Once all sources have, runtime objects of
    /// unknown pods are orphans.
    pub fn sources_synced(&self, name: &str) {
        let mut pending = lock(&self.sources_pending);
        pending.remove(name);
        if pending.is_empty() {
            self.sources_synced.send_replace(true);
        }
    }

    /// The pods the node runs (for the kubelet API's /pods).
    pub fn pods(&self) -> Vec<Pod> {
        lock(&self.workers)
            .values()
            .map(|h| h.desired.borrow().pod().clone())
            .collect()
    }

    /// A pod new to the node that has not started (pending, not being deleted) goes
    /// through the admission check; `Some` is the rejection to carry out.
    fn admission(&self, pod: &Pod) -> Option<Eviction> {
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if pod.metadata.deletion_timestamp.is_some() || !matches!(phase, None | Some("Pending")) {
            return None;
        }
        let admit = lock(&self.admit).clone()?;
        admit(pod)
    }

    fn spawn(
        self: &Arc<Self>,
        workers: &mut HashMap<String, Handle>,
        uid: String,
        desired: Desired,
    ) {
        self.spawn_with(workers, uid, desired, None)
    }

    fn spawn_with(
        self: &Arc<Self>,
        workers: &mut HashMap<String, Handle>,
        uid: String,
        desired: Desired,
        rejected: Option<Eviction>,
    ) {
        let (tx, mut rx) = watch::channel(desired);
        let wake = Arc::new(Notify::new());
        let eviction: SharedEviction = Default::default();
        eviction.lock().unwrap_or_else(|p| p.into_inner()).request = rejected;
        workers.insert(
            uid.clone(),
            Handle {
                desired: tx,
                wake: wake.clone(),
                eviction: eviction.clone(),
            },
        );
        let this = self.clone();
        tokio::spawn(async move {
            let mut worker = Worker::new(
                uid.clone(),
                NodeParts {
                    cri: this.cri.clone(),
                    cluster: this.cluster.clone(),
                    node: this.node.clone(),
                    runtime_name: this.runtime_name.clone(),
                    pod_cgroups: this.pod_cgroups.clone(),
                    allocations: this.allocations.clone(),
                },
                wake.clone(),
                eviction,
            );
            let metrics = crate::metrics::PodMetrics::global();
            // Upstream's sync types: the first sync creates, one after a change of the
            // desired pod updates, a periodic or woken one syncs, a deletion kills.
            let mut sync_type = "create";
            loop {
                let started = std::time::Instant::now();
                // The pass's copy of the pod, and the pass's own state (boxed: it is
                // large), live only while it runs; an idle worker holds neither.
                let next = {
                    let desired = rx.borrow_and_update().clone();
                    if matches!(desired, Desired::Gone(_))
                        || desired.pod().metadata.deletion_timestamp.is_some()
                    {
                        sync_type = "kill";
                    }
                    let span =
                        tracing::info_span!("pod", pod = %pod_name(desired.pod()), uid = %uid);
                    Box::pin(tracing::Instrument::instrument(worker.sync(&desired), span)).await
                };
                metrics
                    .pod_worker_duration
                    .with_label_values(&[sync_type])
                    .observe(started.elapsed().as_secs_f64());
                sync_type = "sync";
                let sleep = match next {
                    Next::Done => break,
                    Next::Idle => Duration::from_secs(3600),
                    Next::After(d) => d,
                };
                tokio::select! {
                    r = rx.changed() => {
                        if r.is_err() { break }
                        sync_type = "update";
                    }
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(sleep) => {}
                }
            }
            metrics.startup.forget(&uid);
            this.allocations.remove(&uid);
            lock(&this.finished).insert(uid.clone());
            lock(&this.workers).remove(&uid);
        });
    }

    fn wake(&self, uid: &str) {
        if let Some(h) = lock(&self.workers).get(uid) {
            h.wake.notify_one();
        }
    }

    /// Wakes workers when their pod's containers or sandboxes change state, from the
    /// runtime's event stream when it has one, and from a relist: every second without
    /// events, every ten seconds while the stream is up
    /// (events can be missed across a runtime restart). Runs forever.
    pub async fn watch_runtime(self: Arc<Self>) {
        let events = self.clone();
        tokio::spawn(async move { events.follow_events().await });
        let mut last: BTreeMap<String, Vec<(String, i32)>> = BTreeMap::new();
        let mut dirs_cleaned = false;
        let mut ticks: u32 = 0;
        let mut last_relist = None;
        let mut tick = tokio::time::interval(RELIST_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            ticks = ticks.wrapping_add(1);
            let events_up = self.events_up.load(std::sync::atomic::Ordering::Relaxed);
            if events_up && ticks % RELIST_WITH_EVENTS_EVERY != 0 {
                continue;
            }
            // The relist is this node's PLEG relist: upstream's relist metrics time it.
            let started = std::time::Instant::now();
            let listed = self.relist().await;
            let metrics = crate::metrics::PodMetrics::global();
            metrics.relisted(
                started.elapsed(),
                last_relist.map(|l: std::time::Instant| started.duration_since(l)),
            );
            last_relist = Some(started);
            let Ok(now) = listed else {
                continue;
            };
            for (uid, states) in &now {
                if last.get(uid) != Some(states) {
                    self.wake(uid);
                }
            }
            if *self.sources_synced.borrow() {
                self.collect_orphans(&now).await;
                self.clean_orphaned_cgroups();
                if !dirs_cleaned {
                    dirs_cleaned = true;
                    self.clean_orphaned_dirs();
                }
            }
            last = now;
        }
    }

    /// Pod UID → (object id, state) of its sandboxes and containers on this node.
    async fn relist(&self) -> Result<BTreeMap<String, Vec<(String, i32)>>, tonic::Status> {
        let mine = HashMap::from([(labels::NODE.to_string(), self.node.node_name.clone())]);
        let mut rt = self.cri.runtime.clone();
        let sandboxes = rt
            .list_pod_sandbox(api::ListPodSandboxRequest {
                filter: Some(api::PodSandboxFilter {
                    label_selector: mine.clone(),
                    ..Default::default()
                }),
            })
            .await?
            .into_inner()
            .items;
        let containers = rt
            .list_containers(api::ListContainersRequest {
                filter: Some(api::ContainerFilter {
                    label_selector: mine,
                    ..Default::default()
                }),
            })
            .await?
            .into_inner()
            .containers;
        let mut out: BTreeMap<String, Vec<(String, i32)>> = BTreeMap::new();
        for s in sandboxes {
            if let Some(uid) = s.labels.get(labels::POD_UID) {
                out.entry(uid.clone()).or_default().push((s.id, s.state));
            }
        }
        for c in containers {
            if let Some(uid) = c.labels.get(labels::POD_UID) {
                out.entry(uid.clone()).or_default().push((c.id, c.state));
            }
        }
        for v in out.values_mut() {
            v.sort();
        }
        Ok(out)
    }

    /// Pod directories (volumes) of pods no source knows and no worker runs, left by a
    /// crash between a pod's removal and its directory's: unmounted and removed, once,
    /// after every source has listed.
    fn clean_orphaned_dirs(&self) {
        let live: std::collections::BTreeSet<String> =
            lock(&self.workers).keys().cloned().collect();
        let layout = gantry_volumes::Layout::new(&self.node.volumes_root);
        if let Err(e) = gantry_volumes::clean_orphaned_pod_dirs(&layout, &live) {
            tracing::warn!(error = %e, "orphaned pod directories");
        }
    }

    /// Pod cgroups of pods no worker runs (left by a crash, or by a pod deleted while
    /// the agent was down), removed once nothing runs in them.
    fn clean_orphaned_cgroups(&self) {
        let Some(cgroups) = &self.pod_cgroups else {
            return;
        };
        let live: HashSet<String> = lock(&self.workers).keys().cloned().collect();
        for uid in cgroups.remove_orphans(&live) {
            tracing::info!(uid = %uid, "removed the cgroup of a pod the node no longer has");
        }
    }

    /// Pods in the runtime that no source knows: a worker told they are Gone.
    async fn collect_orphans(self: &Arc<Self>, seen: &BTreeMap<String, Vec<(String, i32)>>) {
        let unknown: Vec<String> = {
            let workers = lock(&self.workers);
            seen.keys()
                .filter(|uid| !workers.contains_key(*uid))
                .cloned()
                .collect()
        };
        for uid in unknown {
            let labels = self.labels_of(&uid).await;
            let mut pod = Pod::default();
            pod.metadata.uid = Some(uid.clone());
            pod.metadata.name = labels.get(labels::POD_NAME).cloned();
            pod.metadata.namespace = labels.get(labels::POD_NAMESPACE).cloned();
            pod.spec = Some(Default::default());
            tracing::info!(pod = %pod_name(&pod), uid = %uid, "no source has this pod: removing what the runtime has of it");
            lock(&self.finished).remove(&uid);
            let mut workers = lock(&self.workers);
            if !workers.contains_key(&uid) {
                self.spawn(&mut workers, uid, Desired::Gone(Box::new(pod)));
            }
        }
    }

    async fn labels_of(&self, uid: &str) -> HashMap<String, String> {
        let filter = HashMap::from([(labels::POD_UID.to_string(), uid.to_string())]);
        self.cri
            .runtime
            .clone()
            .list_pod_sandbox(api::ListPodSandboxRequest {
                filter: Some(api::PodSandboxFilter {
                    label_selector: filter,
                    ..Default::default()
                }),
            })
            .await
            .ok()
            .and_then(|r| r.into_inner().items.into_iter().next())
            .map(|s| s.labels)
            .unwrap_or_default()
    }

    /// Follows the runtime's container events (CRI GetContainerEvents), waking the
    /// pod's worker on each. Runtimes without them (containerd 1.6) answer
    /// Unimplemented: the relist alone then notices changes.
    async fn follow_events(self: Arc<Self>) {
        loop {
            let stream = self
                .cri
                .runtime
                .clone()
                .get_container_events(api::GetEventsRequest {})
                .await;
            match stream {
                Ok(s) => {
                    let mut s = s.into_inner();
                    self.events_up
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                    while let Some(Ok(ev)) = s.next().await {
                        if let Some(uid) = ev
                            .pod_sandbox_status
                            .as_ref()
                            .and_then(|p| p.metadata.as_ref())
                            .map(|m| m.uid.clone())
                        {
                            self.wake(&uid);
                        }
                    }
                    self.events_up
                        .store(false, std::sync::atomic::Ordering::Relaxed);
                }
                Err(e) if e.code() == tonic::Code::Unimplemented => {
                    tracing::info!("the runtime has no container events; relisting every second");
                    return;
                }
                Err(e) => tracing::debug!(error = %e.message(), "container events"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// The pod as a source shows it, for the pod startup SLI (upstream's
/// ObservedPodOnWatch). A pod without a start time is tracked from here (a static pod
/// shows no status, so it is tracked from its first sighting).
fn observe_startup(uid: &str, pod: &Pod) {
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref());
    let watched = crate::metrics::WatchedPod {
        uid,
        terminal: matches!(phase, Some("Succeeded" | "Failed")),
        has_start_time: status.and_then(|s| s.start_time.as_ref()).is_some(),
        all_running: status.is_some_and(crate::status::all_containers_running),
        host_network: pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false),
        created: pod
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| std::time::SystemTime::from(t.0)),
    };
    let metrics = crate::metrics::PodMetrics::global();
    if let Some((sli, total, first)) = metrics.startup.observed_on_watch(
        &watched,
        std::time::SystemTime::now(),
        std::time::Instant::now(),
    ) {
        metrics
            .pod_start_sli_duration
            .with_label_values(&[first])
            .observe(sli);
        metrics
            .pod_start_total_duration
            .with_label_values(&[first])
            .observe(total);
    }
}

/// Whether two versions of a pod ask the same of the node: spec, labels,
/// annotations and deletion.
fn same_intent(a: &Pod, b: &Pod) -> bool {
    a.spec == b.spec
        && a.metadata.labels == b.metadata.labels
        && a.metadata.annotations == b.metadata.annotations
        && a.metadata.deletion_timestamp == b.metadata.deletion_timestamp
        && a.metadata.deletion_grace_period_seconds == b.metadata.deletion_grace_period_seconds
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_only_update_asks_nothing_new() {
        let a = Pod {
            spec: Some(Default::default()),
            ..Default::default()
        };
        let mut b = a.clone();
        b.status = Some(k8s_openapi::api::core::v1::PodStatus {
            phase: Some("Running".into()),
            ..Default::default()
        });
        b.metadata.resource_version = Some("42".into());
        assert!(same_intent(&a, &b));
        b.metadata.deletion_grace_period_seconds = Some(30);
        assert!(!same_intent(&a, &b));
    }
}
