//! The runtime engine behind the RuntimeService: sandboxes, containers, their stdio and
//! their lifecycle events, over containerd. The gRPC layer (grpc.rs) only translates.
//!
//! At start it rebuilds its index from containerd's records and settles whatever a
//! crash or restart left half done (see `recover`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use containerd_client::services::v1::{GetRequest, SubscribeRequest};
use gantry_networking::cni::Cni;
use prost::Message;
use tokio::sync::broadcast;

use crate::api;
use crate::config::CriConfig;
use crate::containerd::Containerd;
use crate::error::Result;
use crate::images::Images;
use crate::sandbox::short;
use crate::store::{ContainerPhase, SandboxPhase, Store};
use crate::task_io::{ContainerIo, FifoSet};

#[derive(Clone)]
pub struct Engine {
    pub ctd: Containerd,
    pub config: CriConfig,
    pub store: Store,
    pub images: Arc<Images>,
    pub cni: Arc<Cni>,
    /// Running containers' stdio, by container id.
    pub ios: Arc<Mutex<HashMap<String, Arc<ContainerIo>>>>,
    /// Containers containerd reported OOM for, until their exit is recorded.
    ooms: Arc<Mutex<HashSet<String>>>,
    /// Events are shared (one allocation each): the ring of 1024 slots then holds
    /// pointers, not 1024 inline pod statuses.
    events: broadcast::Sender<Arc<api::ContainerEventResponse>>,
    /// Told whenever a container's exit is recorded (StopContainer waits on it).
    pub exits: Arc<tokio::sync::Notify>,
    /// Facts about the node the OCI specs depend on, read once.
    pub node: Arc<crate::container_spec::NodeFacts>,
    pub cgroups: crate::cgroup_stats::CgroupLayout,
    pub samples: crate::stats::Samples,
}

impl Engine {
    pub fn new(ctd: Containerd, config: CriConfig, images: Arc<Images>) -> Self {
        let cni = Cni::new(
            config.cni_conf_dir.clone(),
            config.cni_bin_dirs.clone(),
            config.root_dir.join("cni"),
        );
        let cgroups = crate::cgroup_stats::CgroupLayout::detect();
        Engine {
            ctd: ctd.clone(),
            config,
            store: Store::new(ctd),
            images,
            cni: Arc::new(cni),
            ios: Arc::default(),
            ooms: Arc::default(),
            events: broadcast::channel(1024).0,
            exits: Arc::default(),
            node: Arc::new(crate::container_spec::NodeFacts::read(&cgroups)),
            cgroups,
            samples: Default::default(),
        }
    }

    pub fn subscribe_events(&self) -> broadcast::Receiver<Arc<api::ContainerEventResponse>> {
        self.events.subscribe()
    }

    /// Publishes a container lifecycle event (GetContainerEvents), with the pod's status
    /// and its containers' as the Evented PLEG wants them.
    pub fn emit(&self, c: &crate::store::Container, kind: api::ContainerEventType) {
        if self.events.receiver_count() == 0 {
            return;
        }
        let sandbox = self.pod_sandbox_status(&c.sandbox_id, false).ok();
        let (pod_sandbox_status, containers_statuses) = match sandbox {
            Some(s) => (s.status, s.containers_statuses),
            None => (None, vec![crate::container::cri_container_status(c)]),
        };
        let _ = self.events.send(Arc::new(api::ContainerEventResponse {
            container_id: c.id.clone(),
            container_event_type: kind as i32,
            created_at: crate::store::now_ns(),
            pod_sandbox_status,
            containers_statuses,
        }));
    }

    pub fn take_oom(&self, id: &str) -> bool {
        self.ooms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id)
    }

    /// Follows containerd's task OOM events for Gantry's namespace, so an exit after an
    /// OOM kill is reported as OOMKilled. Reconnects when containerd restarts.
    pub fn spawn_event_monitor(&self) {
        let engine = self.clone();
        tokio::spawn(async move {
            loop {
                let filter = format!(
                    "namespace=={},topic==\"/tasks/oom\"",
                    engine.ctd.namespace()
                );
                match engine
                    .ctd
                    .events()
                    .subscribe(SubscribeRequest {
                        filters: vec![filter],
                    })
                    .await
                {
                    Ok(stream) => {
                        let mut stream = stream.into_inner();
                        while let Ok(Some(env)) = stream.message().await {
                            let Some(any) = env.event else { continue };
                            if let Ok(ev) =
                                containerd_client::events::TaskOom::decode(any.value.as_slice())
                            {
                                tracing::info!(id = %short(&ev.container_id), "container ran out of memory");
                                engine
                                    .ooms
                                    .lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .insert(ev.container_id);
                            }
                        }
                    }
                    Err(s) => {
                        tracing::debug!(error = %s.message(), "subscribe to containerd events")
                    }
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        });
    }

    /// Settles the state after a restart of Gantry (or of containerd, or a reboot):
    /// - sandboxes caught half made are released and marked NotReady; ready sandboxes
    ///   whose namespace pins are gone (a reboot) are released and marked NotReady;
    /// - running containers get their stdio copy and exit waiter back; those whose task
    ///   ended meanwhile get their exit recorded; a record with no task is exited.
    pub async fn recover(&self) -> Result<()> {
        for problem in self.store.load().await? {
            tracing::warn!("{problem}");
        }
        // Work in flight when the last run ended (a pull, a container being created)
        // held leases; nothing is in flight now, so their content and snapshots go.
        self.ctd.delete_stale_leases("gantry-").await?;
        self.finish_removals().await;
        for sb in self.store.sandboxes() {
            let pinned = sb.state.host_network
                || gantry_networking::netns::is_pinned(
                    &self.sandbox_paths(&sb.id).ns_dir().join("net"),
                );
            let infra_lost = sb.state.infra_pid > 0 && !self.infra_running(&sb).await;
            let lost = sb.state.phase == SandboxPhase::Ready && (!pinned || infra_lost);
            if sb.state.phase == SandboxPhase::Creating || lost {
                tracing::info!(id = %short(&sb.id), phase = ?sb.state.phase, "releasing a sandbox left by a restart");
                let released = match self.release_sandbox(&sb).await {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!(id = %short(&sb.id), error = %e, "release failed; StopPodSandbox retries it");
                        false
                    }
                };
                let mut state = sb.state.clone();
                state.phase = SandboxPhase::NotReady;
                state.released = released;
                self.store.update_sandbox(&sb.id, state).await?;
            } else if sb.state.phase == SandboxPhase::Ready && sb.state.infra_pid > 0 {
                self.spawn_infra_waiter(&sb.id);
            }
        }
        for c in self.store.containers() {
            if c.state.phase != ContainerPhase::Running {
                continue;
            }
            let task = self
                .ctd
                .tasks()
                .get(self.ctd.req(GetRequest {
                    container_id: c.id.clone(),
                    exec_id: String::new(),
                }))
                .await
                .ok()
                .and_then(|r| r.into_inner().process);
            // containerd's task status: 2 = running, 3 = stopped, 4 = paused.
            match task {
                Some(p) if p.status == 2 || p.status == 4 => {
                    let fifos = FifoSet::paths(
                        &self.container_state_dir(&c.id).join("io"),
                        c.config.stdin,
                        true,
                        !c.config.tty,
                    );
                    let io = ContainerIo::new(fifos, c.config.tty, c.config.stdin_once);
                    let log = (!c.state.log_path.is_empty())
                        .then(|| std::path::PathBuf::from(&c.state.log_path));
                    match tokio::time::timeout(Duration::from_secs(10), io.start(log)).await {
                        Ok(Ok(())) => {
                            self.ios
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .insert(c.id.clone(), io);
                        }
                        _ => {
                            tracing::warn!(id = %short(&c.id), "stdio of a running container could not be reopened; its output is not logged")
                        }
                    }
                    self.spawn_waiter(&c.id);
                }
                Some(p) => {
                    let at = p
                        .exited_at
                        .map(|t| t.seconds * 1_000_000_000 + t.nanos as i64);
                    self.handle_exit(&c.id, p.exit_status, at).await;
                }
                None => self.handle_exit(&c.id, 255, None).await,
            }
        }
        Ok(())
    }
}
