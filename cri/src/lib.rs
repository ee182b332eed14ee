//! Gantry's CRI server: the `runtime.v1` RuntimeService and ImageService on top of
//! containerd's gRPC API. It owns image pulls into containerd's content store,
//! pod sandboxes (pinned namespaces plus CNI through `gantry-networking`), OCI spec
//! generation for containers, CRI log files, the exec/attach/port-forward streaming
//! server, stats, container events and the persistence of its own metadata.
//!
//! It must not know about Kubernetes API objects: everything it learns arrives in CRI
//! messages.

/// The CRI `runtime.v1` messages, clients and service traits, generated from the
/// pinned k8s.io/cri-api (see build.rs).
#[allow(clippy::all, missing_docs)]
pub mod api {
    tonic::include_proto!("runtime.v1");
}

pub mod cgroup_stats;
pub mod config;
pub mod container;
pub mod container_log;
pub mod container_spec;
pub mod containerd;
pub mod content;
pub mod engine;
pub mod error;
pub mod exec;
pub mod failpoint;
pub mod grpc;
pub mod hosts;
pub mod image_pull;
pub mod images;
pub mod infra;
pub mod metrics;
pub mod observe;
pub mod oci_spec;
pub mod reference;
pub mod runtime;
pub mod sandbox;
pub mod server;
pub mod stats;
pub mod store;
pub mod streaming;
pub mod task_io;

pub use config::CriConfig;
pub use error::CriError;
