//! A container's CRI mounts: its volumeMounts over the pod's volumes set up on the host,
//! subPath and subPathExpr resolved safely (never through a symlink the container could
//! have planted to leave its volume) and bind-mounted for the runtime, readOnly and
//! mountPropagation; and the pod's managed /etc/hosts. Errors carry upstream's
//! CreateContainerConfigError message (makeMounts), the detail goes to the log only, as
//! upstream: it could tell a container about the host's filesystem.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use gantry_cri::api;
use gantry_volumes::{subpath, Layout};
use k8s_openapi::api::core::v1::{Container, Pod, VolumeMount};

use super::set_up::HostVolume;

/// The CRI mounts of `c`. `volumes` are the pod's volumes on the host by name, `env`
/// the container's environment (for subPathExpr), `hosts_file` the pod's managed
/// /etc/hosts when the container gets it.
pub fn container_mounts(
    layout: &Layout,
    pod: &Pod,
    c: &Container,
    volumes: &BTreeMap<String, HostVolume>,
    env: &BTreeMap<String, String>,
    hosts_file: Option<&Path>,
) -> Result<Vec<api::Mount>, String> {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let mut mounts = Vec::new();
    for (index, m) in c.volume_mounts.iter().flatten().enumerate() {
        let Some(volume) = volumes.get(&m.name) else {
            return Err(format!(
                "cannot find volume {:?} to mount into container {:?}",
                m.name, c.name
            ));
        };
        let host_path = match sub_path(m, env)? {
            None => volume.path.clone(),
            Some(sub) => {
                subpath::validate_subpath(&sub).map_err(|e| e.to_string())?;
                let target = layout
                    .subpath_target(uid, &m.name, &c.name, index)
                    .map_err(|e| e.to_string())?;
                let refused = |e: &dyn std::fmt::Display| {
                    tracing::warn!(container = %c.name, volume_mount = %m.name, error = %e, "prepare subPath");
                    format!(
                        "failed to prepare subPath for volumeMount {:?} of container {:?}",
                        m.name, c.name
                    )
                };
                // Missing directories are made with the volume root's mode, as
                // upstream's SafeMakeDir.
                let mode = std::fs::metadata(&volume.path)
                    .map(|md| md.permissions().mode() & 0o7777)
                    .map_err(|e| refused(&e))?;
                let safe = subpath::open_subpath(&volume.path, &sub, Some(mode))
                    .map_err(|e| refused(&e))?;
                subpath::bind_subpath(&safe, &target).map_err(|e| refused(&e))?;
                target
            }
        };
        mounts.push(api::Mount {
            container_path: m.mount_path.clone(),
            host_path: host_path.to_string_lossy().into_owned(),
            readonly: m.read_only.unwrap_or(false) || volume.read_only,
            propagation: match m.mount_propagation.as_deref() {
                Some("HostToContainer") => api::MountPropagation::PropagationHostToContainer,
                Some("Bidirectional") => api::MountPropagation::PropagationBidirectional,
                _ => api::MountPropagation::PropagationPrivate,
            } as i32,
            ..Default::default()
        });
    }
    if let Some(file) = hosts_file {
        mounts.push(api::Mount {
            container_path: "/etc/hosts".to_string(),
            host_path: file.to_string_lossy().into_owned(),
            ..Default::default()
        });
    }
    Ok(mounts)
}

/// The mount's subPath, or its subPathExpr expanded from the container's env (upstream:
/// a variable that is not set expands to nothing, which is refused).
fn sub_path(m: &VolumeMount, env: &BTreeMap<String, String>) -> Result<Option<String>, String> {
    if let Some(expr) = m.sub_path_expr.as_deref().filter(|e| !e.is_empty()) {
        let expanded = gantry_volumes::expand_subpath_expr(expr, env).map_err(|e| {
            let names: Vec<&str> = e.0.iter().map(String::as_str).collect();
            format!(
                "failed to expand subPathExpr {expr:?} for volumeMount {:?}: unset environment variables {}",
                m.name,
                names.join(", ")
            )
        })?;
        return Ok(Some(expanded).filter(|s| !s.is_empty()));
    }
    Ok(m.sub_path.clone().filter(|s| !s.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::PathBuf;

    fn pod(mounts: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1"},
            "spec": {"containers": [{"name": "app", "volumeMounts": mounts}]},
        }))
        .unwrap()
    }

    fn volume(path: &Path) -> BTreeMap<String, HostVolume> {
        [(
            "data".to_string(),
            HostVolume {
                path: path.to_path_buf(),
                read_only: false,
                projected: false,
            },
        )]
        .into()
    }

    fn unmount_all(dir: &Path) {
        gantry_volumes::clean_subpaths(dir).unwrap();
    }

    #[test]
    fn plain_mounts_keep_their_flags_and_the_hosts_file_comes_last() {
        let root = tempfile::tempdir().unwrap();
        let p = pod(json!([
            {"name": "data", "mountPath": "/data", "readOnly": true, "mountPropagation": "HostToContainer"},
        ]));
        let c = &p.spec.as_ref().unwrap().containers[0];
        let layout = Layout::new(root.path());
        let hosts = root.path().join("etc-hosts");
        let got = container_mounts(
            &layout,
            &p,
            c,
            &volume(root.path()),
            &BTreeMap::new(),
            Some(&hosts),
        )
        .unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].container_path, "/data");
        assert_eq!(PathBuf::from(&got[0].host_path), root.path());
        assert!(got[0].readonly);
        assert_eq!(
            got[0].propagation,
            api::MountPropagation::PropagationHostToContainer as i32
        );
        assert_eq!(got[1].container_path, "/etc/hosts");
        assert_eq!(PathBuf::from(&got[1].host_path), hosts);
    }

    /// Why the mounts of a pod whose container mounts `mounts` are refused.
    fn refusal(mounts: serde_json::Value) -> String {
        let root = tempfile::tempdir().unwrap();
        let p = pod(mounts);
        let c = &p.spec.as_ref().unwrap().containers[0];
        container_mounts(
            &Layout::new(root.path()),
            &p,
            c,
            &volume(root.path()),
            &BTreeMap::new(),
            None,
        )
        .unwrap_err()
    }

    #[test]
    fn a_mount_of_an_unknown_volume_names_it() {
        let e = refusal(json!([{"name": "nope", "mountPath": "/x"}]));
        assert_eq!(
            e,
            r#"cannot find volume "nope" to mount into container "app""#
        );
    }

    #[test]
    fn sub_paths_are_bound_inside_the_volume_and_escapes_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let vol = root.path().join("vol");
        std::fs::create_dir(&vol).unwrap();
        std::fs::write(vol.join("inside"), "ok").unwrap();
        // What a container could plant: links to the host's root and around.
        std::os::unix::fs::symlink("/", vol.join("escape")).unwrap();
        std::os::unix::fs::symlink("../..", vol.join("up")).unwrap();
        let layout = Layout::new(root.path().join("kubelet"));
        let env: BTreeMap<String, String> = [("POD".to_string(), "web-0".to_string())].into();
        let p = pod(json!([
            {"name": "data", "mountPath": "/a", "subPath": "inside"},
            {"name": "data", "mountPath": "/b", "subPathExpr": "logs/$(POD)"},
            {"name": "data", "mountPath": "/c", "subPath": "escape"},
            {"name": "data", "mountPath": "/d", "subPath": "up/etc"},
            {"name": "data", "mountPath": "/e", "subPath": "../x"},
            {"name": "data", "mountPath": "/f", "subPath": "/etc"},
        ]));
        let spec = p.spec.as_ref().unwrap();
        let one = |i: usize| {
            let mut c = spec.containers[0].clone();
            c.volume_mounts = Some(vec![c.volume_mounts.as_ref().unwrap()[i].clone()]);
            container_mounts(&layout, &p, &c, &volume(&vol), &env, None)
        };
        let a = one(0);
        let b = one(1);
        let c = one(2);
        let d = one(3);
        let e = one(4);
        let f = one(5);
        let a_content = a
            .as_ref()
            .ok()
            .and_then(|m| std::fs::read_to_string(&m[0].host_path).ok());
        let b_made = vol.join("logs/web-0").is_dir();
        unmount_all(&layout.pod_subpaths_dir("u1").unwrap());

        assert_eq!(a_content.as_deref(), Some("ok"), "{a:?}");
        assert!(b.is_ok() && b_made, "{b:?}");
        let refused = r#"failed to prepare subPath for volumeMount "data" of container "app""#;
        assert_eq!(c.unwrap_err(), refused);
        assert_eq!(d.unwrap_err(), refused);
        assert_eq!(
            e.unwrap_err(),
            "unable to provision SubPath `../x`: must not contain '..'"
        );
        assert_eq!(
            f.unwrap_err(),
            "error SubPath `/etc` must not be an absolute path"
        );
    }

    #[test]
    fn a_sub_path_expr_with_an_unset_variable_is_refused() {
        let e =
            refusal(json!([{"name": "data", "mountPath": "/b", "subPathExpr": "$(MISSING)/x"}]));
        assert!(e.contains("MISSING"), "{e}");
    }
}
