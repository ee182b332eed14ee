//! What a pod worker needs from the cluster side, implemented by the kubelet: the API
//! objects a pod references, status and event reporting, and the final deletion of a
//! pod's API object. Pod workers never call the API server themselves.

use std::future::Future;

use gantry_cri::api::AuthConfig;
use k8s_openapi::api::core::v1::{Pod, PodStatus};

use crate::spec::{EnvSources, Referenced};

pub trait Cluster: Send + Sync + 'static {
    /// The configMaps, secrets and services `pod`'s env needs. An error is a failure
    /// to ask (API down), not a missing object (that is `None` in the sources).
    fn env_sources(
        &self,
        pod: &Pod,
        referenced: &Referenced,
    ) -> impl Future<Output = Result<EnvSources, String>> + Send;

    /// Registry credentials from the pod's imagePullSecrets that apply to `image`.
    fn pull_credentials(
        &self,
        pod: &Pod,
        image: &str,
    ) -> impl Future<Output = Vec<AuthConfig>> + Send;

    /// The pod's status changed; the implementation posts it when it differs from the
    /// last one posted.
    fn report_status(&self, pod: &Pod, status: PodStatus);

    /// An event about the pod (field_path names a container: `spec.containers{name}`).
    fn event(
        &self,
        pod: &Pod,
        field_path: Option<String>,
        type_: &str,
        reason: &str,
        message: &str,
    );

    /// Every container of the pod is gone: finish its deletion in the API (a delete
    /// with grace period 0, guarded by the pod's UID).
    fn pod_terminated(&self, pod: &Pod) -> impl Future<Output = ()> + Send;
}
