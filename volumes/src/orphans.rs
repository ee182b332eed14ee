//! Orphaned pod directories: `<root>/pods/<uid>` of pods that no longer exist (deleted while
//! the agent was down, or whose clean-up failed). Upstream's `cleanupOrphanedPodDirs`
//! (pkg/kubelet/kubelet_volumes.go) does this in the housekeeping loop.
//!
//! For every pod directory whose uid is not in the live set: unmount everything mounted at
//! or below it (from /proc/self/mountinfo, deepest first), check that nothing is left
//! mounted, then remove it without following symlinks or crossing filesystems. A directory
//! of a live pod is never touched, and entries of `pods/` that are not directories (a
//! symlink, say) are left alone. One pod's failure does not stop the others.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::layout::Layout;
use crate::mountinfo::{self, MountInfo};
use crate::remove;
use crate::sys;

#[derive(Debug, Error)]
pub enum OrphanError {
    #[error("list orphaned pod dirs in {path}: {source}")]
    List {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What one clean-up pass did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct OrphanReport {
    /// UIDs whose directory was removed.
    pub removed: Vec<String>,
    /// UIDs that could not be cleaned, with why; retried on the next pass.
    pub failed: Vec<(String, String)>,
}

/// The orphans among the directory names of `pods/` (pure).
pub fn orphaned_uids(dir_names: &[String], live: &BTreeSet<String>) -> Vec<String> {
    let mut out: Vec<String> = dir_names
        .iter()
        .filter(|n| !live.contains(*n))
        .cloned()
        .collect();
    out.sort();
    out
}

/// Cleans every orphaned pod directory under `layout`'s pods dir. `live` is the set of pod
/// UIDs that still exist (from the API or static pods). A missing pods dir is nothing to do.
pub fn clean_orphaned_pod_dirs(
    layout: &Layout,
    live: &BTreeSet<String>,
) -> Result<OrphanReport, OrphanError> {
    let list_err = |path: &Path, source| OrphanError::List {
        path: path.to_path_buf(),
        source,
    };
    let pods_dir = layout.pods_dir();
    // Mount points in mountinfo are real paths: compare against the real pods dir.
    let pods_dir = match std::fs::canonicalize(&pods_dir) {
        Ok(p) => p,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(OrphanReport::default()),
        Err(e) => return Err(list_err(&pods_dir, e)),
    };
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&pods_dir).map_err(|e| list_err(&pods_dir, e))? {
        let entry = entry.map_err(|e| list_err(&pods_dir, e))?;
        // file_type() does not follow symlinks: only real directories are pod dirs.
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_string());
            }
        }
    }
    let mut report = OrphanReport::default();
    for uid in orphaned_uids(&names, live) {
        match clean_one(&pods_dir.join(&uid)) {
            Ok(()) => {
                tracing::info!(pod_uid = %uid, "removed orphaned pod directory");
                report.removed.push(uid);
            }
            Err(why) => {
                tracing::warn!(pod_uid = %uid, error = %why, "orphaned pod directory not cleaned");
                report.failed.push((uid, why));
            }
        }
    }
    Ok(report)
}

/// Removes the directory of pod `uid` (its volumes unmounted first, deepest first),
/// when the pod is gone. A missing directory is success; safe to call twice.
pub fn remove_pod_dir(layout: &Layout, uid: &str) -> Result<(), String> {
    let dir = layout.pod_dir(uid).map_err(|e| e.to_string())?;
    // Mount points in mountinfo are real paths.
    match std::fs::canonicalize(&dir) {
        Ok(real) => clean_one(&real),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("resolve {}: {e}", dir.display())),
    }
}

fn clean_one(pod_dir: &Path) -> Result<(), String> {
    let read = || mountinfo::read_mountinfo().map_err(|e| format!("read mountinfo: {e}"));
    let mounts: Vec<MountInfo> = read()?;
    for point in mountinfo::mounts_under(&mounts, pod_dir) {
        sys::unmount(&point).map_err(|e| format!("unmount {}: {e}", point.display()))?;
    }
    let left = mountinfo::mounts_under(&read()?, pod_dir);
    if let Some(p) = left.first() {
        return Err(format!("{} is still mounted", p.display()));
    }
    remove::remove_all_one_filesystem(pod_dir).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn orphaned_uids_excludes_live_pods() {
        let names: Vec<String> = ["b", "a", "live"].iter().map(|s| s.to_string()).collect();
        assert_eq!(orphaned_uids(&names, &set(&["live"])), vec!["a", "b"]);
        assert!(orphaned_uids(&names, &set(&["a", "b", "live"])).is_empty());
    }

    #[test]
    fn cleans_orphans_with_mounts_and_keeps_live_pods() {
        let root = tempfile::tempdir().unwrap();
        let layout = Layout::new(root.path());
        let live_dir = layout.pod_dir("live").unwrap();
        let orphan_dir = layout.pod_dir("gone").unwrap();
        std::fs::create_dir_all(live_dir.join("volumes/x")).unwrap();
        std::fs::write(live_dir.join("volumes/x/f"), b"keep").unwrap();
        let mnt = orphan_dir.join("volumes/kubernetes.io~empty-dir/mem");
        std::fs::create_dir_all(&mnt).unwrap();
        // A symlink in the orphan pointing at the live pod must not be followed.
        std::os::unix::fs::symlink(&live_dir, orphan_dir.join("trap")).unwrap();
        // A symlink in pods/ itself is not a pod dir.
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), layout.pods_dir().join("link")).unwrap();
        let mounted = sys::mount("tmpfs", &mnt, Some("tmpfs"), 0, Some("size=1m")).is_ok();
        if mounted {
            let nested = mnt.join("nested");
            std::fs::create_dir(&nested).unwrap();
            sys::mount("tmpfs", &nested, Some("tmpfs"), 0, Some("size=1m")).unwrap();
        }

        let report = clean_orphaned_pod_dirs(&layout, &set(&["live"])).unwrap();
        // Unmount leftovers before asserting, whatever happened.
        let _ = sys::unmount(&mnt.join("nested"));
        let _ = sys::unmount(&mnt);

        assert_eq!(report.removed, vec!["gone"], "{report:?}");
        assert!(report.failed.is_empty(), "{report:?}");
        assert!(!orphan_dir.exists());
        assert_eq!(
            std::fs::read(live_dir.join("volumes/x/f")).unwrap(),
            b"keep"
        );
        assert!(outside.path().exists());
        assert!(layout.pods_dir().join("link").symlink_metadata().is_ok());
        // A second pass has nothing to do.
        let again = clean_orphaned_pod_dirs(&layout, &set(&["live"])).unwrap();
        assert_eq!(again, OrphanReport::default());
    }
}
