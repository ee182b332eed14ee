//! Where a pod's volumes live on the host, as the upstream kubelet lays out its root dir
//! (pkg/kubelet/kubelet_getters.go):
//!
//! ```text
//! <root>/pods/<uid>/volumes/<plugin~name>/<volume>            a volume
//! <root>/pods/<uid>/volume-subpaths/<volume>/<container>/<i>  a subPath bind mount
//! ```
//!
//! Plugin names have their `/` replaced by `~` (upstream `utilstrings.EscapeQualifiedName`),
//! so `kubernetes.io/empty-dir` is the folder `kubernetes.io~empty-dir`.

use std::path::{Path, PathBuf};

use thiserror::Error;

pub const EMPTY_DIR_PLUGIN: &str = "kubernetes.io/empty-dir";
pub const CONFIG_MAP_PLUGIN: &str = "kubernetes.io/configmap";
pub const SECRET_PLUGIN: &str = "kubernetes.io/secret";
pub const DOWNWARD_API_PLUGIN: &str = "kubernetes.io/downward-api";
pub const PROJECTED_PLUGIN: &str = "kubernetes.io/projected";
pub const LOCAL_VOLUME_PLUGIN: &str = "kubernetes.io/local-volume";

#[derive(Debug, Error, PartialEq, Eq)]
#[error("{what} {value:?} cannot be a path element (empty, '.', '..' or contains '/')")]
pub struct LayoutError {
    pub what: &'static str,
    pub value: String,
}

/// `kubernetes.io/empty-dir` → `kubernetes.io~empty-dir`.
pub fn escape_plugin_name(name: &str) -> String {
    name.replace('/', "~")
}

/// A name from the API used as one path element must not walk out of its parent.
fn element<'a>(what: &'static str, value: &'a str) -> Result<&'a str, LayoutError> {
    if value.is_empty()
        || value == "."
        || value == ".."
        || value.contains('/')
        || value.contains('\0')
    {
        return Err(LayoutError {
            what,
            value: value.into(),
        });
    }
    Ok(value)
}

/// The kubelet root dir (upstream default `/var/lib/kubelet`) and the paths under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Layout {
        Layout { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/pods`.
    pub fn pods_dir(&self) -> PathBuf {
        self.root.join("pods")
    }

    /// `<root>/pods/<uid>`.
    pub fn pod_dir(&self, pod_uid: &str) -> Result<PathBuf, LayoutError> {
        Ok(self.pods_dir().join(element("pod uid", pod_uid)?))
    }

    /// `<root>/pods/<uid>/volumes`.
    pub fn pod_volumes_dir(&self, pod_uid: &str) -> Result<PathBuf, LayoutError> {
        Ok(self.pod_dir(pod_uid)?.join("volumes"))
    }

    /// `<root>/pods/<uid>/volumes/<plugin~name>/<volume>`.
    pub fn volume_dir(
        &self,
        pod_uid: &str,
        plugin: &str,
        volume: &str,
    ) -> Result<PathBuf, LayoutError> {
        let plugin = escape_plugin_name(plugin);
        Ok(self
            .pod_volumes_dir(pod_uid)?
            .join(element("plugin", &plugin)?)
            .join(element("volume", volume)?))
    }

    /// `<root>/pods/<uid>/volume-subpaths`.
    pub fn pod_subpaths_dir(&self, pod_uid: &str) -> Result<PathBuf, LayoutError> {
        Ok(self.pod_dir(pod_uid)?.join("volume-subpaths"))
    }

    /// `<root>/pods/<uid>/volume-subpaths/<volume>/<container>/<mount index>`: where a
    /// subPath is bind-mounted for the runtime (upstream `getSubpathBindTarget`).
    pub fn subpath_target(
        &self,
        pod_uid: &str,
        volume: &str,
        container: &str,
        mount_index: usize,
    ) -> Result<PathBuf, LayoutError> {
        Ok(self
            .pod_subpaths_dir(pod_uid)?
            .join(element("volume", volume)?)
            .join(element("container", container)?)
            .join(mount_index.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_upstream_layout() {
        let l = Layout::new("/var/lib/kubelet");
        let cases: Vec<(Result<PathBuf, LayoutError>, &str)> = vec![
            (l.pod_dir("u1"), "/var/lib/kubelet/pods/u1"),
            (
                l.volume_dir("u1", EMPTY_DIR_PLUGIN, "cache"),
                "/var/lib/kubelet/pods/u1/volumes/kubernetes.io~empty-dir/cache",
            ),
            (
                l.volume_dir("u1", PROJECTED_PLUGIN, "kube-api-access-x"),
                "/var/lib/kubelet/pods/u1/volumes/kubernetes.io~projected/kube-api-access-x",
            ),
            (
                l.subpath_target("u1", "data", "app", 2),
                "/var/lib/kubelet/pods/u1/volume-subpaths/data/app/2",
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got.unwrap(), PathBuf::from(want));
        }
    }

    #[test]
    fn names_cannot_walk_out() {
        let l = Layout::new("/r");
        for bad in ["", ".", "..", "a/b"] {
            assert!(l.pod_dir(bad).is_err(), "uid {bad:?}");
            assert!(
                l.volume_dir("u", EMPTY_DIR_PLUGIN, bad).is_err(),
                "volume {bad:?}"
            );
        }
        let e = l.pod_dir("../x").unwrap_err().to_string();
        assert_eq!(
            e,
            "pod uid \"../x\" cannot be a path element (empty, '.', '..' or contains '/')"
        );
    }
}
