//! Container → ContainerConfig, as upstream's generateContainerConfig
//! (kuberuntime_container.go, kuberuntime_container_linux.go, labels.go).

use std::collections::{BTreeMap, HashMap};

use gantry_cri::api;
use k8s_openapi::api::core::v1::{Container, Pod};

use super::{
    env, expansion, resources, security, ConfigError, ContainerInputs, EnvSources, NodeContext,
    Referenced,
};
use crate::labels;

/// Container annotations upstream records beyond those of labels.rs.
pub const POD_DELETION_GRACE_PERIOD: &str = "io.kubernetes.pod.deletionGracePeriod";
pub const CONTAINER_PRESTOP_HANDLER: &str = "io.kubernetes.container.preStopHandler";

pub fn container_config(
    pod: &Pod,
    container: &Container,
    node: &NodeContext,
    sources: &EnvSources,
    inputs: &ContainerInputs,
) -> Result<api::ContainerConfig, ConfigError> {
    let image_user = inputs.image_user.as_ref();
    security::verify_run_as_non_root(pod, container, image_user)?;
    let env = env::environment(pod, container, node, sources, inputs)?;
    let expand = |items: &Option<Vec<String>>| -> Vec<String> {
        items
            .iter()
            .flatten()
            .map(|item| expansion::expand(item, |name| env.get(name)))
            .collect()
    };
    let command = expand(&container.command);
    let args = expand(&container.args);
    let security_context = security::container_security_context(pod, container, node, image_user)?;
    Ok(api::ContainerConfig {
        metadata: Some(api::ContainerMetadata {
            name: container.name.clone(),
            attempt: inputs.restart_count,
        }),
        image: Some(api::ImageSpec {
            image: inputs.image.clone(),
            user_specified_image: container.image.clone().unwrap_or_default(),
            ..Default::default()
        }),
        command,
        args,
        working_dir: container.working_dir.clone().unwrap_or_default(),
        envs: env
            .into_vec()
            .into_iter()
            .map(|(key, value)| api::KeyValue {
                key,
                value: value.into_bytes(),
            })
            .collect(),
        mounts: inputs.mounts.clone(),
        labels: super::with_node_label(container_labels(pod, container), node),
        annotations: container_annotations(pod, container, inputs.restart_count),
        log_path: labels::container_log_path(&container.name, inputs.restart_count),
        stdin: container.stdin.unwrap_or(false),
        stdin_once: container.stdin_once.unwrap_or(false),
        tty: container.tty.unwrap_or(false),
        linux: Some(api::LinuxContainerConfig {
            resources: Some(resources::container_resources(pod, container, node)),
            security_context: Some(security_context),
        }),
        stop_signal: stop_signal(container) as i32,
        ..Default::default()
    })
}

/// The pod's three naming labels and the container's name (upstream's
/// newContainerLabels), plus Gantry's kind label: init, sidecar or app.
pub fn container_labels(pod: &Pod, container: &Container) -> HashMap<String, String> {
    let meta = &pod.metadata;
    let init = pod
        .spec
        .iter()
        .flat_map(|s| s.init_containers.iter().flatten())
        .find(|c| c.name == container.name);
    let kind = match init {
        Some(c) if resources::is_sidecar(c) => "sidecar",
        Some(_) => "init",
        None => "app",
    };
    HashMap::from([
        (
            labels::POD_NAME.into(),
            meta.name.clone().unwrap_or_default(),
        ),
        (
            labels::POD_NAMESPACE.into(),
            meta.namespace.clone().unwrap_or_default(),
        ),
        (labels::POD_UID.into(), meta.uid.clone().unwrap_or_default()),
        (labels::CONTAINER_NAME.into(), container.name.clone()),
        (labels::CONTAINER_KIND.into(), kind.into()),
    ])
}

/// upstream's newContainerAnnotations: what the kubelet needs to know about a
/// container it finds in the runtime without its pod (after a restart, or to stop it).
pub fn container_annotations(
    pod: &Pod,
    container: &Container,
    restart_count: u32,
) -> HashMap<String, String> {
    let mut a = HashMap::from([
        (
            labels::CONTAINER_HASH.to_string(),
            container_hash(container),
        ),
        (
            labels::CONTAINER_RESTART_COUNT.to_string(),
            restart_count.to_string(),
        ),
        (
            labels::CONTAINER_TERMINATION_MESSAGE_PATH.to_string(),
            container
                .termination_message_path
                .clone()
                .unwrap_or_default(),
        ),
        (
            labels::CONTAINER_TERMINATION_MESSAGE_POLICY.to_string(),
            container
                .termination_message_policy
                .clone()
                .unwrap_or_default(),
        ),
    ]);
    if let Some(grace) = pod.metadata.deletion_grace_period_seconds {
        a.insert(POD_DELETION_GRACE_PERIOD.into(), grace.to_string());
    }
    if let Some(grace) = pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
    {
        a.insert(
            labels::POD_TERMINATION_GRACE_PERIOD.into(),
            grace.to_string(),
        );
    }
    let json = |what: &str, value: Result<String, serde_json::Error>| {
        value
            .map_err(|e| tracing::warn!(container = %container.name, error = %e, "cannot record the {what}"))
            .ok()
    };
    if let Some(pre_stop) = container
        .lifecycle
        .as_ref()
        .and_then(|l| l.pre_stop.as_ref())
    {
        if let Some(v) = json("preStop handler", serde_json::to_string(pre_stop)) {
            a.insert(CONTAINER_PRESTOP_HANDLER.into(), v);
        }
    }
    if let Some(ports) = container.ports.as_ref().filter(|p| !p.is_empty()) {
        if let Some(v) = json("ports", serde_json::to_string(ports)) {
            a.insert(labels::CONTAINER_PORTS.into(), v);
        }
    }
    a
}

/// lifecycle.stopSignal (ContainerStopSignals) as the CRI names it; the runtime's
/// default when unset or unknown.
fn stop_signal(container: &Container) -> api::Signal {
    let name = container
        .lifecycle
        .as_ref()
        .and_then(|l| l.stop_signal.as_deref());
    name.and_then(|n| {
        let cri = format!("SIGNAL_{}", n.replace('+', "PLUS").replace('-', "MINUS"));
        api::Signal::from_str_name(&cri)
    })
    .unwrap_or(api::Signal::RuntimeDefault)
}

/// As upstream's HashContainer since 1.31: FNV-1a (32 bits, hex) over the JSON of the
/// only container fields that can change without a new pod, its name and image. Other
/// fields of a pod's containers are immutable, and leaving them out keeps the hash
/// stable when a newer API server defaults a new field (which would otherwise restart
/// every container on upgrade). The value is not byte-compatible with upstream's, which
/// also runs the JSON through its object printer.
pub fn container_hash(container: &Container) -> String {
    let fields = BTreeMap::from([
        ("image", container.image.as_deref().unwrap_or_default()),
        ("name", container.name.as_str()),
    ]);
    let json = serde_json::to_vec(&fields).unwrap_or_default();
    format!("{:x}", fnv1a_32(&json))
}

fn fnv1a_32(bytes: &[u8]) -> u32 {
    const OFFSET: u32 = 0x811c_9dc5;
    const PRIME: u32 = 0x0100_0193;
    bytes
        .iter()
        .fold(OFFSET, |h, b| (h ^ u32::from(*b)).wrapping_mul(PRIME))
}

/// Every configMap and secret named in env and envFrom of the pod's containers, init
/// containers and ephemeral containers, each once, in the order first named.
pub fn referenced_sources(pod: &Pod) -> Referenced {
    let mut refs = Referenced::default();
    let add = |list: &mut Vec<String>, name: &str| {
        if !list.iter().any(|n| n == name) {
            list.push(name.to_string());
        }
    };
    let Some(spec) = pod.spec.as_ref() else {
        return refs;
    };
    let ephemeral = spec
        .ephemeral_containers
        .iter()
        .flatten()
        .map(|e| (e.env.as_ref(), e.env_from.as_ref()));
    let all = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .map(|c| (c.env.as_ref(), c.env_from.as_ref()))
        .chain(ephemeral);
    for (env, env_from) in all {
        for from in env_from.into_iter().flatten() {
            if let Some(r) = &from.config_map_ref {
                add(&mut refs.config_maps, &r.name);
            }
            if let Some(r) = &from.secret_ref {
                add(&mut refs.secrets, &r.name);
            }
        }
        for var in env.into_iter().flatten() {
            let Some(from) = &var.value_from else {
                continue;
            };
            if let Some(r) = &from.config_map_key_ref {
                add(&mut refs.config_maps, &r.name);
            }
            if let Some(r) = &from.secret_key_ref {
                add(&mut refs.secrets, &r.name);
            }
        }
    }
    refs
}
