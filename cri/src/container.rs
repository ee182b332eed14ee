//! Containers: a containerd container (record + rootfs snapshot) with an OCI spec built
//! from the CRI config, and a containerd task while it runs. Exits are recorded by a
//! waiter per task; the record's state is the truth after a restart.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use containerd_client::services::v1::snapshots::{
    MountsRequest, PrepareSnapshotRequest, RemoveSnapshotRequest,
};
use containerd_client::services::v1::{
    CreateTaskRequest, DeleteTaskRequest, KillRequest, StartRequest, UpdateTaskRequest, WaitRequest,
};
use containerd_client::types::Mount;
use prost::Message;

use crate::api;
use crate::engine::Engine;
use crate::error::{CriError, Result};
use crate::sandbox::short;
use crate::store::{self, Container, ContainerPhase, ContainerState};
use crate::task_io::{self, ContainerIo, FifoSet};

/// How long an exit waits for the output copy to finish before it is recorded.
const IO_DRAIN: Duration = Duration::from_secs(5);
/// How long an exit waits for its output to drain before the task is deleted first.
const QUICK_DRAIN: Duration = Duration::from_millis(200);
/// The file in a container's state directory that says RemoveContainer answered.
const REMOVING_MARKER: &str = "removing";

impl Engine {
    pub fn container_state_dir(&self, id: &str) -> PathBuf {
        store::object_dir(&self.config.state_dir, "containers", id)
    }

    pub async fn create_container(
        &self,
        sandbox_id: &str,
        config: Option<api::ContainerConfig>,
    ) -> Result<String> {
        let config = config.ok_or_else(|| {
            CriError::InvalidArgument("CreateContainer: the container config is required".into())
        })?;
        let name = config
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        if name.is_empty() {
            return Err(CriError::InvalidArgument(
                "CreateContainer: the container metadata needs a name".into(),
            ));
        }
        let image_spec = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        if image_spec.is_empty() {
            return Err(CriError::InvalidArgument(format!(
                "CreateContainer {name}: no image given"
            )));
        }
        let sb = self.store.sandbox(sandbox_id)?;
        if !sb.ready() {
            return Err(CriError::FailedPrecondition(format!(
                "CreateContainer {name}: pod sandbox {} is not ready",
                sb.id
            )));
        }
        // The kubelet resends the sandbox config; the one stored at RunPodSandbox is
        // what the sandbox was made from, so it is the one used.
        let image = self.images.for_container(&image_spec).await?;
        let id = store::new_id();
        let image_ref = if image.repo_digest.is_empty() {
            image.id.clone()
        } else {
            image.repo_digest.clone()
        };
        let cgroups_path = format!("{}/{}", self.cgroup_parent(&sb.config), id);
        let mut state = ContainerState::created(
            image_spec.clone(),
            image.id.clone(),
            image_ref,
            cgroups_path,
        );
        state.stop_signal = crate::oci_spec::image_defaults_from_config(&image.config).stop_signal;
        if !sb.config.log_directory.is_empty() && !config.log_path.is_empty() {
            state.log_path = Path::new(&sb.config.log_directory)
                .join(&config.log_path)
                .display()
                .to_string();
        }
        let c = Container {
            id: id.clone(),
            sandbox_id: sb.id.clone(),
            config,
            state,
        };

        let unique = store::container_name(&c);
        self.store.reserve_name(&unique, &id)?;
        let _guard = self.store.lock(&id).await;
        let lease = match self.ctd.create_lease("gantry-create").await {
            Ok(l) => l,
            Err(e) => {
                self.store.release_name(&unique, &id);
                return Err(e);
            }
        };
        let result = self
            .create_container_record(&c, &sb, &image, &unique, &lease.id)
            .await;
        self.ctd.release_lease(lease);
        if let Err(e) = result {
            self.remove_snapshot(&id).await;
            self.store.release_name(&unique, &id);
            return Err(e);
        }
        tracing::info!(container = %name, id = %short(&id), sandbox = %short(&sb.id), "container created");
        self.emit(&c, api::ContainerEventType::ContainerCreatedEvent);
        Ok(id)
    }

    async fn create_container_record(
        &self,
        c: &Container,
        sb: &store::Sandbox,
        image: &crate::images::LocalImage,
        unique: &str,
        lease: &str,
    ) -> Result<()> {
        let users = self.prepare_rootfs(&c.id, &image.chain_id, lease).await?;
        crate::failpoint::hit("container-after-snapshot");
        let spec = self.container_spec(c, sb, image, users)?;
        self.store
            .create_container(
                c,
                unique,
                spec,
                &self.config.snapshotter,
                self.runc_options(),
                lease,
            )
            .await
    }

    /// Prepares the rootfs snapshot `id` on the image's layers (under `lease`) and reads
    /// the image's /etc/passwd and /etc/group from it, for user resolution.
    pub async fn prepare_rootfs(
        &self,
        id: &str,
        chain_id: &str,
        lease: &str,
    ) -> Result<ImageUsers> {
        let mounts = self
            .ctd
            .snapshots()
            .prepare(self.ctd.req_leased(
                PrepareSnapshotRequest {
                    snapshotter: self.config.snapshotter.clone(),
                    key: id.to_string(),
                    parent: chain_id.to_string(),
                    labels: HashMap::new(),
                },
                Some(lease),
            ))
            .await
            .map_err(|s| CriError::containerd(format!("prepare the rootfs of {id}"), s))?
            .into_inner()
            .mounts;
        Ok(ImageUsers {
            passwd: read_image_file(&mounts, "etc/passwd"),
            group: read_image_file(&mounts, "etc/group"),
        })
    }

    pub fn runc_options(&self) -> Option<prost_types::Any> {
        self.config.runc_root.as_ref().map(|root| {
            crate::containerd::RuncOptions {
                root: root.display().to_string(),
                systemd_cgroup: false,
            }
            .to_any()
        })
    }

    pub async fn remove_snapshot(&self, id: &str) {
        match self
            .ctd
            .snapshots()
            .remove(self.ctd.req(RemoveSnapshotRequest {
                snapshotter: self.config.snapshotter.clone(),
                key: id.to_string(),
            }))
            .await
        {
            Ok(_) => {}
            Err(s) if s.code() == tonic::Code::NotFound => {}
            Err(s) => tracing::warn!(id, error = %s.message(), "remove the rootfs snapshot"),
        }
    }

    pub async fn start_container(&self, id: &str) -> Result<()> {
        let id = self.store.resolve(store::Kind::Container, id)?;
        let _guard = self.store.lock(&id).await;
        let c = self.store.container(&id)?;
        if c.state.phase != ContainerPhase::Created {
            return Err(CriError::FailedPrecondition(format!(
                "container {id} is {:?}, not created: it cannot be started",
                c.state.phase
            )));
        }
        let sb = self.store.sandbox(&c.sandbox_id)?;
        if !sb.ready() {
            return Err(CriError::FailedPrecondition(format!(
                "container {id}: its pod sandbox {} is not ready",
                sb.id
            )));
        }
        match self.start_task(&c).await {
            Ok(pid) => {
                let mut state = c.state.clone();
                state.phase = ContainerPhase::Running;
                state.started_at = store::now_ns();
                state.pid = pid;
                let c = self.store.update_container(&id, state).await?;
                self.spawn_waiter(&id);
                tracing::info!(id = %short(&id), pid, "container started");
                self.emit(&c, api::ContainerEventType::ContainerStartedEvent);
                Ok(())
            }
            Err(e) => {
                // As containerd's CRI: a container that failed to start is exited with
                // code 128 and reason StartError, so the kubelet reports why.
                let mut state = c.state.clone();
                state.phase = ContainerPhase::Exited;
                state.exit_code = 128;
                state.reason = "StartError".to_string();
                state.message = e.to_string();
                state.finished_at = store::now_ns();
                state.started_at = state.finished_at;
                let _ = self.store.update_container(&id, state).await;
                Err(e)
            }
        }
    }

    async fn start_task(&self, c: &Container) -> Result<u32> {
        let tty = c.config.tty;
        let fifos = FifoSet::paths(
            &self.container_state_dir(&c.id).join("io"),
            c.config.stdin,
            true,
            !tty,
        );
        fifos.create()?;
        if !c.state.log_path.is_empty() {
            if let Some(dir) = Path::new(&c.state.log_path).parent() {
                std::fs::create_dir_all(dir).map_err(|e| {
                    CriError::Internal(format!("create log directory {}: {e}", dir.display()))
                })?;
            }
        }
        let io = ContainerIo::new(fifos.clone(), tty, c.config.stdin_once);
        let log_path = (!c.state.log_path.is_empty()).then(|| PathBuf::from(&c.state.log_path));
        let opener = {
            let io = io.clone();
            tokio::spawn(async move { io.start(log_path).await })
        };
        let rootfs = self.rootfs_mounts(&c.id).await;
        let created = match rootfs {
            Ok(rootfs) => self
                .ctd
                .tasks()
                .create(self.ctd.req(CreateTaskRequest {
                    container_id: c.id.clone(),
                    rootfs,
                    stdin: FifoSet::arg(&fifos.stdin),
                    stdout: FifoSet::arg(&fifos.stdout),
                    stderr: FifoSet::arg(&fifos.stderr),
                    terminal: tty,
                    options: self.runc_options(),
                    ..Default::default()
                }))
                .await
                .map_err(|s| {
                    CriError::containerd(format!("create the task of container {}", c.id), s)
                }),
            Err(e) => Err(e),
        };
        if let Err(e) = created {
            task_io::abandon_open(&fifos, opener).await;
            fifos.remove();
            return Err(e);
        }
        // Resources updated while the container was only created apply from its start.
        if c.state.resources.is_some() {
            if let Some(r) = c.resources() {
                let applied = match self.oci_resources(&c.id, &r) {
                    Ok(linux) => self.update_task_resources(&c.id, linux).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = applied {
                    task_io::abandon_open(&fifos, opener).await;
                    self.delete_task(&c.id).await;
                    fifos.remove();
                    return Err(e);
                }
            }
        }
        match opener.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                self.delete_task(&c.id).await;
                return Err(e);
            }
            Err(e) => {
                self.delete_task(&c.id).await;
                return Err(CriError::Internal(format!(
                    "open the container's stdio: {e}"
                )));
            }
        }
        self.ios
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(c.id.clone(), io);
        match self
            .ctd
            .tasks()
            .start(self.ctd.req(StartRequest {
                container_id: c.id.clone(),
                exec_id: String::new(),
            }))
            .await
        {
            Ok(r) => Ok(r.into_inner().pid),
            Err(s) => {
                self.delete_task(&c.id).await;
                self.ios
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&c.id);
                Err(CriError::containerd(format!("start container {}", c.id), s))
            }
        }
    }

    pub async fn rootfs_mounts(&self, id: &str) -> Result<Vec<Mount>> {
        Ok(self
            .ctd
            .snapshots()
            .mounts(self.ctd.req(MountsRequest {
                snapshotter: self.config.snapshotter.clone(),
                key: id.to_string(),
            }))
            .await
            .map_err(|s| CriError::containerd(format!("mounts of the rootfs of {id}"), s))?
            .into_inner()
            .mounts)
    }

    /// Deletes the task (killing what is left of it); idempotent. Returns the exit
    /// status when containerd still had it.
    pub async fn delete_task(&self, id: &str) -> Option<(u32, i64)> {
        let _ = self
            .ctd
            .tasks()
            .kill(self.ctd.req(KillRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
                signal: libc::SIGKILL as u32,
                all: true,
            }))
            .await;
        match self
            .ctd
            .tasks()
            .delete(self.ctd.req(DeleteTaskRequest {
                container_id: id.to_string(),
            }))
            .await
        {
            Ok(r) => {
                let r = r.into_inner();
                let at = r
                    .exited_at
                    .map(|t| t.seconds * 1_000_000_000 + t.nanos as i64);
                Some((r.exit_status, at.unwrap_or_else(store::now_ns)))
            }
            Err(s) if s.code() == tonic::Code::NotFound => None,
            Err(s) => {
                tracing::warn!(id, error = %s.message(), "delete task");
                None
            }
        }
    }

    /// Waits for the task's exit in the background and records it.
    pub fn spawn_waiter(&self, id: &str) {
        let engine = self.clone();
        let id = id.to_string();
        // The task idles for the container's whole life: the exit handling is boxed
        // so that the waiting task holds only the Wait call's state.
        tokio::spawn(async move {
            let waited = engine
                .ctd
                .tasks()
                .wait(engine.ctd.req(WaitRequest {
                    container_id: id.clone(),
                    exec_id: String::new(),
                }))
                .await;
            match waited {
                Ok(r) => {
                    let r = r.into_inner();
                    let at = r
                        .exited_at
                        .map(|t| t.seconds * 1_000_000_000 + t.nanos as i64);
                    Box::pin(engine.handle_exit(&id, r.exit_status, at)).await;
                }
                // A task that is gone exited while nobody waited: delete_task tells.
                Err(s) if s.code() == tonic::Code::NotFound => {
                    Box::pin(engine.handle_exit(&id, 255, None)).await;
                }
                Err(s) => {
                    // containerd restarted or the channel broke: the shim still runs the
                    // container, so wait again after a pause.
                    tracing::warn!(id = %short(&id), error = %s.message(), "wait for the task; retrying");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    if engine
                        .store
                        .container(&id)
                        .is_ok_and(|c| c.state.phase == ContainerPhase::Running)
                    {
                        engine.spawn_waiter(&id);
                    }
                }
            }
        });
    }

    /// Records a container's exit: lets the output drain, writes the exit code, the
    /// reason (Completed, Error, OOMKilled) and the time, and deletes the task.
    /// Idempotent.
    ///
    /// With the exit time known (containerd's Wait gives it) the exit is recorded as
    /// soon as the output is drained, and the task (runc delete, the shim's shutdown, the
    /// rootfs unmount) goes after: StopContainer and the kubelet see the exit without
    /// waiting for that cleanup. When the output does not drain at once (a process left
    /// in a shared PID namespace holds it), or the time is unknown, the task goes first:
    /// its deletion kills what is left and gives the exit time.
    pub async fn handle_exit(&self, id: &str, code: u32, exited_at: Option<i64>) {
        let guard = self.store.lock(id).await;
        let Ok(c) = self.store.container(id) else {
            return;
        };
        if c.state.phase != ContainerPhase::Running {
            return;
        }
        let io = self
            .ios
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        // The exit time, when the exit can be recorded before the task is deleted.
        let quick = match (exited_at, &io) {
            (Some(at), None) => Some(at),
            (Some(at), Some(io)) => tokio::time::timeout(QUICK_DRAIN, io.wait_copied())
                .await
                .ok()
                .map(|()| at),
            (None, _) => None,
        };
        let (code, at) = match quick {
            Some(at) => (code, at),
            None => match (self.delete_task(id).await, exited_at) {
                (_, Some(at)) => (code, at),
                (Some((code, at)), None) => (code, at),
                (None, None) => (code, store::now_ns()),
            },
        };
        if let Some(io) = &io {
            if quick.is_none() {
                let _ = tokio::time::timeout(IO_DRAIN, io.wait_copied()).await;
            }
            io.exited.send_replace(true);
            io.fifos.remove();
        }
        // The OOM event and the exit come on different streams: an exit by SIGKILL also
        // asks the cgroup (still there until the task is deleted) whether it was an OOM.
        let oom = self.take_oom(id)
            || (code == 128 + libc::SIGKILL as u32
                && crate::cgroup_stats::oom_kills(&self.cgroups, &c.state.cgroups_path)
                    .is_some_and(|n| n > 0));
        let mut state = c.state.clone();
        state.phase = ContainerPhase::Exited;
        state.exit_code = code as i32;
        state.finished_at = at;
        state.pid = 0;
        state.reason = if oom {
            "OOMKilled"
        } else if code == 0 {
            "Completed"
        } else {
            "Error"
        }
        .to_string();
        let recorded = self.store.update_container(id, state).await;
        self.exits.notify_waiters();
        match recorded {
            Ok(c) => {
                tracing::info!(id = %short(id), code, reason = %c.state.reason, "container exited");
                self.emit(&c, api::ContainerEventType::ContainerStoppedEvent);
            }
            Err(e) => tracing::error!(id = %short(id), error = %e, "record the exit"),
        }
        drop(guard);
        if quick.is_some() {
            // Outside the container's lock: a RemoveContainer that follows at once does
            // not wait for it (its own release deletes the task again, idempotently).
            self.delete_task(id).await;
        }
    }

    pub async fn stop_container(&self, id: &str, timeout: i64) -> Result<()> {
        let c = match self.store.container(id) {
            Ok(c) => c,
            // Idempotent, as the CRI asks: the kubelet stops containers it only remembers.
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e),
        };
        if c.state.phase != ContainerPhase::Running {
            return Ok(());
        }
        if timeout > 0 {
            let signal = parse_signal(&c.state.stop_signal).unwrap_or(libc::SIGTERM);
            self.kill(&c.id, signal, false).await?;
            if self
                .wait_exited(&c.id, Duration::from_secs(timeout as u64))
                .await
            {
                return Ok(());
            }
            tracing::info!(id = %short(&c.id), timeout, "stop signal ignored; sending SIGKILL");
        }
        self.kill(&c.id, libc::SIGKILL, true).await?;
        if !self.wait_exited(&c.id, Duration::from_secs(60)).await {
            return Err(CriError::Internal(format!(
                "container {} did not exit within 60 s of SIGKILL",
                c.id
            )));
        }
        Ok(())
    }

    async fn kill(&self, id: &str, signal: i32, all: bool) -> Result<()> {
        match self
            .ctd
            .tasks()
            .kill(self.ctd.req(KillRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
                signal: signal as u32,
                all,
            }))
            .await
        {
            Ok(_) => Ok(()),
            // Already gone: the waiter records the exit.
            Err(s) if s.code() == tonic::Code::NotFound => Ok(()),
            Err(s) => Err(CriError::containerd(
                format!("signal {signal} to container {id}"),
                s,
            )),
        }
    }

    /// Waits until the container's exit is recorded: woken by every recorded exit (and
    /// looking again each second as a safety net), not by polling.
    async fn wait_exited(&self, id: &str, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            // Registered before the check, so an exit recorded in between still wakes.
            let exited = self.exits.notified();
            tokio::pin!(exited);
            exited.as_mut().enable();
            match self.store.container(id) {
                Ok(c) if c.state.phase == ContainerPhase::Running => {}
                _ => return true,
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return false;
            }
            let nap = (deadline - now).min(Duration::from_secs(1));
            let _ = tokio::time::timeout(nap, exited).await;
        }
    }

    /// RemoveContainer. The container leaves the index once a marker in its state
    /// directory says it is being removed, and the answer goes back then; its task,
    /// FIFOs, snapshot, record and files are released right after, in the background
    /// (containerd's own CRI leaves the snapshot's files to its garbage collector too).
    /// A restart in between finishes the release (`finish_removals`).
    pub async fn remove_container(&self, id: &str) -> Result<()> {
        if let Some(id) = self.mark_removed(id).await? {
            let engine = self.clone();
            tokio::spawn(async move {
                if let Err(e) = engine.release_removed(&id).await {
                    tracing::warn!(id = %short(&id), error = %e, "release a removed container; retried at the next start");
                }
            });
        }
        Ok(())
    }

    /// Stops the container if it runs, marks it as being removed and drops it from the
    /// index; returns its id, or None when it was gone already.
    pub async fn mark_removed(&self, id: &str) -> Result<Option<String>> {
        let c = match self.store.container(id) {
            Ok(c) => c,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        if c.state.phase == ContainerPhase::Running {
            // As containerd's CRI: removing a running container stops it forcibly.
            self.stop_container(&c.id, 0).await?;
        }
        let _guard = self.store.lock(&c.id).await;
        let c = match self.store.container(&c.id) {
            Ok(c) => c,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let dir = self.container_state_dir(&c.id);
        std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::File::create(dir.join(REMOVING_MARKER)).map(drop))
            .map_err(|e| {
                CriError::Internal(format!(
                    "mark container {} as being removed in {}: {e}",
                    c.id,
                    dir.display()
                ))
            })?;
        crate::failpoint::hit("container-removing");
        self.store.forget(&c.id);
        tracing::info!(id = %short(&c.id), "container removed");
        self.emit(&c, api::ContainerEventType::ContainerDeletedEvent);
        Ok(Some(c.id))
    }

    /// Releases what a removed container held. Idempotent; on a failure the marker
    /// stays, so the next start-up tries again.
    pub async fn release_removed(&self, id: &str) -> Result<()> {
        self.delete_task(id).await;
        if let Some(io) = self
            .ios
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id)
        {
            io.fifos.remove();
        }
        self.remove_snapshot(id).await;
        self.store.delete(id).await?;
        // Last, with the marker in it: until here a restart finds the container.
        let dir = self.container_state_dir(id);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(CriError::Internal(format!("remove {}: {e}", dir.display())))
            }
            _ => Ok(()),
        }
    }

    /// At start-up: finishes every removal the last run left under way (a container
    /// state directory holding the marker), after the index was loaded.
    pub async fn finish_removals(&self) {
        let base = self.config.state_dir.join("containers");
        let Ok(entries) = std::fs::read_dir(&base) else {
            return;
        };
        for entry in entries.flatten() {
            if !entry.path().join(REMOVING_MARKER).exists() {
                continue;
            }
            let id = entry.file_name().to_string_lossy().into_owned();
            tracing::info!(id = %short(&id), "finishing the removal of a container");
            self.store.forget(&id);
            if let Err(e) = self.release_removed(&id).await {
                tracing::warn!(id = %short(&id), error = %e, "release a removed container; retried at the next start");
            }
        }
    }

    pub fn container_status(
        &self,
        id: &str,
        verbose: bool,
    ) -> Result<api::ContainerStatusResponse> {
        let c = self.store.container(id)?;
        let mut info = HashMap::new();
        if verbose {
            let v = serde_json::json!({
                "sandboxID": c.sandbox_id,
                "pid": c.state.pid,
                "cgroupsPath": c.state.cgroups_path,
                "imageID": c.state.image_id,
                "stopSignal": c.state.stop_signal,
            });
            info.insert("info".to_string(), v.to_string());
        }
        Ok(api::ContainerStatusResponse {
            status: Some(cri_container_status(&c)),
            info,
        })
    }

    pub fn list_containers(&self, filter: Option<api::ContainerFilter>) -> Vec<api::Container> {
        let f = filter.unwrap_or_default();
        self.store.map_containers(|c| {
            let picked = (f.id.is_empty() || c.id.starts_with(&f.id))
                && (f.pod_sandbox_id.is_empty() || c.sandbox_id.starts_with(&f.pod_sandbox_id))
                && f.state
                    .as_ref()
                    .is_none_or(|s| s.state == c.cri_state() as i32)
                && crate::sandbox::labels_match(&f.label_selector, &c.config.labels);
            picked.then(|| api::Container {
                id: c.id.clone(),
                pod_sandbox_id: c.sandbox_id.clone(),
                metadata: Some(c.metadata()),
                image: Some(api::ImageSpec {
                    image: c.state.image_name.clone(),
                    ..Default::default()
                }),
                image_ref: c.state.image_ref.clone(),
                state: c.cri_state() as i32,
                created_at: c.state.created_at,
                labels: c.config.labels.clone(),
                annotations: c.config.annotations.clone(),
                image_id: c.state.image_id.clone(),
            })
        })
    }

    pub async fn update_container_resources(
        &self,
        id: &str,
        linux: Option<api::LinuxContainerResources>,
    ) -> Result<()> {
        let id = self.store.resolve(store::Kind::Container, id)?;
        let _guard = self.store.lock(&id).await;
        let c = self.store.container(&id)?;
        let Some(resources) = linux else {
            return Ok(());
        };
        if c.state.phase == ContainerPhase::Exited {
            return Err(CriError::FailedPrecondition(format!(
                "container {id} has exited: its resources cannot be updated"
            )));
        }
        // Validated now whatever the state; a created container gets them when its
        // task is created (StartContainer), a running one at once.
        let linux = self.oci_resources(&id, &resources)?;
        if c.state.phase == ContainerPhase::Running {
            self.update_task_resources(&id, linux).await?;
        }
        let mut state = c.state.clone();
        state.resources = Some(resources.encode_to_vec());
        self.store.update_container(&id, state).await?;
        Ok(())
    }

    /// The OCI resources for `resources`: the same mapping and checks as at creation.
    fn oci_resources(
        &self,
        id: &str,
        resources: &api::LinuxContainerResources,
    ) -> Result<::oci_spec::runtime::LinuxResources> {
        crate::oci_spec::linux_resources(
            &format!("container {id}"),
            Some(resources),
            &self.node.facts(),
        )
    }

    async fn update_task_resources(
        &self,
        id: &str,
        linux: ::oci_spec::runtime::LinuxResources,
    ) -> Result<()> {
        let json = serde_json::to_vec(&linux).map_err(|e| {
            CriError::Internal(format!("encode the resources of container {id}: {e}"))
        })?;
        self.ctd
            .tasks()
            .update(
                self.ctd.req(UpdateTaskRequest {
                    container_id: id.to_string(),
                    resources: Some(prost_types::Any {
                        type_url:
                            "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources"
                                .to_string(),
                        value: json,
                    }),
                    annotations: HashMap::new(),
                }),
            )
            .await
            .map_err(|s| {
                CriError::containerd(format!("update the resources of container {id}"), s)
            })?;
        Ok(())
    }

    pub fn io_of(&self, id: &str) -> Option<std::sync::Arc<ContainerIo>> {
        self.ios
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    pub async fn reopen_container_log(&self, id: &str) -> Result<()> {
        let c = self.store.container(id)?;
        if c.state.phase != ContainerPhase::Running {
            return Err(CriError::FailedPrecondition(format!(
                "container {} is not running: its log cannot be reopened",
                c.id
            )));
        }
        match self.io_of(&c.id) {
            Some(io) => io.reopen_log().await,
            None => Err(CriError::FailedPrecondition(format!(
                "container {} has no log writer",
                c.id
            ))),
        }
    }
}

pub fn cri_container_status(c: &Container) -> api::ContainerStatus {
    let mounts = c.config.mounts.clone();
    api::ContainerStatus {
        id: c.id.clone(),
        metadata: Some(c.metadata()),
        state: c.cri_state() as i32,
        created_at: c.state.created_at,
        started_at: c.state.started_at,
        finished_at: c.state.finished_at,
        exit_code: c.state.exit_code,
        image: Some(api::ImageSpec {
            image: c.state.image_name.clone(),
            ..Default::default()
        }),
        image_ref: c.state.image_ref.clone(),
        reason: c.state.reason.clone(),
        message: c.state.message.clone(),
        labels: c.config.labels.clone(),
        annotations: c.config.annotations.clone(),
        mounts,
        log_path: c.state.log_path.clone(),
        resources: c.resources().map(|linux| api::ContainerResources {
            linux: Some(linux),
            ..Default::default()
        }),
        image_id: c.state.image_id.clone(),
        ..Default::default()
    }
}

/// A signal by name (SIGTERM, TERM) or number, as images give StopSignal.
pub fn parse_signal(s: &str) -> Option<i32> {
    if s.is_empty() {
        return None;
    }
    if let Ok(n) = s.parse::<i32>() {
        return Some(n);
    }
    let name = s.trim_start_matches("SIG");
    let n = match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "TERM" => libc::SIGTERM,
        "WINCH" => libc::SIGWINCH,
        "STOP" => libc::SIGSTOP,
        "CONT" => libc::SIGCONT,
        "PWR" => libc::SIGPWR,
        _ => return None,
    };
    Some(n)
}

/// The image's /etc/passwd and /etc/group, when it has them.
#[derive(Clone, Debug, Default)]
pub struct ImageUsers {
    pub passwd: Option<String>,
    pub group: Option<String>,
}

/// Reads a file of the image's rootfs from the snapshot's layer directories (no mount
/// needed): the upper dir first, then each lower dir, top-most first.
pub fn read_image_file(mounts: &[Mount], rel: &str) -> Option<String> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for m in mounts {
        match m.r#type.as_str() {
            "bind" => dirs.push(PathBuf::from(&m.source)),
            "overlay" => {
                for o in &m.options {
                    if let Some(u) = o.strip_prefix("upperdir=") {
                        dirs.insert(0, PathBuf::from(u));
                    }
                }
                for o in &m.options {
                    if let Some(l) = o.strip_prefix("lowerdir=") {
                        dirs.extend(l.split(':').map(PathBuf::from));
                    }
                }
            }
            _ => {}
        }
    }
    dirs.iter()
        .find_map(|d| std::fs::read_to_string(d.join(rel)).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_by_name_and_number() {
        assert_eq!(parse_signal("SIGTERM"), Some(libc::SIGTERM));
        assert_eq!(parse_signal("USR1"), Some(libc::SIGUSR1));
        assert_eq!(parse_signal("9"), Some(9));
        assert_eq!(parse_signal(""), None);
        assert_eq!(parse_signal("SIGNOPE"), None);
    }

    #[test]
    fn image_files_come_from_the_top_most_layer_that_has_them() {
        let base = std::env::temp_dir().join(format!("gantry-layers-{}", std::process::id()));
        let (upper, l1, l2) = (base.join("u"), base.join("l1"), base.join("l2"));
        for d in [&upper, &l1, &l2] {
            std::fs::create_dir_all(d.join("etc")).unwrap();
        }
        std::fs::write(l2.join("etc/passwd"), "old").unwrap();
        std::fs::write(l1.join("etc/passwd"), "new").unwrap();
        let m = Mount {
            r#type: "overlay".into(),
            source: "overlay".into(),
            options: vec![
                format!("workdir={}", base.join("w").display()),
                format!("upperdir={}", upper.display()),
                format!("lowerdir={}:{}", l1.display(), l2.display()),
            ],
            ..Default::default()
        };
        assert_eq!(read_image_file(&[m], "etc/passwd").as_deref(), Some("new"));
        std::fs::remove_dir_all(&base).unwrap();
    }
}
