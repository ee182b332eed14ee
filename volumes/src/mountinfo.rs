//! `/proc/self/mountinfo`: which paths are mount points, and what is mounted below a
//! directory. Parsing is pure (proc(5) format, octal escapes for space, tab, newline and
//! backslash); reading the file is one small function.

use std::io;
use std::path::{Path, PathBuf};

/// One line of mountinfo, the fields the crate uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    pub mount_point: PathBuf,
    pub fs_type: String,
    pub source: String,
    /// The mount is in a shared peer group (an optional field `shared:N`).
    pub shared: bool,
}

/// Undoes the kernel's `\ooo` escapes (`\040` is a space).
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses mountinfo text; malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            if sep < 6 || fields.len() < sep + 3 {
                return None;
            }
            Some(MountInfo {
                mount_point: PathBuf::from(unescape(fields[4])),
                fs_type: unescape(fields[sep + 1]),
                source: unescape(fields[sep + 2]),
                shared: fields[6..sep].iter().any(|f| f.starts_with("shared:")),
            })
        })
        .collect()
}

/// Reads and parses `/proc/self/mountinfo`.
pub fn read_mountinfo() -> io::Result<Vec<MountInfo>> {
    Ok(parse_mountinfo(&std::fs::read_to_string(
        "/proc/self/mountinfo",
    )?))
}

/// The last mount on `path` (mounts stack; the last one listed is the visible one).
pub fn mount_at<'a>(mounts: &'a [MountInfo], path: &Path) -> Option<&'a MountInfo> {
    mounts.iter().rev().find(|m| m.mount_point == path)
}

/// The mount `path` lives on: the last listed among the deepest mount points that
/// contain it.
pub fn containing_mount<'a>(mounts: &'a [MountInfo], path: &Path) -> Option<&'a MountInfo> {
    mounts
        .iter()
        .filter(|m| path.starts_with(&m.mount_point))
        .max_by_key(|m| m.mount_point.components().count())
}

/// Mount points at or below `dir`, deepest first, each once per stacked mount, so
/// unmounting them in order never hits a busy parent.
pub fn mounts_under(mounts: &[MountInfo], dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = mounts
        .iter()
        .filter(|m| m.mount_point.starts_with(dir))
        .map(|m| m.mount_point.clone())
        .collect();
    // Stable sort by depth: stacked mounts on one point keep their order, and are all
    // listed so each gets its own unmount.
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 0:35 / /var/lib/kubelet/pods/u1/volumes/kubernetes.io~empty-dir/mem rw shared:20 - tmpfs tmpfs rw,size=1024k
41 22 0:36 / /var/lib/kubelet/pods/u1/volumes/kubernetes.io~empty-dir/mem/deep rw - tmpfs tmpfs rw
42 22 0:37 / /var/lib/kubelet/pods/u2/volumes/a\\040b rw - tmpfs tmp\\134fs rw
43 22 0:38 / /var/lib/kubelet/pods/u10 rw - tmpfs tmpfs rw
garbage line
";

    #[test]
    fn parses_fields_and_escapes() {
        let m = parse_mountinfo(SAMPLE);
        assert_eq!(m.len(), 5);
        assert_eq!(m[0].mount_point, PathBuf::from("/"));
        assert_eq!(m[0].fs_type, "ext4");
        assert_eq!(m[0].source, "/dev/sda1");
        assert_eq!(
            m[3].mount_point,
            PathBuf::from("/var/lib/kubelet/pods/u2/volumes/a b")
        );
        assert_eq!(m[3].source, "tmp\\fs");
        assert!(m[0].shared && m[1].shared && !m[2].shared);
    }

    #[test]
    fn the_containing_mount_is_the_deepest() {
        let m = parse_mountinfo(SAMPLE);
        let at = |p: &str| containing_mount(&m, Path::new(p)).map(|m| m.mount_point.clone());
        assert_eq!(at("/var/lib/kubelet"), Some(PathBuf::from("/")));
        assert_eq!(
            at("/var/lib/kubelet/pods/u1/volumes/kubernetes.io~empty-dir/mem/x"),
            Some(PathBuf::from(
                "/var/lib/kubelet/pods/u1/volumes/kubernetes.io~empty-dir/mem"
            ))
        );
    }

    #[test]
    fn mounts_under_is_deepest_first_and_component_wise() {
        let m = parse_mountinfo(SAMPLE);
        let got = mounts_under(&m, Path::new("/var/lib/kubelet/pods/u1"));
        assert_eq!(
            got,
            vec![
                PathBuf::from("/var/lib/kubelet/pods/u1/volumes/kubernetes.io~empty-dir/mem/deep"),
                PathBuf::from("/var/lib/kubelet/pods/u1/volumes/kubernetes.io~empty-dir/mem"),
            ]
        );
        // "u1" is not a prefix of "u10": paths compare by component.
        assert!(!got.iter().any(|p| p.ends_with("u10")));
        assert!(mount_at(&m, Path::new("/var/lib/kubelet/pods/u10")).is_some());
        assert!(mount_at(&m, Path::new("/var/lib/kubelet/pods")).is_none());
    }
}
