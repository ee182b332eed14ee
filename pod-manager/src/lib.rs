//! Per-pod workers: compare each pod's desired spec with the state a CRI runtime
//! reports and act (sandbox, image pulls, init and sidecar containers, restarts with
//! backoff, graceful termination), then compute the pod's status.
//!
//! It speaks only CRI `runtime.v1` messages (the generated `gantry_cri::api` types and
//! clients, nothing else of the CRI server), so it runs pods on Gantry's CRI and on
//! containerd's CRI plugin alike.

pub mod labels;
pub mod log_rotation;
pub mod runtime;
pub mod spec;
pub mod status;

pub use runtime::Cri;
pub mod allocation;
pub mod backoff;
pub mod cluster;
pub mod manager;
pub mod metrics;
pub mod pod_cgroups;
pub mod pod_volumes;
pub mod probe;
pub mod runtime_state;
pub mod worker;
