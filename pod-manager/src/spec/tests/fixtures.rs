//! Pods, nodes and sources for the spec tests, written as the API's JSON.

use std::collections::BTreeMap;

use gantry_cri::api;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, Service};
use serde_json::{json, Value};

use crate::spec::{container_config, ConfigError, ContainerInputs, EnvSources, NodeContext};

/// A pod `shop/web` (uid `uid-1`) with `spec` merged over one container `app`.
pub fn pod(spec: Value) -> Pod {
    pod_with(json!({}), spec)
}

/// A pod with `metadata` merged over shop/web's and `spec` over the default spec.
pub fn pod_with(metadata: Value, spec: Value) -> Pod {
    let mut meta = json!({"name": "web", "namespace": "shop", "uid": "uid-1"});
    merge(&mut meta, metadata);
    let mut full_spec = json!({"containers": [{"name": "app", "image": "nginx:1"}]});
    merge(&mut full_spec, spec);
    serde_json::from_value(json!({"metadata": meta, "spec": full_spec})).unwrap()
}

fn merge(base: &mut Value, over: Value) {
    if let (Value::Object(b), Value::Object(o)) = (base, over) {
        for (k, v) in o {
            b.insert(k, v);
        }
    }
}

pub fn node() -> NodeContext {
    NodeContext {
        node_name: "node-1".into(),
        node_ips: vec!["10.0.0.5".into()],
        cluster_dns: vec!["10.96.0.10".into()],
        cluster_domain: "cluster.local".into(),
        pod_logs_dir: "/var/log/pods".into(),
        cgroup_parent: "/kubepods/burstable/poduid-1".into(),
        allocatable_cpu_millis: 4000,
        allocatable_memory: 8 << 30,
        allocatable_ephemeral_storage: 100 << 30,
        memory_capacity: 10_000_000_000,
        seccomp_profile_root: "/var/lib/kubelet/seccomp".into(),
        ..Default::default()
    }
}

pub fn config_map(name: &str, data: Value) -> (String, Option<ConfigMap>) {
    let cm = serde_json::from_value(
        json!({"metadata": {"name": name, "namespace": "shop"}, "data": data}),
    )
    .unwrap();
    (name.to_string(), Some(cm))
}

/// A secret; `data` values are plain text, base64-encoded here as the API sends them.
pub fn secret(name: &str, data: &[(&str, &str)]) -> (String, Option<Secret>) {
    let data: BTreeMap<String, k8s_openapi::ByteString> = data
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                k8s_openapi::ByteString(v.as_bytes().to_vec()),
            )
        })
        .collect();
    let mut s = Secret {
        data: Some(data),
        ..Default::default()
    };
    s.metadata.name = Some(name.into());
    (name.to_string(), Some(s))
}

pub fn service(namespace: &str, name: &str, ip: &str, ports: Value) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"clusterIP": ip, "ports": ports}
    }))
    .unwrap()
}

pub fn inputs() -> ContainerInputs {
    ContainerInputs {
        image: "sha256:abc".into(),
        restart_count: 2,
        pod_ips: vec!["10.244.1.7".into()],
        ..Default::default()
    }
}

pub fn container_named<'a>(pod: &'a Pod, name: &str) -> &'a Container {
    let spec = pod.spec.as_ref().unwrap();
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == name)
        .unwrap()
}

/// The config of container `app` of `pod`.
pub fn app_config(pod: &Pod, sources: &EnvSources) -> Result<api::ContainerConfig, ConfigError> {
    container_config(
        pod,
        container_named(pod, "app"),
        &node(),
        sources,
        &inputs(),
    )
}

pub fn envs(config: &api::ContainerConfig) -> Vec<(String, String)> {
    config
        .envs
        .iter()
        .map(|kv| (kv.key.clone(), String::from_utf8(kv.value.clone()).unwrap()))
        .collect()
}

/// The value of env var `name` of container `app`.
pub fn env_value(pod: &Pod, sources: &EnvSources, name: &str) -> Option<String> {
    let config = app_config(pod, sources).unwrap();
    envs(&config)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

pub fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
