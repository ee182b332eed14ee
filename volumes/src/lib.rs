//! Volumes of a pod on this node: emptyDir (disk and memory), hostPath type checks,
//! configMap, secret, downwardAPI and projected payloads written atomically, safe subPath
//! resolution, the pod volume directory layout and the cleanup of orphaned pod directories.
//! It prepares host paths for a pod's volumes and tears them down.
//!
//! It must not know about containers or the CRI: callers pass in what it needs (the objects
//! a volume refers to, a container's resources or env as plain values) and get host paths
//! back. It depends on no other Gantry crate.

pub mod atomic_writer;
pub mod downward_api;
pub mod ownership;
pub mod projection;
pub mod quantity;

pub use atomic_writer::{AtomicWriteError, AtomicWriter, FileProjection, Payload, WriteOutcome};
pub use ownership::{mode_with_fs_group, set_volume_ownership, OwnershipError};
pub use projection::{
    config_map_payload, downward_api_payload, projected_payload, secret_payload, ProjectedInputs,
    ProjectionError,
};
pub use quantity::{Quantity, QuantityError};
