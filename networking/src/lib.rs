//! Pod networking for CRI sandboxes: CNI configuration loading and plugin execution,
//! creation and pinning of network namespaces, and the DNS and hosts files a sandbox
//! gets.
//!
//! It must not know about pods beyond what CRI passes. Not written yet (issue: Gantry's
//! CRI, part 2).
