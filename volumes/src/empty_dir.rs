//! emptyDir volumes, as upstream's pkg/volume/emptydir:
//!
//! - on disk: a directory `<pods>/<uid>/volumes/kubernetes.io~empty-dir/<name>`, mode 0777
//!   whatever the umask (upstream `setupDir` chmods after MkdirAll);
//! - medium `Memory`: the same directory with a tmpfs on it, `size=<sizeLimit bytes>` when a
//!   positive sizeLimit is set, else the kernel default. A directory that already has a tmpfs
//!   (per /proc/self/mountinfo) is left alone, so a second set-up is a no-op.
//!
//! With an fsGroup the volume gets the read-write fsGroup bits (see [`ownership`]).
//! Tear-down unmounts a tmpfs and removes the directory; both steps are safe to repeat.
//!
//! [`ownership`]: crate::ownership

use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::EmptyDirVolumeSource;
use thiserror::Error;

use crate::layout::{Layout, LayoutError, EMPTY_DIR_PLUGIN};
use crate::mountinfo::{self, MountInfo};
use crate::ownership::{self, OwnershipError};
use crate::quantity::{Quantity, QuantityError};
use crate::remove::{self, RemoveError};
use crate::sys;

/// Upstream's emptyDir permission bits.
pub const EMPTY_DIR_MODE: u32 = 0o777;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Medium {
    Disk,
    Memory,
}

#[derive(Debug, Error)]
pub enum EmptyDirError {
    #[error("emptyDir {volume}: unsupported medium {medium:?} (only \"\" and \"Memory\")")]
    UnsupportedMedium { volume: String, medium: String },
    #[error("emptyDir {volume}: sizeLimit: {source}")]
    SizeLimit {
        volume: String,
        #[source]
        source: QuantityError,
    },
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error("emptyDir {volume}: {what} {path}: {source}")]
    Io {
        volume: String,
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("emptyDir {volume}: {source}")]
    Ownership {
        volume: String,
        #[source]
        source: OwnershipError,
    },
    #[error("emptyDir {volume}: {source}")]
    Remove {
        volume: String,
        #[source]
        source: RemoveError,
    },
}

/// What to do for one emptyDir, decided from the spec alone (pure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmptyDirPlan {
    pub medium: Medium,
    /// tmpfs mount data, e.g. `size=1048576`; empty for the kernel default.
    pub tmpfs_options: Option<String>,
}

/// Medium and tmpfs size of an emptyDir (upstream: "" is the node's disk, "Memory" is
/// tmpfs; hugepages media are not supported here).
pub fn plan(volume: &str, source: &EmptyDirVolumeSource) -> Result<EmptyDirPlan, EmptyDirError> {
    let medium = match source.medium.as_deref().unwrap_or("") {
        "" => Medium::Disk,
        "Memory" => Medium::Memory,
        other => {
            return Err(EmptyDirError::UnsupportedMedium {
                volume: volume.into(),
                medium: other.into(),
            })
        }
    };
    let mut tmpfs_options = None;
    if medium == Medium::Memory {
        if let Some(limit) = &source.size_limit {
            let q = Quantity::parse(&limit.0).map_err(|source| EmptyDirError::SizeLimit {
                volume: volume.into(),
                source,
            })?;
            if q.value() > 0 {
                tmpfs_options = Some(format!("size={}", q.value()));
            }
        }
    }
    Ok(EmptyDirPlan {
        medium,
        tmpfs_options,
    })
}

/// Whether `dir` already has a tmpfs on it (pure, over parsed mountinfo).
pub fn has_tmpfs(mounts: &[MountInfo], dir: &Path) -> bool {
    mountinfo::mount_at(mounts, dir).is_some_and(|m| m.fs_type == "tmpfs")
}

/// Creates (or finds) the emptyDir of `volume` for pod `pod_uid` and returns its host path.
pub fn set_up(
    layout: &Layout,
    pod_uid: &str,
    volume: &str,
    source: &EmptyDirVolumeSource,
    fs_group: Option<u32>,
) -> Result<PathBuf, EmptyDirError> {
    let plan = plan(volume, source)?;
    set_up_at(layout, pod_uid, EMPTY_DIR_PLUGIN, volume, &plan, fs_group)
}

/// The directory of volume `volume` of plugin `plugin`, set up as an emptyDir of `plan`:
/// upstream builds configMap and downwardAPI volumes on a wrapped disk emptyDir, and
/// secret and projected volumes on a wrapped memory one, so secrets never touch the disk.
pub fn set_up_at(
    layout: &Layout,
    pod_uid: &str,
    plugin: &str,
    volume: &str,
    plan: &EmptyDirPlan,
    fs_group: Option<u32>,
) -> Result<PathBuf, EmptyDirError> {
    let dir = layout.volume_dir(pod_uid, plugin, volume)?;
    let io_err = |what, path: &Path, source| EmptyDirError::Io {
        volume: volume.into(),
        what,
        path: path.to_path_buf(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir.parent().unwrap_or(&dir))
        .map_err(|e| io_err("create", &dir, e))?;
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_err("create", &dir, e)),
    }
    let meta = std::fs::symlink_metadata(&dir).map_err(|e| io_err("stat", &dir, e))?;
    if !meta.is_dir() {
        return Err(io_err(
            "check",
            &dir,
            io::Error::new(io::ErrorKind::InvalidData, "not a directory"),
        ));
    }
    if plan.medium == Medium::Memory {
        let mounts =
            mountinfo::read_mountinfo().map_err(|e| io_err("read mountinfo for", &dir, e))?;
        if !has_tmpfs(&mounts, &dir) {
            sys::mount(
                "tmpfs",
                &dir,
                Some("tmpfs"),
                0,
                plan.tmpfs_options.as_deref(),
            )
            .map_err(|e| io_err("mount tmpfs on", &dir, e))?;
            tracing::info!(pod_uid, volume, path = %dir.display(), "mounted tmpfs for emptyDir");
        }
    } else if meta.permissions().mode() & 0o7777 != EMPTY_DIR_MODE {
        // Upstream chmods only the disk dir; a fresh tmpfs keeps its own 1777 root.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(EMPTY_DIR_MODE))
            .map_err(|e| io_err("chmod", &dir, e))?;
    }
    if let Some(gid) = fs_group {
        ownership::set_volume_ownership(&dir, gid, false).map_err(|source| {
            EmptyDirError::Ownership {
                volume: volume.into(),
                source,
            }
        })?;
    }
    Ok(dir)
}

/// Unmounts (if a tmpfs is there) and removes the emptyDir. A missing dir is success.
pub fn tear_down(layout: &Layout, pod_uid: &str, volume: &str) -> Result<(), EmptyDirError> {
    let dir = layout.volume_dir(pod_uid, EMPTY_DIR_PLUGIN, volume)?;
    let io_err = |what, source| EmptyDirError::Io {
        volume: volume.into(),
        what,
        path: dir.clone(),
        source,
    };
    let mounts = mountinfo::read_mountinfo().map_err(|e| io_err("read mountinfo for", e))?;
    // Every stacked mount on the dir or below it, deepest first.
    for point in mountinfo::mounts_under(&mounts, &dir) {
        sys::unmount(&point).map_err(|e| io_err("unmount", e))?;
    }
    remove::remove_all_one_filesystem(&dir).map_err(|source| EmptyDirError::Remove {
        volume: volume.into(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity as Q;
    use std::os::unix::fs::MetadataExt;

    fn source(medium: Option<&str>, size: Option<&str>) -> EmptyDirVolumeSource {
        EmptyDirVolumeSource {
            medium: medium.map(Into::into),
            size_limit: size.map(|s| Q(s.into())),
            ..Default::default()
        }
    }

    #[test]
    fn plan_cases() {
        // (medium, sizeLimit, (medium, tmpfs options) or error)
        type Case<'a> = (
            Option<&'a str>,
            Option<&'a str>,
            Result<(Medium, Option<&'a str>), &'a str>,
        );
        let cases: &[Case] = &[
            (None, None, Ok((Medium::Disk, None))),
            (Some(""), Some("1Gi"), Ok((Medium::Disk, None))),
            (Some("Memory"), None, Ok((Medium::Memory, None))),
            (
                Some("Memory"),
                Some("1Mi"),
                Ok((Medium::Memory, Some("size=1048576"))),
            ),
            (Some("Memory"), Some("0"), Ok((Medium::Memory, None))),
            (
                Some("HugePages"),
                None,
                Err("emptyDir v: unsupported medium \"HugePages\" (only \"\" and \"Memory\")"),
            ),
        ];
        for (medium, size, want) in cases {
            let got = plan("v", &source(*medium, *size))
                .map(|p| (p.medium, p.tmpfs_options))
                .map_err(|e| e.to_string());
            let want = want
                .map(|(m, o)| (m, o.map(String::from)))
                .map_err(String::from);
            assert_eq!(got, want, "{medium:?} {size:?}");
        }
    }

    #[test]
    fn disk_empty_dir_is_0777_and_torn_down_twice() {
        let root = tempfile::tempdir().unwrap();
        let layout = Layout::new(root.path());
        let dir = set_up(&layout, "u1", "cache", &source(None, None), None).unwrap();
        assert_eq!(
            dir,
            root.path()
                .join("pods/u1/volumes/kubernetes.io~empty-dir/cache")
        );
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o7777, 0o777);
        std::fs::write(dir.join("f"), b"x").unwrap();
        // A second set-up keeps the data.
        set_up(&layout, "u1", "cache", &source(None, None), None).unwrap();
        assert!(dir.join("f").exists());
        tear_down(&layout, "u1", "cache").unwrap();
        assert!(!dir.exists());
        tear_down(&layout, "u1", "cache").unwrap();
    }

    #[test]
    fn memory_empty_dir_mounts_tmpfs_once_with_size() {
        let root = tempfile::tempdir().unwrap();
        let layout = Layout::new(root.path());
        let src = source(Some("Memory"), Some("2Mi"));
        let dir = match set_up(&layout, "u1", "mem", &src, None) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("skipping: cannot mount tmpfs here: {e}");
                return;
            }
        };
        let result = std::panic::catch_unwind(|| {
            set_up(&layout, "u1", "mem", &src, None).unwrap();
            let mounts = mountinfo::read_mountinfo().unwrap();
            let count = mounts.iter().filter(|m| m.mount_point == dir).count();
            assert_eq!(count, 1, "second set-up must not stack a mount");
            assert!(has_tmpfs(&mounts, &dir));
            let st = unsafe_statfs_blocks(&dir);
            assert_eq!(st, 2 * 1024 * 1024, "tmpfs size");
        });
        tear_down(&layout, "u1", "mem").unwrap();
        let mounts = mountinfo::read_mountinfo().unwrap();
        assert!(!mounts.iter().any(|m| m.mount_point == dir));
        assert!(!dir.exists());
        result.unwrap();
    }

    fn unsafe_statfs_blocks(dir: &Path) -> u64 {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap();
        // SAFETY: test helper; zeroed statfs is valid and c is NUL-terminated.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::statfs(c.as_ptr(), &mut st) }, 0);
        st.f_blocks * st.f_bsize as u64
    }
}
