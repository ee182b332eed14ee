//! Safe subPath resolution, against the upstream subPath CVEs (CVE-2017-1002101,
//! CVE-2021-25741): a container can plant symlinks in a volume it writes to, so a subPath
//! must never be resolved by the host's path walk, which would follow them out of the
//! volume.
//!
//! Every component is opened with `openat(O_PATH | O_NOFOLLOW)` from an fd of the volume
//! root. A symlink met on the way is resolved by hand: its target is followed only while it
//! stays inside the volume (upstream likewise evaluates symlinks, then refuses a result that
//! is "outside of allowed base"); `..` is applied to the walk's own stack, never opened. The
//! result is an fd of the very file or directory, usable as `/proc/self/fd/N`, which
//! [`bind_subpath`] bind-mounts to a kubelet-owned target the runtime can mount (upstream
//! `doBindSubPath` does the same with `/proc/<pid>/fd/<fd>`).

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::mountinfo;
use crate::remove::{self, RemoveError};
use crate::sys;

/// Linux's limit on symlinks followed in one lookup (MAXSYMLINKS).
const MAX_SYMLINKS: usize = 40;

#[derive(Debug, Error)]
pub enum SubpathError {
    // The first two are the upstream kubelet's messages (makeMounts).
    #[error("error SubPath `{0}` must not be an absolute path")]
    Absolute(String),
    #[error("unable to provision SubPath `{0}`: must not contain '..'")]
    Backstep(String),
    #[error("subPath `{subpath}` of volume {volume}: {at} resolves outside the volume")]
    Outside {
        subpath: String,
        volume: PathBuf,
        at: String,
    },
    #[error("subPath `{subpath}` of volume {volume}: too many levels of symbolic links")]
    Loop { subpath: String, volume: PathBuf },
    #[error("subPath `{subpath}` of volume {volume}: {what} {at}: {source}")]
    Io {
        subpath: String,
        volume: PathBuf,
        what: &'static str,
        at: String,
        #[source]
        source: io::Error,
    },
    #[error("subPath bind target {target}: {what}: {source}")]
    Bind {
        target: PathBuf,
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Remove(#[from] RemoveError),
}

/// Checks a subPath as the upstream kubelet does before using it: relative, and no `..`
/// element (upstream `ValidatePathNoBacksteps`).
pub fn validate_subpath(subpath: &str) -> Result<(), SubpathError> {
    if subpath.starts_with('/') {
        return Err(SubpathError::Absolute(subpath.into()));
    }
    if subpath.split('/').any(|e| e == "..") {
        return Err(SubpathError::Backstep(subpath.into()));
    }
    Ok(())
}

/// A resolved subPath: an open `O_PATH` fd of the file or directory inside the volume.
#[derive(Debug)]
pub struct SafeSubpath {
    fd: OwnedFd,
    /// The path inside the volume it resolved to, symlinks replaced (for logs).
    pub resolved: String,
    pub is_dir: bool,
}

impl SafeSubpath {
    /// `/proc/self/fd/N`: valid in this process while `self` lives.
    pub fn proc_path(&self) -> PathBuf {
        sys::proc_fd_path(&self.fd)
    }
}

/// Opens `subpath` inside `volume_root` without ever leaving it. With `create_mode`, missing
/// directories are created with that mode (upstream `SafeMakeDir` uses the mode of the
/// volume root); without it a missing component is an error.
pub fn open_subpath(
    volume_root: &Path,
    subpath: &str,
    create_mode: Option<u32>,
) -> Result<SafeSubpath, SubpathError> {
    validate_subpath(subpath)?;
    let io_err = |what, at: &[Vec<u8>], source| SubpathError::Io {
        subpath: subpath.into(),
        volume: volume_root.to_path_buf(),
        what,
        at: join(at),
        source,
    };
    // The root itself is the kubelet's own path; resolve it once so absolute symlink
    // targets can be compared with it.
    let root_real = std::fs::canonicalize(volume_root).map_err(|e| io_err("resolve", &[], e))?;
    let root_fd = sys::open_dir(&root_real).map_err(|e| io_err("open", &[], e))?;

    let mut queue: VecDeque<Vec<u8>> = split(subpath.as_bytes());
    let mut dirs: Vec<OwnedFd> = vec![root_fd];
    let mut names: Vec<Vec<u8>> = Vec::new();
    let mut final_file: Option<OwnedFd> = None;
    let mut links = 0;

    while let Some(name) = queue.pop_front() {
        if final_file.is_some() {
            return Err(io_err(
                "walk",
                &names,
                io::Error::from_raw_os_error(libc::ENOTDIR),
            ));
        }
        if name == b".." {
            // Only a symlink target can bring `..` here; it must not climb over the root.
            if names.pop().is_none() {
                return Err(SubpathError::Outside {
                    subpath: subpath.into(),
                    volume: volume_root.to_path_buf(),
                    at: "..".into(),
                });
            }
            dirs.pop();
            continue;
        }
        let parent = dirs.last().expect("root fd is never popped");
        let st = match sys::stat_at(parent.as_raw_fd(), &name) {
            Ok(st) => st,
            Err(e) if e.kind() == io::ErrorKind::NotFound && create_mode.is_some() => {
                let mode = create_mode.unwrap_or(0o755);
                match sys::mkdir_at(parent, &name, mode) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(io_err("create", &with(&names, &name), e)),
                }
                sys::stat_at(parent.as_raw_fd(), &name)
                    .map_err(|e| io_err("stat", &with(&names, &name), e))?
            }
            Err(e) => return Err(io_err("stat", &with(&names, &name), e)),
        };
        if sys::is_symlink(&st) {
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(SubpathError::Loop {
                    subpath: subpath.into(),
                    volume: volume_root.to_path_buf(),
                });
            }
            let target = sys::read_link_at(parent, &name)
                .map_err(|e| io_err("read link", &with(&names, &name), e))?;
            let mut next = if target.first() == Some(&b'/') {
                // An absolute target is a host path: inside only if under the volume root.
                let target_path = Path::new(std::ffi::OsStr::from_bytes(&target));
                let rel = target_path
                    .strip_prefix(&root_real)
                    .or_else(|_| target_path.strip_prefix(volume_root))
                    .map_err(|_| SubpathError::Outside {
                        subpath: subpath.into(),
                        volume: volume_root.to_path_buf(),
                        at: join(&with(&names, &name)),
                    })?;
                names.clear();
                dirs.truncate(1);
                split(rel.as_os_str().as_bytes())
            } else {
                split(&target)
            };
            while let Some(n) = next.pop_back() {
                queue.push_front(n);
            }
            continue;
        }
        let opened = if sys::is_dir(&st) {
            sys::open_at(parent, &name, libc::O_PATH | libc::O_DIRECTORY)
        } else {
            sys::open_at(parent, &name, libc::O_PATH)
        }
        .map_err(|e| io_err("open", &with(&names, &name), e))?;
        names.push(name);
        if sys::is_dir(&st) {
            dirs.push(opened);
        } else {
            final_file = Some(opened);
        }
    }
    let resolved = join(&names);
    let (fd, is_dir) = match final_file {
        Some(f) => (f, false),
        None => (dirs.pop().expect("root fd is never popped"), true),
    };
    Ok(SafeSubpath {
        fd,
        resolved,
        is_dir,
    })
}

/// Bind-mounts a resolved subPath onto `target` (from
/// [`Layout::subpath_target`](crate::Layout::subpath_target)), creating the target as a
/// directory or an empty file to match. A target that is already a mount point is left as it
/// is, so a retry is harmless.
pub fn bind_subpath(subpath: &SafeSubpath, target: &Path) -> Result<(), SubpathError> {
    let bind_err = |what, source| SubpathError::Bind {
        target: target.to_path_buf(),
        what,
        source,
    };
    let mounts = mountinfo::read_mountinfo().map_err(|e| bind_err("read mountinfo", e))?;
    if mountinfo::mount_at(&mounts, target).is_some() {
        return Ok(());
    }
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(|e| bind_err("create parent", e))?;
    }
    let made = if subpath.is_dir {
        std::fs::create_dir(target)
    } else {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(target)
            .map(|_| ())
    };
    match made {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(bind_err("create", e)),
    }
    let source = subpath.proc_path();
    sys::mount(&source.to_string_lossy(), target, None, libc::MS_BIND, None)
        .map_err(|e| bind_err("bind mount", e))
}

/// Unmounts every subPath bind mount under `dir` (a pod's `volume-subpaths`, or one
/// volume's or container's part of it) and removes the directory. Safe to call twice.
pub fn clean_subpaths(dir: &Path) -> Result<(), SubpathError> {
    let err = |what, source| SubpathError::Bind {
        target: dir.to_path_buf(),
        what,
        source,
    };
    let mounts = mountinfo::read_mountinfo().map_err(|e| err("read mountinfo", e))?;
    for point in mountinfo::mounts_under(&mounts, dir) {
        sys::unmount(&point).map_err(|e| err("unmount", e))?;
    }
    remove::remove_all_one_filesystem(dir)?;
    Ok(())
}

fn split(path: &[u8]) -> VecDeque<Vec<u8>> {
    path.split(|b| *b == b'/')
        .filter(|s| !s.is_empty() && *s != b".")
        .map(|s| s.to_vec())
        .collect()
}

fn with(names: &[Vec<u8>], last: &[u8]) -> Vec<Vec<u8>> {
    let mut v = names.to_vec();
    v.push(last.to_vec());
    v
}

fn join(names: &[Vec<u8>]) -> String {
    let parts: Vec<String> = names
        .iter()
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect();
    if parts.is_empty() {
        ".".into()
    } else {
        parts.join("/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn volume() -> (tempfile::TempDir, PathBuf, tempfile::TempDir) {
        let host = tempfile::tempdir().unwrap();
        let vol = host.path().join("vol");
        std::fs::create_dir_all(vol.join("data/logs")).unwrap();
        std::fs::write(vol.join("data/file"), b"in").unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"host").unwrap();
        // What a malicious container could plant:
        symlink(outside.path(), vol.join("escape_abs")).unwrap();
        symlink("../..", vol.join("data/escape_rel")).unwrap();
        symlink("/etc", vol.join("etc")).unwrap();
        // Benign links that stay inside:
        symlink("data/logs", vol.join("logs_link")).unwrap();
        symlink("../file", vol.join("data/logs/up")).unwrap();
        symlink(vol.join("data"), vol.join("abs_inside")).unwrap();
        symlink("loop", vol.join("loop")).unwrap();
        (host, vol, outside)
    }

    #[test]
    fn validate_subpath_as_upstream() {
        let cases = [
            ("a/b", None),
            ("a/..b", None),
            (
                "/a",
                Some("error SubPath `/a` must not be an absolute path"),
            ),
            (
                "a/../b",
                Some("unable to provision SubPath `a/../b`: must not contain '..'"),
            ),
            (
                "..",
                Some("unable to provision SubPath `..`: must not contain '..'"),
            ),
        ];
        for (p, want) in cases {
            assert_eq!(
                validate_subpath(p).err().map(|e| e.to_string()).as_deref(),
                want,
                "{p}"
            );
        }
    }

    #[test]
    fn resolves_inside_and_refuses_escapes() {
        let (_host, vol, _outside) = volume();
        // (subpath, Ok((resolved, is_dir)) or Err(fragment))
        type Case<'a> = (&'a str, Result<(&'a str, bool), &'a str>);
        let cases: &[Case] = &[
            ("data", Ok(("data", true))),
            ("data/file", Ok(("data/file", false))),
            ("./data//logs/", Ok(("data/logs", true))),
            ("logs_link", Ok(("data/logs", true))),
            ("data/logs/up", Ok(("data/file", false))),
            ("abs_inside/file", Ok(("data/file", false))),
            (
                "escape_abs/secret",
                Err("escape_abs resolves outside the volume"),
            ),
            ("data/escape_rel", Err("resolves outside the volume")),
            ("etc/passwd", Err("etc resolves outside the volume")),
            ("loop", Err("too many levels of symbolic links")),
            ("missing", Err("stat missing")),
            ("data/file/x", Err("Not a directory")),
            ("/abs", Err("must not be an absolute path")),
            ("data/../..", Err("must not contain '..'")),
        ];
        for (sub, want) in cases {
            let got = open_subpath(&vol, sub, None);
            match (got, want) {
                (Ok(s), Ok((resolved, is_dir))) => {
                    assert_eq!(
                        (s.resolved.as_str(), s.is_dir),
                        (*resolved, *is_dir),
                        "{sub}"
                    );
                    // The fd path reaches the very file inside the volume.
                    let real = std::fs::canonicalize(s.proc_path()).unwrap();
                    assert!(
                        real.starts_with(std::fs::canonicalize(&vol).unwrap()),
                        "{sub}"
                    );
                }
                (Err(e), Err(frag)) => {
                    assert!(e.to_string().contains(frag), "{sub}: {e}");
                }
                (got, want) => panic!("{sub}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn creates_missing_dirs_when_asked() {
        let (_host, vol, _outside) = volume();
        let s = open_subpath(&vol, "new/deep", Some(0o750)).unwrap();
        assert!(s.is_dir);
        assert!(vol.join("new/deep").is_dir());
        // Creation never follows a planted link out of the volume.
        let e = open_subpath(&vol, "escape_abs/made", Some(0o750)).unwrap_err();
        assert!(e.to_string().contains("outside"), "{e}");
        assert!(!_outside.path().join("made").exists());
    }

    #[test]
    fn bind_subpath_mounts_the_fd_target_once() {
        let (host, vol, _outside) = volume();
        let s = open_subpath(&vol, "data/file", None).unwrap();
        let target = host.path().join("volume-subpaths/vol/app/0");
        if let Err(e) = bind_subpath(&s, &target) {
            eprintln!("skipping: cannot bind mount here: {e}");
            return;
        }
        let again = bind_subpath(&s, &target);
        let content = std::fs::read(&target);
        let mounts = mountinfo::read_mountinfo().unwrap();
        let count = mounts.iter().filter(|m| m.mount_point == target).count();
        clean_subpaths(&host.path().join("volume-subpaths")).unwrap();
        again.unwrap();
        assert_eq!(content.unwrap(), b"in");
        assert_eq!(count, 1);
        assert!(!host.path().join("volume-subpaths").exists());
        clean_subpaths(&host.path().join("volume-subpaths")).unwrap();
    }
}
