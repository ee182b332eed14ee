//! Removing a directory tree that a container could have written to, as upstream's
//! `removeall.RemoveAllOneFilesystem` (pkg/util/removeall): entries are removed through
//! directory fds with `unlinkat`, never following a symlink, and a directory on another
//! filesystem (a mount that is still there) stops the removal instead of being emptied.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::sys;

#[derive(Debug, Error)]
pub enum RemoveError {
    #[error("remove {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("remove {path}: it is on another filesystem (still mounted?); refusing to cross it")]
    CrossesMount { path: PathBuf },
}

/// Removes `path` and everything below it without crossing filesystems or following
/// symlinks. A missing `path` is success, so it is safe to call twice. `path` itself may
/// be a symlink: the link is removed, not its target.
pub fn remove_all_one_filesystem(path: &Path) -> Result<(), RemoveError> {
    let io_err = |p: &Path, source| RemoveError::Io {
        path: p.to_path_buf(),
        source,
    };
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(path, e)),
    };
    if !meta.is_dir() {
        return std::fs::remove_file(path).map_err(|e| io_err(path, e));
    }
    let dir = sys::open_dir(path).map_err(|e| io_err(path, e))?;
    let st = sys::stat_at(dir.as_raw_fd(), b"").map_err(|e| io_err(path, e))?;
    remove_contents(&dir, st.st_dev, path)?;
    drop(dir);
    match std::fs::remove_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(path, e)),
    }
}

fn remove_contents(dir: &OwnedFd, dev: libc::dev_t, shown: &Path) -> Result<(), RemoveError> {
    let io_err = |p: PathBuf, source| RemoveError::Io { path: p, source };
    let names = sys::list_dir(dir).map_err(|e| io_err(shown.to_path_buf(), e))?;
    for name in names {
        let child = shown.join(std::ffi::OsStr::from_bytes(&name));
        let st = match sys::stat_at(dir.as_raw_fd(), &name) {
            Ok(st) => st,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err(child, e)),
        };
        if sys::is_dir(&st) {
            if st.st_dev != dev {
                return Err(RemoveError::CrossesMount { path: child });
            }
            let sub = sys::open_at(dir, &name, libc::O_DIRECTORY | libc::O_RDONLY)
                .map_err(|e| io_err(child.clone(), e))?;
            remove_contents(&sub, dev, &child)?;
        }
        match sys::unlink_at(dir, &name, sys::is_dir(&st)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(child, e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_tree_but_not_symlink_targets_and_is_idempotent() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("keep"), b"k").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("pod");
        std::fs::create_dir_all(victim.join("a/b")).unwrap();
        std::fs::write(victim.join("a/b/f"), b"x").unwrap();
        std::os::unix::fs::symlink(outside.path(), victim.join("a/escape")).unwrap();

        remove_all_one_filesystem(&victim).unwrap();
        assert!(!victim.exists());
        assert!(outside.path().join("keep").exists(), "symlink target kept");
        remove_all_one_filesystem(&victim).unwrap();
    }

    #[test]
    fn refuses_to_cross_a_mount() {
        let dir = tempfile::tempdir().unwrap();
        let mnt = dir.path().join("m");
        std::fs::create_dir(&mnt).unwrap();
        if sys::mount("tmpfs", &mnt, Some("tmpfs"), 0, Some("size=1m")).is_err() {
            eprintln!("skipping: cannot mount tmpfs here");
            return;
        }
        std::fs::write(mnt.join("data"), b"x").unwrap();
        let err = remove_all_one_filesystem(dir.path());
        let still_there = mnt.join("data").exists();
        sys::unmount(&mnt).unwrap();
        assert!(
            matches!(err, Err(RemoveError::CrossesMount { .. })),
            "{err:?}"
        );
        assert!(still_there, "files on the mount are not touched");
    }
}
