//! Downward API values for env: fieldRef (upstream's podFieldSelectorRuntimeValue and
//! pkg/fieldpath) and resourceFieldRef (pkg/api/v1/resource's
//! ExtractContainerResourceValue over limits defaulted to the node's allocatable).

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Container, ObjectFieldSelector, Pod, ResourceFieldSelector};

use super::quantity::{self, Quantity};
use super::{ConfigError, NodeContext};

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
        "metadata.labels" => Ok(format_map(meta.labels.as_ref())),
        "metadata.annotations" => Ok(format_map(meta.annotations.as_ref())),
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

/// `key="value"` lines in key order, values quoted as Go's %q (upstream's FormatMap).
fn format_map(map: Option<&BTreeMap<String, String>>) -> String {
    map.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
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

/// The value of a resourceFieldRef for `container`, divided by the divisor and rounded
/// up. Unset CPU, memory and ephemeral-storage limits read as the node's allocatable.
pub fn resource_value(
    selector: &ResourceFieldSelector,
    pod: &Pod,
    container: &Container,
    node: &NodeContext,
) -> Result<String, ConfigError> {
    let target = match selector.container_name.as_deref().filter(|n| !n.is_empty()) {
        None => container,
        Some(name) => pod
            .spec
            .iter()
            .flat_map(|s| {
                s.containers
                    .iter()
                    .chain(s.init_containers.iter().flatten())
            })
            .find(|c| c.name == name)
            .ok_or_else(|| ConfigError(format!("container {name} not found")))?,
    };
    let divisor = match selector.divisor.as_ref() {
        Some(d) => Quantity::parse(&d.0).map_err(|e| ConfigError(e.to_string()))?,
        None => Quantity::ZERO,
    };
    let divisor = if divisor.is_zero() {
        Quantity::from_units(1)
    } else {
        divisor
    };

    let resource = selector.resource.as_str();
    let unsupported = || ConfigError(format!("unsupported container resource : {resource}"));
    let (kind, name) = resource.split_once('.').ok_or_else(unsupported)?;
    let resources = target.resources.as_ref();
    let value = match kind {
        "limits" => quantity::of(resources.and_then(|r| r.limits.as_ref()), name)
            .filter(|q| !q.is_zero())
            .or_else(|| allocatable(node, name)),
        "requests" => quantity::of(resources.and_then(|r| r.requests.as_ref()), name),
        _ => return Err(unsupported()),
    }
    .unwrap_or(Quantity::ZERO);
    let amount = match name {
        "cpu" => ceil_div(value.milli_value(), divisor.milli_value()),
        "memory" | "ephemeral-storage" => ceil_div(value.value(), divisor.value()),
        n if n.starts_with("hugepages-") => ceil_div(value.value(), divisor.value()),
        _ => return Err(unsupported()),
    };
    Ok(amount.to_string())
}

fn allocatable(node: &NodeContext, name: &str) -> Option<Quantity> {
    let (value, of) = match name {
        "cpu" => (
            node.allocatable_cpu_millis,
            Quantity::from_millis as fn(i64) -> Quantity,
        ),
        "memory" => (
            node.allocatable_memory,
            Quantity::from_units as fn(i64) -> Quantity,
        ),
        "ephemeral-storage" => (
            node.allocatable_ephemeral_storage,
            Quantity::from_units as fn(i64) -> Quantity,
        ),
        _ => return None,
    };
    (value > 0).then(|| of(value))
}

fn ceil_div(n: i64, d: i64) -> i64 {
    if d <= 0 {
        return n;
    }
    let q = n / d;
    if n % d > 0 {
        q + 1
    } else {
        q
    }
}
