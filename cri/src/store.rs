//! What the CRI knows about its sandboxes and containers, and where it is kept.
//!
//! Every sandbox and container is a containerd container record in Gantry's namespace:
//! its CRI config (protobuf, as the caller sent it) and its mutable state (JSON) are
//! extensions of that record. The record is written before any host resource of the
//! object is created, so after a crash or restart the list of records says what exists,
//! and each record's state says what to finish or clean up. The in-memory index is
//! rebuilt from the records at start.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use containerd_client::services::v1::{
    container::Runtime, Container as CtdContainer, CreateContainerRequest, DeleteContainerRequest,
    ListContainersRequest, UpdateContainerRequest,
};
use prost::Message;
use prost_types::Any;
use serde::{Deserialize, Serialize};

use crate::api;
use crate::containerd::Containerd;
use crate::error::{CriError, Result};

pub const KIND_LABEL: &str = "io.gantry.cri.kind";
pub const SANDBOX_LABEL: &str = "io.gantry.cri.sandbox-id";
const CONFIG_EXT: &str = "io.gantry.cri.config";
const STATE_EXT: &str = "io.gantry.cri.state";
pub const RUNC_RUNTIME: &str = "io.containerd.runc.v2";
pub const OCI_SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SandboxPhase {
    /// The record exists; namespaces, files or the network may be half made.
    Creating,
    Ready,
    NotReady,
}

/// The mutable part of a sandbox, persisted as JSON.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SandboxState {
    pub phase: SandboxPhase,
    pub created_at: i64,
    /// Pod IPs from CNI: the first is the primary.
    #[serde(default)]
    pub ips: Vec<String>,
    pub host_network: bool,
    #[serde(default)]
    pub runtime_handler: String,
    /// The pid of the infra process when the pod shares one PID namespace, else 0.
    #[serde(default)]
    pub infra_pid: u32,
    /// Whether the network, namespaces and /dev/shm were released (a stop finished):
    /// later stops and the removal skip the CNI DEL, as containerd does once the
    /// sandbox's netns is closed.
    #[serde(default)]
    pub released: bool,
}

#[derive(Clone, Debug)]
pub struct Sandbox {
    pub id: String,
    pub config: api::PodSandboxConfig,
    pub state: SandboxState,
}

impl Sandbox {
    pub fn metadata(&self) -> api::PodSandboxMetadata {
        self.config.metadata.clone().unwrap_or_default()
    }
    pub fn ready(&self) -> bool {
        self.state.phase == SandboxPhase::Ready
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerPhase {
    Created,
    Running,
    Exited,
    Unknown,
}

/// The mutable part of a container, persisted as JSON.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ContainerState {
    pub phase: ContainerPhase,
    pub created_at: i64,
    #[serde(default)]
    pub started_at: i64,
    #[serde(default)]
    pub finished_at: i64,
    #[serde(default)]
    pub exit_code: i32,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub pid: u32,
    /// The image as the caller named it, its ID and its repo digest.
    pub image_name: String,
    pub image_id: String,
    #[serde(default)]
    pub image_ref: String,
    /// The full log path: the sandbox's log directory joined with the container's.
    #[serde(default)]
    pub log_path: String,
    pub cgroups_path: String,
    /// Signal that stops it: from the image's config, SIGTERM by default.
    #[serde(default)]
    pub stop_signal: String,
    /// Resources last applied by UpdateContainerResources (they replace the config's).
    #[serde(default)]
    pub resources: Option<Vec<u8>>,
}

impl ContainerState {
    /// A container just created from image `image_id` (named `image_name` by the
    /// caller, `image_ref` its repo digest or ID), in cgroup `cgroups_path`.
    pub fn created(
        image_name: String,
        image_id: String,
        image_ref: String,
        cgroups_path: String,
    ) -> Self {
        ContainerState {
            phase: ContainerPhase::Created,
            created_at: now_ns(),
            started_at: 0,
            finished_at: 0,
            exit_code: 0,
            reason: String::new(),
            message: String::new(),
            pid: 0,
            image_name,
            image_id,
            image_ref,
            log_path: String::new(),
            cgroups_path,
            stop_signal: String::new(),
            resources: None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Container {
    pub id: String,
    pub sandbox_id: String,
    pub config: api::ContainerConfig,
    pub state: ContainerState,
}

impl Container {
    pub fn metadata(&self) -> api::ContainerMetadata {
        self.config.metadata.clone().unwrap_or_default()
    }
    pub fn cri_state(&self) -> api::ContainerState {
        match self.state.phase {
            ContainerPhase::Created => api::ContainerState::ContainerCreated,
            ContainerPhase::Running => api::ContainerState::ContainerRunning,
            ContainerPhase::Exited => api::ContainerState::ContainerExited,
            ContainerPhase::Unknown => api::ContainerState::ContainerUnknown,
        }
    }
    /// The resources in force: the last update, or the config's.
    pub fn resources(&self) -> Option<api::LinuxContainerResources> {
        if let Some(bytes) = &self.state.resources {
            if let Ok(r) = api::LinuxContainerResources::decode(bytes.as_slice()) {
                return Some(r);
            }
        }
        self.config.linux.as_ref().and_then(|l| l.resources.clone())
    }
}

#[derive(Default)]
struct Index {
    sandboxes: BTreeMap<String, Sandbox>,
    containers: BTreeMap<String, Container>,
    /// Reserved names → id: the CRI forbids two sandboxes (or two containers) with the
    /// same name+namespace+uid+attempt.
    names: HashMap<String, String>,
}

/// The index of sandboxes and containers, backed by containerd records.
#[derive(Clone)]
pub struct Store {
    ctd: Containerd,
    index: Arc<Mutex<Index>>,
    /// One lock per object id: operations on one sandbox or container run one at a time.
    locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

pub enum Kind {
    Sandbox,
    Container,
}

impl Store {
    pub fn new(ctd: Containerd) -> Self {
        Store {
            ctd,
            index: Arc::default(),
            locks: Arc::default(),
        }
    }

    /// Serialises operations on one object.
    pub async fn lock(&self, id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let m = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            locks.entry(id.to_string()).or_default().clone()
        };
        m.lock_owned().await
    }

    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reserves `name` for `id`; AlreadyExists names the holder.
    pub fn reserve_name(&self, name: &str, id: &str) -> Result<()> {
        let mut idx = self.index();
        if let Some(holder) = idx.names.get(name) {
            if holder != id {
                return Err(CriError::AlreadyExists(format!(
                    "name {name:?} is reserved for {holder}"
                )));
            }
        }
        idx.names.insert(name.to_string(), id.to_string());
        Ok(())
    }

    pub fn release_name(&self, name: &str, id: &str) {
        let mut idx = self.index();
        if idx.names.get(name).map(String::as_str) == Some(id) {
            idx.names.remove(name);
        }
    }

    /// Resolves a full id or a unique prefix (crictl passes what the user typed).
    pub fn resolve(&self, kind: Kind, id: &str) -> Result<String> {
        let what = match kind {
            Kind::Sandbox => "pod sandbox",
            Kind::Container => "container",
        };
        if id.is_empty() {
            return Err(CriError::InvalidArgument(format!("{what} id is required")));
        }
        let idx = self.index();
        let keys: Vec<&String> = match kind {
            Kind::Sandbox => idx
                .sandboxes
                .range(id.to_string()..)
                .map(|(k, _)| k)
                .collect(),
            Kind::Container => idx
                .containers
                .range(id.to_string()..)
                .map(|(k, _)| k)
                .collect(),
        };
        let mut matches = keys.into_iter().take_while(|k| k.starts_with(id));
        match (matches.next(), matches.next()) {
            (Some(k), None) => Ok(k.clone()),
            (Some(_), Some(_)) => Err(CriError::InvalidArgument(format!(
                "{what} id prefix {id:?} is ambiguous"
            ))),
            (None, _) => Err(CriError::NotFound(format!("{what} {id:?} not found"))),
        }
    }

    pub fn sandbox(&self, id: &str) -> Result<Sandbox> {
        let id = self.resolve(Kind::Sandbox, id)?;
        self.index()
            .sandboxes
            .get(&id)
            .cloned()
            .ok_or_else(|| CriError::NotFound(format!("pod sandbox {id:?} not found")))
    }

    pub fn container(&self, id: &str) -> Result<Container> {
        let id = self.resolve(Kind::Container, id)?;
        self.index()
            .containers
            .get(&id)
            .cloned()
            .ok_or_else(|| CriError::NotFound(format!("container {id:?} not found")))
    }

    pub fn sandboxes(&self) -> Vec<Sandbox> {
        self.index().sandboxes.values().cloned().collect()
    }

    pub fn containers(&self) -> Vec<Container> {
        self.index().containers.values().cloned().collect()
    }

    /// What `f` makes of each sandbox it picks, under the index lock: only what is
    /// picked is copied (listing a few of many sandboxes copies a few).
    pub fn map_sandboxes<T>(&self, f: impl FnMut(&Sandbox) -> Option<T>) -> Vec<T> {
        self.index().sandboxes.values().filter_map(f).collect()
    }

    /// What `f` makes of each container it picks, under the index lock.
    pub fn map_containers<T>(&self, f: impl FnMut(&Container) -> Option<T>) -> Vec<T> {
        self.index().containers.values().filter_map(f).collect()
    }

    pub fn containers_of(&self, sandbox_id: &str) -> Vec<Container> {
        self.index()
            .containers
            .values()
            .filter(|c| c.sandbox_id == sandbox_id)
            .cloned()
            .collect()
    }

    /// Writes the record of a new sandbox (before any of its host resources exist).
    pub async fn create_sandbox(&self, sb: &Sandbox, name: &str) -> Result<()> {
        let mut labels = HashMap::new();
        labels.insert(KIND_LABEL.to_string(), "sandbox".to_string());
        labels.insert("io.gantry.cri.name".to_string(), truncate_label(name));
        let record = CtdContainer {
            id: sb.id.clone(),
            labels,
            runtime: Some(Runtime {
                name: RUNC_RUNTIME.to_string(),
                options: None,
            }),
            // containerd requires a spec; a sandbox without an infra process has none.
            spec: Some(Any {
                type_url: OCI_SPEC_TYPE_URL.to_string(),
                value: b"{}".to_vec(),
            }),
            extensions: extensions(&sb.config.encode_to_vec(), &sb.state)?,
            ..Default::default()
        };
        let mut c = self.ctd.containers();
        c.create(self.ctd.req(CreateContainerRequest {
            container: Some(record),
        }))
        .await
        .map_err(|s| CriError::containerd(format!("record pod sandbox {}", sb.id), s))?;
        self.index().sandboxes.insert(sb.id.clone(), sb.clone());
        Ok(())
    }

    /// Writes a new container's record, with its snapshot and OCI spec.
    pub async fn create_container(
        &self,
        c: &Container,
        name: &str,
        spec_json: Vec<u8>,
        snapshotter: &str,
        runtime_options: Option<Any>,
        lease: &str,
    ) -> Result<()> {
        let mut record = process_record(
            &c.id,
            "container",
            &c.sandbox_id,
            &c.state.image_name,
            spec_json,
            snapshotter,
            runtime_options,
        );
        record
            .labels
            .insert("io.gantry.cri.name".to_string(), truncate_label(name));
        record.extensions = extensions(&c.config.encode_to_vec(), &c.state)?;
        self.create_record(record, lease).await?;
        self.index().containers.insert(c.id.clone(), c.clone());
        Ok(())
    }

    /// Writes a record under `lease` (which keeps its snapshot until the record holds it).
    pub async fn create_record(&self, record: CtdContainer, lease: &str) -> Result<()> {
        let what = format!("record {} {}", record.labels[KIND_LABEL], record.id);
        self.ctd
            .containers()
            .create(self.ctd.req_leased(
                CreateContainerRequest {
                    container: Some(record),
                },
                Some(lease),
            ))
            .await
            .map_err(|s| CriError::containerd(what, s))?;
        Ok(())
    }

    /// Persists a sandbox's new state, then publishes it in the index.
    pub async fn update_sandbox(&self, id: &str, state: SandboxState) -> Result<Sandbox> {
        self.write_state(id, &state).await?;
        let mut idx = self.index();
        let sb = idx
            .sandboxes
            .get_mut(id)
            .ok_or_else(|| CriError::NotFound(format!("pod sandbox {id:?} not found")))?;
        sb.state = state;
        Ok(sb.clone())
    }

    /// Persists a container's new state, then publishes it in the index.
    pub async fn update_container(&self, id: &str, state: ContainerState) -> Result<Container> {
        self.write_state(id, &state).await?;
        let mut idx = self.index();
        let c = idx
            .containers
            .get_mut(id)
            .ok_or_else(|| CriError::NotFound(format!("container {id:?} not found")))?;
        c.state = state;
        Ok(c.clone())
    }

    async fn write_state<S: Serialize>(&self, id: &str, state: &S) -> Result<()> {
        let mut ext = HashMap::new();
        ext.insert(STATE_EXT.to_string(), state_any(state)?);
        let record = CtdContainer {
            id: id.to_string(),
            extensions: ext,
            ..Default::default()
        };
        let mut c = self.ctd.containers();
        c.update(self.ctd.req(UpdateContainerRequest {
            container: Some(record),
            update_mask: Some(prost_types::FieldMask {
                paths: vec![format!("extensions.{STATE_EXT}")],
            }),
        }))
        .await
        .map_err(|s| CriError::containerd(format!("save the state of {id}"), s))?;
        Ok(())
    }

    /// Deletes the record (idempotent) and forgets the object.
    pub async fn delete(&self, id: &str) -> Result<()> {
        let mut c = self.ctd.containers();
        match c
            .delete(self.ctd.req(DeleteContainerRequest { id: id.to_string() }))
            .await
        {
            Ok(_) => {}
            Err(s) if s.code() == tonic::Code::NotFound => {}
            Err(s) => {
                return Err(CriError::containerd(
                    format!("delete the record of {id}"),
                    s,
                ))
            }
        }
        self.forget(id);
        Ok(())
    }

    /// Drops the object from the index (its record stays): CRI clients no longer see it.
    pub fn forget(&self, id: &str) {
        let mut idx = self.index();
        idx.sandboxes.remove(id);
        idx.containers.remove(id);
        idx.names.retain(|_, v| v != id);
        drop(idx);
        self.locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    /// Rebuilds the index from containerd's records. Records that cannot be read are
    /// reported, not dropped: they stay in containerd for an operator to look at.
    pub async fn load(&self) -> Result<Vec<String>> {
        let mut c = self.ctd.containers();
        let resp = c
            .list(self.ctd.req(ListContainersRequest {
                filters: vec![format!("labels.\"{KIND_LABEL}\"")],
            }))
            .await
            .map_err(|s| CriError::containerd("list Gantry's containerd records", s))?
            .into_inner();
        let mut problems = Vec::new();
        let mut idx = self.index();
        for rec in resp.containers {
            let kind = rec.labels.get(KIND_LABEL).cloned().unwrap_or_default();
            // Infra containers belong to their sandbox, which finds them by id.
            if kind == "infra" {
                continue;
            }
            let config = rec.extensions.get(CONFIG_EXT).map(|a| a.value.as_slice());
            let state = rec.extensions.get(STATE_EXT).map(|a| a.value.as_slice());
            let (Some(config), Some(state)) = (config, state) else {
                problems.push(format!("record {} lacks its config or state", rec.id));
                continue;
            };
            match kind.as_str() {
                "sandbox" => match (
                    api::PodSandboxConfig::decode(config),
                    serde_json::from_slice::<SandboxState>(state),
                ) {
                    (Ok(config), Ok(state)) => {
                        idx.names.insert(sandbox_name(&config), rec.id.clone());
                        idx.sandboxes.insert(
                            rec.id.clone(),
                            Sandbox {
                                id: rec.id,
                                config,
                                state,
                            },
                        );
                    }
                    _ => problems.push(format!("sandbox record {} is unreadable", rec.id)),
                },
                "container" => match (
                    api::ContainerConfig::decode(config),
                    serde_json::from_slice::<ContainerState>(state),
                ) {
                    (Ok(config), Ok(state)) => {
                        let sandbox_id = rec.labels.get(SANDBOX_LABEL).cloned().unwrap_or_default();
                        let c = Container {
                            id: rec.id.clone(),
                            sandbox_id,
                            config,
                            state,
                        };
                        idx.names.insert(container_name(&c), rec.id.clone());
                        idx.containers.insert(rec.id, c);
                    }
                    _ => problems.push(format!("container record {} is unreadable", rec.id)),
                },
                other => problems.push(format!("record {} has unknown kind {other:?}", rec.id)),
            }
        }
        Ok(problems)
    }
}

/// The containerd record of a process (a container, or a sandbox's infra) of `kind`
/// in sandbox `sandbox_id`, with its OCI spec and a rootfs snapshot keyed by `id`.
pub fn process_record(
    id: &str,
    kind: &str,
    sandbox_id: &str,
    image: &str,
    spec_json: Vec<u8>,
    snapshotter: &str,
    runtime_options: Option<Any>,
) -> CtdContainer {
    let labels = HashMap::from([
        (KIND_LABEL.to_string(), kind.to_string()),
        (SANDBOX_LABEL.to_string(), sandbox_id.to_string()),
    ]);
    CtdContainer {
        id: id.to_string(),
        labels,
        image: image.to_string(),
        runtime: Some(Runtime {
            name: RUNC_RUNTIME.to_string(),
            options: runtime_options,
        }),
        spec: Some(Any {
            type_url: OCI_SPEC_TYPE_URL.to_string(),
            value: spec_json,
        }),
        snapshotter: snapshotter.to_string(),
        snapshot_key: id.to_string(),
        ..Default::default()
    }
}

/// The unique name of a sandbox, as containerd's CRI builds it.
pub fn sandbox_name(config: &api::PodSandboxConfig) -> String {
    let m = config.metadata.clone().unwrap_or_default();
    format!("{}_{}_{}_{}", m.name, m.namespace, m.uid, m.attempt)
}

/// The unique name of a container within its sandbox.
pub fn container_name(c: &Container) -> String {
    let m = c.metadata();
    format!("{}_{}_{}", m.name, c.sandbox_id, m.attempt)
}

fn extensions<S: Serialize>(config: &[u8], state: &S) -> Result<HashMap<String, Any>> {
    let mut ext = HashMap::new();
    ext.insert(
        CONFIG_EXT.to_string(),
        Any {
            type_url: "gantry/cri-config".to_string(),
            value: config.to_vec(),
        },
    );
    ext.insert(STATE_EXT.to_string(), state_any(state)?);
    Ok(ext)
}

fn state_any<S: Serialize>(state: &S) -> Result<Any> {
    Ok(Any {
        type_url: "gantry/cri-state+json".to_string(),
        value: serde_json::to_vec(state)
            .map_err(|e| CriError::Internal(format!("encode state: {e}")))?,
    })
}

/// containerd label values are limited to 4 KiB.
fn truncate_label(v: &str) -> String {
    v.chars().take(1024).collect()
}

/// A new random 64-hex-digit id, as containerd's CRI makes them.
pub fn new_id() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// Nanoseconds since the epoch, as CRI timestamps are.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or_default()
}

/// Where a sandbox's or container's files live under a base directory.
pub fn object_dir(base: &std::path::Path, kind: &str, id: &str) -> PathBuf {
    base.join(kind).join(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_64_hex_digits_and_differ() {
        let a = new_id();
        let b = new_id();
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn sandbox_names_include_namespace_uid_and_attempt() {
        let config = api::PodSandboxConfig {
            metadata: Some(api::PodSandboxMetadata {
                name: "web".into(),
                namespace: "default".into(),
                uid: "u1".into(),
                attempt: 2,
            }),
            ..Default::default()
        };
        assert_eq!(sandbox_name(&config), "web_default_u1_2");
    }
}
