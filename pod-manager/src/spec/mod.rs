//! Pod spec → CRI configs: the pure translation the upstream kubelet does in
//! kuberuntime (sandbox config, container config, env, DNS, security context,
//! resources). No I/O: whatever the translation needs from the API (configMaps,
//! secrets, services) or the host (its resolv.conf) is fetched by the caller and passed
//! in.
//!
//! One concept per file: `sandbox` and `container` assemble the two configs from
//! `dns`, `env` (with `expansion` and `downward`), `resources` (with `quantity`) and
//! `security`.

use std::collections::BTreeMap;

use gantry_cri::api;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, Service};

mod container;
mod dns;
mod downward;
mod env;
mod expansion;
mod hosts;
pub mod quantity;
pub(crate) mod resources;
mod sandbox;
mod security;
#[cfg(test)]
mod tests;

pub use container::{container_annotations, container_labels};
pub use dns::pod_dns;
pub use downward::{node_allocatable, pod_ips, sort_pod_ips};
pub use env::service_env;
pub use expansion::expand;
pub use hosts::{etc_hosts, mounts_hosts_file};
pub use resources::{
    is_critical_pod, is_sidecar, milli_cpu_to_quota, milli_cpu_to_shares, oom_score_adj,
    pod_request,
};
pub use sandbox::{
    hostname_and_domain, kernel_hostname, pod_cgroup_parent, port_mappings, sandbox_config_checked,
    sandbox_labels,
};
pub use security::{container_security_context, namespace_options, sandbox_security_context};

/// What the node contributes to every pod's configs.
#[derive(Clone, Debug, Default)]
pub struct NodeContext {
    pub node_name: String,
    /// The node's addresses (status.hostIP(s) and the downward API's status.hostIP).
    pub node_ips: Vec<String>,
    /// clusterDNS and clusterDomain of the KubeletConfiguration.
    pub cluster_dns: Vec<String>,
    pub cluster_domain: String,
    /// The host's resolv.conf (resolvConf setting), parsed, for dnsPolicy Default and
    /// ClusterFirst's fallback.
    pub host_dns: HostDns,
    /// Where pod directories (and their volumes) live: `<this>/pods/<uid>` (upstream:
    /// the kubelet's root dir).
    pub volumes_root: String,
    /// podLogsDir (upstream default /var/log/pods).
    pub pod_logs_dir: String,
    /// The cgroup parent of pods' sandboxes ("" lets the runtime choose); with
    /// `cgroups_per_qos`, the node allocatable cgroup (`<cgroupRoot>/kubepods`) below
    /// which each pod has its own cgroup.
    pub cgroup_parent: String,
    /// cgroupsPerQOS: each pod's sandbox goes in the pod's cgroup under its QoS
    /// class's cgroup below `cgroup_parent`.
    pub cgroups_per_qos: bool,
    /// The resolvConf setting is "": pods that resolve as the host get a localhost
    /// nameserver and no search path (upstream's way to disable DNS lookups).
    pub resolv_conf_disabled: bool,
    /// The node's allocatable CPU (millicores), memory and ephemeral storage (bytes):
    /// what a resourceFieldRef to an unset limit reads. 0: unknown.
    pub allocatable_cpu_millis: i64,
    pub allocatable_memory: i64,
    pub allocatable_ephemeral_storage: i64,
    /// The node's memory capacity in bytes, for Burstable OOM score adjustments.
    pub memory_capacity: i64,
    /// Where Localhost seccomp profiles live (upstream: <root-dir>/seccomp).
    pub seccomp_profile_root: String,
    /// seccompDefault: containers without a seccomp profile get the runtime's default
    /// rather than none.
    pub seccomp_default: bool,
    /// cgroup v2 with singleProcessOOMKill false (upstream's default there): an OOM
    /// kills the whole container (memory.oom.group = 1).
    pub memory_oom_group: bool,
}

/// The host's resolv.conf, parsed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HostDns {
    pub servers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

/// What the pod references from the API, fetched by the caller before it builds
/// container configs. `None` for a name means it does not exist.
#[derive(Clone, Debug, Default)]
pub struct EnvSources {
    pub config_maps: BTreeMap<String, Option<ConfigMap>>,
    pub secrets: BTreeMap<String, Option<Secret>>,
    /// Services of the pod's namespace and of `default` (for service environment
    /// variables; only used when enableServiceLinks is not false).
    pub services: Vec<Service>,
}

/// Names the pod's env and envFrom reference.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Referenced {
    pub config_maps: Vec<String>,
    pub secrets: Vec<String>,
}

/// What a container config needs beyond the pod spec.
#[derive(Clone, Debug, Default)]
pub struct ContainerInputs {
    /// The image to create from: the image ID or digest reference the CRI returned from
    /// PullImage/ImageStatus.
    pub image: String,
    /// The container's restart count: CRI metadata attempt, log file name.
    pub restart_count: u32,
    pub pod_ips: Vec<String>,
    /// Mounts prepared by volumes/ (host paths), added as they are.
    pub mounts: Vec<api::Mount>,
    /// The user the image runs as (ImageStatus's uid and username), for containers
    /// that name none and for runAsNonRoot checks. None: not looked up, and a
    /// runAsNonRoot container without a runAsUser is then refused.
    pub image_user: Option<ImageUser>,
}

/// The user an image runs as, as ImageStatus reports it: a numeric uid, or a user name
/// for the runtime to resolve; neither means root.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImageUser {
    pub uid: Option<i64>,
    pub username: String,
}

/// A container config that cannot be built: the pod shows CreateContainerConfigError
/// with this message, as upstream words it (e.g. `configmap "app-config" not found`,
/// `couldn't find key missing in ConfigMap default/app-config`).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// The sandbox config of `pod` (attempt: how many sandboxes were made before). See
/// `sandbox_config_checked` for a hostname that cannot be made.
pub fn sandbox_config(pod: &Pod, attempt: u32, node: &NodeContext) -> api::PodSandboxConfig {
    sandbox::sandbox_config(pod, attempt, node)
}

/// The container config of `container` in `pod`.
pub fn container_config(
    pod: &Pod,
    container: &Container,
    node: &NodeContext,
    sources: &EnvSources,
    inputs: &ContainerInputs,
) -> Result<api::ContainerConfig, ConfigError> {
    container::container_config(pod, container, node, sources, inputs)
}

/// The environment of `container` as it will run (for subPathExpr), by name.
pub fn container_env(
    pod: &Pod,
    container: &Container,
    node: &NodeContext,
    sources: &EnvSources,
    inputs: &ContainerInputs,
) -> Result<BTreeMap<String, String>, ConfigError> {
    Ok(env::environment(pod, container, node, sources, inputs)?
        .into_vec()
        .into_iter()
        .collect())
}

/// The configMaps and secrets the pod's containers (all kinds) reference in env and
/// envFrom.
pub fn referenced_sources(pod: &Pod) -> Referenced {
    container::referenced_sources(pod)
}

/// The pod's QoS class: Guaranteed, Burstable or BestEffort (upstream's rules).
pub fn qos_class(pod: &Pod) -> &'static str {
    resources::qos_class(pod)
}

/// A hash of the fields of `container` that require a restart when they change,
/// recorded on the container as io.kubernetes.container.hash. As upstream since 1.31
/// these are its name and image: every other field of a pod's container is immutable
/// (resources change in place).
pub fn container_hash(container: &Container) -> String {
    container::container_hash(container)
}

/// A pod as upstream's format.Pod names it in messages: `name_namespace(uid)`.
pub(crate) fn pod_ref(pod: &Pod) -> String {
    let m = &pod.metadata;
    format!(
        "{}_{}({})",
        m.name.as_deref().unwrap_or_default(),
        m.namespace.as_deref().unwrap_or_default(),
        m.uid.as_deref().unwrap_or_default()
    )
}

/// `labels` plus Gantry's node label (labels::NODE), which lets two agents share one
/// runtime without taking each other's pods for orphans.
fn with_node_label(
    mut labels: std::collections::HashMap<String, String>,
    node: &NodeContext,
) -> std::collections::HashMap<String, String> {
    if !node.node_name.is_empty() {
        labels.insert(crate::labels::NODE.to_string(), node.node_name.clone());
    }
    labels
}
