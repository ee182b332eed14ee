//! Exec and attach sessions (upstream kubelet/pkg/cri/streaming/remotecommand): gather
//! the client's streams, run the backend with them, then report how it ended on the
//! error stream — a JSON `metav1.Status` for v4 and later (Success, or Failure with
//! reason `NonZeroExitCode` and the code in `details.causes[{reason: ExitCode}]`), plain
//! text for older protocols — and close the connection.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::channel::{ChannelReader, ChannelWriter, Tasks};
use super::spdy_session::SpdySession;
use super::websocket::{WsChannel, WsProtocol, WsSession};
use super::{ExitStatus, StreamBackend, StreamIo, TermSize};
use crate::error::CriError;

/// How long a SPDY client has to open all its streams (upstream
/// `DefaultStreamCreationTimeout`).
pub const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

pub const STREAM_PROTOCOL_V5: &str = "v5.channel.k8s.io";
pub const STREAM_PROTOCOL_V4: &str = "v4.channel.k8s.io";
pub const STREAM_PROTOCOL_V3: &str = "v3.channel.k8s.io";
pub const STREAM_PROTOCOL_V2: &str = "v2.channel.k8s.io";
pub const STREAM_PROTOCOL_V1: &str = "channel.k8s.io";

/// The remotecommand subprotocols accepted over SPDY, best first. v5 is v4 over SPDY
/// (its CLOSE signal is WebSocket-only), as upstream treats it.
pub const SPDY_PROTOCOLS: &[&str] = &[
    STREAM_PROTOCOL_V5,
    STREAM_PROTOCOL_V4,
    STREAM_PROTOCOL_V3,
    STREAM_PROTOCOL_V2,
    STREAM_PROTOCOL_V1,
];

/// The remotecommand subprotocols accepted over WebSocket ("" = none named).
pub const WEBSOCKET_PROTOCOLS: &[&str] = &[
    super::websocket::V5_CHANNEL,
    super::websocket::V4_CHANNEL,
    super::websocket::V4_BASE64_CHANNEL,
    super::websocket::CHANNEL,
    super::websocket::BASE64_CHANNEL,
    "",
];

/// What the session runs.
#[derive(Clone, Debug)]
pub enum Target {
    Exec {
        container_id: String,
        cmd: Vec<String>,
    },
    Attach {
        container_id: String,
    },
}

/// Which streams the CRI request asked for.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// The client's streams, whichever transport carried them.
#[derive(Default)]
pub struct Streams {
    pub stdin: Option<ChannelReader>,
    pub stdout: Option<ChannelWriter>,
    pub stderr: Option<ChannelWriter>,
    pub resize: Option<ChannelReader>,
    pub error: Option<ChannelWriter>,
    /// v4 and later: JSON status; before: text, and nothing on success.
    pub json_status: bool,
}

/// A SPDY exec/attach session: waits for the streams, runs it, closes the connection.
pub async fn serve_spdy(
    mut session: SpdySession,
    protocol: &str,
    opts: Options,
    target: Target,
    backend: Arc<dyn StreamBackend>,
    tasks: Tasks,
) {
    // v1 and v2 have no resize stream.
    let resizable = !matches!(protocol, STREAM_PROTOCOL_V1 | STREAM_PROTOCOL_V2);
    let expected = 1
        + usize::from(opts.stdin)
        + usize::from(opts.stdout)
        + usize::from(opts.stderr)
        + usize::from(opts.tty && resizable);
    let mut streams = Streams {
        json_status: matches!(protocol, STREAM_PROTOCOL_V4 | STREAM_PROTOCOL_V5),
        ..Default::default()
    };
    let gathered = tokio::time::timeout(STREAM_CREATION_TIMEOUT, async {
        let mut received = 0;
        while received < expected {
            let Some(stream) = session.next_stream().await else {
                return false;
            };
            let kind = stream.header("streamtype").unwrap_or_default().to_string();
            let (reader, writer) = (stream.reader, stream.writer);
            match kind.as_str() {
                "error" => streams.error = Some(writer),
                "stdin" => streams.stdin = Some(reader),
                "stdout" => streams.stdout = Some(writer),
                "stderr" => streams.stderr = Some(writer),
                "resize" => streams.resize = Some(reader),
                other => {
                    tracing::debug!(
                        stream_type = other,
                        "remotecommand: unexpected stream ignored"
                    );
                    continue;
                }
            }
            received += 1;
        }
        true
    })
    .await;
    match gathered {
        Ok(true) => {
            run(streams, opts, target, backend, &tasks).await;
            session.close().await;
        }
        Ok(false) => tracing::debug!("remotecommand: client left before opening its streams"),
        Err(_) => {
            // As upstream: the client gets no status, only the closed connection.
            tracing::warn!(
                expected,
                "remotecommand: timed out waiting for client to create streams"
            );
            session.close().await;
        }
    }
}

/// A WebSocket exec/attach session over an accepted upgrade.
pub async fn serve_websocket<IO>(
    io: IO,
    protocol: WsProtocol,
    opts: Options,
    target: Target,
    backend: Arc<dyn StreamBackend>,
    tasks: Tasks,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // Channels 0..=4: stdin, stdout, stderr, error, resize; resize is always read.
    let readable = [opts.stdin, false, false, false, true];
    let (mut session, channels) = WsSession::start(io, &protocol, &readable, &tasks).await;
    let Ok([stdin, stdout, stderr, error, resize]) = <[WsChannel; 5]>::try_from(channels) else {
        return; // start() makes exactly one channel per `readable` entry
    };
    // Upstream announces the connection with an empty frame on the first output channel.
    let first = if opts.stdout {
        1
    } else if opts.stderr {
        2
    } else {
        3
    };
    session.announce(first).await;
    let streams = Streams {
        stdin: stdin.reader.filter(|_| opts.stdin),
        stdout: Some(stdout.writer).filter(|_| opts.stdout),
        stderr: Some(stderr.writer).filter(|_| opts.stderr),
        resize: resize.reader.filter(|_| opts.tty),
        error: Some(error.writer),
        json_status: protocol.json_status(),
    };
    run(streams, opts, target, backend, &tasks).await;
    session.close().await;
}

/// Runs the backend with the gathered streams and writes the outcome on the error
/// stream.
pub async fn run(
    streams: Streams,
    opts: Options,
    target: Target,
    backend: Arc<dyn StreamBackend>,
    tasks: &Tasks,
) {
    let resize = match streams.resize {
        Some(reader) if opts.tty => {
            let (tx, rx) = mpsc::channel(8);
            tasks.spawn(forward_resizes(reader, tx));
            Some(rx)
        }
        _ => None,
    };
    let io = StreamIo {
        stdin: streams.stdin.map(|r| Box::new(r) as _),
        stdout: streams.stdout.map(|w| Box::new(w) as _),
        // With a TTY, stderr is part of the terminal (upstream drops it too).
        stderr: streams
            .stderr
            .filter(|_| !opts.tty)
            .map(|w| Box::new(w) as _),
        tty: opts.tty,
        resize,
    };
    let status = match &target {
        Target::Exec { container_id, cmd } => {
            match backend.exec(container_id, cmd.clone(), io).await {
                Ok(code) if code.success() => Status::success(),
                Ok(code) => Status::non_zero_exit(code),
                Err(e) => {
                    tracing::warn!(container_id, error = %e, "exec failed");
                    Status::internal(format!("error executing command in container: {e}"))
                }
            }
        }
        Target::Attach { container_id } => match backend.attach(container_id, io).await {
            Ok(()) => Status::success(),
            Err(e) => {
                tracing::warn!(container_id, error = %e, "attach failed");
                Status::internal(format!("error attaching to container: {e}"))
            }
        },
    };
    if let Some(mut error) = streams.error {
        let bytes = status.encode(streams.json_status);
        if !bytes.is_empty() {
            let _ = error.write_all(&bytes).await;
        }
        let _ = error.shutdown().await;
    }
}

/// Decodes the resize stream's concatenated JSON objects into terminal sizes.
async fn forward_resizes(mut reader: impl AsyncRead + Unpin, tx: mpsc::Sender<TermSize>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        let (sizes, used) = parse_sizes(&buf);
        buf.drain(..used);
        for size in sizes {
            if tx.send(size).await.is_err() {
                return;
            }
        }
        if buf.len() > 64 * 1024 {
            tracing::debug!("remotecommand: resize stream is not JSON, ignoring it");
            return;
        }
    }
}

/// The complete sizes at the start of `buf` and how many bytes they used; a trailing
/// partial object is left for the next read. Garbage ends parsing.
pub fn parse_sizes(buf: &[u8]) -> (Vec<TermSize>, usize) {
    let mut sizes = Vec::new();
    let mut iter = serde_json::Deserializer::from_slice(buf).into_iter::<TermSize>();
    let mut used = 0;
    loop {
        match iter.next() {
            Some(Ok(size)) => {
                sizes.push(size);
                used = iter.byte_offset();
            }
            Some(Err(e)) if e.is_eof() => break,
            Some(Err(_)) => {
                used = buf.len();
                break;
            }
            None => {
                used = iter.byte_offset();
                break;
            }
        }
    }
    (sizes, used)
}

/// Upstream's stream status (a subset of metav1.Status, same JSON).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Status {
    pub status: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub reason: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<StatusDetails>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StatusDetails {
    pub causes: Vec<StatusCause>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StatusCause {
    /// metav1.StatusCause's `Type` is serialised as `reason`.
    pub reason: &'static str,
    pub message: String,
}

impl Status {
    pub fn success() -> Self {
        Self {
            status: "Success",
            message: String::new(),
            reason: "",
            details: None,
            code: None,
        }
    }

    pub fn non_zero_exit(code: ExitStatus) -> Self {
        Self {
            status: "Failure",
            message: format!("command terminated with non-zero exit code: {code}"),
            reason: "NonZeroExitCode",
            details: Some(StatusDetails {
                causes: vec![StatusCause {
                    reason: "ExitCode",
                    message: code.0.to_string(),
                }],
            }),
            code: None,
        }
    }

    pub fn internal(err: String) -> Self {
        Self {
            status: "Failure",
            message: format!("Internal error occurred: {err}"),
            reason: "InternalError",
            details: None,
            code: Some(500),
        }
    }

    /// The bytes for the error stream: JSON (v4+), or for older protocols the message of
    /// a failure and nothing for success.
    pub fn encode(&self, json: bool) -> Bytes {
        if json {
            // Serialising plain strings and numbers cannot fail.
            Bytes::from(serde_json::to_vec(self).unwrap_or_default())
        } else if self.status == "Success" {
            Bytes::new()
        } else {
            Bytes::from(self.message.clone())
        }
    }
}

/// Validates an exec request as upstream's `validateExecRequest`.
pub fn validate_exec(req: &crate::api::ExecRequest) -> Result<(), CriError> {
    validate_stdio(
        &req.container_id,
        req.stdin,
        req.stdout,
        req.stderr,
        req.tty,
        "exec",
    )
}

/// Validates an attach request as upstream's `validateAttachRequest`.
pub fn validate_attach(req: &crate::api::AttachRequest) -> Result<(), CriError> {
    validate_stdio(
        &req.container_id,
        req.stdin,
        req.stdout,
        req.stderr,
        req.tty,
        "attach",
    )
}

fn validate_stdio(
    container_id: &str,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
    what: &str,
) -> Result<(), CriError> {
    if container_id.is_empty() {
        return Err(CriError::InvalidArgument(format!(
            "{what}: missing required container_id"
        )));
    }
    if tty && stderr {
        // A TTY multiplexes stderr into stdout; upstream refuses asking for both.
        return Err(CriError::InvalidArgument(format!(
            "{what} in container {container_id}: tty and stderr cannot both be true"
        )));
    }
    if !stdin && !stdout && !stderr {
        return Err(CriError::InvalidArgument(format!(
            "{what} in container {container_id}: one of stdin, stdout, or stderr must be set"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api;

    #[test]
    fn statuses_encode_as_upstream_clients_decode_them() {
        assert_eq!(
            &Status::success().encode(true)[..],
            br#"{"status":"Success"}"#
        );
        let failed = Status::non_zero_exit(ExitStatus(3)).encode(true);
        let v: serde_json::Value = serde_json::from_slice(&failed).unwrap();
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["reason"], "NonZeroExitCode");
        assert_eq!(
            v["details"]["causes"][0],
            serde_json::json!({"reason": "ExitCode", "message": "3"})
        );
        let internal: serde_json::Value =
            serde_json::from_slice(&Status::internal("boom".into()).encode(true)).unwrap();
        assert_eq!(internal["code"], 500);
        assert_eq!(internal["message"], "Internal error occurred: boom");
    }

    #[test]
    fn pre_v4_protocols_get_text_and_nothing_on_success() {
        assert!(Status::success().encode(false).is_empty());
        let text = Status::non_zero_exit(ExitStatus(2)).encode(false);
        assert_eq!(
            &text[..],
            b"command terminated with non-zero exit code: exit status 2"
        );
    }

    #[test]
    fn resize_stream_parses_concatenated_json_and_keeps_partial_tail() {
        let (sizes, used) =
            parse_sizes(br#"{"Width":80,"Height":24}{"Width":100,"Height":30}{"Wid"#);
        assert_eq!(
            sizes,
            vec![
                TermSize {
                    width: 80,
                    height: 24
                },
                TermSize {
                    width: 100,
                    height: 30
                }
            ]
        );
        assert_eq!(used, 49);
        let (sizes, used) = parse_sizes(b"not json");
        assert!(sizes.is_empty());
        assert_eq!(used, 8);
    }

    fn exec(
        container_id: &str,
        stdin: bool,
        stdout: bool,
        stderr: bool,
        tty: bool,
    ) -> api::ExecRequest {
        api::ExecRequest {
            container_id: container_id.into(),
            cmd: vec!["sh".into()],
            tty,
            stdin,
            stdout,
            stderr,
        }
    }

    #[test]
    fn exec_validation_follows_upstream() {
        assert!(validate_exec(&exec("c", true, true, false, true)).is_ok());
        for (req, want) in [
            (
                exec("", false, true, false, false),
                "missing required container_id",
            ),
            (
                exec("c", false, true, true, true),
                "tty and stderr cannot both be true",
            ),
            (
                exec("c", false, false, false, false),
                "one of stdin, stdout, or stderr must be set",
            ),
        ] {
            match validate_exec(&req) {
                Err(CriError::InvalidArgument(msg)) => assert!(msg.contains(want), "{msg}"),
                other => panic!("{req:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn attach_validation_follows_upstream() {
        let req = api::AttachRequest {
            container_id: "c".into(),
            stdin: true,
            tty: true,
            stdout: true,
            stderr: true,
        };
        assert!(matches!(
            validate_attach(&req),
            Err(CriError::InvalidArgument(_))
        ));
        let req = api::AttachRequest {
            stderr: false,
            ..req
        };
        assert!(validate_attach(&req).is_ok());
    }
}
