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
pub mod empty_dir;
pub mod host_path;
pub mod layout;
pub mod mountinfo;
pub mod orphans;
pub mod ownership;
pub mod projection;
pub mod quantity;
pub mod remove;
pub mod shared_root;
pub mod subpath;
pub mod subpath_expr;
mod sys;

pub use atomic_writer::{AtomicWriteError, AtomicWriter, FileProjection, Payload, WriteOutcome};
pub use empty_dir::{EmptyDirError, EmptyDirPlan, Medium};
pub use host_path::{check_type as check_host_path_type, HostPathError};
pub use layout::{Layout, LayoutError};
pub use orphans::{clean_orphaned_pod_dirs, remove_pod_dir, OrphanError, OrphanReport};
pub use ownership::{mode_with_fs_group, set_volume_ownership, OwnershipError};
pub use projection::{
    config_map_payload, downward_api_payload, projected_payload, secret_payload, ProjectedInputs,
    ProjectionError,
};
pub use quantity::{Quantity, QuantityError};
pub use remove::{remove_all_one_filesystem, RemoveError};
pub use subpath::{bind_subpath, clean_subpaths, open_subpath, SafeSubpath, SubpathError};
pub use subpath_expr::{expand_subpath_expr, SubpathExprError};
