//! Facts about the machine the node reports: CPUs, memory, disk, identity and OS.

use std::path::Path;

use crate::node_stats;

#[derive(Clone, Debug, Default)]
pub struct Machine {
    pub cpus: usize,
    pub memory_bytes: u64,
    pub ephemeral_storage_bytes: u64,
    pub machine_id: String,
    pub system_uuid: String,
    pub boot_id: String,
    pub kernel_version: String,
    pub os_image: String,
}

impl Machine {
    /// Reads the facts; `root_dir` is the filesystem whose size is the node's
    /// ephemeral-storage capacity (upstream: the kubelet's root dir).
    pub fn read(root_dir: &Path) -> Machine {
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_bytes: node_stats::node_memory().map_or(0, |m| m.capacity),
            ephemeral_storage_bytes: fs_size(root_dir).unwrap_or(0),
            machine_id: read("/etc/machine-id"),
            system_uuid: read("/sys/class/dmi/id/product_uuid"),
            boot_id: read("/proc/sys/kernel/random/boot_id"),
            kernel_version: read("/proc/sys/kernel/osrelease"),
            os_image: pretty_name(&read("/etc/os-release")).unwrap_or_else(|| "Linux".into()),
        }
    }
}

fn pretty_name(os_release: &str) -> Option<String> {
    os_release
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
}

/// Total bytes of the filesystem holding `path` (the nearest existing ancestor).
pub fn fs_size(path: &Path) -> Option<u64> {
    let mut p = path;
    while !p.exists() {
        p = p.parent()?;
    }
    node_stats::fs_usage(p).ok().map(|u| u.capacity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_os_image_is_the_pretty_name() {
        assert_eq!(
            pretty_name("NAME=\"Debian\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n"),
            Some("Debian GNU/Linux 12 (bookworm)".to_string())
        );
    }

    #[test]
    fn the_root_filesystem_has_a_size() {
        assert!(fs_size(Path::new("/definitely/not/here")).unwrap() > 0);
    }
}
