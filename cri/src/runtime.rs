//! The runtime-wide RPCs: Version, Status, RuntimeConfig and UpdateRuntimeConfig.

use std::collections::HashMap;

use containerd_client::services::v1::version_client::VersionClient;
use gantry_networking::cni_config;
use tokio::sync::RwLock;

use crate::api;
use crate::config::CriConfig;
use crate::containerd::Containerd;

pub const RUNTIME_NAME: &str = "gantry";
pub const RUNTIME_API_VERSION: &str = "v1";

pub struct Runtime {
    ctd: Containerd,
    config: CriConfig,
    /// The pod CIDR the kubelet last gave (UpdateRuntimeConfig).
    pod_cidr: RwLock<String>,
}

impl Runtime {
    pub fn new(ctd: Containerd, config: CriConfig) -> Self {
        Runtime {
            ctd,
            config,
            pod_cidr: RwLock::new(String::new()),
        }
    }

    pub fn version(&self) -> api::VersionResponse {
        api::VersionResponse {
            // The CRI's own version field: "0.1.0" is what every runtime sends.
            version: "0.1.0".to_string(),
            runtime_name: RUNTIME_NAME.to_string(),
            runtime_version: env!("CARGO_PKG_VERSION").to_string(),
            runtime_api_version: RUNTIME_API_VERSION.to_string(),
        }
    }

    /// RuntimeReady follows containerd; NetworkReady follows the CNI config, with the
    /// reason and message containerd's CRI gives when there is none.
    pub async fn status(&self, verbose: bool) -> api::StatusResponse {
        let runtime_ready =
            match VersionClient::version(&mut self.ctd.version(), self.ctd.req(())).await {
                Ok(_) => condition("RuntimeReady", true, "", ""),
                Err(s) => condition(
                    "RuntimeReady",
                    false,
                    "ContainerdUnavailable",
                    &format!(
                        "containerd at {} does not answer: {}",
                        self.config.containerd_address.display(),
                        s.message()
                    ),
                ),
            };
        let network_ready = match cni_config::load_first(&self.config.cni_conf_dir) {
            Ok(list) => {
                let missing = cni_config::missing_plugins(&list, &self.config.cni_bin_dirs);
                if missing.is_empty() {
                    condition("NetworkReady", true, "", "")
                } else {
                    condition(
                        "NetworkReady",
                        false,
                        "NetworkPluginNotReady",
                        &format!(
                            "Network plugin returns error: CNI network {:?} needs plugins missing from {:?}: {}",
                            list.name,
                            self.config.cni_bin_dirs,
                            missing.join(", ")
                        ),
                    )
                }
            }
            Err(e) => condition(
                "NetworkReady",
                false,
                "NetworkPluginNotReady",
                &format!("Network plugin returns error: cni plugin not initialized: {e}"),
            ),
        };
        let mut info = HashMap::new();
        if verbose {
            let c = &self.config;
            let config = serde_json::json!({
                "containerdAddress": c.containerd_address,
                "containerdNamespace": c.namespace,
                "containerdRootDir": c.containerd_root,
                "snapshotter": c.snapshotter,
                "registryConfigPath": c.registry_config_path,
                "cniConfDir": c.cni_conf_dir,
                "cniBinDirs": c.cni_bin_dirs,
                "podCIDR": *self.pod_cidr.read().await,
            });
            info.insert("config".to_string(), config.to_string());
        }
        api::StatusResponse {
            status: Some(api::RuntimeStatus {
                conditions: vec![runtime_ready, network_ready],
            }),
            info,
            runtime_handlers: vec![api::RuntimeHandler {
                name: String::new(),
                features: Some(Default::default()),
            }],
            features: Some(Default::default()),
        }
    }

    pub fn runtime_config(&self) -> api::RuntimeConfigResponse {
        api::RuntimeConfigResponse {
            linux: Some(api::LinuxRuntimeConfiguration {
                cgroup_driver: api::CgroupDriver::Cgroupfs as i32,
            }),
        }
    }

    pub async fn update_runtime_config(&self, req: api::UpdateRuntimeConfigRequest) {
        if let Some(cidr) = req
            .runtime_config
            .and_then(|c| c.network_config)
            .map(|n| n.pod_cidr)
        {
            *self.pod_cidr.write().await = cidr;
        }
    }
}

fn condition(kind: &str, status: bool, reason: &str, message: &str) -> api::RuntimeCondition {
    api::RuntimeCondition {
        r#type: kind.to_string(),
        status,
        reason: reason.to_string(),
        message: message.to_string(),
    }
}
