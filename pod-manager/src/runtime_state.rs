//! A pod's state as the CRI runtime reports it: its sandboxes and containers (every
//! attempt still present), found by the pod-UID label upstream puts on them.

use gantry_cri::api;
use tonic::Status;

use crate::labels;
use crate::status::{ContainerState, ContainerView, RuntimeView, SandboxView};
use crate::Cri;

#[derive(Clone, Debug, Default)]
pub struct PodRuntime {
    /// Newest first.
    pub sandboxes: Vec<Sandbox>,
    /// Newest first.
    pub containers: Vec<ContainerView>,
}

#[derive(Clone, Debug, Default)]
pub struct Sandbox {
    pub id: String,
    pub ready: bool,
    pub created_at: i64,
    pub attempt: u32,
    pub ips: Vec<String>,
}

impl PodRuntime {
    /// The pod's sandboxes and containers on this node (`node` is the node label value
    /// Gantry adds, so two agents sharing one runtime never touch each other's pods).
    pub async fn read(cri: &Cri, uid: &str, node: &str) -> Result<PodRuntime, Status> {
        let labels = std::collections::HashMap::from([
            (labels::POD_UID.to_string(), uid.to_string()),
            (labels::NODE.to_string(), node.to_string()),
        ]);
        let mut rt = cri.runtime.clone();
        let sandboxes = rt
            .list_pod_sandbox(api::ListPodSandboxRequest {
                filter: Some(api::PodSandboxFilter {
                    label_selector: labels.clone(),
                    ..Default::default()
                }),
            })
            .await?
            .into_inner()
            .items;
        let mut out = PodRuntime::default();
        for s in sandboxes {
            let mut sandbox = Sandbox {
                id: s.id.clone(),
                ready: s.state == api::PodSandboxState::SandboxReady as i32,
                created_at: s.created_at,
                attempt: s.metadata.as_ref().map_or(0, |m| m.attempt),
                ..Default::default()
            };
            if sandbox.ready {
                match rt
                    .pod_sandbox_status(api::PodSandboxStatusRequest {
                        pod_sandbox_id: s.id.clone(),
                        verbose: false,
                    })
                    .await
                {
                    Ok(st) => {
                        if let Some(st) = st.into_inner().status {
                            sandbox.ready = st.state == api::PodSandboxState::SandboxReady as i32;
                            if let Some(net) = st.network {
                                if !net.ip.is_empty() {
                                    sandbox.ips.push(net.ip);
                                }
                                sandbox
                                    .ips
                                    .extend(net.additional_ips.into_iter().map(|i| i.ip));
                            }
                        }
                    }
                    Err(e) if e.code() == tonic::Code::NotFound => continue,
                    Err(e) => return Err(e),
                }
            }
            out.sandboxes.push(sandbox);
        }
        out.sandboxes
            .sort_by_key(|s| std::cmp::Reverse(s.created_at));

        let containers = rt
            .list_containers(api::ListContainersRequest {
                filter: Some(api::ContainerFilter {
                    label_selector: labels,
                    ..Default::default()
                }),
            })
            .await?
            .into_inner()
            .containers;
        for c in containers {
            let status = match rt
                .container_status(api::ContainerStatusRequest {
                    container_id: c.id.clone(),
                    verbose: false,
                })
                .await
            {
                Ok(s) => s.into_inner().status,
                // Removed between the list and now.
                Err(e) if e.code() == tonic::Code::NotFound => continue,
                Err(e) => return Err(e),
            };
            let Some(s) = status else { continue };
            out.containers.push(ContainerView {
                name: c
                    .labels
                    .get(labels::CONTAINER_NAME)
                    .cloned()
                    .or_else(|| s.metadata.as_ref().map(|m| m.name.clone()))
                    .unwrap_or_default(),
                id: c.id.clone(),
                attempt: s.metadata.as_ref().map_or(0, |m| m.attempt),
                state: match api::ContainerState::try_from(s.state) {
                    Ok(api::ContainerState::ContainerCreated) => ContainerState::Created,
                    Ok(api::ContainerState::ContainerRunning) => ContainerState::Running,
                    Ok(api::ContainerState::ContainerExited) => ContainerState::Exited,
                    _ => ContainerState::Unknown,
                },
                created_at: s.created_at,
                started_at: s.started_at,
                finished_at: s.finished_at,
                exit_code: s.exit_code,
                reason: s.reason,
                message: s.message,
                image: s
                    .image
                    .as_ref()
                    .map(|i| {
                        if i.user_specified_image.is_empty() {
                            i.image.clone()
                        } else {
                            i.user_specified_image.clone()
                        }
                    })
                    .unwrap_or_default(),
                image_ref: s.image_ref,
                sandbox_id: c.pod_sandbox_id,
            });
        }
        // Newest attempt first; creation time breaks ties.
        out.containers
            .sort_by_key(|c| std::cmp::Reverse((c.attempt, c.created_at)));
        Ok(out)
    }

    /// The newest container named `name`.
    pub fn latest(&self, name: &str) -> Option<&ContainerView> {
        self.containers.iter().find(|c| c.name == name)
    }

    /// The newest sandbox, if it is ready.
    pub fn ready_sandbox(&self) -> Option<&Sandbox> {
        self.sandboxes.first().filter(|s| s.ready)
    }

    /// The view status computation needs.
    pub fn view(&self) -> RuntimeView {
        RuntimeView {
            sandbox: self.sandboxes.first().map(|s| SandboxView {
                id: s.id.clone(),
                ready: s.ready,
                ips: s.ips.clone(),
            }),
            containers: self.containers.clone(),
        }
    }
}
