//! The API side of the pod workers (`gantry_pod_manager::cluster::Cluster`): the
//! objects a pod's env references, registry credentials from imagePullSecrets, events,
//! and the status manager, which posts a pod's status when it changed (as upstream's
//! status manager: a patch of /status guarded by the pod's UID) and deletes the API
//! object once the pod's containers are gone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use gantry_cri::api::AuthConfig;
use gantry_pod_manager::cluster::{Cluster, VolumeRefs, VolumeSources};
use gantry_pod_manager::spec::{EnvSources, Referenced};
use k8s_openapi::api::core::v1::{ObjectReference, Pod, PodStatus, Secret, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use tokio::sync::Notify;

use crate::bootstrap::ClientHandle;
use crate::events::Recorder;
use crate::rate_limit::RateLimiter;
use crate::static_pods::is_static;
use crate::volume_sources::{self, Caches};

pub struct ApiCluster {
    client: ClientHandle,
    limiter: Arc<RateLimiter>,
    events: Recorder,
    statuses: Mutex<HashMap<String, Pending>>,
    posted: Mutex<HashMap<String, PodStatus>>,
    wake: Notify,
    caches: Caches,
}

/// A status waiting to be posted.
struct Pending {
    namespace: String,
    name: String,
    status: PodStatus,
    /// Static pods post to their mirror pod, whose UID differs.
    mirror: bool,
}

impl ApiCluster {
    pub fn new(
        client: ClientHandle,
        events: Recorder,
        limiter: Arc<RateLimiter>,
    ) -> Arc<ApiCluster> {
        Arc::new(ApiCluster {
            client,
            limiter,
            events,
            statuses: Mutex::new(HashMap::new()),
            posted: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            caches: Caches::default(),
        })
    }

    /// Posts pending statuses, one pod at a time; runs forever.
    pub async fn post_statuses(self: Arc<Self>) {
        loop {
            self.wake.notified().await;
            let pending: Vec<(String, Pending)> = lock(&self.statuses).drain().collect();
            for (uid, p) in pending {
                if let Err(e) = self.post(&uid, &p).await {
                    tracing::warn!(pod = %format!("{}/{}", p.namespace, p.name), error = %e, "post pod status; retrying");
                    // Keep it unless a newer one arrived meanwhile.
                    lock(&self.statuses).entry(uid).or_insert(p);
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    self.wake.notify_one();
                }
            }
        }
    }

    async fn post(&self, uid: &str, p: &Pending) -> Result<(), kube::Error> {
        if lock(&self.posted).get(uid) == Some(&p.status) {
            return Ok(());
        }
        self.limiter.acquire().await;
        let pods: Api<Pod> = Api::namespaced(self.client.get(), &p.namespace);
        let mut patch = serde_json::json!({ "status": p.status });
        if !p.mirror {
            // The UID in the patch is a precondition: a pod re-created under the same
            // name never gets this one's status.
            patch["metadata"] = serde_json::json!({ "uid": uid });
        }
        // A JSON merge patch: lists (podIPs, conditions, container statuses) are
        // replaced whole. A strategic merge would merge podIPs by address and keep
        // the old sandbox's IP next to the new one's.
        match pods
            .patch_status(&p.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            // Gone (deleted, or UID mismatch): nothing to post to.
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            // Refused as invalid: posting it again cannot help; the next change will
            // be posted.
            Err(kube::Error::Api(e)) if e.code == 422 => {
                tracing::error!(pod = %format!("{}/{}", p.namespace, p.name), error = %e.message, "the API server refused the pod's status");
            }
            Err(e) => return Err(e),
        }
        lock(&self.posted).insert(uid.to_string(), p.status.clone());
        Ok(())
    }
}

impl Cluster for ApiCluster {
    async fn env_sources(&self, pod: &Pod, referenced: &Referenced) -> Result<EnvSources, String> {
        // Reads share the node's API budget with writes (upstream's kubeAPIQPS covers all).
        self.limiter.acquire().await;
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let client = self.client.get();
        let mut sources = EnvSources::default();
        // Through the same TTL cache as volumes: the pods of a namespace share their
        // objects, as upstream's configMap and secret managers serve env and volumes.
        for name in &referenced.config_maps {
            let cm = self
                .caches
                .config_maps
                .get(&client, &ns, name)
                .await
                .map_err(|e| format!("get configmap {ns}/{name}: {e}"))?;
            sources.config_maps.insert(name.clone(), cm);
        }
        for name in &referenced.secrets {
            let s = self
                .caches
                .secrets
                .get(&client, &ns, name)
                .await
                .map_err(|e| format!("get secret {ns}/{name}: {e}"))?;
            sources.secrets.insert(name.clone(), s);
        }
        // Service environment variables: the pod's namespace (unless
        // enableServiceLinks is false) and the master service in default.
        let links = pod
            .spec
            .as_ref()
            .and_then(|s| s.enable_service_links)
            .unwrap_or(true);
        let mut namespaces = vec!["default".to_string()];
        if links && ns != "default" {
            namespaces.push(ns.clone());
        }
        for n in namespaces {
            let svcs: Api<Service> = Api::namespaced(client.clone(), &n);
            let list = svcs
                .list(&ListParams::default())
                .await
                .map_err(|e| format!("list services in {n}: {e}"))?;
            sources.services.extend(list.items);
        }
        Ok(sources)
    }

    async fn volume_sources(
        &self,
        pod: &Pod,
        wanted: &VolumeRefs,
    ) -> Result<VolumeSources, String> {
        self.limiter.acquire().await;
        volume_sources::fetch(&self.client.get(), &self.caches, pod, wanted).await
    }

    async fn pull_credentials(&self, pod: &Pod, image: &str) -> Vec<AuthConfig> {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let names: Vec<String> = pod
            .spec
            .as_ref()
            .and_then(|s| s.image_pull_secrets.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|r| r.name)
            .collect();
        if names.is_empty() {
            return Vec::new();
        }
        let secrets: Api<Secret> = Api::namespaced(self.client.get(), &ns);
        let host = registry_host(image);
        let mut out = Vec::new();
        for name in names {
            let Ok(Some(secret)) = secrets.get_opt(&name).await else {
                // Upstream pulls anyway and warns; so do we.
                tracing::warn!(secret = %name, "imagePullSecret not found");
                continue;
            };
            out.extend(docker_auths(&secret, &host));
        }
        out
    }

    fn report_status(&self, pod: &Pod, status: PodStatus) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        let mirror = is_static(pod);
        lock(&self.statuses).insert(
            uid,
            Pending {
                namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                name: pod.metadata.name.clone().unwrap_or_default(),
                status,
                mirror,
            },
        );
        self.wake.notify_one();
    }

    fn event(
        &self,
        pod: &Pod,
        field_path: Option<String>,
        type_: &str,
        reason: &str,
        message: &str,
    ) {
        let object = ObjectReference {
            api_version: Some("v1".to_string()),
            kind: Some("Pod".to_string()),
            name: pod.metadata.name.clone(),
            namespace: pod.metadata.namespace.clone(),
            uid: pod.metadata.uid.clone(),
            field_path,
            ..Default::default()
        };
        self.events.record(object, type_, reason, message);
    }

    async fn pod_terminated(&self, pod: &Pod) {
        let (Some(uid), Some(name), Some(ns)) = (
            pod.metadata.uid.clone(),
            pod.metadata.name.clone(),
            pod.metadata.namespace.clone(),
        ) else {
            return;
        };
        self.caches.tokens.forget_pod(&uid);
        if is_static(pod) {
            return;
        }
        // The final status first, then the object goes.
        let pending = lock(&self.statuses).remove(&uid);
        if let Some(p) = pending {
            if let Err(e) = self.post(&uid, &p).await {
                tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "post the final status");
            }
        }
        let pods: Api<Pod> = Api::namespaced(self.client.get(), &ns);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        for _ in 0..5 {
            match pods.delete(&name, &params).await {
                Ok(_) => break,
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => break,
                Err(e) => {
                    tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "delete the terminated pod; retrying");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
        lock(&self.posted).remove(&uid);
    }
}

/// The cluster side of standalone mode: no API server. Pods reference nothing that
/// exists (a configMap or secret in env is missing), statuses and events go to the
/// log.
pub struct LocalCluster;

impl Cluster for LocalCluster {
    async fn env_sources(&self, _pod: &Pod, referenced: &Referenced) -> Result<EnvSources, String> {
        let mut sources = EnvSources::default();
        for name in &referenced.config_maps {
            sources.config_maps.insert(name.clone(), None);
        }
        for name in &referenced.secrets {
            sources.secrets.insert(name.clone(), None);
        }
        Ok(sources)
    }

    async fn volume_sources(
        &self,
        _pod: &Pod,
        wanted: &VolumeRefs,
    ) -> Result<VolumeSources, String> {
        // Nothing exists; claims and tokens cannot be had without an API server.
        let mut sources = VolumeSources::default();
        for claim in &wanted.claims {
            sources.claims.insert(
                claim.clone(),
                Err(format!(
                    "persistentvolumeclaim {claim:?}: no API server in standalone mode"
                )),
            );
        }
        for t in &wanted.tokens {
            sources.tokens.insert(
                t.clone(),
                Err("failed to fetch token: no API server in standalone mode".to_string()),
            );
        }
        Ok(sources)
    }

    async fn pull_credentials(&self, _pod: &Pod, _image: &str) -> Vec<AuthConfig> {
        Vec::new()
    }

    fn report_status(&self, pod: &Pod, status: PodStatus) {
        tracing::debug!(pod = %pod.metadata.name.as_deref().unwrap_or(""), phase = ?status.phase, "pod status");
    }

    fn event(
        &self,
        pod: &Pod,
        field_path: Option<String>,
        type_: &str,
        reason: &str,
        message: &str,
    ) {
        tracing::info!(pod = %pod.metadata.name.as_deref().unwrap_or(""), field = ?field_path, %type_, %reason, "{message}");
    }

    async fn pod_terminated(&self, _pod: &Pod) {}
}

/// The registry host of an image reference, with Docker Hub's default.
fn registry_host(image: &str) -> String {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first.to_string()
        }
        _ => "docker.io".to_string(),
    }
}

/// Credentials for `host` in a kubernetes.io/dockerconfigjson or dockercfg secret.
fn docker_auths(secret: &Secret, host: &str) -> Vec<AuthConfig> {
    let data = secret.data.clone().unwrap_or_default();
    let json = data
        .get(".dockerconfigjson")
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b.0).ok())
        .map(|v| v["auths"].clone())
        .or_else(|| {
            data.get(".dockercfg")
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b.0).ok())
        });
    let Some(serde_json::Value::Object(auths)) = json else {
        return Vec::new();
    };
    let matches = |key: &str| {
        let k = key
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        let k = k.split('/').next().unwrap_or(k);
        k == host
            || (host == "docker.io" && (k == "index.docker.io" || k == "registry-1.docker.io"))
    };
    auths
        .iter()
        .filter(|(k, _)| matches(k))
        .map(|(_, v)| AuthConfig {
            username: v["username"].as_str().unwrap_or_default().to_string(),
            password: v["password"].as_str().unwrap_or_default().to_string(),
            auth: v["auth"].as_str().unwrap_or_default().to_string(),
            server_address: host.to_string(),
            ..Default::default()
        })
        .collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    #[test]
    fn registry_hosts_follow_docker_rules() {
        assert_eq!(registry_host("busybox"), "docker.io");
        assert_eq!(registry_host("library/busybox:1"), "docker.io");
        assert_eq!(registry_host("127.0.0.1:5000/app:1"), "127.0.0.1:5000");
        assert_eq!(
            registry_host("registry.k8s.io/pause:3.9"),
            "registry.k8s.io"
        );
    }

    #[test]
    fn pull_secrets_give_credentials_only_for_their_registry() {
        let secret = Secret {
            data: Some(
            [(
                ".dockerconfigjson".to_string(),
                ByteString(
                    br#"{"auths":{"https://reg.example:5000":{"username":"u","password":"p"},"other.example":{"auth":"eDp5"}}}"#
                        .to_vec(),
                ),
            )]
            .into(),
            ),
            ..Default::default()
        };
        let a = docker_auths(&secret, "reg.example:5000");
        assert_eq!(a.len(), 1);
        assert_eq!((a[0].username.as_str(), a[0].password.as_str()), ("u", "p"));
        assert_eq!(docker_auths(&secret, "other.example")[0].auth, "eDp5");
        assert!(docker_auths(&secret, "docker.io").is_empty());
    }
}
