//! The labels and annotations the upstream kubelet puts on CRI sandboxes and
//! containers. Using the same keys lets `crictl` filters, log collectors and the
//! kubelet API find a pod's containers on any runtime, and lets a restarted agent adopt
//! what a previous run created.

pub const POD_NAME: &str = "io.kubernetes.pod.name";
pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const POD_UID: &str = "io.kubernetes.pod.uid";
pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
/// The pod's termination grace period, as upstream records it on the sandbox
/// (annotation).
pub const POD_TERMINATION_GRACE_PERIOD: &str = "io.kubernetes.pod.terminationGracePeriod";
/// Container annotations (upstream's names).
pub const CONTAINER_HASH: &str = "io.kubernetes.container.hash";
pub const CONTAINER_RESTART_COUNT: &str = "io.kubernetes.container.restartCount";
pub const CONTAINER_TERMINATION_MESSAGE_PATH: &str =
    "io.kubernetes.container.terminationMessagePath";
pub const CONTAINER_TERMINATION_MESSAGE_POLICY: &str =
    "io.kubernetes.container.terminationMessagePolicy";
pub const CONTAINER_PORTS: &str = "io.kubernetes.container.ports";
/// Marks a Gantry-made sandbox or container as belonging to a pod of the API or of a
/// static manifest (`api`, `file`), like upstream's `kubernetes.io/config.source`.
pub const CONFIG_SOURCE: &str = "kubernetes.io/config.source";
/// Whether a container is an init container (`init`), a sidecar (`sidecar`) or an app
/// container (`app`): Gantry's own label, so a restarted agent knows what each
/// container was without the pod spec.
pub const CONTAINER_KIND: &str = "io.gantry.container.kind";

/// The directory of a pod's log files, as upstream lays it out:
/// `<pod logs dir>/<namespace>_<name>_<uid>`.
pub fn pod_log_dir(pod_logs_dir: &str, namespace: &str, name: &str, uid: &str) -> String {
    format!(
        "{}/{namespace}_{name}_{uid}",
        pod_logs_dir.trim_end_matches('/')
    )
}

/// A container's log file, relative to the pod's log directory:
/// `<container>/<restart count>.log`, as upstream names it.
pub fn container_log_path(container: &str, restart_count: u32) -> String {
    format!("{container}/{restart_count}.log")
}

/// Gantry's label naming the node whose agent made a sandbox or container: two agents
/// sharing one runtime (tests do that) never take each other's pods for orphans.
pub const NODE: &str = "io.gantry.node";
