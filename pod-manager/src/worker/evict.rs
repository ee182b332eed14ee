//! Ending a pod on the node's behalf (upstream's killPodNow / TerminatePodAbnormally):
//! node-pressure eviction and admission rejection. The pod's containers are killed with
//! the given grace period, its sandbox stopped and its volumes torn down (so what they
//! held, a memory-backed emptyDir for one, goes back to the node), and its status becomes
//! Failed with the given reason and message, plus a condition (DisruptionTarget for an
//! eviction). The API object stays: the pod is not deleted, as upstream.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodCondition};

use super::{now, pod_name, Next, Worker};
use crate::cluster::Cluster;
use crate::runtime_state::PodRuntime;

/// What the node decided about a pod: stop it for good and say why.
#[derive(Clone, Debug, PartialEq)]
pub struct Eviction {
    /// status.reason ("Evicted").
    pub reason: String,
    /// status.message, and the Warning event's message.
    pub message: String,
    /// Grace period of the kill, in seconds.
    pub grace_seconds: i64,
    /// A condition to set on the pod (DisruptionTarget, reason TerminationByKubelet),
    /// its transition time filled in by the worker.
    pub condition: Option<PodCondition>,
}

/// Shared between the manager (which sets the request) and the pod's worker (which
/// carries it out and says when everything of the pod is stopped).
#[derive(Debug, Default)]
pub struct EvictionSlot {
    pub request: Option<Eviction>,
    /// The containers are stopped and the volumes torn down.
    pub done: bool,
    /// The Warning event was posted.
    announced: bool,
}

pub type SharedEviction = Arc<Mutex<EvictionSlot>>;

pub(crate) fn lock(slot: &SharedEviction) -> std::sync::MutexGuard<'_, EvictionSlot> {
    slot.lock().unwrap_or_else(|p| p.into_inner())
}

impl<C: Cluster> Worker<C> {
    /// Carries out `ev`: kill, stop the sandbox, tear down volumes, report Failed.
    pub(super) async fn evict(&mut self, pod: &Pod, rt: &PodRuntime, ev: &Eviction) -> Next {
        let announce = {
            let mut slot = lock(&self.eviction);
            if slot.done {
                // Stopped and reported; the status manager keeps the report until it
                // is posted.
                return Next::Idle;
            }
            !std::mem::replace(&mut slot.announced, true)
        };
        if announce {
            tracing::info!(pod = %pod_name(pod), reason = %ev.reason, "{}", ev.message);
            self.cluster
                .event(pod, None, "Warning", &ev.reason, &ev.message);
        }
        if let Err(why) = self.stop_pod(pod, rt, ev.grace_seconds).await {
            tracing::warn!(pod = %pod_name(pod), error = %why, "stop an evicted pod; retrying");
            return Next::After(Duration::from_secs(1));
        }
        let after = PodRuntime::read(&self.cri, &self.uid, &self.node.node_name)
            .await
            .unwrap_or_default();
        let mut status = self.status(pod, &after, true);
        status.phase = Some("Failed".to_string());
        status.reason = Some(ev.reason.clone());
        status.message = Some(ev.message.clone());
        if let Some(wanted) = &ev.condition {
            let conditions = status.conditions.get_or_insert_with(Vec::new);
            let mut c = wanted.clone();
            c.last_transition_time = Some(crate::status::transition_time(conditions, &c, &now()));
            c.observed_generation = pod.metadata.generation;
            conditions.retain(|o| o.type_ != c.type_);
            conditions.push(c);
        }
        self.cluster.report_status(pod, status);
        lock(&self.eviction).done = true;
        Next::Idle
    }
}
