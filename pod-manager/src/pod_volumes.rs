//! A pod's volumes as its containers see them: the host paths volumes/ prepares and
//! the CRI mounts of each container's volumeMounts. Only emptyDir is set up so far;
//! a container that mounts a volume of another kind gets no mount for it (the
//! remaining volume types come with the rest of the volumes issue).

use std::collections::BTreeMap;
use std::path::PathBuf;

use gantry_cri::api;
use gantry_volumes::{empty_dir, Layout};
use k8s_openapi::api::core::v1::{Container, Pod};

/// Sets up (idempotently) the volumes `c` mounts and returns its CRI mounts. An error
/// names the volume and why it could not be mounted (a FailedMount event).
pub fn container_mounts(
    layout: &Layout,
    pod: &Pod,
    c: &Container,
) -> Result<Vec<api::Mount>, String> {
    let uid = pod.metadata.uid.as_deref().unwrap_or("");
    let spec = pod.spec.as_ref();
    let volumes: BTreeMap<&str, _> = spec
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
        .map(|v| (v.name.as_str(), v))
        .collect();
    let fs_group = spec
        .and_then(|s| s.security_context.as_ref())
        .and_then(|s| s.fs_group)
        .and_then(|g| u32::try_from(g).ok());
    let mut mounts = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        let Some(volume) = volumes.get(m.name.as_str()) else {
            return Err(format!("volume {:?} is not defined in the pod", m.name));
        };
        let host: PathBuf = match &volume.empty_dir {
            Some(source) => empty_dir::set_up(layout, uid, &volume.name, source, fs_group)
                .map_err(|e| {
                    format!("MountVolume.SetUp failed for volume {:?}: {e}", volume.name)
                })?,
            // Not supported yet: the container gets no mount for it.
            None => continue,
        };
        if m.sub_path.as_deref().is_some_and(|p| !p.is_empty())
            || m.sub_path_expr.as_deref().is_some_and(|p| !p.is_empty())
        {
            return Err(format!(
                "volume {:?}: subPath is not supported yet",
                volume.name
            ));
        }
        mounts.push(api::Mount {
            container_path: m.mount_path.clone(),
            host_path: host.to_string_lossy().into_owned(),
            readonly: m.read_only.unwrap_or(false),
            propagation: match m.mount_propagation.as_deref() {
                Some("HostToContainer") => api::MountPropagation::PropagationHostToContainer,
                Some("Bidirectional") => api::MountPropagation::PropagationBidirectional,
                _ => api::MountPropagation::PropagationPrivate,
            } as i32,
            ..Default::default()
        });
    }
    Ok(mounts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(uid: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": uid},
            "spec": {
                "volumes": [
                    {"name": "scratch", "emptyDir": {}},
                    {"name": "conf", "configMap": {"name": "c"}},
                ],
                "containers": [{
                    "name": "app",
                    "volumeMounts": [
                        {"name": "scratch", "mountPath": "/data"},
                        {"name": "conf", "mountPath": "/etc/conf", "readOnly": true},
                    ],
                }],
            },
        }))
        .unwrap()
    }

    #[test]
    fn an_empty_dir_becomes_a_mount_and_is_set_up_once() {
        let root = std::env::temp_dir().join(format!("gantry-podvol-{}", std::process::id()));
        let layout = Layout::new(&root);
        let p = pod("u1");
        let c = &p.spec.as_ref().unwrap().containers[0];
        let first = container_mounts(&layout, &p, c).unwrap();
        std::fs::write(PathBuf::from(&first[0].host_path).join("kept"), "x").unwrap();
        let again = container_mounts(&layout, &p, c).unwrap();
        let kept = PathBuf::from(&again[0].host_path).join("kept").exists();
        gantry_volumes::remove_pod_dir(&layout, "u1").unwrap();
        let gone = !root.join("pods/u1").exists();
        std::fs::remove_dir_all(&root).ok();
        assert_eq!(first.len(), 1, "the configMap volume is not mounted yet");
        assert_eq!(first[0].container_path, "/data");
        assert!(first[0]
            .host_path
            .ends_with("pods/u1/volumes/kubernetes.io~empty-dir/scratch"));
        assert_eq!(first, again);
        assert!(kept, "a second set-up keeps the data");
        assert!(gone, "the pod's directory is removed");
    }
}
