//! Port-forward sessions (upstream kubelet/pkg/cri/streaming/portforward).
//!
//! SPDY (`portforward.k8s.io`): for each forwarded connection the client opens an
//! error stream and a data stream carrying the same `requestid` and `port` headers; once
//! both are there the backend connects to the port and the data stream carries the
//! bytes. A failure is written to the error stream as upstream's JSON
//! `{"closeConnection":true,"message":"..."}`; then both streams are finished. A pair
//! that stays incomplete for 30 s is dropped with "timed out waiting for streams".
//!
//! SPDY may also come tunnelled in WebSocket (`SPDY/3.1+portforward.k8s.io`, crictl's
//! `-r websocket`); it is then served exactly as above.
//!
//! WebSocket (`v4.channel.k8s.io`, base64 variant, or none): one connection forwards
//! each port once, on channels 2n (data) and 2n+1 (error); the server first writes the
//! port as two little-endian bytes on both, and errors are plain text.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use super::channel::{ChannelWriter, Duplex, Tasks};
use super::remotecommand::STREAM_CREATION_TIMEOUT;
use super::spdy;
use super::spdy_session::{SpdySession, SpdyStream, StreamCloser};
use super::websocket::{WsProtocol, WsSession, V4_BASE64_CHANNEL, V4_CHANNEL};
use super::StreamBackend;

pub const PORT_FORWARD_PROTOCOL_V1: &str = "portforward.k8s.io";
/// Port-forward subprotocols accepted over SPDY.
pub const SPDY_PROTOCOLS: &[&str] = &[PORT_FORWARD_PROTOCOL_V1];
/// Port-forward subprotocols accepted over WebSocket ("" = none named): the channel
/// protocols, and SPDY tunnelled in WebSocket (see [`super::ws_tunnel`]).
pub const WEBSOCKET_PROTOCOLS: &[&str] = &[
    super::ws_tunnel::SPDY_TUNNEL_PORT_FORWARD,
    V4_CHANNEL,
    V4_BASE64_CHANNEL,
    "",
];

/// Upstream's error-stream message for SPDY port-forward failures.
#[derive(Serialize)]
struct ErrorResponse<'a> {
    #[serde(rename = "closeConnection", skip_serializing_if = "std::ops::Not::not")]
    close_connection: bool,
    #[serde(skip_serializing_if = "str::is_empty")]
    message: &'a str,
}

#[derive(Default)]
struct Pair {
    data: Option<SpdyStream>,
    error: Option<SpdyStream>,
    port: u16,
    deadline: Option<Instant>,
}

/// Serves one SPDY port-forward connection until the client closes it.
pub async fn serve_spdy(
    mut session: SpdySession,
    sandbox_id: String,
    backend: Arc<dyn StreamBackend>,
    tasks: Tasks,
) {
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    loop {
        let deadline = pairs.values().filter_map(|p| p.deadline).min();
        let expire = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let stream = tokio::select! {
            stream = session.next_stream() => match stream {
                Some(stream) => stream,
                None => break,
            },
            _ = expire => {
                expire_pairs(&mut pairs).await;
                continue;
            }
        };
        let (port, kind) = match validate(&stream) {
            Ok(v) => v,
            Err(msg) => {
                tracing::debug!(
                    sandbox_id,
                    stream = stream.id,
                    "port-forward: refusing stream: {msg}"
                );
                stream.reset(spdy::RST_PROTOCOL_ERROR).await;
                continue;
            }
        };
        let request_id = request_id(&stream, kind);
        let pair = pairs.entry(request_id.clone()).or_insert_with(|| Pair {
            deadline: Some(Instant::now() + STREAM_CREATION_TIMEOUT),
            port,
            ..Default::default()
        });
        let slot = if kind == StreamKind::Data {
            &mut pair.data
        } else {
            &mut pair.error
        };
        if slot.is_some() {
            let msg = format!(
                "error processing stream for request {request_id}: {} stream already assigned",
                kind.name()
            );
            tracing::warn!(sandbox_id, "port-forward: {msg}");
            if let Some(error) = &mut pair.error {
                let _ = error.writer.write_all(msg.as_bytes()).await;
            }
            stream.reset(spdy::RST_PROTOCOL_ERROR).await;
            continue;
        }
        *slot = Some(stream);
        if pair.data.is_some() && pair.error.is_some() {
            if let Some(Pair {
                data: Some(data),
                error: Some(error),
                port,
                ..
            }) = pairs.remove(&request_id)
            {
                let (backend, sandbox_id) = (backend.clone(), sandbox_id.clone());
                tasks.spawn(forward_spdy(backend, sandbox_id, port, data, error));
            }
        }
    }
    session.close().await;
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum StreamKind {
    Data,
    Error,
}

impl StreamKind {
    fn name(self) -> &'static str {
        match self {
            StreamKind::Data => "data",
            StreamKind::Error => "error",
        }
    }
}

/// Checks a new stream's `port` and `streamtype` headers as upstream's
/// `httpStreamReceived`.
fn validate(stream: &SpdyStream) -> Result<(u16, StreamKind), String> {
    let port = stream.header("port").ok_or("\"port\" header is required")?;
    let port: u16 = port
        .parse()
        .map_err(|e| format!("unable to parse {port:?} as a port: {e}"))?;
    if port == 0 {
        return Err("port \"0\" must be > 0".into());
    }
    match stream.header("streamtype") {
        Some("data") => Ok((port, StreamKind::Data)),
        Some("error") => Ok((port, StreamKind::Error)),
        Some(other) => Err(format!("invalid stream type {other:?}")),
        None => Err("\"streamType\" header is required".into()),
    }
}

/// The pair a stream belongs to. Clients older than the `requestID` header open the
/// error stream right before the data stream, so upstream pairs them by stream id.
fn request_id(stream: &SpdyStream, kind: StreamKind) -> String {
    match stream.header("requestid") {
        Some(id) if !id.is_empty() => id.to_string(),
        _ => match kind {
            StreamKind::Error => stream.id.to_string(),
            StreamKind::Data => stream.id.saturating_sub(2).to_string(),
        },
    }
}

async fn expire_pairs(pairs: &mut HashMap<String, Pair>) {
    let now = Instant::now();
    let expired: Vec<String> = pairs
        .iter()
        .filter(|(_, p)| p.deadline.is_some_and(|d| d <= now))
        .map(|(id, _)| id.clone())
        .collect();
    for id in expired {
        let Some(pair) = pairs.remove(&id) else {
            continue;
        };
        tracing::warn!(request = id, "port-forward: timed out waiting for streams");
        if let Some(mut error) = pair.error {
            let msg = format!("(request={id}) timed out waiting for streams");
            let _ = error.writer.write_all(msg.as_bytes()).await;
            let _ = error.writer.shutdown().await;
        }
        if let Some(data) = pair.data {
            data.reset(spdy::RST_CANCEL).await;
        }
    }
}

async fn forward_spdy(
    backend: Arc<dyn StreamBackend>,
    sandbox_id: String,
    port: u16,
    data: SpdyStream,
    error: SpdyStream,
) {
    let data_closer: StreamCloser = data.closer();
    let stream = Duplex {
        reader: data.reader,
        writer: data.writer,
    };
    let result = backend
        .port_forward(&sandbox_id, port, Box::new(stream))
        .await;
    let mut error = error.writer;
    if let Err(e) = result {
        let message = format!("error forwarding port {port} to pod {sandbox_id}: {e}");
        tracing::warn!(sandbox_id, port, "port-forward: {message}");
        let body = ErrorResponse {
            close_connection: true,
            message: &message,
        };
        let json = serde_json::to_vec(&body).unwrap_or_else(|_| message.clone().into_bytes());
        let _ = error.write_all(&json).await;
    }
    let _ = error.shutdown().await;
    // The backend may have dropped the data stream without finishing it.
    data_closer.finish().await;
}

/// Serves a WebSocket port-forward connection: each of `ports` once, concurrently.
pub async fn serve_websocket<IO>(
    io: IO,
    protocol: WsProtocol,
    ports: Vec<u16>,
    sandbox_id: String,
    backend: Arc<dyn StreamBackend>,
    tasks: Tasks,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let readable: Vec<bool> = ports.iter().flat_map(|_| [true, false]).collect();
    let (mut session, channels) = WsSession::start(io, &protocol, &readable, &tasks).await;
    let mut channels = channels.into_iter();
    let mut forwards = Vec::with_capacity(ports.len());
    for &port in &ports {
        let (Some(data), Some(error)) = (channels.next(), channels.next()) else {
            break;
        };
        let Some(reader) = data.reader else { break };
        let (backend, sandbox_id) = (backend.clone(), sandbox_id.clone());
        let (mut writer, mut error) = (data.writer, error.writer);
        forwards.push(async move {
            let prefix = port.to_le_bytes();
            if writer.write_all(&prefix).await.is_err() || error.write_all(&prefix).await.is_err() {
                return;
            }
            let stream = Duplex { reader, writer };
            if let Err(e) = backend
                .port_forward(&sandbox_id, port, Box::new(stream))
                .await
            {
                let message = format!("error forwarding port {port} to pod {sandbox_id}: {e}");
                tracing::warn!(sandbox_id, port, "port-forward: {message}");
                write_text(&mut error, &message).await;
            }
        });
    }
    futures::future::join_all(forwards).await;
    session.close().await;
}

async fn write_text(w: &mut ChannelWriter, text: &str) {
    let _ = w.write_all(text.as_bytes()).await;
}

/// The ports a WebSocket port-forward asks for in its `port` query parameters
/// (repeatable, comma-separated), as upstream's `NewV4Options`; `None` if it names none.
pub fn ports_from_query(query: Option<&str>) -> Result<Option<Vec<u16>>, String> {
    let mut ports = Vec::new();
    for pair in query.unwrap_or_default().split('&') {
        let Some(("port", value)) = pair.split_once('=') else {
            continue;
        };
        let value = value.replace("%2C", ",").replace("%2c", ",");
        if value.is_empty() {
            return Err("query parameter \"port\" cannot be empty".into());
        }
        for p in value.split(',') {
            let port: u16 = p
                .parse()
                .map_err(|e| format!("unable to parse {value:?} as a port: {e}"))?;
            if port == 0 {
                return Err(format!("port {value:?} must be > 0"));
            }
            ports.push(port);
        }
    }
    Ok((!ports.is_empty()).then_some(ports))
}

/// The ports of a CRI PortForwardRequest, checked to fit in 1..=65535.
pub fn ports_from_request(ports: &[i32]) -> Result<Vec<u16>, String> {
    ports
        .iter()
        .map(|&p| match u16::try_from(p) {
            Ok(port) if port > 0 => Ok(port),
            _ => Err(format!("invalid port {p}: must be in 1..=65535")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_ports_are_repeatable_and_comma_separated() {
        assert_eq!(
            ports_from_query(Some("port=80&port=443%2C8080")).unwrap(),
            Some(vec![80, 443, 8080])
        );
        assert_eq!(ports_from_query(Some("other=1")).unwrap(), None);
        assert_eq!(ports_from_query(None).unwrap(), None);
        assert!(ports_from_query(Some("port=")).is_err());
        assert!(ports_from_query(Some("port=0")).is_err());
        assert!(ports_from_query(Some("port=http")).is_err());
    }

    #[test]
    fn request_ports_must_fit_in_u16() {
        assert_eq!(ports_from_request(&[80, 65535]).unwrap(), vec![80, 65535]);
        assert!(ports_from_request(&[0]).is_err());
        assert!(ports_from_request(&[70000]).is_err());
    }

    #[test]
    fn error_response_is_upstreams_json() {
        let body = ErrorResponse {
            close_connection: true,
            message: "boom",
        };
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"closeConnection":true,"message":"boom"}"#
        );
    }
}
