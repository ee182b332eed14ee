//! Gantry's CRI server: the `runtime.v1` RuntimeService and ImageService on top of
//! containerd's gRPC API. It owns image pulls into containerd's content store,
//! pod sandboxes (pinned namespaces plus CNI through `gantry-networking`), OCI spec
//! generation for containers, CRI log files, the exec/attach/port-forward streaming
//! server, stats, container events and the persistence of its own metadata.
//!
//! It must not know about Kubernetes API objects: everything it learns arrives in CRI
//! messages. The server itself is not written yet (issue: Gantry's CRI, part 2).
