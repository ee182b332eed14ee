//! Atomic projection of a set of files into a directory, as upstream's `AtomicWriter`
//! (pkg/volume/util/atomic_writer.go). Used by configMap, secret, downwardAPI and projected
//! volumes so a container never sees half of an update.
//!
//! Layout of a target directory:
//!
//! ```text
//! <target>/..2026_01_02_15_04_05.123456789  the real files (a new dir per update)
//! <target>/..data -> ..2026_01_02_...        swapped with one rename(2)
//! <target>/key     -> ..data/key             one symlink per top-level entry
//! <target>/dir     -> ..data/dir
//! ```
//!
//! Names starting with `..` are reserved for the writer. Writing the same payload twice
//! creates no new timestamped directory. The writer assumes one caller at a time per target
//! (upstream offers no concurrency guarantee either).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use thiserror::Error;

use crate::ownership::{self, OwnershipError};

/// Upstream limits (`maxFileNameLength`, `maxPathLength`).
const MAX_FILE_NAME_LENGTH: usize = 255;
const MAX_PATH_LENGTH: usize = 4096;

pub const DATA_DIR_NAME: &str = "..data";
const NEW_DATA_DIR_NAME: &str = "..data_tmp";

/// One file of a payload: its bytes and its permission bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProjection {
    pub data: Vec<u8>,
    pub mode: u32,
}

/// Relative path → file. A `BTreeMap` so writes and errors are in a stable order.
pub type Payload = BTreeMap<String, FileProjection>;

#[derive(Debug, Error)]
pub enum AtomicWriteError {
    #[error("invalid path: must not be empty: {0:?}")]
    EmptyPath(String),
    #[error("invalid path: must be relative path: {0}")]
    AbsolutePath(String),
    #[error("invalid path: must be less than or equal to {MAX_PATH_LENGTH} characters: {0}")]
    PathTooLong(String),
    #[error("invalid path: filenames must be less than or equal to {MAX_FILE_NAME_LENGTH} characters: {0}")]
    NameTooLong(String),
    #[error("invalid path: must not contain '..': {0}")]
    Backstep(String),
    #[error("invalid path: must not start with '..': {0}")]
    Reserved(String),
    #[error("atomic write into {target}: {what} {path}: {source}")]
    Io {
        target: PathBuf,
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("atomic write into {target}: {source}")]
    Ownership {
        target: PathBuf,
        #[source]
        source: OwnershipError,
    },
}

/// Checks one payload path as upstream's `validatePath`: not empty, not absolute, at most
/// 4096 bytes, no name over 255 bytes, no `..` element, and no first element starting with
/// `..` (those names belong to the writer).
pub fn validate_path(path: &str) -> Result<(), AtomicWriteError> {
    if path.is_empty() {
        return Err(AtomicWriteError::EmptyPath(path.into()));
    }
    if path.starts_with('/') {
        return Err(AtomicWriteError::AbsolutePath(path.into()));
    }
    if path.len() > MAX_PATH_LENGTH {
        return Err(AtomicWriteError::PathTooLong(path.into()));
    }
    let items: Vec<&str> = path.split('/').collect();
    for item in &items {
        if *item == ".." {
            return Err(AtomicWriteError::Backstep(path.into()));
        }
        if item.len() > MAX_FILE_NAME_LENGTH {
            return Err(AtomicWriteError::NameTooLong(path.into()));
        }
    }
    if items[0].starts_with("..") && items[0].len() > 2 {
        return Err(AtomicWriteError::Reserved(path.into()));
    }
    Ok(())
}

/// Lexical `filepath.Clean` for a path that passed [`validate_path`]: drops empty and `.`
/// elements, so `a//b/./c/` becomes `a/b/c`.
pub fn clean_path(path: &str) -> String {
    path.split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// Validates every path and returns the payload keyed by cleaned paths
/// (upstream `validatePayload`).
pub fn validate_payload(payload: &Payload) -> Result<Payload, AtomicWriteError> {
    let mut clean = Payload::new();
    for (path, file) in payload {
        validate_path(path)?;
        let cleaned = clean_path(path);
        if cleaned.is_empty() {
            return Err(AtomicWriteError::EmptyPath(path.clone()));
        }
        clean.insert(cleaned, file.clone());
    }
    Ok(clean)
}

/// The paths present in the old data dir but in no new file path nor any of its parents
/// (upstream `pathsToRemove`; parents are kept so non-empty dirs are not removed).
pub fn paths_to_remove(old: &BTreeSet<String>, payload: &Payload) -> BTreeSet<String> {
    let mut keep = BTreeSet::new();
    for file in payload.keys() {
        let mut p = file.as_str();
        loop {
            keep.insert(p.to_string());
            match p.rfind('/') {
                Some(i) => p = &p[..i],
                None => break,
            }
        }
    }
    old.difference(&keep).cloned().collect()
}

/// The top-level names of a payload: one user-visible symlink each.
pub fn top_level_names(payload: &Payload) -> BTreeSet<String> {
    payload
        .keys()
        .map(|p| p.split('/').next().unwrap_or(p).to_string())
        .collect()
}

/// Writes payloads into one target directory.
#[derive(Debug, Clone)]
pub struct AtomicWriter {
    target: PathBuf,
}

/// What a write did, for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The payload on disk was already this one; only missing visible links were restored.
    Unchanged,
    /// A new timestamped directory was written and swapped in.
    Written { data_dir: String },
}

impl AtomicWriter {
    /// A writer for `target`, which must already exist (the volume directory).
    pub fn new(target: impl Into<PathBuf>) -> AtomicWriter {
        AtomicWriter {
            target: target.into(),
        }
    }

    fn io(&self, what: &'static str, path: &Path, source: io::Error) -> AtomicWriteError {
        AtomicWriteError::Io {
            target: self.target.clone(),
            what,
            path: path.to_path_buf(),
            source,
        }
    }

    /// Projects `payload` into the target directory. With `fs_group`, the new files get that
    /// group and the read-only fsGroup mode bits (see [`ownership`]) before they become
    /// visible, as upstream's `setPerms` hook. Safe to call again with the same payload.
    pub fn write(
        &self,
        payload: &Payload,
        fs_group: Option<u32>,
    ) -> Result<WriteOutcome, AtomicWriteError> {
        // (1) validate.
        let payload = validate_payload(payload)?;

        // (2) the current data dir, if any.
        let data_link = self.target.join(DATA_DIR_NAME);
        let old_ts = match std::fs::read_link(&data_link) {
            Ok(p) => Some(p.to_string_lossy().into_owned()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(self.io("read link", &data_link, e)),
        };

        // (3, 4) what to remove, and whether anything changed.
        let mut to_remove = BTreeSet::new();
        if let Some(old) = &old_ts {
            let old_dir = self.target.join(old);
            let existing = walk_relative(&old_dir).map_err(|e| self.io("walk", &old_dir, e))?;
            to_remove = paths_to_remove(&existing, &payload);
            let changed = self.payload_differs(&payload, &old_dir)?;
            if !changed && to_remove.is_empty() {
                // Upstream (kubernetes#121472): the data is current, but the visible links
                // may have been lost; restore them.
                self.create_user_visible_files(&payload)?;
                return Ok(WriteOutcome::Unchanged);
            }
        }

        // (5, 6) a new timestamped dir with the payload, permissions set before the swap.
        let ts_dir = self.new_timestamp_dir()?;
        let ts_name = file_name(&ts_dir);
        if let Err(e) = self.write_payload_to_dir(&payload, &ts_dir) {
            let _ = std::fs::remove_dir_all(&ts_dir);
            return Err(e);
        }
        if let Some(gid) = fs_group {
            if let Err(source) = ownership::set_volume_ownership(&ts_dir, gid, true) {
                let _ = std::fs::remove_dir_all(&ts_dir);
                return Err(AtomicWriteError::Ownership {
                    target: self.target.clone(),
                    source,
                });
            }
        }

        // (7) swap ..data with one rename of a fresh temporary link.
        let tmp_link = self.target.join(NEW_DATA_DIR_NAME);
        match std::fs::remove_file(&tmp_link) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(self.io("remove stale", &tmp_link, e)),
        }
        if let Err(e) = std::os::unix::fs::symlink(&ts_name, &tmp_link) {
            let _ = std::fs::remove_dir_all(&ts_dir);
            return Err(self.io("symlink", &tmp_link, e));
        }
        if let Err(e) = std::fs::rename(&tmp_link, &data_link) {
            let _ = std::fs::remove_file(&tmp_link);
            let _ = std::fs::remove_dir_all(&ts_dir);
            return Err(self.io("rename", &data_link, e));
        }

        // (8) user-visible links; (9) old visible links; (10) old data dirs.
        self.create_user_visible_files(&payload)?;
        for p in to_remove.iter().filter(|p| !p.contains('/')) {
            let path = self.target.join(p);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.io("remove old visible path", &path, e)),
            }
        }
        self.remove_stale_data_dirs(&ts_name)?;
        if let Some(gid) = fs_group {
            // Upstream walks the whole volume dir: the root and the visible links too.
            ownership::set_volume_ownership(&self.target, gid, true).map_err(|source| {
                AtomicWriteError::Ownership {
                    target: self.target.clone(),
                    source,
                }
            })?;
        }
        tracing::debug!(target_dir = %self.target.display(), data_dir = %ts_name, "atomic write");
        Ok(WriteOutcome::Written { data_dir: ts_name })
    }

    /// Whether any payload file is missing from `old_dir` or has other bytes (upstream
    /// `shouldWritePayload` compares contents only, not modes).
    fn payload_differs(&self, payload: &Payload, old_dir: &Path) -> Result<bool, AtomicWriteError> {
        for (path, file) in payload {
            let full = old_dir.join(path);
            match std::fs::symlink_metadata(&full) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
                Err(e) => return Err(self.io("stat", &full, e)),
                Ok(m) if !m.is_file() => return Ok(true),
                Ok(_) => {}
            }
            let on_disk = std::fs::read(&full).map_err(|e| self.io("read", &full, e))?;
            if on_disk != file.data {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn new_timestamp_dir(&self) -> Result<PathBuf, AtomicWriteError> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let now = jiff::Timestamp::now();
        let stamp = now.strftime("%Y_%m_%d_%H_%M_%S").to_string();
        loop {
            // Upstream uses os.MkdirTemp with a random suffix; a nanosecond, pid and sequence
            // suffix is as unique here and create_dir refuses an existing name.
            let name = format!(
                "..{stamp}.{}{}{}",
                now.subsec_nanosecond(),
                std::process::id(),
                SEQ.fetch_add(1, Ordering::Relaxed)
            );
            let path = self.target.join(&name);
            match std::fs::create_dir(&path) {
                Ok(()) => {
                    // 0755 so group and other can traverse, whatever the umask.
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                        .map_err(|e| self.io("chmod", &path, e))?;
                    return Ok(path);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(self.io("create data dir", &path, e)),
            }
        }
    }

    fn write_payload_to_dir(&self, payload: &Payload, dir: &Path) -> Result<(), AtomicWriteError> {
        for (path, file) in payload {
            let full = dir.join(path);
            if let Some(parent) = full.parent() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(parent)
                    .map_err(|e| self.io("create dir", parent, e))?;
            }
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(file.mode)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&full)
                .map_err(|e| self.io("create file", &full, e))?;
            f.write_all(&file.data)
                .map_err(|e| self.io("write file", &full, e))?;
            // open(2) applied the umask; the payload's mode is what the user asked for.
            f.set_permissions(std::fs::Permissions::from_mode(file.mode))
                .map_err(|e| self.io("chmod", &full, e))?;
        }
        Ok(())
    }

    fn create_user_visible_files(&self, payload: &Payload) -> Result<(), AtomicWriteError> {
        for name in top_level_names(payload) {
            let visible = self.target.join(&name);
            match std::fs::symlink_metadata(&visible) {
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.io("stat", &visible, e)),
            }
            let dest = Path::new(DATA_DIR_NAME).join(&name);
            std::os::unix::fs::symlink(&dest, &visible)
                .map_err(|e| self.io("symlink", &visible, e))?;
        }
        Ok(())
    }

    /// Removes every `..<timestamp>` dir but `keep`: the previous one, and any left by a
    /// write that crashed before its swap (upstream removes only the previous one).
    fn remove_stale_data_dirs(&self, keep: &str) -> Result<(), AtomicWriteError> {
        let entries =
            std::fs::read_dir(&self.target).map_err(|e| self.io("list", &self.target, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| self.io("list", &self.target, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_ts = name.starts_with("..")
                && name.as_bytes().get(2).is_some_and(|b| b.is_ascii_digit());
            let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
            if is_ts && is_dir && name != keep {
                let path = entry.path();
                std::fs::remove_dir_all(&path)
                    .map_err(|e| self.io("remove old data dir", &path, e))?;
            }
        }
        Ok(())
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Every path below `root`, relative to it (dirs and files; symlinks not followed).
/// A missing root is empty, as upstream treats a dangling `..data`.
fn walk_relative(root: &Path) -> io::Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound && rel.is_empty() => return Ok(out),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let child = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            if entry.file_type()?.is_dir() {
                stack.push((entry.path(), child.clone()));
            }
            out.insert(child);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn payload(files: &[(&str, &str, u32)]) -> Payload {
        files
            .iter()
            .map(|(p, d, m)| {
                (
                    p.to_string(),
                    FileProjection {
                        data: d.as_bytes().to_vec(),
                        mode: *m,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn validate_path_rejects_as_upstream() {
        let long_name = "a".repeat(256);
        let long_path = "a/".repeat(2049);
        // (path, ok)
        let cases: &[(&str, bool)] = &[
            ("foo", true),
            ("foo/bar", true),
            ("foo/..bar", true),
            ("..", false),
            ("", false),
            ("/foo", false),
            ("foo/../bar", false),
            ("../foo", false),
            ("..foo", false),
            ("..data", false),
            ("..data/foo", false),
            (&long_name, false),
            (&long_path, false),
        ];
        for (path, ok) in cases {
            let got = validate_path(path);
            assert_eq!(got.is_ok(), *ok, "{path:?}: {got:?}");
        }
    }

    #[test]
    fn validate_path_messages_say_which_path() {
        let e = validate_path("/etc/passwd").unwrap_err().to_string();
        assert_eq!(e, "invalid path: must be relative path: /etc/passwd");
        let e = validate_path("a/../b").unwrap_err().to_string();
        assert_eq!(e, "invalid path: must not contain '..': a/../b");
        let e = validate_path("..x").unwrap_err().to_string();
        assert_eq!(e, "invalid path: must not start with '..': ..x");
    }

    #[test]
    fn paths_to_remove_keeps_parents_of_new_files() {
        let old: BTreeSet<String> = ["a", "b", "b/c", "d", "d/e", "d/f"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let new = payload(&[("a", "", 0o644), ("d/e", "", 0o644)]);
        let got: Vec<String> = paths_to_remove(&old, &new).into_iter().collect();
        assert_eq!(got, vec!["b", "b/c", "d/f"]);
    }

    #[test]
    fn clean_path_drops_dots_and_empty_elements() {
        for (input, want) in [("a//b/./c/", "a/b/c"), ("./a", "a"), ("a", "a")] {
            assert_eq!(clean_path(input), want);
        }
    }

    fn read(dir: &Path, p: &str) -> String {
        std::fs::read_to_string(dir.join(p)).unwrap()
    }

    #[test]
    fn write_creates_data_dir_links_and_modes() {
        let dir = tempfile::tempdir().unwrap();
        let w = AtomicWriter::new(dir.path());
        let p = payload(&[("key", "v1", 0o600), ("sub/dir/file", "deep", 0o644)]);
        let out = w.write(&p, None).unwrap();
        let WriteOutcome::Written { data_dir } = out else {
            panic!("first write must write")
        };
        assert!(data_dir.starts_with(".."));
        assert_eq!(
            std::fs::read_link(dir.path().join("..data")).unwrap(),
            PathBuf::from(&data_dir)
        );
        assert_eq!(
            std::fs::read_link(dir.path().join("key")).unwrap(),
            PathBuf::from("..data/key")
        );
        assert_eq!(
            std::fs::read_link(dir.path().join("sub")).unwrap(),
            PathBuf::from("..data/sub")
        );
        assert_eq!(read(dir.path(), "key"), "v1");
        assert_eq!(read(dir.path(), "sub/dir/file"), "deep");
        let m = std::fs::metadata(dir.path().join("key")).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o600);
        let d = std::fs::metadata(dir.path().join(&data_dir)).unwrap();
        assert_eq!(d.mode() & 0o7777, 0o755);
    }

    #[test]
    fn write_same_payload_twice_makes_no_new_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let w = AtomicWriter::new(dir.path());
        let p = payload(&[("a", "1", 0o644)]);
        let WriteOutcome::Written { data_dir } = w.write(&p, None).unwrap() else {
            panic!()
        };
        // A lost visible link is restored without a new data dir.
        std::fs::remove_file(dir.path().join("a")).unwrap();
        assert_eq!(w.write(&p, None).unwrap(), WriteOutcome::Unchanged);
        assert_eq!(read(dir.path(), "a"), "1");
        let link = std::fs::read_link(dir.path().join("..data")).unwrap();
        assert_eq!(link, PathBuf::from(data_dir));
    }

    #[test]
    fn update_swaps_data_and_removes_old_files_and_dir() {
        let dir = tempfile::tempdir().unwrap();
        let w = AtomicWriter::new(dir.path());
        w.write(&payload(&[("a", "1", 0o644), ("gone", "x", 0o644)]), None)
            .unwrap();
        let old = std::fs::read_link(dir.path().join("..data")).unwrap();
        w.write(&payload(&[("a", "2", 0o644), ("new", "n", 0o644)]), None)
            .unwrap();
        assert_eq!(read(dir.path(), "a"), "2");
        assert_eq!(read(dir.path(), "new"), "n");
        assert!(std::fs::symlink_metadata(dir.path().join("gone")).is_err());
        assert!(!dir.path().join(old).exists(), "old data dir removed");
        let names: BTreeSet<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 4, "{names:?}"); // ..ts, ..data, a, new
    }

    #[test]
    fn invalid_payload_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let w = AtomicWriter::new(dir.path());
        let err = w
            .write(
                &payload(&[("ok", "", 0o644), ("../escape", "", 0o644)]),
                None,
            )
            .unwrap_err();
        assert!(err.to_string().contains("../escape"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn fs_group_applies_read_only_group_bits() {
        let dir = tempfile::tempdir().unwrap();
        let w = AtomicWriter::new(dir.path());
        w.write(&payload(&[("token", "t", 0o600)]), Some(3000))
            .unwrap();
        let m = std::fs::metadata(dir.path().join("token")).unwrap();
        assert_eq!(m.gid(), 3000);
        assert_eq!(m.mode() & 0o7777, 0o640);
        let root = std::fs::metadata(dir.path()).unwrap();
        assert_eq!(root.gid(), 3000);
        assert_eq!(root.mode() & 0o2000, 0o2000, "volume root is setgid");
    }
}
