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
        if let Err(why) = self.stop_pod(pod, rt, grace).await {
            tracing::warn!(pod = %pod_name(pod), error = %why, "stop the pod; retrying");
            return Next::After(Duration::from_secs(2));
        }
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

    /// Stops the pod: app containers first, then sidecars, each group concurrently with
    /// `grace` seconds each (Killing events, preStop hooks); then its sandboxes; then its
    /// volumes, so what they hold goes back to the node. Shared by deletion and by
    /// eviction, which keeps the API object.
    pub(super) async fn stop_pod(
        &mut self,
        pod: &Pod,
        rt: &PodRuntime,
        grace: i64,
    ) -> Result<(), String> {
        // preStop httpGet hooks without a host go to the pod's IP, from the runtime: a
        // worker may stop a pod it never ran (after an agent restart).
        if let Some(sandbox) = rt.ready_sandbox() {
            self.pod_ip = super::first_pod_ip(pod, sandbox, &self.node);
        }
        let running = |sidecars: bool| {
            rt.containers
                .iter()
                .filter(|c| c.state == ContainerState::Running)
                .filter(|c| self.is_sidecar(pod, &c.name) == sidecars)
                .cloned()
                .collect::<Vec<_>>()
        };
        for group in [running(false), running(true)] {
            for c in &group {
                self.probes.forget(&c.id);
            }
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
            for r in futures::future::join_all(stops).await {
                r.map_err(|e| format!("stop container: {}", e.message()))?;
            }
        }
        self.stop_sandboxes(rt).await;
        // As upstream, the pod's volumes go once its containers have stopped, and a
        // deleted pod leaves the API only when its resources on the node are reclaimed.
        let layout = gantry_volumes::Layout::new(&self.node.volumes_root);
        gantry_volumes::remove_pod_dir(&layout, &self.uid)
            .map_err(|e| format!("remove the pod's volumes: {e}"))?;
        self.volumes.forget();
        Ok(())
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
