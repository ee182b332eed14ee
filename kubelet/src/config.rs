//! `gantry node`'s configuration: a KubeletConfiguration file
//! (kubelet.config.k8s.io/v1beta1, YAML or JSON) with the upstream field names for what
//! Gantry supports, overridden by command-line flags, as the upstream kubelet does.
//! Everything is parsed and validated before anything starts; a field Gantry does not
//! know, or a value it cannot use, is an error that names the field.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub const API_VERSION: &str = "kubelet.config.k8s.io/v1beta1";
pub const KIND: &str = "KubeletConfiguration";

/// The KubeletConfiguration fields Gantry reads, with upstream's names and defaults.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct KubeletConfiguration {
    pub api_version: String,
    pub kind: String,
    pub address: String,
    pub port: u16,
    pub read_only_port: u16,
    pub healthz_bind_address: String,
    pub healthz_port: u16,
    pub container_runtime_endpoint: String,
    pub image_service_endpoint: String,
    pub static_pod_path: String,
    pub cluster_dns: Vec<String>,
    pub cluster_domain: String,
    pub max_pods: u32,
    pub pod_pids_limit: i64,
    pub resolv_conf: String,
    pub cgroup_driver: String,
    pub cgroup_root: String,
    #[serde(rename = "cgroupsPerQOS")]
    pub cgroups_per_qos: bool,
    pub enforce_node_allocatable: Vec<String>,
    pub system_reserved: std::collections::BTreeMap<String, String>,
    pub kube_reserved: std::collections::BTreeMap<String, String>,
    pub fail_cgroup_v1: bool,
    pub fail_swap_on: bool,
    pub pod_logs_dir: String,
    pub rotate_certificates: bool,
    pub server_tls_bootstrap: bool,
    pub tls_cert_file: String,
    pub tls_private_key_file: String,
    pub authentication: Authentication,
    pub authorization: Authorization,
    pub node_status_update_frequency: String,
    pub node_status_report_frequency: String,
    pub node_lease_duration_seconds: u32,
    pub sync_frequency: String,
    /// How often a volume's usage is walked for the summary (upstream default 1m).
    pub volume_stats_agg_period: String,
    pub serialize_image_pulls: bool,
    pub register_node: bool,
    pub provider_id: String,
    pub container_log_max_size: String,
    pub container_log_max_files: u32,
    pub image_gc_high_threshold_percent: i32,
    pub image_gc_low_threshold_percent: i32,
    pub image_minimum_gc_age: String,
    pub image_maximum_gc_age: String,
    pub eviction_hard: BTreeMap<String, String>,
    pub eviction_soft: BTreeMap<String, String>,
    pub eviction_soft_grace_period: BTreeMap<String, String>,
    pub eviction_minimum_reclaim: BTreeMap<String, String>,
    pub eviction_pressure_transition_period: String,
    pub eviction_max_pod_grace_period: i32,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Authentication {
    pub anonymous: Enabled,
    pub webhook: Enabled,
    pub x509: X509,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Enabled {
    pub enabled: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct X509 {
    #[serde(rename = "clientCAFile")]
    pub client_ca_file: String,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default)]
pub struct Authorization {
    pub mode: String,
}

impl Default for Authorization {
    fn default() -> Self {
        Authorization {
            mode: "Webhook".to_string(),
        }
    }
}

impl Default for KubeletConfiguration {
    /// Upstream's v1beta1 defaults for the fields Gantry reads.
    fn default() -> Self {
        KubeletConfiguration {
            api_version: API_VERSION.to_string(),
            kind: KIND.to_string(),
            address: "0.0.0.0".to_string(),
            port: 10250,
            read_only_port: 0,
            healthz_bind_address: "127.0.0.1".to_string(),
            healthz_port: 10248,
            container_runtime_endpoint: String::new(),
            image_service_endpoint: String::new(),
            static_pod_path: String::new(),
            cluster_dns: Vec::new(),
            cluster_domain: String::new(),
            max_pods: 110,
            pod_pids_limit: -1,
            resolv_conf: "/etc/resolv.conf".to_string(),
            cgroup_driver: "cgroupfs".to_string(),
            cgroup_root: "/".to_string(),
            cgroups_per_qos: true,
            enforce_node_allocatable: vec!["pods".to_string()],
            system_reserved: Default::default(),
            kube_reserved: Default::default(),
            fail_cgroup_v1: true,
            fail_swap_on: true,
            pod_logs_dir: "/var/log/pods".to_string(),
            rotate_certificates: true,
            server_tls_bootstrap: false,
            tls_cert_file: String::new(),
            tls_private_key_file: String::new(),
            authentication: Authentication {
                anonymous: Enabled { enabled: false },
                webhook: Enabled { enabled: true },
                x509: X509::default(),
            },
            authorization: Authorization::default(),
            node_status_update_frequency: "10s".to_string(),
            node_status_report_frequency: "5m".to_string(),
            node_lease_duration_seconds: 40,
            sync_frequency: "1m".to_string(),
            volume_stats_agg_period: "1m".to_string(),
            serialize_image_pulls: true,
            register_node: true,
            provider_id: String::new(),
            container_log_max_size: "10Mi".to_string(),
            container_log_max_files: 5,
            image_gc_high_threshold_percent: 85,
            image_gc_low_threshold_percent: 80,
            image_minimum_gc_age: "2m".to_string(),
            image_maximum_gc_age: "0s".to_string(),
            eviction_hard: crate::eviction::thresholds::default_eviction_hard(),
            eviction_soft: BTreeMap::new(),
            eviction_soft_grace_period: BTreeMap::new(),
            eviction_minimum_reclaim: BTreeMap::new(),
            eviction_pressure_transition_period: "5m".to_string(),
            eviction_max_pod_grace_period: 0,
        }
    }
}

/// Settings given on the command line; `None` leaves the file's (or the default) value.
#[derive(Clone, Debug, Default)]
pub struct FlagOverrides {
    pub container_runtime_endpoint: Option<String>,
    pub address: Option<String>,
    pub port: Option<u16>,
    pub cluster_dns: Option<Vec<String>>,
    pub cluster_domain: Option<String>,
    pub max_pods: Option<u32>,
    pub static_pod_path: Option<String>,
    pub cgroup_root: Option<String>,
}

/// A configuration that cannot be used: every problem found, each naming its field.
#[derive(Debug, thiserror::Error)]
#[error("invalid kubelet configuration{}: {}", source_name(.file), .problems.join("; "))]
pub struct ConfigError {
    pub file: Option<PathBuf>,
    pub problems: Vec<String>,
}

fn source_name(file: &Option<PathBuf>) -> String {
    file.as_ref()
        .map(|f| format!(" {}", f.display()))
        .unwrap_or_default()
}

/// Every field name of the v1beta1 schema that Gantry reads, at each level.
const TOP_FIELDS: &[&str] = &[
    "apiVersion",
    "kind",
    "address",
    "port",
    "readOnlyPort",
    "healthzBindAddress",
    "healthzPort",
    "containerRuntimeEndpoint",
    "imageServiceEndpoint",
    "staticPodPath",
    "clusterDNS",
    "clusterDomain",
    "maxPods",
    "podPidsLimit",
    "resolvConf",
    "cgroupDriver",
    "cgroupRoot",
    "cgroupsPerQOS",
    "enforceNodeAllocatable",
    "systemReserved",
    "kubeReserved",
    "failCgroupV1",
    "failSwapOn",
    "podLogsDir",
    "rotateCertificates",
    "serverTLSBootstrap",
    "tlsCertFile",
    "tlsPrivateKeyFile",
    "authentication",
    "authorization",
    "nodeStatusUpdateFrequency",
    "nodeStatusReportFrequency",
    "nodeLeaseDurationSeconds",
    "syncFrequency",
    "volumeStatsAggPeriod",
    "serializeImagePulls",
    "registerNode",
    "providerID",
    "containerLogMaxSize",
    "containerLogMaxFiles",
    "imageGCHighThresholdPercent",
    "imageGCLowThresholdPercent",
    "imageMinimumGCAge",
    "imageMaximumGCAge",
    "evictionHard",
    "evictionSoft",
    "evictionSoftGracePeriod",
    "evictionMinimumReclaim",
    "evictionPressureTransitionPeriod",
    "evictionMaxPodGracePeriod",
];

impl KubeletConfiguration {
    /// Reads the file (YAML or JSON), rejecting unknown fields, then validates.
    pub fn load(path: &Path, flags: &FlagOverrides) -> Result<Self, ConfigError> {
        let fail = |p: String| ConfigError {
            file: Some(path.to_path_buf()),
            problems: vec![p],
        };
        let text = std::fs::read_to_string(path).map_err(|e| fail(format!("read: {e}")))?;
        let mut config = Self::parse(&text).map_err(|mut e| {
            e.file = Some(path.to_path_buf());
            e
        })?;
        config.apply(flags);
        config.validate().map_err(|mut e| {
            e.file = Some(path.to_path_buf());
            e
        })?;
        Ok(config)
    }

    /// Defaults plus flags, for a node started without a config file.
    pub fn from_flags(flags: &FlagOverrides) -> Result<Self, ConfigError> {
        let mut config = KubeletConfiguration::default();
        config.apply(flags);
        config.validate()?;
        Ok(config)
    }

    /// Parses the document. Field names follow upstream exactly (camelCase, with
    /// upstream's spellings such as clusterDNS and providerID); unknown fields are
    /// errors, all of them listed.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let err = |problems: Vec<String>| ConfigError {
            file: None,
            problems,
        };
        let value: serde_json::Value = serde_saphyr::from_str(text)
            .map_err(|e| err(vec![format!("not YAML or JSON: {e}")]))?;
        let Some(map) = value.as_object() else {
            return Err(err(vec!["the document is not a mapping".to_string()]));
        };
        let mut problems = Vec::new();
        for key in map.keys() {
            if !TOP_FIELDS.contains(&key.as_str()) {
                problems.push(format!("unknown or unsupported field {key:?}"));
            }
        }
        let nested: &[(&str, &[&str])] = &[
            ("authentication", &["anonymous", "webhook", "x509"]),
            ("authorization", &["mode", "webhook"]),
        ];
        for (parent, allowed) in nested {
            if let Some(obj) = map.get(*parent).and_then(|v| v.as_object()) {
                for key in obj.keys() {
                    if !allowed.contains(&key.as_str()) {
                        problems.push(format!("unknown or unsupported field \"{parent}.{key}\""));
                    }
                }
            }
        }
        if !problems.is_empty() {
            return Err(err(problems));
        }
        // Upstream spells these fields with capitals that camelCase renaming misses.
        let mut value = value;
        if let Some(obj) = value.as_object_mut() {
            for (from, to) in [
                ("clusterDNS", "clusterDns"),
                ("serverTLSBootstrap", "serverTlsBootstrap"),
                ("providerID", "providerId"),
                ("imageGCHighThresholdPercent", "imageGcHighThresholdPercent"),
                ("imageGCLowThresholdPercent", "imageGcLowThresholdPercent"),
                ("imageMinimumGCAge", "imageMinimumGcAge"),
                ("imageMaximumGCAge", "imageMaximumGcAge"),
            ] {
                if let Some(v) = obj.remove(from) {
                    obj.insert(to.to_string(), v);
                }
            }
        }
        serde_json::from_value(value).map_err(|e| err(vec![format!("{e}")]))
    }

    pub fn apply(&mut self, flags: &FlagOverrides) {
        let f = flags.clone();
        if let Some(v) = f.container_runtime_endpoint {
            self.container_runtime_endpoint = v;
        }
        if let Some(v) = f.address {
            self.address = v;
        }
        if let Some(v) = f.port {
            self.port = v;
        }
        if let Some(v) = f.cluster_dns {
            self.cluster_dns = v;
        }
        if let Some(v) = f.cluster_domain {
            self.cluster_domain = v;
        }
        if let Some(v) = f.max_pods {
            self.max_pods = v;
        }
        if let Some(v) = f.static_pod_path {
            self.static_pod_path = v;
        }
        if let Some(v) = f.cgroup_root {
            self.cgroup_root = v;
        }
    }

    /// containerLogMaxSize in bytes.
    pub fn container_log_max_size(&self) -> Option<u64> {
        gantry_pod_manager::spec::quantity::Quantity::parse(&self.container_log_max_size)
            .ok()
            .and_then(|q| u64::try_from(q.value()).ok())
    }

    /// The image GC policy (imageGC* fields), as validated.
    pub fn image_gc_policy(&self) -> crate::image_gc::Policy {
        crate::image_gc::Policy {
            high_threshold_percent: self.image_gc_high_threshold_percent.clamp(0, 100) as u8,
            low_threshold_percent: self.image_gc_low_threshold_percent.clamp(0, 100) as u8,
            min_age: parse_duration(&self.image_minimum_gc_age).unwrap_or_default(),
            max_age: parse_duration(&self.image_maximum_gc_age).unwrap_or_default(),
        }
    }

    /// upstream's validation of the image GC settings, in its words.
    fn image_gc_problems(&self) -> Vec<String> {
        let (high, low) = (
            self.image_gc_high_threshold_percent,
            self.image_gc_low_threshold_percent,
        );
        let mut p = Vec::new();
        if !(0..=100).contains(&high) {
            p.push(format!("invalid configuration: imageGCHighThresholdPercent (--image-gc-high-threshold) {high} must be between 0 and 100, inclusive"));
        }
        if !(0..=100).contains(&low) {
            p.push(format!("invalid configuration: imageGCLowThresholdPercent (--image-gc-low-threshold) {low} must be between 0 and 100, inclusive"));
        }
        if low >= high {
            p.push(format!("invalid configuration: imageGCLowThresholdPercent (--image-gc-low-threshold) {low} must be less than imageGCHighThresholdPercent (--image-gc-high-threshold) {high}"));
        }
        let (min, max) = (
            parse_duration(&self.image_minimum_gc_age),
            parse_duration(&self.image_maximum_gc_age),
        );
        if let (Some(min), Some(max)) = (min, max) {
            if !max.is_zero() && max <= min {
                p.push(format!(
                    "invalid configuration: imageMaximumGCAge {} must be greater than imageMinimumGCAge {}",
                    self.image_maximum_gc_age, self.image_minimum_gc_age
                ));
            }
        }
        p
    }

    /// Checks values Gantry cannot use; every problem names its field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut p = Vec::new();
        if self.api_version != API_VERSION {
            p.push(format!(
                "apiVersion {:?} is not {API_VERSION}",
                self.api_version
            ));
        }
        if self.kind != KIND {
            p.push(format!("kind {:?} is not {KIND}", self.kind));
        }
        if self.address.parse::<IpAddr>().is_err() {
            p.push(format!("address {:?} is not an IP address", self.address));
        }
        if self.port == 0 {
            p.push("port must be 1-65535".to_string());
        }
        match self.container_log_max_size() {
            Some(n) if n > 0 => {}
            _ => p.push(format!(
                "containerLogMaxSize {:?} is not a positive quantity",
                self.container_log_max_size
            )),
        }
        if self.container_log_max_files < 2 {
            p.push("containerLogMaxFiles must be at least 2".to_string());
        }
        if self.read_only_port != 0 {
            p.push(
                "readOnlyPort: the unauthenticated read-only port is not supported; set 0"
                    .to_string(),
            );
        }
        for ip in &self.cluster_dns {
            if ip.parse::<IpAddr>().is_err() {
                p.push(format!("clusterDNS entry {ip:?} is not an IP address"));
            }
        }
        if !self.cluster_domain.is_empty() && !is_dns_domain(&self.cluster_domain) {
            p.push(format!(
                "clusterDomain {:?} is not a DNS domain",
                self.cluster_domain
            ));
        }
        if self.max_pods == 0 {
            p.push("maxPods must be at least 1".to_string());
        }
        if self.cgroup_driver != "cgroupfs" {
            p.push(format!(
                "cgroupDriver {:?}: only \"cgroupfs\" is supported",
                self.cgroup_driver
            ));
        }
        if !self.cgroup_root.starts_with('/') {
            p.push(format!(
                "cgroupRoot {:?} must be absolute",
                self.cgroup_root
            ));
        }
        for v in &self.enforce_node_allocatable {
            if !matches!(v.as_str(), "pods" | "none") {
                p.push(format!(
                    "enforceNodeAllocatable {v:?}: only \"pods\" (or \"none\") is supported"
                ));
            }
        }
        if self.enforce_node_allocatable.len() > 1
            && self.enforce_node_allocatable.iter().any(|v| v == "none")
        {
            p.push(
                "enforceNodeAllocatable: \"none\" cannot be combined with other values".to_string(),
            );
        }
        if !self.cgroups_per_qos && self.enforce_node_allocatable.iter().any(|v| v == "pods") {
            // As upstream's validation.
            p.push("enforceNodeAllocatable (--enforce-node-allocatable) is not supported unless cgroupsPerQOS (--cgroups-per-qos) is set to true".to_string());
        }
        for (field, list) in [
            ("systemReserved", &self.system_reserved),
            ("kubeReserved", &self.kube_reserved),
        ] {
            for (name, value) in list {
                if !matches!(
                    name.as_str(),
                    "cpu" | "memory" | "pid" | "ephemeral-storage"
                ) {
                    p.push(format!("{field}: unsupported resource {name:?}"));
                }
                match gantry_pod_manager::spec::quantity::Quantity::parse(value) {
                    Ok(q) if q.value() >= 0 => {}
                    _ => p.push(format!(
                        "{field}[{name}] {value:?} is not a non-negative quantity"
                    )),
                }
            }
        }
        if !matches!(self.authorization.mode.as_str(), "Webhook" | "AlwaysAllow") {
            p.push(format!(
                "authorization.mode {:?}: use Webhook or AlwaysAllow",
                self.authorization.mode
            ));
        }
        if self.authentication.x509.client_ca_file.is_empty()
            && !self.authentication.webhook.enabled
        {
            p.push("authentication: neither x509.clientCAFile nor webhook is set, so no client could be authenticated".to_string());
        }
        if self.tls_cert_file.is_empty() != self.tls_private_key_file.is_empty() {
            p.push("tlsCertFile and tlsPrivateKeyFile go together".to_string());
        }
        for (field, v) in [
            (
                "nodeStatusUpdateFrequency",
                &self.node_status_update_frequency,
            ),
            (
                "nodeStatusReportFrequency",
                &self.node_status_report_frequency,
            ),
            ("syncFrequency", &self.sync_frequency),
            ("imageMinimumGCAge", &self.image_minimum_gc_age),
            ("imageMaximumGCAge", &self.image_maximum_gc_age),
            ("volumeStatsAggPeriod", &self.volume_stats_agg_period),
        ] {
            if parse_duration(v).is_none() {
                p.push(format!("{field} {v:?} is not a duration such as 10s or 5m"));
            }
        }
        p.extend(self.image_gc_problems());
        if self.eviction_max_pod_grace_period < 0 {
            p.push(format!(
                "evictionMaxPodGracePeriod {} must not be negative",
                self.eviction_max_pod_grace_period
            ));
        }
        if let Err(e) = crate::eviction::thresholds::Thresholds::from_config(self) {
            p.push(e);
        }
        if p.is_empty() {
            Ok(())
        } else {
            Err(ConfigError {
                file: None,
                problems: p,
            })
        }
    }
}

/// A Go-style duration: a sequence of numbers with units h, m, s, ms (e.g. "1m30s").
pub fn parse_duration(s: &str) -> Option<std::time::Duration> {
    if s.is_empty() {
        return None;
    }
    if s == "0" {
        // Go's time.ParseDuration takes a bare zero.
        return Some(std::time::Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            _ => return None,
        };
        total += n * scale;
        rest = &rest[unit_end..];
    }
    Some(std::time::Duration::from_secs_f64(total))
}

fn is_dns_domain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_nodes_configuration_parses_with_upstream_names() {
        let yaml = r#"
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /gantry-e2e-bed-node
address: 198.18.1.1
port: 41000
readOnlyPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: /pki/ca.crt}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix:///run/gantry/cri.sock
clusterDomain: cluster.local
clusterDNS: [198.19.0.10]
maxPods: 50
staticPodPath: /etc/kubernetes/manifests
"#;
        let c = KubeletConfiguration::parse(yaml).unwrap();
        c.validate().unwrap();
        assert_eq!(c.cluster_dns, vec!["198.19.0.10"]);
        assert_eq!(c.authentication.x509.client_ca_file, "/pki/ca.crt");
        assert_eq!(c.max_pods, 50);
        assert!(!c.fail_cgroup_v1);
        // Unset fields keep upstream's defaults.
        assert_eq!(c.healthz_port, 10248);
        assert_eq!(c.pod_logs_dir, "/var/log/pods");
    }

    #[test]
    fn unknown_fields_are_all_named() {
        let e = KubeletConfiguration::parse(
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nmaxPod: 3\nauthentication: {anonymus: {enabled: true}}\n",
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("\"maxPod\""), "{msg}");
        assert!(msg.contains("\"authentication.anonymus\""), "{msg}");
    }

    #[test]
    fn invalid_values_name_their_fields() {
        let c = KubeletConfiguration {
            cluster_dns: vec!["not-an-ip".into()],
            cgroup_driver: "systemd".into(),
            read_only_port: 10255,
            sync_frequency: "often".into(),
            cluster_domain: "Cluster.Local".into(),
            container_log_max_size: "ten megs".into(),
            container_log_max_files: 1,
            ..Default::default()
        };
        let msg = c.validate().unwrap_err().to_string();
        for field in [
            "clusterDNS",
            "cgroupDriver",
            "readOnlyPort",
            "syncFrequency",
            "clusterDomain",
            "containerLogMaxSize",
            "containerLogMaxFiles",
        ] {
            assert!(msg.contains(field), "{field} missing from: {msg}");
        }
        assert!(KubeletConfiguration::default().validate().is_ok());
        assert_eq!(
            KubeletConfiguration::default().container_log_max_size(),
            Some(10 << 20)
        );
    }

    #[test]
    fn flags_override_the_file() {
        let mut c = KubeletConfiguration::parse(
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nmaxPods: 10\n",
        )
        .unwrap();
        c.apply(&FlagOverrides {
            max_pods: Some(20),
            container_runtime_endpoint: Some("unix:///x.sock".into()),
            ..Default::default()
        });
        assert_eq!(c.max_pods, 20);
        assert_eq!(c.container_runtime_endpoint, "unix:///x.sock");
    }

    #[test]
    fn go_durations_parse() {
        assert_eq!(
            parse_duration("10s"),
            Some(std::time::Duration::from_secs(10))
        );
        assert_eq!(
            parse_duration("1m30s"),
            Some(std::time::Duration::from_secs(90))
        );
        assert_eq!(
            parse_duration("500ms"),
            Some(std::time::Duration::from_millis(500))
        );
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration(""), None);
        assert_eq!(parse_duration("0"), Some(std::time::Duration::ZERO));
    }

    #[test]
    fn image_gc_settings_use_upstreams_names_and_checks() {
        let head = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n";
        let c = KubeletConfiguration::parse(&format!(
            "{head}imageGCHighThresholdPercent: 90\nimageGCLowThresholdPercent: 70\nimageMinimumGCAge: 30s\nimageMaximumGCAge: 1h\n"
        ))
        .unwrap();
        c.validate().unwrap();
        assert_eq!(
            c.image_gc_policy(),
            crate::image_gc::Policy {
                high_threshold_percent: 90,
                low_threshold_percent: 70,
                min_age: std::time::Duration::from_secs(30),
                max_age: std::time::Duration::from_secs(3600),
            }
        );
        assert_eq!(
            KubeletConfiguration::default().image_gc_policy(),
            crate::image_gc::Policy::default()
        );
        let e = KubeletConfiguration::parse(&format!(
            "{head}imageGCHighThresholdPercent: 101\nimageGCLowThresholdPercent: 101\nimageMaximumGCAge: 1m\n"
        ))
        .unwrap()
        .validate()
        .unwrap_err();
        assert_eq!(
            e.problems,
            vec![
                "invalid configuration: imageGCHighThresholdPercent (--image-gc-high-threshold) 101 must be between 0 and 100, inclusive",
                "invalid configuration: imageGCLowThresholdPercent (--image-gc-low-threshold) 101 must be between 0 and 100, inclusive",
                "invalid configuration: imageGCLowThresholdPercent (--image-gc-low-threshold) 101 must be less than imageGCHighThresholdPercent (--image-gc-high-threshold) 101",
                "invalid configuration: imageMaximumGCAge 1m must be greater than imageMinimumGCAge 2m",
            ]
        );
    }

    #[test]
    fn wrong_kind_or_version_is_refused() {
        let e = KubeletConfiguration::parse("apiVersion: v1\nkind: Pod\n")
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("apiVersion") && e.contains("kind"), "{e}");
    }

    #[test]
    fn node_allocatable_fields_parse_with_upstream_names_and_bad_values_are_named() {
        let yaml = r#"
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupsPerQOS: true
enforceNodeAllocatable: [pods]
systemReserved: {cpu: 100m, memory: 256Mi}
kubeReserved: {pid: "1000"}
podPidsLimit: 64
"#;
        let c = KubeletConfiguration::parse(yaml).unwrap();
        c.validate().unwrap();
        assert!(c.cgroups_per_qos);
        assert_eq!(c.system_reserved["memory"], "256Mi");
        assert_eq!(c.kube_reserved["pid"], "1000");
        let defaults = KubeletConfiguration::default();
        assert!(defaults.cgroups_per_qos);
        assert_eq!(defaults.enforce_node_allocatable, ["pods"]);

        let bad = KubeletConfiguration::parse(
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\ncgroupsPerQOS: false\nenforceNodeAllocatable: [pods, system-reserved]\nsystemReserved: {memory: lots}\n",
        )
        .unwrap();
        let msg = bad.validate().unwrap_err().to_string();
        assert!(
            msg.contains("enforceNodeAllocatable \"system-reserved\""),
            "{msg}"
        );
        assert!(msg.contains("unless cgroupsPerQOS"), "{msg}");
        assert!(msg.contains("systemReserved[memory] \"lots\""), "{msg}");
    }
}
