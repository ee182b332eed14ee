//! fsGroup ownership of a volume, as upstream's `SetVolumeOwnership`
//! (pkg/volume/volume_linux.go): every file and directory under the volume is given the
//! pod's fsGroup as its group, and its mode gains group bits:
//!
//! - a read-only volume (configMap, secret, downwardAPI, projected) ORs `0440`,
//!   a read-write one (emptyDir, hostPath-backed local volumes) ORs `0660`;
//! - a directory also gains setgid and group/owner search (`0110`), so files created later
//!   inherit the group;
//! - symlinks are re-grouped with `lchown` but never chmod-ed, because chmod follows the
//!   link and would override the mode the volume plugin chose for the target.
//!
//! So a 0600 service account token in a projected volume becomes 0640 with an fsGroup.

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use thiserror::Error;

const RW_MASK: u32 = 0o660;
const RO_MASK: u32 = 0o440;
const EXEC_MASK: u32 = 0o110;
const SETGID: u32 = 0o2000;

#[derive(Debug, Error)]
#[error("set fsGroup {gid} on {path}: {source}")]
pub struct OwnershipError {
    pub gid: u32,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// The mode a file or directory gets with an fsGroup (pure: the rule of
/// `changeFilePermission`). `mode` is the current permission bits (with setuid/setgid/sticky).
pub fn mode_with_fs_group(mode: u32, is_dir: bool, read_only: bool) -> u32 {
    let mut mask = if read_only { RO_MASK } else { RW_MASK };
    if is_dir {
        mask |= SETGID | EXEC_MASK;
    }
    (mode & 0o7777) | mask
}

/// Gives everything under `root` (and `root` itself) the group `gid` and the mode bits of
/// [`mode_with_fs_group`]. Never follows symlinks. Safe to call twice: the second call
/// changes nothing.
pub fn set_volume_ownership(root: &Path, gid: u32, read_only: bool) -> Result<(), OwnershipError> {
    let err = |path: &Path, source| OwnershipError {
        gid,
        path: path.to_path_buf(),
        source,
    };
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).map_err(|e| err(&path, e))?;
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).map_err(|e| err(&path, e))? {
                stack.push(entry.map_err(|e| err(&path, e))?.path());
            }
        }
        if meta.gid() != gid {
            lchown_group(&path, gid).map_err(|e| err(&path, e))?;
        }
        if meta.file_type().is_symlink() {
            continue;
        }
        let want = mode_with_fs_group(meta.mode(), meta.is_dir(), read_only);
        if meta.mode() & 0o7777 != want {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(want))
                .map_err(|e| err(&path, e))?;
        }
    }
    Ok(())
}

fn lchown_group(path: &Path, gid: u32) -> io::Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: c is a valid NUL-terminated string; uid -1 leaves the owner unchanged.
    let rc = unsafe { libc::lchown(c.as_ptr(), u32::MAX, gid) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_with_fs_group_follows_upstream_masks() {
        // (mode, is_dir, read_only, expected)
        let cases = [
            (0o600, false, true, 0o640), // projected token with fsGroup
            (0o644, false, true, 0o644),
            (0o400, false, true, 0o440),
            (0o600, false, false, 0o660),
            (0o755, true, true, 0o2755),
            (0o700, true, false, 0o2770),
            (0o777, true, false, 0o2777),
        ];
        for (mode, is_dir, ro, want) in cases {
            assert_eq!(
                mode_with_fs_group(mode, is_dir, ro),
                want,
                "mode {mode:o} dir={is_dir} ro={ro}"
            );
        }
    }

    #[test]
    fn set_volume_ownership_regroups_files_and_skips_symlink_targets() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, b"t").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        // A symlink to a file outside the volume must not have its target chmod-ed.
        let outside = tempfile::NamedTempFile::new().unwrap();
        std::fs::set_permissions(outside.path(), std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();

        set_volume_ownership(dir.path(), 4242, true).unwrap();
        set_volume_ownership(dir.path(), 4242, true).unwrap();

        let m = std::fs::metadata(&f).unwrap();
        assert_eq!(m.gid(), 4242);
        assert_eq!(m.mode() & 0o7777, 0o640);
        let d = std::fs::metadata(dir.path()).unwrap();
        assert_eq!(d.mode() & 0o2000, 0o2000, "dir is setgid");
        let o = std::fs::metadata(outside.path()).unwrap();
        assert_eq!(o.mode() & 0o7777, 0o600, "symlink target untouched");
        assert_ne!(o.gid(), 4242, "symlink target not regrouped");
    }
}
