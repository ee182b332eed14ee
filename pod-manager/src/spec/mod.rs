//! Pod spec → CRI configs: the pure translation the upstream kubelet does in
//! kuberuntime (sandbox config, container config, env, DNS, security context,
//! resources). No I/O: whatever the translation needs from the API (configMaps,
//! secrets, services) or the host (its resolv.conf) is fetched by the caller and passed
//! in.

use std::collections::BTreeMap;

use gantry_cri::api;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, Service};

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
    /// podLogsDir (upstream default /var/log/pods).
    pub pod_logs_dir: String,
    /// The cgroup parent of this pod's sandbox ("" lets the runtime choose).
    pub cgroup_parent: String,
    /// Node allocatable CPU (millicores) and memory (bytes): resourceFieldRef values
    /// of containers without limits.
    pub allocatable_cpu_millis: i64,
    pub allocatable_memory: i64,
    /// The node's memory capacity (bytes), for Burstable oom_score_adj.
    pub memory_capacity: i64,
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
}

/// A container config that cannot be built: the pod shows CreateContainerConfigError
/// with this message, as upstream words it (e.g. `configmap "app-config" not found`,
/// `couldn't find key missing in ConfigMap default/app-config`).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// The sandbox config of `pod` (attempt: how many sandboxes were made before).
pub fn sandbox_config(pod: &Pod, attempt: u32, node: &NodeContext) -> api::PodSandboxConfig {
    let _ = (pod, attempt, node);
    todo!("helper: spec translation")
}

/// The container config of `container` in `pod`.
pub fn container_config(
    pod: &Pod,
    container: &Container,
    node: &NodeContext,
    sources: &EnvSources,
    inputs: &ContainerInputs,
) -> Result<api::ContainerConfig, ConfigError> {
    let _ = (pod, container, node, sources, inputs);
    todo!("helper: spec translation")
}

/// The configMaps and secrets the pod's containers (all kinds) reference in env and
/// envFrom.
pub fn referenced_sources(pod: &Pod) -> Referenced {
    let _ = pod;
    todo!("helper: spec translation")
}

/// The pod's QoS class: Guaranteed, Burstable or BestEffort (upstream's rules).
pub fn qos_class(pod: &Pod) -> &'static str {
    let _ = pod;
    todo!("helper: spec translation")
}

/// A hash of the fields of `container` that require a restart when they change
/// (upstream hashes the whole container spec minus resources); recorded on the
/// container as io.kubernetes.container.hash.
pub fn container_hash(container: &Container) -> String {
    let _ = container;
    todo!("helper: spec translation")
}
