//! Garbage collection of a running pod's dead containers and sandboxes, as upstream's
//! container GC with its defaults (MaxPerPodContainer 1): per container name, the
//! newest exited attempt stays (for `kubectl logs --previous` and lastState) and older
//! exited attempts go; sandboxes that are neither the newest nor hold a container go.

use gantry_cri::api;

use super::Worker;
use crate::cluster::Cluster;
use crate::runtime_state::PodRuntime;
use crate::status::{ContainerState, ContainerView};

impl<C: Cluster> Worker<C> {
    pub(super) async fn collect_dead(&self, rt: &PodRuntime) {
        let mut runtime = self.cri.runtime.clone();
        for c in dead_containers(&rt.containers) {
            tracing::debug!(container = %c.name, id = %c.id, attempt = c.attempt, "removing a dead container");
            if let Err(e) = runtime
                .remove_container(api::RemoveContainerRequest {
                    container_id: c.id.clone(),
                })
                .await
            {
                tracing::warn!(container = %c.id, error = %e.message(), "remove dead container");
            }
        }
        let newest = rt.sandboxes.first().map(|s| s.id.as_str());
        for s in rt.sandboxes.iter().filter(|s| !s.ready) {
            let used = rt.containers.iter().any(|c| c.sandbox_id == s.id);
            if Some(s.id.as_str()) == newest || used {
                continue;
            }
            if let Err(e) = runtime
                .remove_pod_sandbox(api::RemovePodSandboxRequest {
                    pod_sandbox_id: s.id.clone(),
                })
                .await
            {
                tracing::warn!(sandbox = %s.id, error = %e.message(), "remove dead sandbox");
            }
        }
    }
}

/// Exited containers to remove: all but the newest exited attempt of each name
/// (`containers` is newest first).
fn dead_containers(containers: &[ContainerView]) -> Vec<&ContainerView> {
    let mut kept = std::collections::HashSet::new();
    containers
        .iter()
        .filter(|c| c.state == ContainerState::Exited)
        .filter(|c| !kept.insert(c.name.as_str()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &str, attempt: u32, state: ContainerState) -> ContainerView {
        ContainerView {
            name: name.to_string(),
            id: format!("{name}-{attempt}"),
            attempt,
            state,
            ..Default::default()
        }
    }

    #[test]
    fn only_the_newest_exited_attempt_of_each_container_is_kept() {
        use ContainerState::*;
        let containers = [
            c("app", 3, Running),
            c("app", 2, Exited),
            c("app", 1, Exited),
            c("app", 0, Exited),
            c("init", 0, Exited),
            c("side", 1, Exited),
            c("side", 0, Exited),
        ];
        let gone: Vec<_> = dead_containers(&containers)
            .iter()
            .map(|c| c.id.clone())
            .collect();
        assert_eq!(gone, ["app-1", "app-0", "side-0"]);
    }
}
