//! Downward API values for env: fieldRef (upstream's podFieldSelectorRuntimeValue and
//! pkg/fieldpath) and resourceFieldRef (pkg/api/v1/resource's
//! ExtractContainerResourceValue over limits defaulted to the node's allocatable).

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Container, ObjectFieldSelector, Pod, ResourceFieldSelector};

use super::{ConfigError, NodeContext};
use gantry_volumes::downward_api::format_map;

/// The value of a fieldRef. `pod_ips` are the sandbox's IPs, in any order.
pub fn field_value(
    selector: &ObjectFieldSelector,
    pod: &Pod,
    node: &NodeContext,
    pod_ips: &[String],
) -> Result<String, ConfigError> {
    let version = selector.api_version.as_deref().unwrap_or("v1");
    if version != "v1" {
        return Err(ConfigError(format!("unsupported pod version: {version}")));
    }
    let path = selector.field_path.as_str();
    let meta = &pod.metadata;
    if let Some((base, key)) = split_subscript(path) {
        return match base {
            "metadata.annotations" => Ok(lookup(meta.annotations.as_ref(), key)),
            "metadata.labels" => Ok(lookup(meta.labels.as_ref(), key)),
            _ => Err(ConfigError(format!(
                "field label does not support subscript: {path}"
            ))),
        };
    }
    let spec = pod.spec.as_ref();
    let text = |s: Option<&String>| s.cloned().unwrap_or_default();
    // The pod's IPs in the node's family order (upstream's sortPodIPs, #97979).
    let pod_ips = sort_pod_ips(pod_ips, &node.node_ips);
    match path {
        "metadata.name" => Ok(text(meta.name.as_ref())),
        "metadata.namespace" => Ok(text(meta.namespace.as_ref())),
        "metadata.uid" => Ok(text(meta.uid.as_ref())),
        "metadata.labels" => Ok(format_map(meta.labels.as_ref().unwrap_or(&BTreeMap::new()))),
        "metadata.annotations" => Ok(format_map(
            meta.annotations.as_ref().unwrap_or(&BTreeMap::new()),
        )),
        // spec.host is what old v1 clients send for spec.nodeName.
        "spec.nodeName" | "spec.host" => Ok(text(spec.and_then(|s| s.node_name.as_ref()))),
        "spec.serviceAccountName" => Ok(text(spec.and_then(|s| s.service_account_name.as_ref()))),
        "status.hostIP" => node
            .node_ips
            .first()
            .cloned()
            .ok_or_else(|| ConfigError("cannot get the node's IP for status.hostIP".into())),
        "status.hostIPs" if node.node_ips.is_empty() => Err(ConfigError(
            "cannot get the node's IPs for status.hostIPs".into(),
        )),
        "status.hostIPs" => Ok(node.node_ips.join(",")),
        "status.podIP" => Ok(pod_ips.first().cloned().unwrap_or_default()),
        "status.podIPs" => Ok(pod_ips.join(",")),
        // Valid field labels the kubelet does not resolve for env (pkg/fieldpath).
        "spec.restartPolicy" | "spec.schedulerName" | "status.phase" => {
            Err(ConfigError(format!("unsupported fieldPath: {path}")))
        }
        _ => Err(ConfigError(format!("field label not supported: {path}"))),
    }
}

/// `metadata.labels['key']` → ("metadata.labels", "key").
fn split_subscript(path: &str) -> Option<(&str, &str)> {
    let inner = path.strip_suffix("']")?;
    let (base, key) = inner.split_once("['")?;
    (!base.is_empty()).then_some((base, key))
}

fn lookup(map: Option<&BTreeMap<String, String>>, key: &str) -> String {
    map.and_then(|m| m.get(key)).cloned().unwrap_or_default()
}

/// At most two IPs: the first of the node's primary family (IPv4 when the node has
/// no IP), then the first of the other family; re-written in canonical form.
pub fn sort_pod_ips(pod_ips: &[String], node_ips: &[String]) -> Vec<String> {
    let node_v6 = node_ips
        .first()
        .and_then(|ip| ip.parse::<IpAddr>().ok())
        .is_some_and(|ip| ip.is_ipv6());
    let parsed: Vec<IpAddr> = pod_ips
        .iter()
        .filter_map(|ip| ip.trim().parse().ok())
        .collect();
    let first = |v6: bool| {
        parsed
            .iter()
            .find(|ip| ip.is_ipv6() == v6)
            .map(IpAddr::to_string)
    };
    first(node_v6).into_iter().chain(first(!node_v6)).collect()
}

/// The value of a resourceFieldRef for `container` (the selector's container when it
/// names one): the volumes crate's computation, which downwardAPI volumes share, over
/// the node's allocatable for unset limits.
pub fn resource_value(
    selector: &ResourceFieldSelector,
    pod: &Pod,
    container: &Container,
    node: &NodeContext,
) -> Result<String, ConfigError> {
    let mut selector = selector.clone();
    if selector.container_name.as_deref().is_none_or(str::is_empty) {
        selector.container_name = Some(container.name.clone());
    }
    let allocatable = node_allocatable(node);
    gantry_volumes::downward_api::extract_resource_value(&selector, pod, &allocatable)
        .map_err(|e| ConfigError(e.to_string()))
}

/// The pod's addresses in the node's family order: its sandbox's, or for a hostNetwork
/// pod (whose sandbox has none of its own) the node's, as upstream reports them and
/// gives them to env, /etc/hosts, probes and hooks.
pub fn pod_ips(pod: &Pod, sandbox_ips: &[String], node_ips: &[String]) -> Vec<String> {
    let host_network = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false);
    if host_network && sandbox_ips.is_empty() {
        node_ips.to_vec()
    } else {
        sort_pod_ips(sandbox_ips, node_ips)
    }
}

/// The node's allocatable as quantities, which stand in for the limits a container
/// does not set (downward API env and volumes).
pub fn node_allocatable(node: &NodeContext) -> BTreeMap<String, gantry_volumes::Quantity> {
    let mut allocatable = BTreeMap::new();
    for (name, value, unit) in [
        ("cpu", node.allocatable_cpu_millis, "m"),
        ("memory", node.allocatable_memory, ""),
        ("ephemeral-storage", node.allocatable_ephemeral_storage, ""),
    ] {
        if value > 0 {
            if let Ok(q) = gantry_volumes::Quantity::parse(&format!("{value}{unit}")) {
                allocatable.insert(name.to_string(), q);
            }
        }
    }
    allocatable
}
