//! The API pod source: a watch on the pods bound to this node (field selector
//! spec.nodeName), resuming after errors with a relist, as the upstream kubelet's
//! reflector does. Mirror pods (the API's copies of static pods) are not run: their
//! static pod is.

use std::collections::HashMap;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use gantry_pod_manager::cluster::Cluster;
use gantry_pod_manager::manager::PodManager;
use gantry_pod_manager::worker::pod_name;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::{self, Event};
use kube::Api;

use crate::bootstrap::ClientHandle;

/// The source name the pod manager knows this one by.
pub const SOURCE: &str = "api";

/// How long the apiserver keeps one watch open (below the client's read timeout).
const WATCH_TIMEOUT_SECS: u32 = 50;

pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

pub fn is_mirror(pod: &Pod) -> bool {
    mirror_hash(pod).is_some()
}

/// The static pod hash a mirror pod was made from (its mirror annotation).
pub fn mirror_hash(pod: &Pod) -> Option<&String> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(MIRROR_ANNOTATION))
}

/// The node's mirror pods as the watch last saw them, by namespace and name (None
/// until it has listed): the static pod source keeps them from this, as upstream's
/// kubelet does from its pod informer, without asking the API.
#[derive(Default)]
pub struct MirrorPods(std::sync::Mutex<Option<HashMap<(String, String), Pod>>>);

impl MirrorPods {
    pub fn snapshot(&self) -> Option<HashMap<(String, String), Pod>> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<HashMap<(String, String), Pod>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn key(pod: &Pod) -> (String, String) {
        let m = &pod.metadata;
        (
            m.namespace.clone().unwrap_or_default(),
            m.name.clone().unwrap_or_default(),
        )
    }

    fn listed<'a>(&self, pods: impl Iterator<Item = &'a Pod>) {
        let mirrors = pods
            .filter(|p| is_mirror(p))
            .map(|p| (Self::key(p), p.clone()))
            .collect();
        *self.lock() = Some(mirrors);
    }

    fn applied(&self, pod: &Pod) {
        if let Some(mirrors) = self.lock().as_mut() {
            if is_mirror(pod) {
                mirrors.insert(Self::key(pod), pod.clone());
            } else {
                mirrors.remove(&Self::key(pod));
            }
        }
    }

    fn deleted(&self, pod: &Pod) {
        if let Some(mirrors) = self.lock().as_mut() {
            mirrors.remove(&Self::key(pod));
        }
    }
}

/// Feeds the manager with the node's pods, and `mirrors` with its mirror pods, until
/// the task is dropped.
pub async fn watch_api<C: Cluster>(
    client: ClientHandle,
    node: String,
    manager: Arc<PodManager<C>>,
    mirrors: Arc<MirrorPods>,
) {
    let mut known: HashMap<String, Pod> = HashMap::new();
    loop {
        let pods: Api<Pod> = Api::all(client.get());
        // The apiserver ends each watch after 50 s, before the client's 60 s read
        // timeout would call a quiet watch failed: the watcher then resumes from the
        // last resourceVersion instead of listing every pod again.
        let config = watcher::Config::default()
            .fields(&format!("spec.nodeName={node}"))
            .timeout(WATCH_TIMEOUT_SECS);
        // managedFields are the apiserver's bookkeeping of who set which field; the
        // node never reads them, and they are often the larger part of a pod.
        let mut stream = watcher::watcher(pods, config)
            .map_ok(|e| e.modify(|p| p.metadata.managed_fields = None))
            .boxed();
        let mut listing: Option<HashMap<String, Pod>> = None;
        while let Some(event) = stream.next().await {
            match event {
                Ok(Event::Init) => listing = Some(HashMap::new()),
                Ok(Event::InitApply(pod)) => {
                    if let (Some(l), Some(uid)) = (listing.as_mut(), pod.metadata.uid.clone()) {
                        l.insert(uid, pod);
                    }
                }
                Ok(Event::InitDone) => {
                    let listed = listing.take().unwrap_or_default();
                    tracing::info!(pods = listed.len(), "listed the node's pods");
                    // Pods deleted while the watch was down.
                    for (uid, pod) in known.drain() {
                        if !listed.contains_key(&uid) && !is_mirror(&pod) {
                            manager.remove(pod);
                        }
                    }
                    for pod in listed.values() {
                        if !is_mirror(pod) {
                            manager.update(pod.clone());
                        }
                    }
                    mirrors.listed(listed.values());
                    known = listed;
                    manager.sources_synced(SOURCE);
                }
                Ok(Event::Apply(pod)) => {
                    tracing::debug!(pod = %pod_name(&pod), "pod added or changed");
                    mirrors.applied(&pod);
                    if let Some(uid) = pod.metadata.uid.clone() {
                        if !is_mirror(&pod) {
                            manager.update(pod.clone());
                        }
                        known.insert(uid, pod);
                    }
                }
                Ok(Event::Delete(pod)) => {
                    tracing::debug!(pod = %pod_name(&pod), "pod deleted");
                    mirrors.deleted(&pod);
                    if let Some(uid) = &pod.metadata.uid {
                        known.remove(uid);
                    }
                    if !is_mirror(&pod) {
                        manager.remove(pod);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "watch of the node's pods failed; resuming");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    // The watcher relists by itself on the next poll; a fresh client
                    // picks up a rotated certificate.
                    break;
                }
            }
        }
    }
}
