//! The kubelet's root directory as a shared mount, as upstream's kubelet makes it at
//! start (setupDataDirs: MakeRShared): volumes below it can then be mounted into
//! containers with HostToContainer or Bidirectional propagation, and a mount a
//! Bidirectional container makes comes back to the host. When the directory already
//! lies on a shared mount nothing is done; otherwise it is bind-mounted on itself and
//! the bind made recursively shared. Safe to call at every start.

use std::io;
use std::path::Path;

use crate::mountinfo;
use crate::sys;

/// Makes `dir` (which must exist) lie on a shared mount.
pub fn make_rshared(dir: &Path) -> io::Result<()> {
    let dir = std::fs::canonicalize(dir)?;
    let mounts = mountinfo::read_mountinfo()?;
    if mountinfo::containing_mount(&mounts, &dir).is_some_and(|m| m.shared) {
        return Ok(());
    }
    if mountinfo::mount_at(&mounts, &dir).is_none() {
        sys::mount(
            &dir.to_string_lossy(),
            &dir,
            None,
            libc::MS_BIND | libc::MS_REC,
            None,
        )?;
    }
    sys::mount("none", &dir, None, libc::MS_SHARED | libc::MS_REC, None)?;
    tracing::info!(dir = %dir.display(), "made the root directory a shared mount");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_private_directory_becomes_a_shared_mount_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = std::fs::canonicalize(dir.path()).unwrap();
        let first = make_rshared(&path);
        let mounts = mountinfo::read_mountinfo().unwrap();
        let count = mounts.iter().filter(|m| m.mount_point == path).count();
        let shared = mountinfo::mount_at(&mounts, &path).is_some_and(|m| m.shared);
        let second = make_rshared(&path);
        let after = mountinfo::read_mountinfo()
            .unwrap()
            .iter()
            .filter(|m| m.mount_point == path)
            .count();
        while sys::unmount(&path).unwrap_or(false) {}
        first.unwrap();
        second.unwrap();
        // The host's / may be shared already (systemd makes it so): then nothing is
        // mounted and the directory is shared through it.
        let on_shared_root = count == 0;
        assert!(
            on_shared_root || (count == 1 && shared),
            "count {count}, shared {shared}"
        );
        assert_eq!(after, count, "a second call mounts nothing more");
    }
}
