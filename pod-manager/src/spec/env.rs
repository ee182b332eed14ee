//! A container's environment, as upstream's makeEnvironmentVariables builds it: service
//! links, then envFrom, then env (values expanded, valueFrom resolved), later sources
//! replacing earlier ones of the same name.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, Service};

use super::{downward, expansion, ConfigError, ContainerInputs, EnvSources, NodeContext};

/// An environment in order: a name keeps the place it first took and the value it was
/// last given. (Upstream builds a map, so its order is random; any fixed order is as
/// faithful, and this one reads like the spec.)
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Env {
    vars: Vec<(String, String)>,
    index: HashMap<String, usize>,
}

impl Env {
    pub fn set(&mut self, name: String, value: String) {
        match self.index.get(&name) {
            Some(&i) => self.vars[i].1 = value,
            None => {
                self.index.insert(name.clone(), self.vars.len());
                self.vars.push((name, value));
            }
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.index.get(name).map(|&i| self.vars[i].1.as_str())
    }

    pub fn into_vec(self) -> Vec<(String, String)> {
        self.vars
    }
}

/// The environment of `container`.
pub fn environment(
    pod: &Pod,
    container: &Container,
    node: &NodeContext,
    sources: &EnvSources,
    inputs: &ContainerInputs,
) -> Result<Env, ConfigError> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    let links = pod
        .spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true);
    let mut env = Env::default();
    for (name, value) in service_env(namespace, links, &sources.services) {
        env.set(name, value);
    }

    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.as_deref().unwrap_or_default();
        let entries: Vec<(String, String)> = if let Some(r) = &from.config_map_ref {
            match config_map(sources, &r.name)? {
                Some(cm) => cm
                    .data
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                None if r.optional == Some(true) => continue,
                None => return Err(not_found("configmap", &r.name)),
            }
        } else if let Some(r) = &from.secret_ref {
            match secret(sources, &r.name)? {
                Some(s) => s
                    .data
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), utf8(&v.0)))
                    .collect(),
                None if r.optional == Some(true) => continue,
                None => return Err(not_found("secret", &r.name)),
            }
        } else {
            continue;
        };
        for (key, value) in entries {
            let name = format!("{prefix}{key}");
            if valid_env_name(&name) {
                env.set(name, value);
            } else {
                tracing::warn!(container = %container.name, name, "skipping an envFrom key that cannot be an environment variable");
            }
        }
    }

    for var in container.env.iter().flatten() {
        let literal = var.value.as_deref().unwrap_or_default();
        let value = if !literal.is_empty() {
            // References see the variables declared so far and the service links.
            expansion::expand(literal, |name| env.get(name))
        } else if let Some(from) = &var.value_from {
            if let Some(field) = &from.field_ref {
                downward::field_value(field, pod, node, &inputs.pod_ips)?
            } else if let Some(resource) = &from.resource_field_ref {
                downward::resource_value(resource, pod, container, node)?
            } else if let Some(key_ref) = &from.config_map_key_ref {
                let optional = key_ref.optional == Some(true);
                let Some(cm) = config_map(sources, &key_ref.name)? else {
                    if optional {
                        continue;
                    }
                    return Err(not_found("configmap", &key_ref.name));
                };
                match cm.data.as_ref().and_then(|d| d.get(&key_ref.key)) {
                    Some(v) => v.clone(),
                    None if optional => continue,
                    None => {
                        return Err(ConfigError(format!(
                            "couldn't find key {} in ConfigMap {namespace}/{}",
                            key_ref.key, key_ref.name
                        )))
                    }
                }
            } else if let Some(key_ref) = &from.secret_key_ref {
                let optional = key_ref.optional == Some(true);
                let Some(s) = secret(sources, &key_ref.name)? else {
                    if optional {
                        continue;
                    }
                    return Err(not_found("secret", &key_ref.name));
                };
                match s.data.as_ref().and_then(|d| d.get(&key_ref.key)) {
                    Some(v) => utf8(&v.0),
                    None if optional => continue,
                    None => {
                        return Err(ConfigError(format!(
                            "couldn't find key {} in Secret {namespace}/{}",
                            key_ref.key, key_ref.name
                        )))
                    }
                }
            } else if let Some(file) = &from.file_key_ref {
                // EnvFiles (alpha) reads a file of a volume at container start: not
                // supported here, and refused rather than silently left empty.
                return Err(ConfigError(format!(
                    "env {}: fileKeyRef ({} in volume {}) is not supported",
                    var.name, file.path, file.volume_name
                )));
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        env.set(var.name.clone(), value);
    }
    Ok(env)
}

/// A configMap the caller fetched: Ok(None) when it does not exist. One the caller did
/// not fetch is a caller's bug, reported as such rather than as "not found".
fn config_map<'a>(
    sources: &'a EnvSources,
    name: &str,
) -> Result<Option<&'a ConfigMap>, ConfigError> {
    match sources.config_maps.get(name) {
        Some(cm) => Ok(cm.as_ref()),
        None => Err(ConfigError(format!("configmap {name:?} was not fetched"))),
    }
}

fn secret<'a>(sources: &'a EnvSources, name: &str) -> Result<Option<&'a Secret>, ConfigError> {
    match sources.secrets.get(name) {
        Some(s) => Ok(s.as_ref()),
        None => Err(ConfigError(format!("secret {name:?} was not fetched"))),
    }
}

fn not_found(kind: &str, name: &str) -> ConfigError {
    ConfigError(format!("{kind} {name:?} not found"))
}

/// Secret values are bytes; the runtime takes env values as text. Invalid UTF-8 is
/// replaced rather than refused (upstream passes the bytes through a Go string).
fn utf8(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Upstream no longer filters envFrom keys by the strict C-identifier rule
/// (RelaxedEnvironmentVariableValidation): what the API accepts is any printable ASCII
/// but '='. Only names outside that rule, which no valid object can produce, are
/// skipped.
fn valid_env_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'=')
}

/// Service links (upstream's getServiceEnvVarMap and envvars.FromServices): the
/// `kubernetes` service of `default` always, and with enableServiceLinks the services
/// of the pod's namespace. Services without a cluster IP (headless) give none.
pub fn service_env(namespace: &str, links: bool, services: &[Service]) -> Vec<(String, String)> {
    let mut chosen: Vec<&Service> = services
        .iter()
        .filter(|s| {
            let ns = s.metadata.namespace.as_deref().unwrap_or_default();
            let name = s.metadata.name.as_deref().unwrap_or_default();
            (ns == "default" && name == "kubernetes") || (links && ns == namespace)
        })
        .filter(|s| {
            let ip = s
                .spec
                .as_ref()
                .and_then(|s| s.cluster_ip.as_deref())
                .unwrap_or_default();
            !ip.is_empty() && ip != "None"
        })
        .collect();
    // One service per name; as upstream's map, one of the pod's namespace named
    // `kubernetes` replaces the master service of `default`.
    chosen.sort_by_key(|s| {
        (
            s.metadata.name.clone(),
            s.metadata.namespace.as_deref() != Some(namespace),
        )
    });
    chosen.dedup_by(|later, first| later.metadata.name == first.metadata.name);

    let mut vars = Vec::new();
    for service in chosen {
        let spec = service.spec.as_ref();
        let ip = spec
            .and_then(|s| s.cluster_ip.as_deref())
            .unwrap_or_default();
        let ports = spec.and_then(|s| s.ports.as_deref()).unwrap_or_default();
        let prefix = env_name(service.metadata.name.as_deref().unwrap_or_default());
        vars.push((format!("{prefix}_SERVICE_HOST"), ip.to_string()));
        let Some(first) = ports.first() else {
            continue;
        };
        vars.push((format!("{prefix}_SERVICE_PORT"), first.port.to_string()));
        for port in ports {
            if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
                vars.push((
                    format!("{prefix}_SERVICE_PORT_{}", env_name(name)),
                    port.port.to_string(),
                ));
            }
        }
        // Docker link variables. An IPv6 address is bracketed in URLs (JoinHostPort).
        let host_port = |port: i32| {
            if ip.contains(':') {
                format!("[{ip}]:{port}")
            } else {
                format!("{ip}:{port}")
            }
        };
        for (i, port) in ports.iter().enumerate() {
            let protocol = port
                .protocol
                .as_deref()
                .filter(|p| !p.is_empty())
                .unwrap_or("TCP");
            let url = format!("{}://{}", protocol.to_lowercase(), host_port(port.port));
            if i == 0 {
                vars.push((format!("{prefix}_PORT"), url.clone()));
            }
            let port_prefix = format!("{prefix}_PORT_{}_{}", port.port, protocol.to_uppercase());
            vars.push((port_prefix.clone(), url));
            vars.push((format!("{port_prefix}_PROTO"), protocol.to_lowercase()));
            vars.push((format!("{port_prefix}_PORT"), port.port.to_string()));
            vars.push((format!("{port_prefix}_ADDR"), ip.to_string()));
        }
    }
    vars
}

/// `my-svc.v2` → `MY_SVC_V2`; a leading digit gets a `_` in front.
fn env_name(name: &str) -> String {
    let upper = name.replace(['.', '-'], "_").to_uppercase();
    if upper.starts_with(|c: char| c.is_ascii_digit()) {
        format!("_{upper}")
    } else {
        upper
    }
}
