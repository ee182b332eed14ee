//! What a pod worker needs from the cluster side, implemented by the kubelet: the API
//! objects a pod references, status and event reporting, and the final deletion of a
//! pod's API object. Pod workers never call the API server themselves.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

use gantry_cri::api::AuthConfig;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolume, Pod, PodStatus, Secret};

use crate::spec::{EnvSources, Referenced};

pub trait Cluster: Send + Sync + 'static {
    /// The configMaps, secrets and services `pod`'s env needs. An error is a failure
    /// to ask (API down), not a missing object (that is `None` in the sources).
    fn env_sources(
        &self,
        pod: &Pod,
        referenced: &Referenced,
    ) -> impl Future<Output = Result<EnvSources, String>> + Send;

    /// The objects and service account tokens the pod's volumes reference (see
    /// [`VolumeRefs`]). An error is a failure to ask; a missing object is absent from
    /// the maps, and a claim or token that cannot be had carries its reason.
    fn volume_sources(
        &self,
        pod: &Pod,
        wanted: &VolumeRefs,
    ) -> impl Future<Output = Result<VolumeSources, String>> + Send;

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

/// What a pod's volumes reference in the API, in the pod's namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VolumeRefs {
    pub config_maps: BTreeSet<String>,
    pub secrets: BTreeSet<String>,
    /// PersistentVolumeClaims by name.
    pub claims: BTreeSet<String>,
    /// Tokens of the pod's service account (projected serviceAccountToken sources).
    pub tokens: BTreeSet<TokenWanted>,
}

impl VolumeRefs {
    pub fn is_empty(&self) -> bool {
        self.config_maps.is_empty()
            && self.secrets.is_empty()
            && self.claims.is_empty()
            && self.tokens.is_empty()
    }
}

/// A service account token bound to the pod, as a projected volume asks for it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TokenWanted {
    /// Empty: the API server's own audiences.
    pub audience: String,
    pub expiration_seconds: i64,
}

/// The answers to [`VolumeRefs`].
#[derive(Clone, Debug, Default)]
pub struct VolumeSources {
    /// Those that exist; a name that is absent was not found.
    pub config_maps: BTreeMap<String, ConfigMap>,
    pub secrets: BTreeMap<String, Secret>,
    /// The PersistentVolume each claim is bound to, or why it cannot be used (not
    /// found, not bound).
    pub claims: BTreeMap<String, Result<PersistentVolume, String>>,
    /// The token, or why the TokenRequest failed.
    pub tokens: BTreeMap<TokenWanted, Result<Vec<u8>, String>>,
}
