//! Pod networking for CRI sandboxes: CNI configuration loading and plugin execution
//! (`cni_config`, `cni`), network/IPC/UTS namespaces pinned by bind mounts (`netns`),
//! and the resolv.conf and hosts files a sandbox gets (`dns`, `hosts_file`).
//!
//! It owns the host side of a sandbox's network: namespace pins, CNI plugin processes,
//! the CNI result cache and the files it writes. It must not know about pods beyond what
//! CRI passes (ids, names, port mappings, DNS config), nor about containerd: the CRI
//! decides when to call it and where the files go. The API is synchronous; async callers
//! use `spawn_blocking`.

pub mod cni;
pub mod cni_config;
pub mod dns;
pub mod hosts_file;
pub mod netns;
