//! The fake backend and server setup shared by the streaming integration tests.

use std::net::SocketAddr;
use std::sync::Arc;

use gantry_cri::api;
use gantry_cri::streaming::{AsyncReadWrite, ExitStatus, StreamBackend, StreamIo, StreamingServer};
use gantry_cri::CriError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

/// exec `cat`: stdin to stdout, "oops" on stderr, exit 3. exec `size`: prints the first
/// terminal size, exit 0. exec `fail`: backend error. attach: stdin to stdout.
/// port-forward: echo, except port 1 which refuses.
pub struct Fake;

#[tonic::async_trait]
impl StreamBackend for Fake {
    async fn exec(
        &self,
        _id: &str,
        cmd: Vec<String>,
        mut io: StreamIo,
    ) -> Result<ExitStatus, CriError> {
        match cmd.first().map(String::as_str) {
            Some("cat") => {
                if let (Some(stdin), Some(stdout)) = (io.stdin.as_mut(), io.stdout.as_mut()) {
                    tokio::io::copy(stdin, stdout)
                        .await
                        .map_err(|e| CriError::Internal(e.to_string()))?;
                    stdout.shutdown().await.ok();
                }
                if let Some(stderr) = io.stderr.as_mut() {
                    stderr.write_all(b"oops").await.ok();
                }
                Ok(ExitStatus(3))
            }
            Some("size") => {
                let size = io
                    .resize
                    .as_mut()
                    .expect("tty exec has resize")
                    .recv()
                    .await;
                let size = size.expect("a size");
                let line = format!("{}x{}", size.width, size.height);
                io.stdout
                    .as_mut()
                    .expect("stdout")
                    .write_all(line.as_bytes())
                    .await
                    .ok();
                Ok(ExitStatus(0))
            }
            _ => Err(CriError::NotFound("no such command".into())),
        }
    }

    async fn attach(&self, _id: &str, mut io: StreamIo) -> Result<(), CriError> {
        if let (Some(stdin), Some(stdout)) = (io.stdin.as_mut(), io.stdout.as_mut()) {
            tokio::io::copy(stdin, stdout).await.ok();
        }
        Ok(())
    }

    async fn port_forward(
        &self,
        _sandbox: &str,
        port: u16,
        mut stream: Box<dyn AsyncReadWrite>,
    ) -> Result<(), CriError> {
        if port == 1 {
            return Err(CriError::Unavailable(
                "connect 127.0.0.1:1: connection refused".into(),
            ));
        }
        let mut buf = [0u8; 4096];
        loop {
            let n = stream
                .read(&mut buf)
                .await
                .map_err(|e| CriError::Internal(e.to_string()))?;
            if n == 0 {
                break;
            }
            stream
                .write_all(&buf[..n])
                .await
                .map_err(|e| CriError::Internal(e.to_string()))?;
        }
        stream.shutdown().await.ok();
        Ok(())
    }
}

pub async fn server() -> (Arc<StreamingServer>, oneshot::Sender<()>) {
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let shutdown = async move {
        let _ = stop_rx.await;
    };
    let server = StreamingServer::start(addr, Arc::new(Fake), shutdown)
        .await
        .unwrap();
    (server, stop_tx)
}

pub fn exec_req(cmd: &str, stdin: bool, stderr: bool, tty: bool) -> api::ExecRequest {
    api::ExecRequest {
        container_id: "c1".into(),
        cmd: vec![cmd.into()],
        tty,
        stdin,
        stdout: true,
        stderr,
    }
}
