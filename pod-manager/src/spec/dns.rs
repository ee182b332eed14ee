//! A pod's resolver configuration, as upstream's pkg/kubelet/network/dns (GetPodDNS)
//! forms it from the dnsPolicy, the cluster's DNS settings, the host's resolv.conf and
//! the pod's dnsConfig.

use std::collections::HashSet;
use std::net::IpAddr;

use gantry_cri::api;
use k8s_openapi::api::core::v1::{Pod, PodDNSConfig};

use super::NodeContext;

/// Upstream's validation limits (pkg/apis/core/validation: MaxDNSNameservers and, since
/// ExpandedDNSConfig, MaxDNSSearchPaths and MaxDNSSearchListChars).
pub const MAX_NAMESERVERS: usize = 3;
pub const MAX_SEARCH_PATHS: usize = 32;
pub const MAX_SEARCH_LIST_CHARS: usize = 2048;
/// A search path longer than a DNS subdomain makes some resolvers (glibc 2.28) abort,
/// so upstream drops it.
const MAX_SEARCH_PATH_LEN: usize = 253;

/// Upstream's options for ClusterFirst pods.
const CLUSTER_OPTIONS: &[&str] = &["ndots:5"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DnsType {
    Cluster,
    Host,
    None,
}

/// The DNS config of `pod`'s sandbox.
pub fn pod_dns(pod: &Pod, node: &NodeContext) -> api::DnsConfig {
    let spec = pod.spec.as_ref();
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let policy = spec
        .and_then(|s| s.dns_policy.as_deref())
        .unwrap_or("ClusterFirst");
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();

    let mut config = if node.resolv_conf_disabled {
        api::DnsConfig::default()
    } else {
        api::DnsConfig {
            servers: node.host_dns.servers.clone(),
            searches: node.host_dns.searches.clone(),
            options: node.host_dns.options.clone(),
        }
    };
    let mut dns_type = dns_type(policy, host_network);
    if dns_type == DnsType::Cluster && node.cluster_dns.is_empty() {
        // Upstream records a MissingClusterDNS event and falls back to Default.
        tracing::warn!(
            pod = %pod.metadata.name.as_deref().unwrap_or_default(),
            namespace,
            "no clusterDNS configured: ClusterFirst falls back to Default"
        );
        dns_type = DnsType::Host;
    }
    match dns_type {
        DnsType::None => config = api::DnsConfig::default(),
        DnsType::Cluster => {
            // The cluster DNS server is the only nameserver: it forwards what it cannot
            // answer itself.
            config.servers = node.cluster_dns.clone();
            config.searches = cluster_searches(namespace, &node.cluster_domain, config.searches);
            config.options = CLUSTER_OPTIONS.iter().map(|o| o.to_string()).collect();
        }
        DnsType::Host if node.resolv_conf_disabled => {
            // resolvConf "" disables DNS lookups: a localhost nameserver per node IP
            // family and a search path of ".", as upstream.
            config.servers = node
                .node_ips
                .iter()
                .map(|ip| match ip.parse::<IpAddr>() {
                    Ok(IpAddr::V6(_)) => "::1".to_string(),
                    _ => "127.0.0.1".to_string(),
                })
                .collect();
            if config.servers.is_empty() {
                config.servers.push("127.0.0.1".into());
            }
            config.searches = vec![".".into()];
        }
        DnsType::Host => {}
    }
    if let Some(pod_config) = spec.and_then(|s| s.dns_config.as_ref()) {
        config = append_pod_config(config, pod_config);
    }
    fit_limits(config)
}

fn dns_type(policy: &str, host_network: bool) -> DnsType {
    match policy {
        "None" => DnsType::None,
        "ClusterFirstWithHostNet" => DnsType::Cluster,
        // A hostNetwork pod with ClusterFirst resolves as the host does.
        "ClusterFirst" if host_network => DnsType::Host,
        "ClusterFirst" => DnsType::Cluster,
        "Default" => DnsType::Host,
        other => {
            // The API server rejects other policies; upstream falls back to ClusterFirst.
            tracing::warn!(policy = other, "unknown dnsPolicy: using ClusterFirst");
            DnsType::Cluster
        }
    }
}

fn cluster_searches(namespace: &str, domain: &str, host: Vec<String>) -> Vec<String> {
    if domain.is_empty() {
        return host;
    }
    let mut searches = vec![
        format!("{namespace}.svc.{domain}"),
        format!("svc.{domain}"),
        domain.to_string(),
    ];
    searches.extend(host);
    dedup(searches)
}

/// The pod's nameservers and searches are appended (duplicates dropped); its options
/// replace the ones of the same name, as upstream's appendDNSConfig.
fn append_pod_config(mut config: api::DnsConfig, pod: &PodDNSConfig) -> api::DnsConfig {
    config
        .servers
        .extend(pod.nameservers.iter().flatten().cloned());
    config.servers = dedup(config.servers);
    config
        .searches
        .extend(pod.searches.iter().flatten().cloned());
    config.searches = dedup(config.searches);

    // Options are "name" or "name:value". Upstream merges through a map (random order);
    // here the first occurrence keeps its place and the last value wins.
    let mut options: Vec<(String, String)> = Vec::new();
    let mut set = |name: &str, value: &str| match options.iter_mut().find(|(n, _)| n == name) {
        Some(entry) => entry.1 = value.to_string(),
        None => options.push((name.to_string(), value.to_string())),
    };
    for option in &config.options {
        let (name, value) = option.split_once(':').unwrap_or((option, ""));
        set(name, value);
    }
    for option in pod.options.iter().flatten() {
        set(
            option.name.as_deref().unwrap_or_default(),
            option.value.as_deref().unwrap_or_default(),
        );
    }
    config.options = options
        .into_iter()
        .map(|(name, value)| {
            if value.is_empty() {
                name
            } else {
                format!("{name}:{value}")
            }
        })
        .collect();
    config
}

/// Drops what exceeds the limits as upstream's formDNSConfigFitsLimits: nameservers past
/// the third; search paths past the 32nd; paths longer than 253 chars; then paths from
/// the end until the search line ("a b c") fits 2048 chars.
fn fit_limits(mut config: api::DnsConfig) -> api::DnsConfig {
    if config.servers.len() > MAX_NAMESERVERS {
        config.servers.truncate(MAX_NAMESERVERS);
        tracing::warn!(servers = ?config.servers, "nameserver limits exceeded, some nameservers omitted");
    }
    let before = config.searches.len();
    config.searches.truncate(MAX_SEARCH_PATHS);
    config.searches.retain(|s| s.len() <= MAX_SEARCH_PATH_LEN);
    let mut line_len = search_line_len(&config.searches);
    while line_len > MAX_SEARCH_LIST_CHARS {
        let Some(last) = config.searches.pop() else {
            break;
        };
        line_len = line_len.saturating_sub(last.len() + 1);
    }
    if config.searches.len() != before {
        tracing::warn!(searches = ?config.searches, "search line limits exceeded, some search paths omitted");
    }
    config
}

fn search_line_len(searches: &[String]) -> usize {
    let chars: usize = searches.iter().map(String::len).sum();
    chars + searches.len().saturating_sub(1)
}

fn dedup(items: Vec<String>) -> Vec<String> {
    let mut seen = HashSet::new();
    items
        .into_iter()
        .filter(|i| seen.insert(i.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::HostDns;
    use k8s_openapi::api::core::v1::{PodDNSConfigOption, PodSpec};

    fn node() -> NodeContext {
        NodeContext {
            node_ips: vec!["10.0.0.5".into()],
            cluster_dns: vec!["10.96.0.10".into()],
            cluster_domain: "cluster.local".into(),
            host_dns: HostDns {
                servers: vec!["192.168.1.1".into()],
                searches: vec!["corp.example".into()],
                options: vec!["timeout:2".into()],
            },
            ..Default::default()
        }
    }

    fn pod(policy: Option<&str>, host_network: bool, config: Option<PodDNSConfig>) -> Pod {
        Pod {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some("web".into()),
                namespace: Some("shop".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                dns_policy: policy.map(Into::into),
                host_network: Some(host_network),
                dns_config: config,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn cluster_first() -> api::DnsConfig {
        api::DnsConfig {
            servers: strings(&["10.96.0.10"]),
            searches: strings(&[
                "shop.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "corp.example",
            ]),
            options: strings(&["ndots:5"]),
        }
    }

    fn host() -> api::DnsConfig {
        api::DnsConfig {
            servers: strings(&["192.168.1.1"]),
            searches: strings(&["corp.example"]),
            options: strings(&["timeout:2"]),
        }
    }

    #[test]
    fn each_dns_policy_picks_its_base_config() {
        let cases = [
            ("empty policy is ClusterFirst", None, false, cluster_first()),
            ("ClusterFirst", Some("ClusterFirst"), false, cluster_first()),
            (
                "ClusterFirst on the host network is Default",
                Some("ClusterFirst"),
                true,
                host(),
            ),
            (
                "ClusterFirstWithHostNet",
                Some("ClusterFirstWithHostNet"),
                true,
                cluster_first(),
            ),
            (
                "ClusterFirstWithHostNet off the host network",
                Some("ClusterFirstWithHostNet"),
                false,
                cluster_first(),
            ),
            ("Default", Some("Default"), false, host()),
            (
                "None has nothing without dnsConfig",
                Some("None"),
                false,
                api::DnsConfig::default(),
            ),
            (
                "an unknown policy falls back to ClusterFirst",
                Some("Bogus"),
                false,
                cluster_first(),
            ),
        ];
        for (name, policy, host_network, want) in cases {
            assert_eq!(
                pod_dns(&pod(policy, host_network, None), &node()),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn cluster_first_without_cluster_dns_falls_back_to_the_host_config() {
        let node = NodeContext {
            cluster_dns: vec![],
            ..node()
        };
        assert_eq!(
            pod_dns(&pod(Some("ClusterFirst"), false, None), &node),
            host()
        );
    }

    #[test]
    fn cluster_first_without_a_cluster_domain_keeps_only_host_searches() {
        let node = NodeContext {
            cluster_domain: String::new(),
            ..node()
        };
        let dns = pod_dns(&pod(None, false, None), &node);
        assert_eq!(dns.searches, strings(&["corp.example"]));
    }

    #[test]
    fn host_searches_that_repeat_cluster_searches_appear_once() {
        let mut node = node();
        node.host_dns.searches = strings(&["svc.cluster.local", "corp.example"]);
        let dns = pod_dns(&pod(None, false, None), &node);
        assert_eq!(
            dns.searches,
            strings(&[
                "shop.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "corp.example"
            ])
        );
    }

    #[test]
    fn a_disabled_resolv_conf_gives_host_policy_pods_localhost_per_ip_family() {
        let node = NodeContext {
            resolv_conf_disabled: true,
            node_ips: strings(&["10.0.0.5", "fd00::5"]),
            ..node()
        };
        let dns = pod_dns(&pod(Some("Default"), false, None), &node);
        assert_eq!(
            dns,
            api::DnsConfig {
                servers: strings(&["127.0.0.1", "::1"]),
                searches: strings(&["."]),
                options: vec![],
            }
        );
        let no_ips = NodeContext {
            node_ips: vec![],
            ..node
        };
        let dns = pod_dns(&pod(Some("Default"), false, None), &no_ips);
        assert_eq!(dns.servers, strings(&["127.0.0.1"]));
        // ClusterFirst does not read the host's file: it is unaffected but for searches.
        let dns = pod_dns(&pod(None, false, None), &no_ips);
        assert_eq!(dns.servers, strings(&["10.96.0.10"]));
        assert_eq!(dns.searches.len(), 3);
    }

    #[test]
    fn pod_dns_config_is_appended_and_its_options_override_by_name() {
        let config = PodDNSConfig {
            nameservers: Some(strings(&["1.1.1.1", "10.96.0.10"])),
            searches: Some(strings(&["extra.example", "cluster.local"])),
            options: Some(vec![
                PodDNSConfigOption {
                    name: Some("ndots".into()),
                    value: Some("2".into()),
                },
                PodDNSConfigOption {
                    name: Some("edns0".into()),
                    value: None,
                },
            ]),
        };
        let dns = pod_dns(&pod(None, false, Some(config.clone())), &node());
        assert_eq!(dns.servers, strings(&["10.96.0.10", "1.1.1.1"]));
        assert_eq!(
            dns.searches,
            strings(&[
                "shop.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "corp.example",
                "extra.example"
            ])
        );
        assert_eq!(dns.options, strings(&["ndots:2", "edns0"]));

        let none = pod_dns(&pod(Some("None"), false, Some(config)), &node());
        assert_eq!(none.servers, strings(&["1.1.1.1", "10.96.0.10"]));
        assert_eq!(none.searches, strings(&["extra.example", "cluster.local"]));
        assert_eq!(none.options, strings(&["ndots:2", "edns0"]));
    }

    #[test]
    fn nameservers_past_the_third_are_dropped() {
        let config = PodDNSConfig {
            nameservers: Some(strings(&["1.1.1.1", "8.8.8.8", "9.9.9.9"])),
            ..Default::default()
        };
        let dns = pod_dns(&pod(None, false, Some(config)), &node());
        assert_eq!(dns.servers, strings(&["10.96.0.10", "1.1.1.1", "8.8.8.8"]));
    }

    #[test]
    fn search_paths_past_the_thirty_second_are_dropped() {
        let many: Vec<String> = (0..40).map(|i| format!("d{i}.example")).collect();
        let config = PodDNSConfig {
            searches: Some(many.clone()),
            ..Default::default()
        };
        let dns = pod_dns(&pod(Some("None"), false, Some(config)), &node());
        assert_eq!(dns.searches, many[..32].to_vec());
    }

    #[test]
    fn search_paths_longer_than_a_dns_subdomain_are_dropped() {
        let long = format!("{}.example", "a".repeat(250));
        let config = PodDNSConfig {
            searches: Some(vec!["ok.example".into(), long, "also.example".into()]),
            ..Default::default()
        };
        let dns = pod_dns(&pod(Some("None"), false, Some(config)), &node());
        assert_eq!(dns.searches, strings(&["ok.example", "also.example"]));
    }

    #[test]
    fn the_search_line_is_cut_from_the_end_to_fit_2048_chars() {
        // 10 paths of 250 chars: a 2509-char line; cutting two leaves 2007.
        let paths: Vec<String> = (0..10).map(|i| format!("{i}{}", "x".repeat(249))).collect();
        let config = PodDNSConfig {
            searches: Some(paths.clone()),
            ..Default::default()
        };
        let dns = pod_dns(&pod(Some("None"), false, Some(config)), &node());
        assert_eq!(dns.searches, paths[..8].to_vec());
        assert!(dns.searches.join(" ").len() <= MAX_SEARCH_LIST_CHARS);
    }
}
