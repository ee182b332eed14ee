//! Static pods: manifests in staticPodPath that the node runs on its own, and their
//! mirror pods in the API, as upstream (pkg/kubelet/config/file.go, common.go and the
//! mirror client).
//!
//! The directory is read at start and every 20 s. Each manifest becomes a pod named
//! `<name>-<node>` whose UID is a hash of its content, the node and the file, so an
//! edit replaces the pod; a removed file stops its pod. When connected to an API server
//! the node keeps a mirror pod for each (annotation kubernetes.io/config.mirror, owned
//! by the Node), re-creates it when someone deletes it, and deletes mirrors whose
//! static pod is gone.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use gantry_pod_manager::cluster::Cluster;
use gantry_pod_manager::manager::PodManager;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, PostParams};
use sha2::{Digest, Sha256};

use crate::bootstrap::ClientHandle;
use crate::pod_source::{mirror_hash, MirrorPods, MIRROR_ANNOTATION};
use gantry_pod_manager::labels::CONFIG_SOURCE;

pub const HASH_ANNOTATION: &str = "kubernetes.io/config.hash";
/// The source name the pod manager knows this one by.
pub const SOURCE: &str = "file";
const CHECK_EVERY: Duration = Duration::from_secs(20);

/// Reads every manifest of `dir` (files ending in .yaml, .yml or .json; dotfiles are
/// skipped, as upstream). A file that does not parse is logged and skipped.
pub fn read_dir(dir: &Path, node: &str) -> BTreeMap<String, Pod> {
    let mut pods = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return pods;
    };
    let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    files.sort();
    for path in files {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let is_manifest = [".yaml", ".yml", ".json"].iter().any(|e| name.ends_with(e));
        if name.starts_with('.') || !is_manifest {
            continue;
        }
        match std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|text| static_pod(&text, &path, node))
        {
            Ok(pod) => {
                if let Some(uid) = pod.metadata.uid.clone() {
                    pods.insert(uid, pod);
                }
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "static pod manifest skipped")
            }
        }
    }
    pods
}

/// The pod a manifest describes, with upstream's static-pod defaults: name
/// `<name>-<node>`, namespace default, the UID from a hash of content, node and file,
/// and the config annotations.
pub fn static_pod(text: &str, path: &Path, node: &str) -> Result<Pod, String> {
    let mut pod = decode_pod(text)?;
    let name = pod
        .metadata
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or("metadata.name is missing")?;
    if pod.spec.as_ref().is_none_or(|s| s.containers.is_empty()) {
        return Err("spec.containers is empty".to_string());
    }
    let mut hasher = Sha256::new();
    hasher.update(text.as_bytes());
    hasher.update(format!("host:{node}").as_bytes());
    hasher.update(format!("file:{}", path.display()).as_bytes());
    let hash = hex_of(&hasher.finalize()[..16]);
    pod.metadata.name = Some(format!("{name}-{node}"));
    if pod.metadata.namespace.as_deref().unwrap_or("").is_empty() {
        pod.metadata.namespace = Some("default".to_string());
    }
    pod.metadata.uid = Some(hash.clone());
    let annotations = pod
        .metadata
        .annotations
        .get_or_insert_with(Default::default);
    annotations.insert(HASH_ANNOTATION.to_string(), hash);
    annotations.insert(CONFIG_SOURCE.to_string(), "file".to_string());
    if let Some(spec) = pod.spec.as_mut() {
        spec.node_name = Some(node.to_string());
        spec.restart_policy
            .get_or_insert_with(|| "Always".to_string());
        spec.dns_policy
            .get_or_insert_with(|| "ClusterFirst".to_string());
        spec.termination_grace_period_seconds.get_or_insert(30);
        spec.enable_service_links.get_or_insert(true);
    }
    Ok(pod)
}

/// Reads a manifest as upstream does: its YAML becomes JSON, and the JSON is decoded
/// as a Pod. The decoding is the one the API watch uses (the binary holds one Pod
/// decoder, not one per format), so a YAML number where a string belongs is refused
/// as upstream refuses it.
fn decode_pod(text: &str) -> Result<Pod, String> {
    let value: serde_json::Value =
        serde_saphyr::from_str(text).map_err(|e| format!("not YAML or JSON: {e}"))?;
    let json = serde_json::to_vec(&value).map_err(|e| format!("not a v1 Pod: {e}"))?;
    serde_json::from_slice(&json).map_err(|e| {
        // The position would point into the converted text, which the user never saw.
        let msg = e.to_string();
        let msg = msg.split(" at line ").next().unwrap_or(&msg);
        format!("not a v1 Pod: {msg}")
    })
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A pod from a static manifest (its status goes to the mirror pod).
pub fn is_static(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CONFIG_SOURCE))
        .is_some_and(|s| s == "file")
}

/// Runs the static pods of `dir` and keeps their mirror pods (when an API client and
/// the pod watch's mirrors are given) until the task is dropped.
pub async fn run<C: Cluster>(
    dir: PathBuf,
    node: String,
    manager: Arc<PodManager<C>>,
    api: Option<(ClientHandle, Arc<MirrorPods>)>,
) {
    let mut running: BTreeMap<String, Pod> = BTreeMap::new();
    let mut tick = tokio::time::interval(CHECK_EVERY);
    loop {
        tick.tick().await;
        let now = read_dir(&dir, &node);
        for (uid, pod) in &running {
            if !now.contains_key(uid) {
                tracing::info!(pod = %pod.metadata.name.as_deref().unwrap_or(""), "static pod manifest removed or changed: stopping its pod");
                manager.remove(pod.clone());
            }
        }
        for (uid, pod) in &now {
            if !running.contains_key(uid) {
                manager.update(pod.clone());
            }
        }
        running = now;
        manager.sources_synced(SOURCE);
        if let Some((client, mirrors)) = &api {
            // Until the pod watch has listed, the mirrors are not known: next round.
            let Some(mirrors) = mirrors.snapshot() else {
                continue;
            };
            if let Err(e) = sync_mirrors(client, &node, &running, &mirrors).await {
                tracing::warn!(error = %e, "mirror pods");
            }
        }
    }
}

/// Creates missing mirror pods and deletes those of static pods that are gone, from
/// the node's `mirrors` as the pod watch sees them.
async fn sync_mirrors(
    client: &ClientHandle,
    node: &str,
    statics: &BTreeMap<String, Pod>,
    mirrors: &HashMap<(String, String), Pod>,
) -> Result<(), kube::Error> {
    let client = client.get();
    let mut wanted: HashMap<(String, String), &Pod> = HashMap::new();
    for pod in statics.values() {
        let key = (
            pod.metadata.namespace.clone().unwrap_or_default(),
            pod.metadata.name.clone().unwrap_or_default(),
        );
        wanted.insert(key, pod);
    }
    // Mirrors of a static pod that changed or is gone.
    for (key, mirror) in mirrors {
        let current = wanted.get(key).and_then(|p| p.metadata.uid.as_ref());
        if current.is_none() || current != mirror_hash(mirror) {
            let pods: Api<Pod> = Api::namespaced(client.clone(), &key.0);
            let params = DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            };
            match pods.delete(&key.1, &params).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
    }
    // The Node's UID, read only when a mirror has to be made.
    let mut node_uid: Option<String> = None;
    for (key, pod) in wanted {
        let fresh = mirrors
            .get(&key)
            .is_some_and(|m| mirror_hash(m) == pod.metadata.uid.as_ref());
        if fresh {
            continue;
        }
        if node_uid.is_none() {
            let n = Api::<Node>::all(client.clone()).get(node).await?;
            node_uid = Some(n.metadata.uid.unwrap_or_default());
        }
        let node_uid = node_uid.clone().unwrap_or_default();
        let mut mirror = pod.clone();
        mirror.metadata.uid = None;
        mirror.status = None;
        let hash = pod.metadata.uid.clone().unwrap_or_default();
        mirror
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(MIRROR_ANNOTATION.to_string(), hash);
        // NodeRestriction admits a mirror pod only when the node owns it.
        mirror.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "v1".to_string(),
            kind: "Node".to_string(),
            name: node.to_string(),
            uid: node_uid,
            controller: Some(true),
            ..Default::default()
        }]);
        let pods: Api<Pod> = Api::namespaced(client.clone(), &key.0);
        match pods.create(&PostParams::default(), &mirror).await {
            Ok(_) => {
                tracing::info!(pod = %format!("{}/{}", key.0, key.1), "created the mirror pod")
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: web\n    image: busybox:1\n";

    #[test]
    fn a_static_pod_is_named_after_its_node_and_defaulted() {
        let pod = static_pod(MANIFEST, Path::new("/etc/static/web.yaml"), "node-a").unwrap();
        assert_eq!(pod.metadata.name.as_deref(), Some("web-node-a"));
        assert_eq!(pod.metadata.namespace.as_deref(), Some("default"));
        let a = pod.metadata.annotations.clone().unwrap();
        assert_eq!(a[CONFIG_SOURCE], "file");
        assert_eq!(Some(&a[HASH_ANNOTATION]), pod.metadata.uid.as_ref());
        let spec = pod.spec.unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("node-a"));
        assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
    }

    #[test]
    fn the_uid_changes_with_content_node_and_file() {
        let uid = |text: &str, file: &str, node: &str| {
            static_pod(text, Path::new(file), node)
                .unwrap()
                .metadata
                .uid
                .unwrap()
        };
        let base = uid(MANIFEST, "/s/web.yaml", "n");
        assert_eq!(base, uid(MANIFEST, "/s/web.yaml", "n"));
        assert_ne!(
            base,
            uid(
                &MANIFEST.replace("busybox:1", "busybox:2"),
                "/s/web.yaml",
                "n"
            )
        );
        assert_ne!(base, uid(MANIFEST, "/s/web.yaml", "m"));
        assert_ne!(base, uid(MANIFEST, "/s/other.yaml", "n"));
    }

    #[test]
    fn bad_manifests_are_refused_with_a_reason() {
        let p = Path::new("/s/x.yaml");
        assert!(
            static_pod("kind: Pod\nmetadata: {}\nspec:\n  containers: []\n", p, "n")
                .unwrap_err()
                .contains("metadata.name")
        );
        assert!(
            static_pod("metadata:\n  name: x\nspec:\n  containers: []\n", p, "n")
                .unwrap_err()
                .contains("spec.containers")
        );
    }

    #[test]
    fn yaml_is_read_as_json_like_upstream() {
        let p = Path::new("/s/x.yaml");
        // A bare number is a quantity (JSON accepts it), and JSON flow text is YAML.
        let limits = "apiVersion: v1\nkind: Pod\nmetadata: {name: q}\nspec:\n  containers:\n  - name: c\n    image: busybox:1\n    resources: {limits: {cpu: 1, memory: 64Mi}}\n";
        let pod = static_pod(limits, p, "n").unwrap();
        let c = &pod.spec.unwrap().containers[0];
        let l = c.resources.as_ref().unwrap().limits.as_ref().unwrap();
        assert_eq!((l["cpu"].0.as_str(), l["memory"].0.as_str()), ("1", "64Mi"));
        let json = r#"{"metadata":{"name":"j"},"spec":{"containers":[{"name":"c","image":"b"}]}}"#;
        assert_eq!(
            static_pod(json, p, "n").unwrap().metadata.name.unwrap(),
            "j-n"
        );
        // A number where a string belongs is refused, with no position in the
        // converted text.
        let env = "metadata: {name: e}\nspec:\n  containers:\n  - name: c\n    image: b\n    env: [{name: A, value: 1}]\n";
        let e = static_pod(env, p, "n").unwrap_err();
        assert!(e.starts_with("not a v1 Pod: invalid type: integer"), "{e}");
        assert!(!e.contains("line"), "{e}");
        assert!(static_pod("a: [", p, "n")
            .unwrap_err()
            .starts_with("not YAML or JSON"));
    }

    #[test]
    fn only_manifest_files_are_read() {
        let dir = std::env::temp_dir().join(format!("gantry-static-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("web.yaml"), MANIFEST).unwrap();
        std::fs::write(dir.join(".hidden.yaml"), MANIFEST).unwrap();
        std::fs::write(dir.join("notes.txt"), MANIFEST).unwrap();
        std::fs::write(dir.join("broken.yaml"), "{{{").unwrap();
        let pods = read_dir(&dir, "n");
        std::fs::remove_dir_all(&dir).unwrap();
        let names: Vec<_> = pods
            .values()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["web-n"]);
    }
}
