//! What pod volumes reference, fetched for the pod workers: configMaps, secrets, the
//! PersistentVolume behind a claim, and service account tokens bound to the pod.
//!
//! Tokens come from the TokenRequest API and are kept until 80 % of their life has
//! passed (or 24 h, whichever is sooner), as upstream's token manager: a projected
//! token is refreshed in the pod before it expires, and an idle pod does not ask for
//! a new one at every refresh of its volume.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use gantry_pod_manager::cluster::{TokenWanted, VolumeRefs, VolumeSources};
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolume, PersistentVolumeClaim, Pod, Secret, ServiceAccount,
};
use kube::api::{Api, PostParams};
use kube::Client;

/// How long a fetched configMap or secret (or its absence) is reused: pods of one
/// namespace share their objects (every pod projects `kube-root-ca.crt`), so a refresh
/// of many pods' volumes costs one request per object and TTL, as upstream's
/// TTL-based object cache.
const OBJECT_TTL: Duration = Duration::from_secs(10);

/// When an object was fetched, and what came back (None: not found).
type Fetched<K> = (Instant, Option<K>);

/// Recently fetched objects of one kind by namespace and name.
pub struct ObjectCache<K> {
    objects: Mutex<HashMap<(String, String), Fetched<K>>>,
}

impl<K> Default for ObjectCache<K> {
    fn default() -> Self {
        ObjectCache {
            objects: Mutex::new(HashMap::new()),
        }
    }
}

impl<K> ObjectCache<K>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    <K as kube::Resource>::DynamicType: Default,
{
    /// The object, from the cache when fetched less than `OBJECT_TTL` ago.
    pub async fn get(
        &self,
        client: &Client,
        ns: &str,
        name: &str,
    ) -> Result<Option<K>, kube::Error> {
        let key = (ns.to_string(), name.to_string());
        if let Some((at, obj)) = lock(&self.objects).get(&key) {
            if at.elapsed() < OBJECT_TTL {
                return Ok(obj.clone());
            }
        }
        let obj = Api::<K>::namespaced(client.clone(), ns)
            .get_opt(name)
            .await?;
        let mut objects = lock(&self.objects);
        objects.retain(|_, (at, _)| at.elapsed() < OBJECT_TTL);
        objects.insert(key, (Instant::now(), obj.clone()));
        Ok(obj)
    }
}

/// The caches `fetch` (and the env of `ApiCluster`) read through.
#[derive(Default)]
pub struct Caches {
    pub tokens: TokenCache,
    pub config_maps: ObjectCache<ConfigMap>,
    pub secrets: ObjectCache<Secret>,
}

/// Upstream refreshes a token older than 24 hours whatever its expiry.
const MAX_TOKEN_AGE: Duration = Duration::from_secs(24 * 3600);

/// Tokens by pod UID, service account, audience and expiry.
#[derive(Default)]
pub struct TokenCache {
    tokens: Mutex<HashMap<TokenKey, Cached>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct TokenKey {
    pod_uid: String,
    service_account: String,
    wanted: TokenWanted,
}

struct Cached {
    token: Vec<u8>,
    /// When to ask for a new one.
    refresh_at: Instant,
}

/// When a token of `lifetime` issued now should be refreshed: at 80 % of its life,
/// and at most a day later (upstream's requiresRefresh).
pub fn refresh_after(lifetime: Duration) -> Duration {
    lifetime.mul_f64(0.8).min(MAX_TOKEN_AGE)
}

impl TokenCache {
    /// Forgets the tokens of a pod that is gone.
    pub fn forget_pod(&self, pod_uid: &str) {
        lock(&self.tokens).retain(|k, _| k.pod_uid != pod_uid);
    }

    async fn token(
        &self,
        client: &Client,
        pod: &Pod,
        wanted: &TokenWanted,
    ) -> Result<Vec<u8>, String> {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let sa = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".to_string());
        let key = TokenKey {
            pod_uid: uid.clone(),
            service_account: sa.clone(),
            wanted: wanted.clone(),
        };
        if let Some(c) = lock(&self.tokens).get(&key) {
            if Instant::now() < c.refresh_at {
                return Ok(c.token.clone());
            }
        }
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: (!wanted.audience.is_empty()).then(|| vec![wanted.audience.clone()]),
                expiration_seconds: Some(wanted.expiration_seconds),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".to_string()),
                    kind: Some("Pod".to_string()),
                    name: Some(name),
                    uid: Some(uid),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
        let issued = Instant::now();
        let answer = accounts
            .create_token_request(&sa, &PostParams::default(), &request)
            .await
            .map_err(|e| format!("failed to fetch token: {}", api_message(&e)))?;
        let status = answer
            .status
            .ok_or_else(|| "failed to fetch token: the API server returned no token".to_string())?;
        let now = jiff::Timestamp::now();
        let requested = Duration::from_secs(wanted.expiration_seconds.max(0) as u64);
        let lifetime = status
            .expiration_timestamp
            .and_then(|t| Duration::try_from(t.0.duration_since(now)).ok())
            .unwrap_or(requested);
        let token = status
            .token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| "failed to fetch token: the API server returned no token".to_string())?
            .into_bytes();
        lock(&self.tokens).insert(
            key,
            Cached {
                token: token.clone(),
                refresh_at: issued + refresh_after(lifetime),
            },
        );
        Ok(token)
    }
}

/// Fetches everything `wanted` names, in the pod's namespace.
pub async fn fetch(
    client: &Client,
    caches: &Caches,
    pod: &Pod,
    wanted: &VolumeRefs,
) -> Result<VolumeSources, String> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let mut out = VolumeSources::default();
    for name in &wanted.config_maps {
        if let Some(cm) = caches
            .config_maps
            .get(client, &ns, name)
            .await
            .map_err(|e| format!("get configmap {ns}/{name}: {e}"))?
        {
            out.config_maps.insert(name.clone(), cm);
        }
    }
    for name in &wanted.secrets {
        if let Some(s) = caches
            .secrets
            .get(client, &ns, name)
            .await
            .map_err(|e| format!("get secret {ns}/{name}: {e}"))?
        {
            out.secrets.insert(name.clone(), s);
        }
    }
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    for name in &wanted.claims {
        let bound = match claims
            .get_opt(name)
            .await
            .map_err(|e| format!("get persistentvolumeclaim {ns}/{name}: {e}"))?
        {
            None => Err(format!(
                "error processing PVC {ns}/{name}: failed to fetch PVC from API server: persistentvolumeclaims {name:?} not found"
            )),
            Some(claim) => match bound_volume(&claim) {
                Err(e) => Err(format!("error processing PVC {ns}/{name}: {e}")),
                Ok(pv_name) => match pvs
                    .get_opt(&pv_name)
                    .await
                    .map_err(|e| format!("get persistentvolume {pv_name}: {e}"))?
                {
                    Some(pv) => Ok(pv),
                    None => Err(format!(
                        "error processing PVC {ns}/{name}: failed to fetch PV {pv_name:?} from API server: persistentvolumes {pv_name:?} not found"
                    )),
                },
            },
        };
        out.claims.insert(name.clone(), bound);
    }
    for w in &wanted.tokens {
        let token = caches.tokens.token(client, pod, w).await;
        out.tokens.insert(w.clone(), token);
    }
    Ok(out)
}

/// The PersistentVolume a claim is bound to, or upstream's complaint.
fn bound_volume(claim: &PersistentVolumeClaim) -> Result<String, String> {
    let phase = claim
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();
    let volume = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .unwrap_or_default();
    if phase != "Bound" || volume.is_empty() {
        return Err(format!(
            "PVC is not bound: phase {phase:?}, volume name {volume:?}"
        ));
    }
    Ok(volume)
}

fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tokens_are_refreshed_at_80_percent_of_their_life_or_after_a_day() {
        assert_eq!(
            refresh_after(Duration::from_secs(3600)),
            Duration::from_secs(2880)
        );
        assert_eq!(
            refresh_after(Duration::from_secs(3607)),
            Duration::from_secs_f64(2885.6)
        );
        assert_eq!(
            refresh_after(Duration::from_secs(365 * 86400)),
            MAX_TOKEN_AGE
        );
    }

    #[test]
    fn only_a_bound_claim_names_its_volume() {
        let claim = |phase: &str, volume: &str| -> PersistentVolumeClaim {
            serde_json::from_value(json!({
                "metadata": {"name": "data"},
                "spec": {"volumeName": volume},
                "status": {"phase": phase},
            }))
            .unwrap()
        };
        assert_eq!(bound_volume(&claim("Bound", "pv-1")).unwrap(), "pv-1");
        assert_eq!(
            bound_volume(&claim("Pending", "")).unwrap_err(),
            r#"PVC is not bound: phase "Pending", volume name """#
        );
        assert!(bound_volume(&claim("Bound", "")).is_err());
    }
}
