//! The Node object: registration, status (addresses, capacity, nodeInfo, conditions)
//! and the heartbeat Lease, as the upstream kubelet keeps them
//! (pkg/kubelet/kubelet_node_status.go, pkg/kubelet/nodelease).
//!
//! Status is computed every nodeStatusUpdateFrequency (10 s) and posted when it changed
//! or when nodeStatusReportFrequency (5 min) passed since the last post; the Lease is
//! renewed every 10 s (a quarter of its 40 s duration). Ready follows the runtime's
//! RuntimeReady and NetworkReady conditions and names the reason when it is not.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use gantry_cri::api;
use gantry_pod_manager::Cri;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeStatus,
    NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, OwnerReference, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};

use crate::bootstrap::ClientHandle;
use crate::events::Recorder;
use crate::machine::Machine;

pub const KUBELET_VERSION: &str = concat!("v1.37.1+gantry-", env!("CARGO_PKG_VERSION"));

/// What the node reports about itself.
#[derive(Clone)]
pub struct NodeSpec {
    pub name: String,
    pub ip: String,
    pub port: u16,
    pub max_pods: u32,
    pub provider_id: String,
    pub lease_duration_seconds: u32,
    pub update_every: Duration,
    pub report_every: Duration,
    /// What allocatable keeps back from capacity.
    pub reserved: Reserved,
}

/// What upstream's node allocatable subtracts from capacity: systemReserved,
/// kubeReserved and the hard eviction thresholds (memory.available for memory,
/// nodefs.available for ephemeral storage).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reserved {
    pub cpu_millis: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
}

impl Reserved {
    /// Allocatable CPU (millicores), memory and ephemeral storage (bytes) of a machine.
    pub fn allocatable(&self, m: &Machine) -> (i64, i64, i64) {
        (
            (m.cpus as i64 * 1000 - self.cpu_millis).max(0),
            (m.memory_bytes as i64 - self.memory).max(0),
            (m.ephemeral_storage_bytes as i64 - self.ephemeral_storage).max(0),
        )
    }
}

pub struct NodeAgent {
    pub spec: NodeSpec,
    pub client: ClientHandle,
    pub cri: Cri,
    pub machine: Machine,
    pub events: Recorder,
    /// The eviction manager's pressure conditions.
    pub pressure: crate::eviction::Pressure,
}

impl NodeAgent {
    /// Creates the Node, or takes over an existing one of the same name (a restart, or
    /// a re-registration after deletion): its status is rewritten below either way.
    pub async fn register(&self) -> Result<()> {
        let nodes: Api<Node> = Api::all(self.client.get());
        let mut node = Node::default();
        node.metadata.name = Some(self.spec.name.clone());
        node.metadata.labels = Some(self.labels());
        if !self.spec.provider_id.is_empty() {
            node.spec = Some(k8s_openapi::api::core::v1::NodeSpec {
                provider_id: Some(self.spec.provider_id.clone()),
                ..Default::default()
            });
        }
        match nodes.create(&PostParams::default(), &node).await {
            Ok(_) => tracing::info!(node = %self.spec.name, "registered the node"),
            Err(kube::Error::Api(e)) if e.code == 409 => {
                // Upstream reconciles the labels it owns on an existing Node.
                let patch = serde_json::json!({"metadata": {"labels": self.labels()}});
                nodes
                    .patch(
                        &self.spec.name,
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await
                    .with_context(|| format!("update the existing node {}", self.spec.name))?;
                tracing::info!(node = %self.spec.name, "the node was registered before; taking it over");
            }
            Err(e) => return Err(e).with_context(|| format!("register node {}", self.spec.name)),
        }
        Ok(())
    }

    fn labels(&self) -> BTreeMap<String, String> {
        let arch = go_arch();
        BTreeMap::from([
            ("kubernetes.io/hostname".to_string(), self.spec.name.clone()),
            ("kubernetes.io/os".to_string(), "linux".to_string()),
            ("kubernetes.io/arch".to_string(), arch.to_string()),
            ("beta.kubernetes.io/os".to_string(), "linux".to_string()),
            ("beta.kubernetes.io/arch".to_string(), arch.to_string()),
        ])
    }

    /// Posts status on change and at least every report period; renews the Lease.
    /// Runs until the task is dropped.
    pub async fn run(&self) {
        let mut last_posted: Option<(NodeStatus, Instant)> = None;
        let mut announced_ready = false;
        let mut status_tick = tokio::time::interval(self.spec.update_every);
        let mut lease_tick = tokio::time::interval(Duration::from_secs(
            (self.spec.lease_duration_seconds as u64 / 4).max(1),
        ));
        status_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        lease_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = status_tick.tick() => {
                    match self.post_status(&mut last_posted).await {
                        Ok(ready) => {
                            if ready && !announced_ready {
                                announced_ready = true;
                                self.events.node_event("Normal", "NodeReady", &format!("Node {} status is now: NodeReady", self.spec.name));
                            }
                        }
                        Err(e) => tracing::warn!(error = %format!("{e:#}"), "node status update failed; retrying"),
                    }
                }
                _ = lease_tick.tick() => {
                    if let Err(e) = self.renew_lease().await {
                        tracing::warn!(error = %format!("{e:#}"), "lease renewal failed; retrying");
                    }
                }
            }
        }
    }

    /// Computes the status and posts it if it changed or the report period passed.
    /// Returns whether the node is Ready.
    async fn post_status(&self, last: &mut Option<(NodeStatus, Instant)>) -> Result<bool> {
        let previous = last.as_ref().map(|(s, _)| s);
        let status = self.status(previous).await;
        self.announce_pressure_changes(previous, &status);
        let ready = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        let due = match last {
            Some((s, at)) => !same_status(s, &status) || at.elapsed() >= self.spec.report_every,
            None => true,
        };
        if !due {
            return Ok(ready);
        }
        let nodes: Api<Node> = Api::all(self.client.get());
        let patch = serde_json::json!({ "status": status });
        nodes
            .patch_status(
                &self.spec.name,
                &PatchParams::default(),
                &Patch::Strategic(&patch),
            )
            .await
            .with_context(|| format!("patch the status of node {}", self.spec.name))?;
        *last = Some((status, Instant::now()));
        Ok(ready)
    }

    async fn status(&self, previous: Option<&NodeStatus>) -> NodeStatus {
        let now = Time(jiff::Timestamp::now());
        let runtime = runtime_facts(&self.cri).await;
        let (ready, reason, message) = match &runtime.not_ready {
            None => (
                true,
                "KubeletReady",
                "kubelet is posting ready status".to_string(),
            ),
            Some(why) => (false, "KubeletNotReady", why.clone()),
        };
        // `true_`: the condition's status is True (Ready when ready; a pressure
        // condition when under pressure).
        let condition = |type_: &str, true_: bool, reason: &str, message: &str| {
            let status = if true_ { "True" } else { "False" };
            let transition = previous
                .and_then(|p| p.conditions.iter().flatten().find(|c| c.type_ == type_))
                .filter(|c| c.status == status)
                .and_then(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            NodeCondition {
                type_: type_.to_string(),
                status: status.to_string(),
                reason: Some(reason.to_string()),
                message: Some(message.to_string()),
                last_heartbeat_time: Some(now.clone()),
                last_transition_time: Some(transition),
            }
        };
        let m = &self.machine;
        let list = |cpu_millis: i64, memory: i64, storage: i64| {
            let cpu = if cpu_millis % 1000 == 0 {
                (cpu_millis / 1000).to_string()
            } else {
                format!("{cpu_millis}m")
            };
            BTreeMap::from([
                ("cpu".to_string(), Quantity(cpu)),
                (
                    "memory".to_string(),
                    Quantity(format!("{}Ki", memory / 1024)),
                ),
                (
                    "ephemeral-storage".to_string(),
                    Quantity(format!("{}Ki", storage / 1024)),
                ),
                ("pods".to_string(), Quantity(self.spec.max_pods.to_string())),
            ])
        };
        let capacity = list(
            m.cpus as i64 * 1000,
            m.memory_bytes as i64,
            m.ephemeral_storage_bytes as i64,
        );
        let (cpu, memory, storage) = self.spec.reserved.allocatable(m);
        let allocatable = list(cpu, memory, storage);
        NodeStatus {
            addresses: Some(vec![
                NodeAddress {
                    type_: "InternalIP".to_string(),
                    address: self.spec.ip.clone(),
                },
                NodeAddress {
                    type_: "Hostname".to_string(),
                    address: self.spec.name.clone(),
                },
            ]),
            capacity: Some(capacity),
            allocatable: Some(allocatable),
            conditions: Some({
                // upstream's nodestatus setters MemoryPressureCondition,
                // DiskPressureCondition and PIDPressureCondition.
                let mut conditions: Vec<NodeCondition> = PRESSURE
                    .iter()
                    .map(|p| {
                        let under = self.pressure.has(p.type_);
                        let (reason, message) = if under { p.on } else { p.off };
                        condition(p.type_, under, reason, message)
                    })
                    .collect();
                conditions.push(condition("Ready", ready, reason, &message));
                conditions
            }),
            daemon_endpoints: Some(NodeDaemonEndpoints {
                kubelet_endpoint: Some(DaemonEndpoint {
                    port: self.spec.port as i32,
                }),
            }),
            node_info: Some(NodeSystemInfo {
                architecture: go_arch().to_string(),
                boot_id: m.boot_id.clone(),
                container_runtime_version: runtime.version,
                kernel_version: m.kernel_version.clone(),
                kubelet_version: KUBELET_VERSION.to_string(),
                machine_id: m.machine_id.clone(),
                operating_system: "linux".to_string(),
                os_image: m.os_image.clone(),
                system_uuid: m.system_uuid.clone(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    async fn renew_lease(&self) -> Result<()> {
        let leases: Api<Lease> = Api::namespaced(self.client.get(), "kube-node-lease");
        let now = MicroTime(jiff::Timestamp::now());
        let spec = LeaseSpec {
            holder_identity: Some(self.spec.name.clone()),
            lease_duration_seconds: Some(self.spec.lease_duration_seconds as i32),
            renew_time: Some(now),
            ..Default::default()
        };
        let patch = serde_json::json!({ "spec": spec });
        match leases
            .patch(
                &self.spec.name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => {
                let nodes: Api<Node> = Api::all(self.client.get());
                let node = nodes.get(&self.spec.name).await?;
                let mut lease = Lease::default();
                lease.metadata.name = Some(self.spec.name.clone());
                lease.metadata.namespace = Some("kube-node-lease".to_string());
                // As upstream: the Lease is owned by the Node, so it goes with it.
                lease.metadata.owner_references = Some(vec![OwnerReference {
                    api_version: "v1".to_string(),
                    kind: "Node".to_string(),
                    name: self.spec.name.clone(),
                    uid: node.metadata.uid.unwrap_or_default(),
                    ..Default::default()
                }]);
                lease.spec = Some(spec);
                leases
                    .create(&PostParams::default(), &lease)
                    .await
                    .context("create the node's Lease")?;
                Ok(())
            }
            Err(e) => Err(e).context("renew the node's Lease"),
        }
    }
}

/// A pressure condition: its type, (reason, message) when True and when False, and the
/// node events upstream records on each transition.
struct PressureCondition {
    type_: &'static str,
    on: (&'static str, &'static str),
    off: (&'static str, &'static str),
    events: (&'static str, &'static str),
}

const PRESSURE: [PressureCondition; 3] = [
    PressureCondition {
        type_: "MemoryPressure",
        on: (
            "KubeletHasInsufficientMemory",
            "kubelet has insufficient memory available",
        ),
        off: (
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
        ),
        events: ("NodeHasInsufficientMemory", "NodeHasSufficientMemory"),
    },
    PressureCondition {
        type_: "DiskPressure",
        on: ("KubeletHasDiskPressure", "kubelet has disk pressure"),
        off: ("KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        events: ("NodeHasDiskPressure", "NodeHasNoDiskPressure"),
    },
    PressureCondition {
        type_: "PIDPressure",
        on: (
            "KubeletHasInsufficientPID",
            "kubelet has insufficient PID available",
        ),
        off: (
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
        ),
        events: ("NodeHasInsufficientPID", "NodeHasSufficientPID"),
    },
];

impl NodeAgent {
    /// As upstream's setters: a pressure condition that changes is announced with a
    /// Normal node event, "Node NAME status is now: NodeHasInsufficientMemory".
    fn announce_pressure_changes(&self, previous: Option<&NodeStatus>, now: &NodeStatus) {
        let status_of = |s: Option<&NodeStatus>, t: &str| {
            s.and_then(|s| s.conditions.as_ref())
                .and_then(|c| c.iter().find(|c| c.type_ == t))
                .map(|c| c.status.clone())
        };
        for p in &PRESSURE {
            let before = status_of(previous, p.type_);
            let after = status_of(Some(now), p.type_);
            if before.is_some() && before != after {
                let event = if after.as_deref() == Some("True") {
                    p.events.0
                } else {
                    p.events.1
                };
                self.events.node_event(
                    "Normal",
                    event,
                    &format!("Node {} status is now: {event}", self.spec.name),
                );
            }
        }
    }
}

/// Equal apart from heartbeat times.
fn same_status(a: &NodeStatus, b: &NodeStatus) -> bool {
    let strip = |s: &NodeStatus| {
        let mut s = s.clone();
        for c in s.conditions.iter_mut().flatten() {
            c.last_heartbeat_time = None;
        }
        s
    };
    strip(a) == strip(b)
}

/// The runtime's version string (`name://version`) and why it is not ready, if it is
/// not.
struct RuntimeFacts {
    version: String,
    not_ready: Option<String>,
}

async fn runtime_facts(cri: &Cri) -> RuntimeFacts {
    let version = match cri
        .runtime
        .clone()
        .version(api::VersionRequest::default())
        .await
    {
        Ok(v) => {
            let v = v.into_inner();
            format!("{}://{}", v.runtime_name, v.runtime_version)
        }
        Err(e) => {
            return RuntimeFacts {
                version: String::new(),
                not_ready: Some(format!("container runtime is down: {}", e.message())),
            }
        }
    };
    let not_ready = match cri
        .runtime
        .clone()
        .status(api::StatusRequest { verbose: false })
        .await
    {
        Ok(s) => not_ready_reason(
            &s.into_inner()
                .status
                .map(|s| s.conditions)
                .unwrap_or_default(),
        ),
        Err(e) => Some(format!(
            "container runtime status check failed: {}",
            e.message()
        )),
    };
    RuntimeFacts { version, not_ready }
}

/// Upstream's wording: "container runtime not ready: RuntimeReady=false reason:...
/// message:..." and "container runtime network not ready: NetworkReady=false ...".
fn not_ready_reason(conditions: &[api::RuntimeCondition]) -> Option<String> {
    let mut problems = Vec::new();
    for (type_, prefix) in [
        ("RuntimeReady", "container runtime not ready"),
        ("NetworkReady", "container runtime network not ready"),
    ] {
        match conditions.iter().find(|c| c.r#type == type_) {
            Some(c) if c.status => {}
            Some(c) => problems.push(format!(
                "{prefix}: {type_}=false reason:{} message:{}",
                c.reason, c.message
            )),
            None => problems.push(format!("{prefix}: {type_} is not reported")),
        }
    }
    (!problems.is_empty()).then(|| problems.join(", "))
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(t: &str, ok: bool, reason: &str) -> api::RuntimeCondition {
        api::RuntimeCondition {
            r#type: t.to_string(),
            status: ok,
            reason: reason.to_string(),
            message: format!("{t} says so"),
        }
    }

    #[test]
    fn ready_needs_runtime_and_network_ready() {
        assert_eq!(
            not_ready_reason(&[
                cond("RuntimeReady", true, ""),
                cond("NetworkReady", true, "")
            ]),
            None
        );
        let why = not_ready_reason(&[
            cond("RuntimeReady", true, ""),
            cond("NetworkReady", false, "NetworkPluginNotReady"),
        ])
        .unwrap();
        assert!(
            why.starts_with("container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady"),
            "{why}"
        );
        let why = not_ready_reason(&[cond("NetworkReady", true, "")]).unwrap();
        assert!(why.contains("RuntimeReady is not reported"), "{why}");
    }
}
