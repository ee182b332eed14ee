//! Pod → PodSandboxConfig, as upstream's generatePodSandboxConfig and
//! generatePodSandboxLinuxConfig (kuberuntime_sandbox.go, kuberuntime_sandbox_linux.go).

use std::collections::{HashMap, HashSet};

use gantry_cri::api;
use k8s_openapi::api::core::v1::{ContainerPort, Pod};

use super::{dns, resources, security, ConfigError, NodeContext};
use crate::labels;

/// The kernel's nodename holds 64 bytes with the terminating NUL: 63 for a hostname,
/// 64 for an FQDN (setHostnameAsFQDN), as upstream.
const HOSTNAME_MAX_LEN: usize = 63;
const FQDN_MAX_LEN: usize = 64;

/// The sandbox config, or why it cannot be made (a hostname upstream refuses: invalid,
/// or an FQDN too long for the kernel). The pod then shows the error, as upstream's
/// CreatePodSandboxError.
pub fn sandbox_config_checked(
    pod: &Pod,
    attempt: u32,
    node: &NodeContext,
) -> Result<api::PodSandboxConfig, ConfigError> {
    let hostname = if host_network(pod) {
        String::new()
    } else {
        kernel_hostname(pod, node)?
    };
    Ok(build(pod, attempt, node, hostname))
}

/// The sandbox config; a hostname that cannot be made is replaced by the pod's name cut
/// to 63 chars (logged), so that the sandbox can still run.
pub fn sandbox_config(pod: &Pod, attempt: u32, node: &NodeContext) -> api::PodSandboxConfig {
    let hostname = if host_network(pod) {
        String::new()
    } else {
        kernel_hostname(pod, node).unwrap_or_else(|e| {
            let name = pod.metadata.name.as_deref().unwrap_or_default();
            tracing::warn!(pod = name, error = %e, "using the pod's name as hostname");
            truncate_hostname(name).unwrap_or_default()
        })
    };
    build(pod, attempt, node, hostname)
}

fn host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

fn build(pod: &Pod, attempt: u32, node: &NodeContext, hostname: String) -> api::PodSandboxConfig {
    let meta = &pod.metadata;
    let name = meta.name.clone().unwrap_or_default();
    let namespace = meta.namespace.clone().unwrap_or_default();
    let uid = meta.uid.clone().unwrap_or_default();
    let sysctls = pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref())
        .and_then(|sc| sc.sysctls.as_ref())
        .into_iter()
        .flatten()
        .map(|s| (s.name.clone(), s.value.clone()))
        .collect();
    let (sandbox_resources, overhead) = resources::sandbox_resources(pod, node);
    api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: name.clone(),
            uid: uid.clone(),
            namespace: namespace.clone(),
            attempt,
        }),
        hostname,
        log_directory: labels::pod_log_dir(&node.pod_logs_dir, &namespace, &name, &uid),
        dns_config: Some(dns::pod_dns(pod, node)),
        port_mappings: port_mappings(pod),
        labels: super::with_node_label(sandbox_labels(pod), node),
        annotations: meta
            .annotations
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        linux: Some(api::LinuxPodSandboxConfig {
            cgroup_parent: pod_cgroup_parent(pod, node),
            security_context: Some(security::sandbox_security_context(pod)),
            sysctls,
            overhead: Some(overhead),
            resources: Some(sandbox_resources),
        }),
        windows: None,
    }
}

/// The sandbox's cgroup parent: with cgroupsPerQOS the pod's own cgroup
/// (`<kubepods>[/burstable|/besteffort]/pod<uid>`), which the kubelet creates first;
/// else the node's cgroup parent.
pub fn pod_cgroup_parent(pod: &Pod, node: &NodeContext) -> String {
    if node.cgroups_per_qos {
        crate::pod_cgroups::pod_cgroup_name(&node.cgroup_parent, pod)
    } else {
        node.cgroup_parent.clone()
    }
}

/// The pod's labels plus the three that name it (upstream's newPodLabels).
pub fn sandbox_labels(pod: &Pod) -> HashMap<String, String> {
    let meta = &pod.metadata;
    let mut labels: HashMap<String, String> = meta
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    labels.insert(
        labels::POD_NAME.into(),
        meta.name.clone().unwrap_or_default(),
    );
    labels.insert(
        labels::POD_NAMESPACE.into(),
        meta.namespace.clone().unwrap_or_default(),
    );
    labels.insert(labels::POD_UID.into(), meta.uid.clone().unwrap_or_default());
    labels
}

/// The hostname the sandbox's UTS namespace gets (upstream's GeneratePodHostNameAndDomain
/// then GetNodenameForKernel): hostnameOverride, else spec.hostname, else the pod's
/// name, cut to 63 chars; with setHostnameAsFQDN and a subdomain, the FQDN.
pub fn kernel_hostname(pod: &Pod, node: &NodeContext) -> Result<String, ConfigError> {
    let (hostname, domain) = hostname_and_domain(pod, node)?;
    let spec = pod.spec.as_ref();
    if domain.is_empty() || spec.and_then(|s| s.set_hostname_as_fqdn) != Some(true) {
        return Ok(hostname);
    }
    let fqdn = format!("{hostname}.{domain}");
    if fqdn.len() > FQDN_MAX_LEN {
        return Err(ConfigError(format!(
            "failed to construct FQDN from pod hostname and cluster domain, FQDN {fqdn} is too long ({FQDN_MAX_LEN} characters is the max, {} characters requested)",
            fqdn.len()
        )));
    }
    Ok(fqdn)
}

/// The pod's hostname and its domain (`<subdomain>.<namespace>.svc.<cluster domain>`,
/// empty without a subdomain), as upstream's GeneratePodHostNameAndDomain.
pub fn hostname_and_domain(pod: &Pod, node: &NodeContext) -> Result<(String, String), ConfigError> {
    let spec = pod.spec.as_ref();
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    if let Some(over) = spec.and_then(|s| s.hostname_override.as_deref()) {
        if !is_dns1123_subdomain(over) {
            return Err(ConfigError(format!(
                "pod HostnameOverride {over:?} is not a valid DNS subdomain"
            )));
        }
        return Ok((truncate_hostname(over)?, String::new()));
    }
    let hostname = match spec
        .and_then(|s| s.hostname.as_deref())
        .filter(|h| !h.is_empty())
    {
        Some(h) if !is_dns1123_label(h) => {
            return Err(ConfigError(format!(
                "pod Hostname {h:?} is not a valid DNS label"
            )));
        }
        Some(h) => h,
        None => name,
    };
    let hostname = truncate_hostname(hostname)?;
    let subdomain = spec
        .and_then(|s| s.subdomain.as_deref())
        .filter(|s| !s.is_empty());
    let domain = match subdomain {
        Some(sub) if !is_dns1123_label(sub) => {
            return Err(ConfigError(format!(
                "pod Subdomain {sub:?} is not a valid DNS label"
            )));
        }
        Some(sub) => {
            let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
            format!("{sub}.{namespace}.svc.{}", node.cluster_domain)
        }
        None => String::new(),
    };
    Ok((hostname, domain))
}

/// Cut to 63 chars, then trailing '-' and '.' dropped (a hostname cannot end so).
fn truncate_hostname(hostname: &str) -> Result<String, ConfigError> {
    if hostname.len() <= HOSTNAME_MAX_LEN {
        return Ok(hostname.to_string());
    }
    let mut end = HOSTNAME_MAX_LEN;
    while !hostname.is_char_boundary(end) {
        end -= 1;
    }
    let cut = hostname[..end].trim_end_matches(['-', '.']);
    if cut.is_empty() {
        return Err(ConfigError(format!("hostname {hostname:?} is invalid")));
    }
    Ok(cut.to_string())
}

fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    let inner = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && b.len() <= 63
        && b.first().is_some_and(inner)
        && b.last().is_some_and(inner)
        && b.iter().all(|c| inner(c) || *c == b'-')
}

fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

/// Host port mappings of the app containers. Upstream sends every declared port (the
/// CRI ignores host port 0); only ports with a hostPort are sent here, as the runtime
/// has nothing to do for the others. A port name repeated within a container counts
/// once, as upstream's MakePortMappings.
pub fn port_mappings(pod: &Pod) -> Vec<api::PortMapping> {
    let mut mappings = Vec::new();
    for container in pod.spec.iter().flat_map(|s| &s.containers) {
        let mut names = HashSet::new();
        for port in container.ports.iter().flatten() {
            if !names.insert(port_key(port)) {
                tracing::warn!(container = %container.name, port = ?port.name, "port name defined more than once");
                continue;
            }
            let host_port = port.host_port.unwrap_or(0);
            if host_port == 0 {
                continue;
            }
            mappings.push(api::PortMapping {
                protocol: protocol(port.protocol.as_deref()) as i32,
                container_port: port.container_port,
                host_port,
                host_ip: port.host_ip.clone().unwrap_or_default(),
            });
        }
    }
    mappings
}

/// A port's name, or for an unnamed port what tells it apart (its address family,
/// protocol, host IP and ports), as upstream.
fn port_key(port: &ContainerPort) -> String {
    if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
        return name.to_string();
    }
    let host_ip = port.host_ip.as_deref().unwrap_or_default();
    let family = match host_ip {
        "" => "any",
        ip if ip.contains(':') => "v6",
        _ => "v4",
    };
    format!(
        "{family}-{}-{host_ip}:{}:{}",
        port.protocol.as_deref().unwrap_or_default(),
        port.container_port,
        port.host_port.unwrap_or(0)
    )
}

pub fn protocol(name: Option<&str>) -> api::Protocol {
    match name {
        Some("UDP") => api::Protocol::Udp,
        Some("SCTP") => api::Protocol::Sctp,
        _ => api::Protocol::Tcp,
    }
}
