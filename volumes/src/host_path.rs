//! hostPath type checks, as upstream's `checkType` (pkg/volume/hostpath/host_path.go):
//!
//! | type | behaviour |
//! |---|---|
//! | `""` | no check |
//! | `DirectoryOrCreate` | create the directory (and parents) 0755 if nothing is there, then check |
//! | `Directory` | must be a directory |
//! | `FileOrCreate` | create an empty 0644 file if nothing is there (parents are NOT created, as upstream), then check |
//! | `File` | must be a regular file |
//! | `Socket`, `CharDevice`, `BlockDevice` | must be one |
//!
//! Checks follow symlinks, as upstream's `os.Stat`-based `GetFileType`. Messages are
//! upstream's, e.g. `hostPath type check failed: /x is not a directory, it's a File`.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt};
use std::path::Path;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum HostPathError {
    #[error("hostPath {0} doesn't exist")]
    Missing(String),
    #[error("hostPath type check failed: {path} is not a {expected}, it's a {actual}")]
    Mismatch {
        path: String,
        expected: &'static str,
        actual: &'static str,
    },
    #[error("hostPath type check failed, {path} is not a {expected}, unable to determine its type: {source}")]
    Undetermined {
        path: String,
        expected: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{0} is an invalid volume type")]
    InvalidType(String),
    #[error("hostPath {path}: create {what}: {source}")]
    Create {
        path: String,
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

/// The type of what is at a path, named as upstream's `FileType` values.
fn file_type(path: &Path) -> io::Result<&'static str> {
    let t = std::fs::metadata(path)?.file_type();
    Ok(if t.is_dir() {
        "Directory"
    } else if t.is_file() {
        "File"
    } else if t.is_socket() {
        "Socket"
    } else if t.is_char_device() {
        "CharDevice"
    } else if t.is_block_device() {
        "BlockDevice"
    } else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "only recognise file, directory, socket, block device and character device",
        ));
    })
}

fn exists(path: &Path) -> bool {
    std::fs::metadata(path).is_ok()
}

fn matched_or_error(
    path: &Path,
    expected_type: &str,
    expected: &'static str,
) -> Result<(), HostPathError> {
    let shown = path.display().to_string();
    if !exists(path) {
        return Err(HostPathError::Missing(shown));
    }
    let actual = file_type(path).map_err(|source| HostPathError::Undetermined {
        path: shown.clone(),
        expected,
        source,
    })?;
    if actual != expected_type {
        return Err(HostPathError::Mismatch {
            path: shown,
            expected,
            actual,
        });
    }
    Ok(())
}

/// Checks (and for the `*OrCreate` types, creates) `path` for a hostPath volume of `type_`.
/// Safe to call twice.
pub fn check_type(path: &Path, type_: Option<&str>) -> Result<(), HostPathError> {
    let create_err = |what, source| HostPathError::Create {
        path: path.display().to_string(),
        what,
        source,
    };
    match type_.unwrap_or("") {
        "" => Ok(()),
        "DirectoryOrCreate" => {
            if !exists(path) {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(path)
                    .map_err(|e| create_err("directory", e))?;
            }
            matched_or_error(path, "Directory", "directory")
        }
        "Directory" => matched_or_error(path, "Directory", "directory"),
        "FileOrCreate" => {
            if !exists(path) {
                match std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .mode(0o644)
                    .open(path)
                {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(create_err("file", e)),
                }
            }
            matched_or_error(path, "File", "file")
        }
        "File" => matched_or_error(path, "File", "file"),
        "Socket" => matched_or_error(path, "Socket", "socket file"),
        "CharDevice" => matched_or_error(path, "CharDevice", "character device"),
        "BlockDevice" => matched_or_error(path, "BlockDevice", "block device"),
        other => Err(HostPathError::InvalidType(other.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn check_type_table() {
        let d = tempfile::tempdir().unwrap();
        let p = |s: &str| d.path().join(s);
        std::fs::create_dir(p("dir")).unwrap();
        std::fs::write(p("file"), b"").unwrap();
        let _sock = std::os::unix::net::UnixListener::bind(p("sock")).unwrap();
        let dir = p("dir").display().to_string();
        let file = p("file").display().to_string();
        let cases: Vec<(String, Option<&str>, Result<(), String>)> = vec![
            (file.clone(), None, Ok(())),
            (p("nothing").display().to_string(), Some(""), Ok(())),
            (dir.clone(), Some("Directory"), Ok(())),
            (file.clone(), Some("File"), Ok(())),
            (p("sock").display().to_string(), Some("Socket"), Ok(())),
            ("/dev/null".into(), Some("CharDevice"), Ok(())),
            (
                file.clone(),
                Some("Directory"),
                Err(format!(
                    "hostPath type check failed: {file} is not a directory, it's a File"
                )),
            ),
            (
                dir.clone(),
                Some("File"),
                Err(format!(
                    "hostPath type check failed: {dir} is not a file, it's a Directory"
                )),
            ),
            (
                dir.clone(),
                Some("BlockDevice"),
                Err(format!(
                    "hostPath type check failed: {dir} is not a block device, it's a Directory"
                )),
            ),
            (
                p("missing").display().to_string(),
                Some("Directory"),
                Err(format!("hostPath {} doesn't exist", p("missing").display())),
            ),
            (
                dir.clone(),
                Some("FileOrCreate"),
                Err(format!(
                    "hostPath type check failed: {dir} is not a file, it's a Directory"
                )),
            ),
            (
                dir.clone(),
                Some("Bogus"),
                Err("Bogus is an invalid volume type".into()),
            ),
        ];
        for (path, t, want) in cases {
            let got = check_type(Path::new(&path), t).map_err(|e| e.to_string());
            assert_eq!(got, want, "{path} {t:?}");
        }
    }

    #[test]
    fn or_create_types_create_with_upstream_modes() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("a/b/c");
        check_type(&dir, Some("DirectoryOrCreate")).unwrap();
        check_type(&dir, Some("DirectoryOrCreate")).unwrap();
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o755 & !umask()
        );
        let file = d.path().join("f");
        check_type(&file, Some("FileOrCreate")).unwrap();
        check_type(&file, Some("FileOrCreate")).unwrap();
        let m = std::fs::metadata(&file).unwrap();
        assert!(m.is_file() && m.len() == 0);
        assert_eq!(m.permissions().mode() & 0o777, 0o644 & !umask());
        // Upstream does not create a file's missing parents.
        let orphan = d.path().join("no/such/parent");
        assert!(check_type(&orphan, Some("FileOrCreate")).is_err());
    }

    fn umask() -> u32 {
        // SAFETY: umask is process-wide; set it back immediately.
        let m = unsafe { libc::umask(0o022) };
        unsafe { libc::umask(m) };
        m as u32
    }
}
