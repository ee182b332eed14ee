//! The /etc/hosts the kubelet writes for a pod and mounts into each of its containers
//! (upstream's ensureHostsFile / managedHostsFileContent in kubelet_pods.go): the
//! localhost lines, the pod's own addresses under its hostname (and FQDN with a
//! subdomain), then the pod's hostAliases. A hostNetwork pod gets the node's file with
//! its hostAliases appended.

use k8s_openapi::api::core::v1::{HostAlias, Pod};

/// The localhost lines every pod-network hosts file starts with (upstream's, and
/// containerd's).
const LOCALHOST: &str = "127.0.0.1\tlocalhost\n\
::1\tlocalhost ip6-localhost ip6-loopback\n\
fe00::0\tip6-localnet\n\
fe00::0\tip6-mcastprefix\n\
fe00::1\tip6-allnodes\n\
fe00::2\tip6-allrouters\n";

/// The file's content. `hostname` and `domain` are the pod's (see
/// `hostname_and_domain`); `pod_ips` its sandbox's addresses; `node_hosts` the node's
/// own /etc/hosts, used for hostNetwork pods.
pub fn etc_hosts(
    pod: &Pod,
    hostname: &str,
    domain: &str,
    pod_ips: &[String],
    node_hosts: Option<&str>,
) -> String {
    let spec = pod.spec.as_ref();
    let aliases = spec.and_then(|s| s.host_aliases.as_deref()).unwrap_or(&[]);
    let mut out = String::new();
    if spec.and_then(|s| s.host_network) == Some(true) {
        out.push_str("# Kubernetes-managed hosts file (host network).\n");
        let node = node_hosts.unwrap_or_default();
        out.push_str(node);
        if !node.is_empty() && !node.ends_with('\n') {
            out.push('\n');
        }
    } else {
        out.push_str("# Kubernetes-managed hosts file.\n");
        out.push_str(LOCALHOST);
        for ip in pod_ips {
            if domain.is_empty() {
                out.push_str(&format!("{ip}\t{hostname}\n"));
            } else {
                out.push_str(&format!("{ip}\t{hostname}.{domain}\t{hostname}\n"));
            }
        }
    }
    out.push_str(&host_aliases(aliases));
    out
}

fn host_aliases(aliases: &[HostAlias]) -> String {
    if aliases.is_empty() {
        return String::new();
    }
    let mut out = String::from("\n# Entries added by HostAliases.\n");
    for alias in aliases {
        let names = alias.hostnames.as_deref().unwrap_or(&[]).join("\t");
        out.push_str(&format!("{}\t{names}\n", alias.ip));
    }
    out
}

/// Whether the container gets the managed file: the pod has addresses (upstream's
/// shouldMountHostsFile) and the container does not mount /etc/hosts itself.
pub fn mounts_hosts_file(pod_ips: &[String], mount_paths: &[&str]) -> bool {
    !pod_ips.is_empty()
        && !mount_paths
            .iter()
            .any(|p| p.trim_end_matches('/') == "/etc/hosts")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(
            json!({"metadata": {"name": "web", "namespace": "ns"}, "spec": spec}),
        )
        .unwrap()
    }

    #[test]
    fn a_pod_network_file_names_the_pod_and_its_aliases() {
        let p = pod(json!({
            "containers": [],
            "hostAliases": [
                {"ip": "198.18.9.9", "hostnames": ["foo.local", "bar.local"]},
            ],
        }));
        let got = etc_hosts(&p, "web", "", &["198.18.0.5".into()], None);
        assert_eq!(
            got,
            "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n198.18.0.5\tweb\n\n# Entries added by HostAliases.\n198.18.9.9\tfoo.local\tbar.local\n"
        );
    }

    #[test]
    fn a_subdomain_gives_the_fqdn_first_for_every_address() {
        let p = pod(json!({"containers": []}));
        let got = etc_hosts(
            &p,
            "h",
            "sub.ns.svc.cluster.local",
            &["198.18.0.5".into(), "fd00::5".into()],
            None,
        );
        assert!(
            got.contains("198.18.0.5\th.sub.ns.svc.cluster.local\th\n"),
            "{got}"
        );
        assert!(
            got.contains("fd00::5\th.sub.ns.svc.cluster.local\th\n"),
            "{got}"
        );
        assert!(!got.contains("HostAliases"));
    }

    #[test]
    fn a_host_network_pod_gets_the_nodes_file_and_its_aliases() {
        let p = pod(json!({
            "containers": [],
            "hostNetwork": true,
            "hostAliases": [{"ip": "127.0.0.2", "hostnames": ["x"]}],
        }));
        let got = etc_hosts(
            &p,
            "node",
            "",
            &["10.0.0.1".into()],
            Some("127.0.0.1 localhost"),
        );
        assert_eq!(
            got,
            "# Kubernetes-managed hosts file (host network).\n127.0.0.1 localhost\n\n# Entries added by HostAliases.\n127.0.0.2\tx\n"
        );
    }

    #[test]
    fn a_container_mounting_etc_hosts_keeps_its_own() {
        let ips = vec!["198.18.0.5".to_string()];
        assert!(mounts_hosts_file(&ips, &["/data"]));
        assert!(!mounts_hosts_file(&ips, &["/etc/hosts"]));
        assert!(!mounts_hosts_file(&[], &["/data"]));
    }
}
