//! One volume of a pod set up on the host, by type, as upstream's volume plugins do:
//! emptyDir; hostPath with its type check; configMap and downwardAPI written atomically
//! on disk, secret and projected on a tmpfs (secrets never touch the disk);
//! persistentVolumeClaim bound to a hostPath or local PersistentVolume. Errors carry
//! the message upstream puts after `MountVolume.SetUp failed for volume "NAME" : `.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use gantry_volumes::layout::{
    CONFIG_MAP_PLUGIN, DOWNWARD_API_PLUGIN, PROJECTED_PLUGIN, SECRET_PLUGIN,
};
use gantry_volumes::{
    empty_dir, AtomicWriter, EmptyDirPlan, Layout, Medium, Payload, ProjectedInputs, Quantity,
};
use k8s_openapi::api::core::v1::{Pod, Volume};

use super::refs::token_wanted;
use crate::cluster::VolumeSources;

/// What a volume needs beyond its spec.
pub struct Inputs<'a> {
    pub layout: &'a Layout,
    pub pod: &'a Pod,
    pub sources: &'a VolumeSources,
    pub node_allocatable: &'a BTreeMap<String, Quantity>,
}

/// A volume on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct HostVolume {
    pub path: PathBuf,
    /// The volume is mounted read-only whatever its volumeMounts say (a claim's
    /// readOnly; configMap, secret, downwardAPI and projected volumes always).
    pub read_only: bool,
    /// Its content comes from the API and is written again on a refresh.
    pub projected: bool,
}

/// Whether the volume's content is written from API objects (and so refreshed).
pub fn is_projection(v: &Volume) -> bool {
    v.config_map.is_some()
        || v.secret.is_some()
        || v.downward_api.is_some()
        || v.projected.is_some()
}

/// Sets up `v` (again: safe to repeat; a projection is rewritten only if it changed).
pub fn set_up(inputs: &Inputs<'_>, v: &Volume) -> Result<HostVolume, String> {
    let pod = inputs.pod;
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let psc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let fs_group = psc
        .and_then(|s| s.fs_group)
        .and_then(|g| u32::try_from(g).ok());
    let policy = psc.and_then(|s| s.fs_group_change_policy.as_deref());
    let layout = inputs.layout;
    let sources = inputs.sources;
    let disk = EmptyDirPlan {
        medium: Medium::Disk,
        tmpfs_options: None,
    };
    let memory = EmptyDirPlan {
        medium: Medium::Memory,
        tmpfs_options: None,
    };
    let projection = |plugin: &str, plan: &EmptyDirPlan, payload: Payload| {
        let dir = empty_dir::set_up_at(layout, uid, plugin, &v.name, plan, None)
            .map_err(|e| e.to_string())?;
        AtomicWriter::new(&dir)
            .write(&payload, fs_group)
            .map_err(|e| e.to_string())?;
        // Always read-only in the container, whatever the volumeMount says (upstream's
        // mustMountRO since the fix for CVE-2017-1002102): the kubelet owns the content.
        Ok::<_, String>(HostVolume {
            path: dir,
            read_only: true,
            projected: true,
        })
    };
    if let Some(source) = &v.empty_dir {
        let dir = layout
            .volume_dir(uid, gantry_volumes::layout::EMPTY_DIR_PLUGIN, &v.name)
            .map_err(|e| e.to_string())?;
        let gid = fs_group.filter(|g| !skip_ownership(&dir, *g, policy, false));
        let path =
            empty_dir::set_up(layout, uid, &v.name, source, gid).map_err(|e| e.to_string())?;
        return Ok(HostVolume {
            path,
            read_only: false,
            projected: false,
        });
    }
    if let Some(source) = &v.host_path {
        let path = PathBuf::from(&source.path);
        gantry_volumes::check_host_path_type(&path, source.type_.as_deref())
            .map_err(|e| e.to_string())?;
        return Ok(HostVolume {
            path,
            read_only: false,
            projected: false,
        });
    }
    if let Some(source) = &v.config_map {
        let payload =
            gantry_volumes::config_map_payload(source, sources.config_maps.get(&source.name))
                .map_err(|e| e.to_string())?;
        return projection(CONFIG_MAP_PLUGIN, &disk, payload);
    }
    if let Some(source) = &v.secret {
        let name = source.secret_name.clone().unwrap_or_default();
        let payload = gantry_volumes::secret_payload(source, sources.secrets.get(&name))
            .map_err(|e| e.to_string())?;
        return projection(SECRET_PLUGIN, &memory, payload);
    }
    if let Some(source) = &v.downward_api {
        let payload = gantry_volumes::downward_api_payload(source, pod, inputs.node_allocatable)
            .map_err(|e| e.to_string())?;
        return projection(DOWNWARD_API_PLUGIN, &disk, payload);
    }
    if let Some(source) = &v.projected {
        let mut tokens = BTreeMap::new();
        for t in source
            .sources
            .iter()
            .flatten()
            .filter_map(|s| s.service_account_token.as_ref())
        {
            match sources.tokens.get(&token_wanted(t)) {
                Some(Ok(token)) => {
                    tokens.insert(t.path.clone(), token.clone());
                }
                Some(Err(e)) => return Err(e.clone()),
                // Not asked for: the projection reports it missing.
                None => {}
            }
        }
        let payload = gantry_volumes::projected_payload(
            source,
            &ProjectedInputs {
                pod,
                config_maps: &sources.config_maps,
                secrets: &sources.secrets,
                tokens: &tokens,
                node_allocatable: inputs.node_allocatable,
                fs_user: None,
                fs_group: fs_group.map(i64::from),
            },
        )
        .map_err(|e| e.to_string())?;
        return projection(PROJECTED_PLUGIN, &memory, payload);
    }
    if let Some(claim) = &v.persistent_volume_claim {
        let pv = match sources.claims.get(&claim.claim_name) {
            Some(Ok(pv)) => pv,
            Some(Err(e)) => return Err(e.clone()),
            None => {
                return Err(format!(
                    "persistentvolumeclaim {:?} was not looked up",
                    claim.claim_name
                ))
            }
        };
        let pv_name = pv.metadata.name.clone().unwrap_or_default();
        let spec = pv.spec.clone().unwrap_or_default();
        let (path, local) = if let Some(h) = &spec.host_path {
            let path = PathBuf::from(&h.path);
            gantry_volumes::check_host_path_type(&path, h.type_.as_deref())
                .map_err(|e| e.to_string())?;
            (path, false)
        } else if let Some(l) = &spec.local {
            let path = PathBuf::from(&l.path);
            if !path.is_dir() {
                return Err(format!(
                    "path {:?} of local PersistentVolume {pv_name:?} does not exist or is not a directory",
                    l.path
                ));
            }
            (path, true)
        } else {
            return Err(format!(
                "PersistentVolume {pv_name:?} is of a type Gantry cannot mount (only hostPath and local are supported)"
            ));
        };
        let read_only = claim.read_only.unwrap_or(false);
        // Upstream applies fsGroup to local volumes, never to hostPath ones.
        if let Some(gid) = fs_group.filter(|_| local) {
            if !skip_ownership(&path, gid, policy, read_only) {
                gantry_volumes::set_volume_ownership(&path, gid, read_only)
                    .map_err(|e| e.to_string())?;
            }
        }
        return Ok(HostVolume {
            path,
            read_only,
            projected: false,
        });
    }
    Err(format!(
        "volume {:?}: this volume type is not supported by Gantry (supported: emptyDir, hostPath, configMap, secret, downwardAPI, projected, persistentVolumeClaim of hostPath or local volumes)",
        v.name
    ))
}

/// fsGroupChangePolicy OnRootMismatch: the walk is skipped when the volume's root
/// already has the group, the setgid bit and the group's permission bits (upstream
/// requiresPermissionChange). Always (the default) walks every time.
fn skip_ownership(root: &Path, gid: u32, policy: Option<&str>, read_only: bool) -> bool {
    if policy != Some("OnRootMismatch") {
        return false;
    }
    let Ok(meta) = std::fs::metadata(root) else {
        return false;
    };
    let mode = meta.mode();
    let wanted = if read_only { 0o050 } else { 0o070 };
    meta.gid() == gid && mode & 0o2000 != 0 && mode & wanted == wanted
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn on_root_mismatch_skips_only_a_matching_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let gid = std::fs::metadata(root).unwrap().gid();
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o2770)).unwrap();
        assert!(skip_ownership(root, gid, Some("OnRootMismatch"), false));
        assert!(!skip_ownership(root, gid, Some("Always"), false));
        assert!(!skip_ownership(root, gid, None, false));
        assert!(!skip_ownership(
            root,
            gid + 1,
            Some("OnRootMismatch"),
            false
        ));
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o770)).unwrap();
        assert!(
            !skip_ownership(root, gid, Some("OnRootMismatch"), false),
            "no setgid bit"
        );
        assert!(!skip_ownership(
            &root.join("missing"),
            gid,
            Some("OnRootMismatch"),
            false
        ));
    }
}
