//! Pod networking for CRI sandboxes: CNI configuration loading and plugin execution,
//! creation and pinning of network namespaces, and the DNS and hosts files a sandbox
//! gets.
//!
//! It must not know about pods beyond what CRI passes. Today it loads CNI network
//! configurations; plugin execution and namespaces come with the sandbox work.

pub mod cni_config;
