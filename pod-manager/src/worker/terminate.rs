//! Graceful termination of a pod and removal of everything the runtime has of it.

use std::time::Duration;

use gantry_cri::api;
use k8s_openapi::api::core::v1::Pod;

use super::{field_path, pod_name, Desired, Next, Worker};
use crate::cluster::Cluster;
use crate::labels;
use crate::runtime_state::PodRuntime;
use crate::status::ContainerState;

impl<C: Cluster> Worker<C> {
    /// Graceful termination: app containers first, then sidecars, each given the
    /// grace period; then the sandbox. With the pod's API object still there, the final
    /// status is posted and the object deleted; then everything is removed.
    pub(super) async fn terminate(&mut self, desired: &Desired, rt: &PodRuntime) -> Next {
        let pod = desired.pod();
        let grace = pod
            .metadata
            .deletion_grace_period_seconds
            .unwrap_or_else(|| super::termination_grace(pod))
            .max(0);
        let running = |kind: &str| {
            rt.containers
                .iter()
                .filter(|c| c.state == ContainerState::Running)
                .filter(|c| {
                    let is_sidecar = self.is_sidecar(pod, &c.name);
                    if kind == "sidecar" {
                        is_sidecar
                    } else {
                        !is_sidecar
                    }
                })
                .cloned()
                .collect::<Vec<_>>()
        };
        for group in [running("app"), running("sidecar")] {
            let stops = group.iter().map(|c| {
                self.cluster.event(
                    pod,
                    Some(field_path(pod, &c.name)),
                    "Normal",
                    "Killing",
                    &format!("Stopping container {}", c.name),
                );
                let spec = super::all_containers(pod).find(|s| s.name == c.name);
                self.kill_container(pod, spec, &c.id, grace)
            });
            // Stops run concurrently: each container gets the whole grace period.
            for r in futures::future::join_all(stops).await {
                if let Err(e) = r {
                    tracing::warn!(pod = %pod_name(pod), error = %e.message(), "stop container");
                    return Next::After(Duration::from_secs(2));
                }
            }
        }
        self.stop_sandboxes(rt).await;
        // The pod's volumes go once its containers have stopped, and before the API
        // object does: as upstream, a deleted pod is gone from the API only when its
        // resources on the node are reclaimed.
        let layout = gantry_volumes::Layout::new(&self.node.volumes_root);
        if let Err(e) = gantry_volumes::remove_pod_dir(&layout, &self.uid) {
            tracing::warn!(pod = %pod_name(pod), error = %e, "remove the pod's volumes; retrying");
            return Next::After(Duration::from_secs(5));
        }
        self.volumes.forget();
        if let Desired::Pod(_) = desired {
            let after = PodRuntime::read(&self.cri, &self.uid, &self.node.node_name)
                .await
                .unwrap_or_default();
            // As upstream since 1.27: a deleted pod ends in a terminal phase.
            let status = self.status(pod, &after, true);
            self.cluster.report_status(pod, status);
            self.cluster.pod_terminated(pod).await;
        }
        self.remove_all(pod, rt).await;
        // The pod cgroup goes last, once nothing of the pod runs in it; if something
        // still does, the manager's orphan sweep removes it when it is empty.
        if let Some(cgroups) = &self.pod_cgroups {
            if let Err(e) = cgroups.remove(&self.uid) {
                tracing::warn!(pod = %pod_name(pod), error = %e, "remove the pod's cgroup");
            }
        }
        Next::Done
    }

    pub(super) fn is_sidecar(&self, pod: &Pod, name: &str) -> bool {
        pod.spec
            .as_ref()
            .and_then(|s| s.init_containers.as_ref())
            .into_iter()
            .flatten()
            .any(|c| c.name == name && c.restart_policy.as_deref() == Some("Always"))
    }

    pub(super) async fn stop_container(&self, id: &str, grace: i64) -> Result<(), tonic::Status> {
        match self
            .cri
            .runtime
            .clone()
            .stop_container(api::StopContainerRequest {
                container_id: id.to_string(),
                timeout: grace,
            })
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code() == tonic::Code::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub(super) async fn stop_sandboxes(&self, rt: &PodRuntime) {
        for s in rt.sandboxes.iter().filter(|s| s.ready) {
            if let Err(e) = self
                .cri
                .runtime
                .clone()
                .stop_pod_sandbox(api::StopPodSandboxRequest {
                    pod_sandbox_id: s.id.clone(),
                })
                .await
            {
                tracing::warn!(sandbox = %s.id, error = %e.message(), "stop sandbox");
            }
        }
    }

    /// Removes every container and sandbox of the pod and its log directory.
    pub(super) async fn remove_all(&self, pod: &Pod, rt: &PodRuntime) {
        let mut cri = self.cri.runtime.clone();
        for c in &rt.containers {
            let _ = cri
                .remove_container(api::RemoveContainerRequest {
                    container_id: c.id.clone(),
                })
                .await;
        }
        for s in &rt.sandboxes {
            let _ = cri
                .remove_pod_sandbox(api::RemovePodSandboxRequest {
                    pod_sandbox_id: s.id.clone(),
                })
                .await;
        }
        let dir = labels::pod_log_dir(
            &self.node.pod_logs_dir,
            pod.metadata.namespace.as_deref().unwrap_or(""),
            pod.metadata.name.as_deref().unwrap_or(""),
            &self.uid,
        );
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %dir, error = %e, "remove the pod's log directory");
            }
        }
    }
}
