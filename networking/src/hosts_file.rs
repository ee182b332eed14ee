//! The /etc/hosts a sandbox gets, and the atomic file write used for it and for the
//! other files this crate owns.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// What containerd's CRI writes for a pod with its own network (pkg/cri etchosts.go).
pub const DEFAULT_HOSTS: &str = "127.0.0.1\tlocalhost\n\
::1\tlocalhost ip6-localhost ip6-loopback\n\
fe00::0\tip6-localnet\n\
fe00::0\tip6-mcastprefix\n\
fe00::1\tip6-allnodes\n\
fe00::2\tip6-allrouters\n";

/// The sandbox's hosts file: the host's own content for hostNetwork pods (they share the
/// host's names), otherwise [`DEFAULT_HOSTS`]. A hostNetwork pod on a host without
/// /etc/hosts (`host_hosts` None) gets the default too.
pub fn hosts_file(host_network: bool, host_hosts: Option<&str>) -> String {
    match host_hosts {
        Some(host) if host_network => host.to_string(),
        _ => DEFAULT_HOSTS.to_string(),
    }
}

/// Replaces `path` with `contents` so that readers see the old or the new file, never a
/// part: writes a temporary file in the same directory, fsyncs it, renames it over `path`
/// and fsyncs the directory so the rename survives a crash.
pub fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.", name.to_string_lossy()))
        .suffix(".tmp")
        .tempfile_in(dir)?;
    // Set after creation: the mode given at open is reduced by the umask.
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))?;
    tmp.write_all(contents)?;
    tmp.as_file().sync_all()?;
    // On error the temporary file is removed when `tmp` drops.
    tmp.persist(path).map_err(|e| e.error)?;
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_file_table() {
        let host = "127.0.0.1 localhost\n10.1.1.1 node-1\n";
        let cases = [
            (false, None, DEFAULT_HOSTS),
            (false, Some(host), DEFAULT_HOSTS),
            (true, Some(host), host),
            (true, None, DEFAULT_HOSTS),
        ];
        for (host_network, host_hosts, want) in cases {
            assert_eq!(
                hosts_file(host_network, host_hosts),
                want,
                "host_network {host_network} host_hosts {host_hosts:?}"
            );
        }
    }

    #[test]
    fn default_hosts_matches_containerd() {
        let lines: Vec<&str> = DEFAULT_HOSTS.lines().collect();
        assert_eq!(lines[0], "127.0.0.1\tlocalhost");
        assert_eq!(lines[1], "::1\tlocalhost ip6-localhost ip6-loopback");
        assert_eq!(lines.len(), 6);
        assert_eq!(lines[5], "fe00::2\tip6-allrouters");
    }

    #[test]
    fn write_atomically_replaces_content_sets_mode_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("hosts");
        fs::write(&path, "old").expect("write");
        write_atomically(&path, b"new content\n", 0o644).expect("write");
        assert_eq!(fs::read_to_string(&path).expect("read"), "new content\n");
        let mode = fs::metadata(&path).expect("stat").permissions().mode() & 0o7777;
        assert_eq!(mode, 0o644);
        write_atomically(&path, b"x", 0o600).expect("rewrite");
        let mode = fs::metadata(&path).expect("stat").permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600);
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("hosts")]);
    }

    #[test]
    fn write_atomically_into_a_missing_dir_fails_and_creates_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("missing").join("hosts");
        assert!(write_atomically(&path, b"x", 0o644).is_err());
        assert!(!dir.path().join("missing").exists());
    }
}
