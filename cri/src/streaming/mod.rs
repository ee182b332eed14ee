//! The CRI streaming server: the HTTP endpoint that the URLs returned by the `Exec`,
//! `Attach` and `PortForward` RPCs point at, as the upstream kubelet's
//! `k8s.io/kubelet/pkg/cri/streaming` server does for containerd and CRI-O.
//!
//! A CRI call validates the request and stores it under a random single-use token
//! ([`tokens`]); the client (crictl, the kubelet's proxy, kubectl through the API server)
//! then opens `http://ADDR/{exec,attach,portforward}/<token>` and upgrades the connection
//! to one of two transports:
//!
//! - SPDY/3.1 ([`spdy`], [`spdy_headers`], [`spdy_session`]) with the `X-Stream-Protocol-Version` handshake:
//!   remotecommand `v5`/`v4`/`v3`/`v2.channel.k8s.io` and `channel.k8s.io`, port-forward
//!   `portforward.k8s.io`. Every stdio stream, the error stream and the resize stream is
//!   a SPDY stream the client opens, named by its `streamtype` header.
//! - WebSocket ([`websocket`]) with `Sec-WebSocket-Protocol`: remotecommand
//!   `v5.channel.k8s.io` (with the half-close signal), `v4.channel.k8s.io`,
//!   `channel.k8s.io` and their `base64.` variants; port-forward `v4.channel.k8s.io`
//!   (and base64), one data and one error channel per port; and SPDY port-forward
//!   tunnelled in WebSocket messages (`SPDY/3.1+portforward.k8s.io`, [`ws_tunnel`]).
//!
//! What happens inside the container is the [`StreamBackend`]'s business: this module
//! only moves bytes, terminal sizes and exit codes between the client and the backend,
//! and reports the outcome the way upstream clients decode it.
//!
//! It must not know about containerd: the backend is the edge.
//!
//! Differences from upstream, on purpose or not yet: no idle timeout on established
//! sessions (upstream closes after 4 h without traffic); no SPDY flow control (neither
//! has spdystream, see [`spdy`]); the backend future is not cancelled when a client
//! vanishes mid-session — it sees EOF on stdin and failing writes instead, and is
//! dropped when the server shuts down.

pub mod channel;
pub mod portforward;
pub mod remotecommand;
pub mod server;
pub mod spdy;
pub mod spdy_headers;
pub mod spdy_session;
pub mod tokens;
pub mod websocket;
pub mod ws_tunnel;

use std::fmt;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use crate::error::CriError;

pub use server::StreamingServer;

/// The size of a client's terminal, as the resize stream carries it
/// (`{"Width":80,"Height":24}` in upstream's JSON).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct TermSize {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

/// How a command run by [`StreamBackend::exec`] ended: its exit code. Zero is success;
/// anything else is reported to the client as upstream's `NonZeroExitCode` status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitStatus(pub i32);

impl ExitStatus {
    pub fn success(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "exit status {}", self.0)
    }
}

/// A byte stream that can be read and written: one forwarded port connection.
pub trait AsyncReadWrite: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> AsyncReadWrite for T {}

/// The client's side of an exec or attach session, handed to the backend.
///
/// Each field is `Some` exactly when the client asked for it. Reading `stdin` returns EOF
/// when the client closes its stdin; `stdout`/`stderr` should be shut down (or dropped)
/// when the process closes them. With `tty`, `stderr` is always `None` (the terminal
/// multiplexes it, as upstream) and `resize` yields the client's terminal sizes, the
/// first one as soon as the client sends it.
pub struct StreamIo {
    pub stdin: Option<Box<dyn AsyncRead + Send + Unpin>>,
    pub stdout: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    pub stderr: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    pub tty: bool,
    pub resize: Option<mpsc::Receiver<TermSize>>,
}

impl fmt::Debug for StreamIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamIo")
            .field("stdin", &self.stdin.is_some())
            .field("stdout", &self.stdout.is_some())
            .field("stderr", &self.stderr.is_some())
            .field("tty", &self.tty)
            .field("resize", &self.resize.is_some())
            .finish()
    }
}

/// What the streaming server needs from the runtime: run a command in a container, attach
/// to a container's main process, and connect to a port in a sandbox's network namespace.
///
/// Futures may be dropped when the client goes away or the server shuts down; a backend
/// must then clean up (kill the exec'd process, close the socket) on drop.
#[tonic::async_trait]
pub trait StreamBackend: Send + Sync + 'static {
    /// Runs `cmd` in the container and returns its exit status once it has exited and
    /// its output has been written.
    async fn exec(
        &self,
        container_id: &str,
        cmd: Vec<String>,
        io: StreamIo,
    ) -> Result<ExitStatus, CriError>;

    /// Attaches to the container's main process until it exits or the client leaves.
    async fn attach(&self, container_id: &str, io: StreamIo) -> Result<(), CriError>;

    /// Copies bytes between `stream` and `port` on localhost inside the sandbox's network
    /// namespace, until both directions are done. An error is shown to the client.
    async fn port_forward(
        &self,
        sandbox_id: &str,
        port: u16,
        stream: Box<dyn AsyncReadWrite>,
    ) -> Result<(), CriError>;
}
