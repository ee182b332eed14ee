//! The infra process of a sandbox whose containers share one PID namespace (the CRI's
//! pid mode POD, which is also its default). A PID namespace lives only as long as its
//! first process, so such a pod needs one: the pause image, run as a containerd task
//! with no capabilities, a read-only rootfs and the sandbox's network, IPC and UTS
//! namespaces. Pods with their own PID namespace per container (what the kubelet asks
//! for unless shareProcessNamespace is set) get no infra process at all.

use containerd_client::services::v1::{
    CreateTaskRequest, DeleteContainerRequest, GetRequest, StartRequest,
};
use oci_client::secrets::RegistryAuth;

use crate::api;
use crate::engine::Engine;
use crate::error::{CriError, Result};
use crate::store::{self, Sandbox};

/// The containerd id of a sandbox's infra container.
pub fn infra_id(sandbox_id: &str) -> String {
    format!("{sandbox_id}-infra")
}

impl Engine {
    /// Starts the infra process of `sb`; returns its pid (its PID namespace is
    /// /proc/PID/ns/pid, which the pod's containers join).
    pub async fn start_infra(&self, sb: &Sandbox) -> Result<u32> {
        let image = match self.images.for_container(&self.config.infra_image).await {
            Ok(i) => i,
            Err(e) if e.is_not_found() => {
                self.images
                    .puller
                    .pull(&self.config.infra_image, RegistryAuth::Anonymous)
                    .await
                    .map_err(|e| {
                        CriError::Internal(format!(
                            "pull the pod infra image {}: {e}",
                            self.config.infra_image
                        ))
                    })?;
                self.images.for_container(&self.config.infra_image).await?
            }
            Err(e) => return Err(e),
        };
        let id = infra_id(&sb.id);
        let lease = self.ctd.create_lease("gantry-infra").await?;
        let result = self.create_infra(sb, &id, &image, &lease.id).await;
        self.ctd.delete_lease(lease).await;
        result?;
        let rootfs = self.rootfs_mounts(&id).await?;
        self.ctd
            .tasks()
            .create(self.ctd.req(CreateTaskRequest {
                container_id: id.clone(),
                rootfs,
                options: self.runc_options(),
                ..Default::default()
            }))
            .await
            .map_err(|s| {
                CriError::containerd(format!("create the infra task of pod sandbox {}", sb.id), s)
            })?;
        let pid = self
            .ctd
            .tasks()
            .start(self.ctd.req(StartRequest {
                container_id: id.clone(),
                exec_id: String::new(),
            }))
            .await
            .map_err(|s| {
                CriError::containerd(format!("start the infra task of pod sandbox {}", sb.id), s)
            })?
            .into_inner()
            .pid;
        Ok(pid)
    }

    async fn create_infra(
        &self,
        sb: &Sandbox,
        id: &str,
        image: &crate::images::LocalImage,
        lease: &str,
    ) -> Result<()> {
        let users = self.prepare_rootfs(id, &image.chain_id, lease).await?;
        // The infra process is an ordinary container of the pod, as locked down as
        // containerd's pause container: no capabilities, read-only, no new privileges.
        let config = api::ContainerConfig {
            metadata: Some(api::ContainerMetadata {
                name: "POD".to_string(),
                attempt: 0,
            }),
            image: Some(api::ImageSpec {
                image: image.id.clone(),
                ..Default::default()
            }),
            linux: Some(api::LinuxContainerConfig {
                security_context: Some(api::LinuxContainerSecurityContext {
                    capabilities: Some(api::Capability {
                        drop_capabilities: vec!["ALL".to_string()],
                        ..Default::default()
                    }),
                    namespace_options: Some(api::NamespaceOption {
                        pid: api::NamespaceMode::Container as i32,
                        ..Default::default()
                    }),
                    readonly_rootfs: true,
                    no_new_privs: true,
                    ..Default::default()
                }),
                resources: Some(api::LinuxContainerResources {
                    // The kubelet gives the sandbox 2 CPU shares, as containerd's pause.
                    cpu_shares: 2,
                    ..Default::default()
                }),
            }),
            ..Default::default()
        };
        let cgroups_path = format!("{}/{}", self.cgroup_parent(&sb.config), id);
        let c = store::Container {
            id: id.to_string(),
            sandbox_id: sb.id.clone(),
            config,
            state: store::ContainerState::created(
                self.config.infra_image.clone(),
                image.id.clone(),
                image.id.clone(),
                cgroups_path,
            ),
        };
        let spec = self.container_spec(&c, sb, image, users)?;
        let record = store::process_record(
            id,
            "infra",
            &sb.id,
            &self.config.infra_image,
            spec,
            &self.config.snapshotter,
            self.runc_options(),
        );
        self.store.create_record(record, lease).await
    }

    /// Marks the sandbox NotReady when its infra process exits (the shared PID
    /// namespace, and every process in it, is gone with it); the kubelet then
    /// re-creates the pod's sandbox.
    pub fn spawn_infra_waiter(&self, sandbox_id: &str) {
        let engine = self.clone();
        let sandbox_id = sandbox_id.to_string();
        tokio::spawn(async move {
            let waited = engine
                .ctd
                .tasks()
                .wait(
                    engine
                        .ctd
                        .req(containerd_client::services::v1::WaitRequest {
                            container_id: infra_id(&sandbox_id),
                            exec_id: String::new(),
                        }),
                )
                .await;
            if let Err(s) = &waited {
                if s.code() != tonic::Code::NotFound {
                    // containerd restarted: recovery on the next start settles it.
                    return;
                }
            }
            let _guard = engine.store.lock(&sandbox_id).await;
            if let Ok(sb) = engine.store.sandbox(&sandbox_id) {
                if sb.ready() {
                    tracing::warn!(id = %crate::sandbox::short(&sandbox_id), "the pod's infra process exited; the sandbox is not ready");
                    let mut state = sb.state.clone();
                    state.phase = store::SandboxPhase::NotReady;
                    let _ = engine.store.update_sandbox(&sandbox_id, state).await;
                }
            }
        });
    }

    /// Whether the infra process of `sb` still runs (containerd's task status 2).
    pub async fn infra_running(&self, sb: &Sandbox) -> bool {
        self.ctd
            .tasks()
            .get(self.ctd.req(GetRequest {
                container_id: infra_id(&sb.id),
                exec_id: String::new(),
            }))
            .await
            .ok()
            .and_then(|r| r.into_inner().process)
            .is_some_and(|p| p.status == 2)
    }

    /// Kills and deletes the infra task, its record and its snapshot. Idempotent.
    pub async fn remove_infra(&self, sandbox_id: &str) -> Result<()> {
        let id = infra_id(sandbox_id);
        self.delete_task(&id).await;
        self.remove_snapshot(&id).await;
        match self
            .ctd
            .containers()
            .delete(self.ctd.req(DeleteContainerRequest { id: id.clone() }))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(()),
            Err(s) => Err(CriError::containerd(
                format!("delete infra container {id}"),
                s,
            )),
        }
    }

    /// The cgroup parent of a sandbox's containers (cgroupfs path).
    pub fn cgroup_parent(&self, config: &api::PodSandboxConfig) -> String {
        config
            .linux
            .as_ref()
            .map(|l| l.cgroup_parent.clone())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| self.config.default_cgroup_parent.clone())
            .trim_end_matches('/')
            .to_string()
    }
}
