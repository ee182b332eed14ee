//! Processes run inside a running container: ExecSync (probes, crictl exec) and the
//! streaming server's exec, attach and port-forward, over containerd's task API.

use std::path::PathBuf;
use std::time::Duration;

use containerd_client::services::v1::{
    CloseIoRequest, DeleteProcessRequest, ExecProcessRequest, GetContainerRequest, KillRequest,
    ResizePtyRequest, StartRequest, WaitRequest,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::api;
use crate::engine::Engine;
use crate::error::{CriError, Result};
use crate::store::{self, ContainerPhase};
use crate::streaming::{AsyncReadWrite, ExitStatus, StreamBackend, StreamIo, TermSize};
use crate::task_io::{self, FifoSet};

/// ExecSync keeps at most this much of each output stream, as containerd's CRI.
const MAX_EXEC_SYNC_OUTPUT: usize = 16 << 20;

/// One exec'd or attached process's stdio and terminal, as the streaming server
/// hands them over.
pub type ExecIo = StreamIo;

impl Engine {
    pub async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout_s: i64,
    ) -> Result<api::ExecSyncResponse> {
        let (out_w, out_r) = tokio::io::duplex(64 << 10);
        let (err_w, err_r) = tokio::io::duplex(64 << 10);
        let collect = |mut r: tokio::io::DuplexStream| async move {
            let mut buf = Vec::new();
            let mut chunk = vec![0u8; 32 << 10];
            while let Ok(n) = r.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                let room = MAX_EXEC_SYNC_OUTPUT.saturating_sub(buf.len());
                buf.extend_from_slice(&chunk[..n.min(room)]);
            }
            buf
        };
        let out_task = tokio::spawn(collect(out_r));
        let err_task = tokio::spawn(collect(err_r));
        let io = ExecIo {
            stdin: None,
            stdout: Some(Box::new(out_w)),
            stderr: Some(Box::new(err_w)),
            tty: false,
            resize: None,
        };
        let timeout = (timeout_s > 0).then(|| Duration::from_secs(timeout_s as u64));
        let code = self.exec_process(id, cmd, io, timeout).await?;
        let stdout = out_task.await.unwrap_or_default();
        let stderr = err_task.await.unwrap_or_default();
        Ok(api::ExecSyncResponse {
            stdout,
            stderr,
            exit_code: code as i32,
        })
    }

    /// Runs `cmd` in container `id` with `io`; returns its exit code. With a timeout,
    /// the process is killed when it expires and DeadlineExceeded is returned, which
    /// the kubelet reports as a probe timeout.
    pub async fn exec_process(
        &self,
        id: &str,
        cmd: Vec<String>,
        io: ExecIo,
        timeout: Option<Duration>,
    ) -> Result<u32> {
        if cmd.is_empty() {
            return Err(CriError::InvalidArgument(format!(
                "exec in container {id}: no command given"
            )));
        }
        let c = self.store.container(id)?;
        if c.state.phase != ContainerPhase::Running {
            return Err(CriError::FailedPrecondition(format!(
                "exec in container {}: the container is not running",
                c.id
            )));
        }
        let process = self.exec_spec(&c.id, &cmd, io.tty).await?;
        let exec_id = store::new_id()[..32].to_string();
        let fifos = FifoSet::paths(
            &self.config.state_dir.join("exec").join(&exec_id),
            io.stdin.is_some(),
            io.stdout.is_some(),
            io.stderr.is_some() && !io.tty,
        );
        fifos.create()?;
        let result = self
            .run_exec(&c.id, &exec_id, &fifos, process, io, timeout, &cmd)
            .await;
        let _ = self
            .ctd
            .tasks()
            .delete_process(self.ctd.req(DeleteProcessRequest {
                container_id: c.id.clone(),
                exec_id: exec_id.clone(),
            }))
            .await;
        fifos.remove();
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_exec(
        &self,
        id: &str,
        exec_id: &str,
        fifos: &FifoSet,
        process: prost_types::Any,
        io: ExecIo,
        timeout: Option<Duration>,
        cmd: &[String],
    ) -> Result<u32> {
        let opener = {
            let f = fifos.clone();
            tokio::spawn(async move {
                let stdout = match &f.stdout {
                    Some(p) => Some(task_io::open_reader(p).await?),
                    None => None,
                };
                let stderr = match &f.stderr {
                    Some(p) => Some(task_io::open_reader(p).await?),
                    None => None,
                };
                let stdin = match &f.stdin {
                    Some(p) => Some(task_io::open_writer(p).await?),
                    None => None,
                };
                Ok::<_, CriError>((stdin, stdout, stderr))
            })
        };
        let exec = self
            .ctd
            .tasks()
            .exec(self.ctd.req(ExecProcessRequest {
                container_id: id.to_string(),
                stdin: FifoSet::arg(&fifos.stdin),
                stdout: FifoSet::arg(&fifos.stdout),
                stderr: FifoSet::arg(&fifos.stderr),
                terminal: io.tty,
                spec: Some(process),
                exec_id: exec_id.to_string(),
            }))
            .await;
        if let Err(s) = exec {
            task_io::abandon_open(fifos, opener).await;
            return Err(CriError::containerd(
                format!("exec {cmd:?} in container {id}"),
                s,
            ));
        }
        // The shim opens an exec's FIFOs when the process starts, not before.
        let mut tasks = self.ctd.tasks();
        let wait_req = self.ctd.req(WaitRequest {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
        });
        if let Err(s) = self
            .ctd
            .tasks()
            .start(self.ctd.req(StartRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
            }))
            .await
        {
            task_io::abandon_open(fifos, opener).await;
            return Err(CriError::containerd(
                format!("start {cmd:?} in container {id}"),
                s,
            ));
        }
        let (stdin_w, stdout_r, stderr_r) = opener
            .await
            .map_err(|e| CriError::Internal(format!("open exec stdio: {e}")))??;
        let mut copies = Vec::new();
        if let (Some(mut r), Some(mut w)) = (stdout_r, io.stdout) {
            copies.push(tokio::spawn(async move {
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            }));
        }
        if let (Some(mut r), Some(mut w)) = (stderr_r, io.stderr) {
            copies.push(tokio::spawn(async move {
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            }));
        }
        if let (Some(mut w), Some(mut r)) = (stdin_w, io.stdin) {
            let engine = self.clone();
            let (id, exec_id) = (id.to_string(), exec_id.to_string());
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut r, &mut w).await;
                drop(w);
                // The client's EOF reaches the process only through CloseIO.
                engine.close_stdin(&id, &exec_id).await;
            });
        }
        if let Some(resize) = io.resize {
            self.spawn_resize(id, exec_id, resize);
        }
        let wait = tasks.wait(wait_req);
        let waited = match timeout {
            Some(t) => match tokio::time::timeout(t, wait).await {
                Ok(w) => w,
                Err(_) => {
                    let _ = self
                        .ctd
                        .tasks()
                        .kill(self.ctd.req(KillRequest {
                            container_id: id.to_string(),
                            exec_id: exec_id.to_string(),
                            signal: libc::SIGKILL as u32,
                            all: false,
                        }))
                        .await;
                    return Err(CriError::DeadlineExceeded(format!(
                        "exec {cmd:?} in container {id}: timeout {}s exceeded",
                        t.as_secs()
                    )));
                }
            },
            None => wait.await,
        };
        let code = waited
            .map_err(|s| CriError::containerd(format!("wait for {cmd:?} in container {id}"), s))?
            .into_inner()
            .exit_status;
        for c in copies {
            let _ = tokio::time::timeout(Duration::from_secs(5), c).await;
        }
        Ok(code)
    }

    /// Passes the client's terminal sizes to the process's pty (exec_id empty: the
    /// container's own process) until the client stops sending them.
    fn spawn_resize(
        &self,
        id: &str,
        exec_id: &str,
        mut resize: tokio::sync::mpsc::Receiver<TermSize>,
    ) {
        let engine = self.clone();
        let (id, exec_id) = (id.to_string(), exec_id.to_string());
        tokio::spawn(async move {
            while let Some(TermSize { width, height }) = resize.recv().await {
                let _ = engine
                    .ctd
                    .tasks()
                    .resize_pty(engine.ctd.req(ResizePtyRequest {
                        container_id: id.clone(),
                        exec_id: exec_id.clone(),
                        width: width as u32,
                        height: height as u32,
                    }))
                    .await;
            }
        });
    }

    /// Closes the stdin of a container's process (exec_id empty) or of an exec.
    pub async fn close_stdin(&self, id: &str, exec_id: &str) {
        let _ = self
            .ctd
            .tasks()
            .close_io(self.ctd.req(CloseIoRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
                stdin: true,
            }))
            .await;
    }

    /// The process spec of an exec: the container's own process (user, env, cwd,
    /// capabilities) with the command replaced.
    async fn exec_spec(&self, id: &str, cmd: &[String], tty: bool) -> Result<prost_types::Any> {
        let record = self
            .ctd
            .containers()
            .get(self.ctd.req(GetContainerRequest { id: id.to_string() }))
            .await
            .map_err(|s| CriError::containerd(format!("read the spec of container {id}"), s))?
            .into_inner()
            .container
            .and_then(|c| c.spec)
            .ok_or_else(|| CriError::Internal(format!("container {id} has no spec")))?;
        let spec: serde_json::Value = serde_json::from_slice(&record.value)
            .map_err(|e| CriError::Internal(format!("parse the spec of container {id}: {e}")))?;
        let mut process = spec
            .get("process")
            .cloned()
            .ok_or_else(|| CriError::Internal(format!("container {id} has no process spec")))?;
        process["args"] = serde_json::json!(cmd);
        process["terminal"] = serde_json::json!(tty);
        Ok(prost_types::Any {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".to_string(),
            value: process.to_string().into_bytes(),
        })
    }

    /// Attaches to a running container's stdio until it exits or the client leaves.
    pub async fn attach(&self, id: &str, io: ExecIo) -> Result<()> {
        let c = self.store.container(id)?;
        if c.state.phase != ContainerPhase::Running {
            return Err(CriError::FailedPrecondition(format!(
                "attach to container {}: the container is not running",
                c.id
            )));
        }
        let cio = self.io_of(&c.id).ok_or_else(|| {
            CriError::FailedPrecondition(format!("container {} has no stdio to attach to", c.id))
        })?;
        let mut exited = cio.exited.subscribe();
        let mut tasks = Vec::new();
        if let Some(w) = io.stdout {
            tasks.push(tokio::spawn(task_io::forward(cio.stdout.subscribe(), w)));
        }
        if let Some(w) = io.stderr {
            if !cio.tty {
                tasks.push(tokio::spawn(task_io::forward(cio.stderr.subscribe(), w)));
            }
        }
        let stdin = io.stdin.map(|r| {
            let cio = cio.clone();
            let engine = self.clone();
            let id = c.id.clone();
            tokio::spawn(async move {
                let _ = cio.feed_stdin(r).await;
                if cio.stdin_once {
                    // The shim holds the stdin FIFO itself: closing our end is not EOF
                    // for the process; CloseIO is.
                    engine.close_stdin(&id, "").await;
                }
            })
        });
        if let Some(resize) = io.resize {
            self.spawn_resize(&c.id, "", resize);
        }
        let outputs = futures::future::join_all(tasks);
        tokio::select! {
            _ = outputs => {}
            _ = exited.wait_for(|done| *done) => {}
        }
        if let Some(s) = stdin {
            s.abort();
        }
        Ok(())
    }

    /// Connects to `port` on localhost inside the sandbox's network namespace and copies
    /// both ways, as the upstream runtimes do for port-forward.
    pub async fn port_forward(
        &self,
        sandbox_id: &str,
        port: u16,
        mut stream: impl AsyncRead + AsyncWrite + Unpin,
    ) -> Result<()> {
        let sb = self.store.sandbox(sandbox_id)?;
        if !sb.ready() {
            return Err(CriError::FailedPrecondition(format!(
                "port-forward to pod sandbox {}: the sandbox is not ready",
                sb.id
            )));
        }
        let netns: Option<PathBuf> =
            (!sb.state.host_network).then(|| self.sandbox_paths(&sb.id).ns_dir().join("net"));
        let std_stream = tokio::task::spawn_blocking(move || {
            gantry_networking::netns::connect_tcp_in(netns.as_deref(), port)
        })
        .await
        .map_err(|e| CriError::Internal(format!("port-forward: {e}")))?
        .map_err(|e| {
            CriError::Internal(format!(
                "port-forward to port {port} of pod sandbox {}: {e}",
                sb.id
            ))
        })?;
        std_stream
            .set_nonblocking(true)
            .map_err(|e| CriError::Internal(format!("port-forward: {e}")))?;
        let mut tcp = tokio::net::TcpStream::from_std(std_stream)
            .map_err(|e| CriError::Internal(format!("port-forward: {e}")))?;
        let _ = tokio::io::copy_bidirectional(&mut stream, &mut tcp).await;
        Ok(())
    }
}

/// The streaming server's backend: exec, attach and port-forward on the engine.
#[tonic::async_trait]
impl StreamBackend for Engine {
    async fn exec(&self, container_id: &str, cmd: Vec<String>, io: StreamIo) -> Result<ExitStatus> {
        let code = self.exec_process(container_id, cmd, io, None).await?;
        Ok(ExitStatus(code as i32))
    }

    async fn attach(&self, container_id: &str, io: StreamIo) -> Result<()> {
        Engine::attach(self, container_id, io).await
    }

    async fn port_forward(
        &self,
        sandbox_id: &str,
        port: u16,
        stream: Box<dyn AsyncReadWrite>,
    ) -> Result<()> {
        Engine::port_forward(self, sandbox_id, port, stream).await
    }
}
