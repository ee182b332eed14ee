//! What a sandbox's attachment passes to the plugins: ids, netns, CNI_ARGS and the
//! capability args (port mappings, bandwidth), and the checks libcni makes on them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;
use serde_json::{Map, Value};

use super::{CniError, Result, DEFAULT_IFNAME};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

/// One `portMappings` capability entry, as the portmap plugin reads it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
    /// Empty for all host addresses.
    #[serde(rename = "hostIP", skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
}

/// The `bandwidth` capability (bits per second and bits), as the bandwidth plugin reads it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Bandwidth {
    pub ingress_rate: u64,
    pub ingress_burst: u64,
    pub egress_rate: u64,
    pub egress_burst: u64,
}

/// One sandbox's attachment to the network: the runtime arguments of a plugin run.
#[derive(Clone, Debug, PartialEq)]
pub struct Attachment {
    pub container_id: String,
    /// The pinned network namespace; passed on DEL even when it is already gone.
    pub netns: PathBuf,
    pub ifname: String,
    /// CNI_ARGS, in order.
    pub args: Vec<(String, String)>,
    pub port_mappings: Vec<PortMapping>,
    pub bandwidth: Option<Bandwidth>,
    /// Further capability args by name, for plugins that declare them.
    pub capabilities: BTreeMap<String, Value>,
}

impl Default for Attachment {
    fn default() -> Self {
        Attachment {
            container_id: String::new(),
            netns: PathBuf::new(),
            ifname: DEFAULT_IFNAME.to_string(),
            args: Vec::new(),
            port_mappings: Vec::new(),
            bandwidth: None,
            capabilities: BTreeMap::new(),
        }
    }
}

impl Attachment {
    pub fn new(container_id: impl Into<String>, netns: impl Into<PathBuf>) -> Self {
        Attachment {
            container_id: container_id.into(),
            netns: netns.into(),
            ..Default::default()
        }
    }

    /// The CNI_ARGS containerd's CRI passes for a pod sandbox. IgnoreUnknown lets plugins
    /// that know none of the K8S_ keys accept them.
    pub fn for_pod(
        sandbox_id: &str,
        netns: impl Into<PathBuf>,
        pod_namespace: &str,
        pod_name: &str,
        pod_uid: &str,
    ) -> Self {
        let args = [
            ("IgnoreUnknown", "1"),
            ("K8S_POD_NAMESPACE", pod_namespace),
            ("K8S_POD_NAME", pod_name),
            ("K8S_POD_INFRA_CONTAINER_ID", sandbox_id),
            ("K8S_POD_UID", pod_uid),
        ];
        Attachment {
            args: args
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Attachment::new(sandbox_id, netns)
        }
    }

    pub(super) fn capability_args(&self) -> Map<String, Value> {
        let mut caps: Map<String, Value> = self
            .capabilities
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        // Host port 0 means "not published" in CRI; containerd drops those mappings.
        let ports: Vec<&PortMapping> = self
            .port_mappings
            .iter()
            .filter(|p| p.host_port != 0)
            .collect();
        caps.insert("portMappings".into(), serde_json::json!(ports));
        if let Some(bw) = &self.bandwidth {
            caps.insert("bandwidth".into(), serde_json::json!(bw));
        }
        caps
    }
}

/// Names as libcni validates them: they become parts of file names and iptables comments.
fn valid_id(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

pub(super) fn validate(a: &Attachment, network: Option<&str>) -> Result<()> {
    let invalid = |reason: String| CniError::InvalidAttachment {
        container_id: a.container_id.clone(),
        reason,
    };
    if !valid_id(&a.container_id) {
        return Err(invalid(
            "container id must be [a-zA-Z0-9][a-zA-Z0-9_.-]*".into(),
        ));
    }
    // IFNAMSIZ is 16 with the NUL.
    let ifname_ok = !a.ifname.is_empty()
        && a.ifname.len() <= 15
        && a.ifname != "."
        && a.ifname != ".."
        && !a
            .ifname
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace());
    if !ifname_ok {
        return Err(invalid(format!("invalid interface name {:?}", a.ifname)));
    }
    if let Some(n) = network.filter(|n| !valid_id(n)) {
        return Err(invalid(format!("invalid network name {n:?}")));
    }
    Ok(())
}
