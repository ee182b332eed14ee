//! From the names in a request path to what they stand for: the pod among the node's
//! pods, and its sandbox and containers in the CRI runtime, found by the labels the
//! kubelet puts on them (io.kubernetes.pod.namespace / .name / .uid,
//! io.kubernetes.container.name) so any CRI runtime answers the same way.

use std::collections::HashMap;

use gantry_cri::api;
use gantry_pod_manager::labels;
use k8s_openapi::api::core::v1::Pod;

use super::reply::ApiError;
use super::Backend;

/// A pod named by a request, as far as it is known.
#[derive(Clone, Debug)]
pub struct PodTarget {
    pub namespace: String,
    pub name: String,
    /// The pod's UID when the request or the pod list gives one: the runtime objects
    /// of an older pod with the same name do not count.
    pub uid: Option<String>,
    /// The pod object, when the node's pod list has it.
    pub pod: Option<Pod>,
}

impl PodTarget {
    /// Looks the pod up among the node's pods. A UID in the path must match it, as
    /// upstream's port-forward handler checks ("pod not found" otherwise).
    pub fn lookup(
        backend: &Backend,
        namespace: &str,
        name: &str,
        uid: Option<&str>,
    ) -> Result<PodTarget, ApiError> {
        let pod = (backend.pods)().into_iter().find(|p| {
            p.metadata.namespace.as_deref() == Some(namespace)
                && p.metadata.name.as_deref() == Some(name)
        });
        let pod_uid = pod.as_ref().and_then(|p| p.metadata.uid.clone());
        if let (Some(want), Some(have)) = (uid, pod_uid.as_deref()) {
            if want != have {
                return Err(ApiError::NotFound("pod not found".into()));
            }
        }
        Ok(PodTarget {
            namespace: namespace.to_string(),
            name: name.to_string(),
            uid: uid.map(str::to_string).or(pod_uid),
            pod,
        })
    }

    fn selector(&self) -> HashMap<String, String> {
        let mut s = HashMap::from([
            (labels::POD_NAMESPACE.to_string(), self.namespace.clone()),
            (labels::POD_NAME.to_string(), self.name.clone()),
        ]);
        if let Some(uid) = &self.uid {
            s.insert(labels::POD_UID.to_string(), uid.clone());
        }
        s
    }

    /// Whether the pod's spec names `container` (app, init or ephemeral); None when
    /// the pod object is not known.
    pub fn spec_has_container(&self, container: &str) -> Option<bool> {
        let spec = self.pod.as_ref()?.spec.as_ref()?;
        let named = |n: &String| n == container;
        Some(
            spec.containers.iter().any(|c| named(&c.name))
                || spec
                    .init_containers
                    .iter()
                    .flatten()
                    .any(|c| named(&c.name))
                || spec
                    .ephemeral_containers
                    .iter()
                    .flatten()
                    .any(|c| named(&c.name)),
        )
    }

    /// The waiting reason the pod's status gives for `container`, if it is waiting.
    pub fn waiting_reason(&self, container: &str) -> Option<String> {
        let status = self.pod.as_ref()?.status.as_ref()?;
        [
            &status.container_statuses,
            &status.init_container_statuses,
            &status.ephemeral_container_statuses,
        ]
        .into_iter()
        .flatten()
        .flatten()
        .find(|s| s.name == container)?
        .state
        .as_ref()?
        .waiting
        .as_ref()
        .map(|w| w.reason.clone().unwrap_or_default())
    }

    /// The pod's sandboxes, the ready ones first, then the newest.
    pub async fn sandboxes(&self, backend: &Backend) -> Result<Vec<api::PodSandbox>, ApiError> {
        let mut items = backend
            .cri_calls()
            .list_pod_sandbox(Some(api::PodSandboxFilter {
                label_selector: self.selector(),
                ..Default::default()
            }))
            .await
            .map_err(|e| {
                ApiError::from_cri(&format!("list the sandboxes of pod {:?}", self.name), &e)
            })?;
        let ready = api::PodSandboxState::SandboxReady as i32;
        items.sort_by_key(|s| (s.state != ready, std::cmp::Reverse(s.created_at)));
        Ok(items)
    }

    /// The runtime's containers of this pod named `container`, newest first: highest
    /// restart attempt, then latest created (the order upstream's pod status builds
    /// from the same list).
    pub async fn containers(
        &self,
        backend: &Backend,
        container: &str,
    ) -> Result<Vec<api::Container>, ApiError> {
        let mut selector = self.selector();
        selector.insert(labels::CONTAINER_NAME.to_string(), container.to_string());
        let mut items = backend
            .cri_calls()
            .list_containers(Some(api::ContainerFilter {
                label_selector: selector,
                ..Default::default()
            }))
            .await
            .map_err(|e| {
                ApiError::from_cri(&format!("list the containers of pod {:?}", self.name), &e)
            })?;
        newest_first(&mut items);
        Ok(items)
    }

    /// Whether the pod exists: in the node's pod list or, failing that, as a sandbox
    /// in the runtime.
    pub async fn exists(&self, backend: &Backend) -> Result<bool, ApiError> {
        Ok(self.pod.is_some() || !self.sandboxes(backend).await?.is_empty())
    }
}

pub fn newest_first(items: &mut [api::Container]) {
    items.sort_by_key(|c| {
        let attempt = c.metadata.as_ref().map_or(0, |m| m.attempt);
        std::cmp::Reverse((attempt, c.created_at))
    });
}

pub fn is_running(state: i32) -> bool {
    state == api::ContainerState::ContainerRunning as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: &str, attempt: u32, created_at: i64) -> api::Container {
        api::Container {
            id: id.into(),
            metadata: Some(api::ContainerMetadata {
                name: "c".into(),
                attempt,
            }),
            created_at,
            ..Default::default()
        }
    }

    #[test]
    fn newest_is_highest_attempt_then_latest_created() {
        let mut v = vec![c("a", 0, 5), c("b", 2, 1), c("c", 1, 9), c("d", 2, 3)];
        newest_first(&mut v);
        let ids: Vec<_> = v.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["d", "b", "c", "a"]);
    }
}
