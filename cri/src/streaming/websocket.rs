//! The WebSocket transport, as upstream's wsstream (k8s.io/apimachinery
//! .../httpstream/wsstream): every message starts with a channel byte (0 stdin, 1 stdout,
//! 2 stderr, 3 error, 4 resize for remotecommand; 2n data and 2n+1 error for the n-th
//! forwarded port). The `base64.` subprotocols send text messages whose channel is an
//! ASCII digit and whose payload is base64. `v5.channel.k8s.io` adds the half-close
//! signal: a message `[255, channel]` from the client closes that channel (stdin EOF).
//! The server ends the session with a normal Close frame, which clients read as EOF on
//! every channel.

use std::time::Duration;

use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use super::channel::{ChannelReader, ChannelWriter, Out, Tasks, OUT_QUEUE};

/// How long a closed session waits for the client's Close reply.
const LINGER: Duration = Duration::from_secs(5);
/// The v5 half-close signal's channel byte.
const CLOSE_SIGNAL: u8 = 255;

pub const V5_CHANNEL: &str = "v5.channel.k8s.io";
pub const V4_CHANNEL: &str = "v4.channel.k8s.io";
pub const V4_BASE64_CHANNEL: &str = "v4.base64.channel.k8s.io";
pub const CHANNEL: &str = "channel.k8s.io";
pub const BASE64_CHANNEL: &str = "base64.channel.k8s.io";

/// A negotiated subprotocol and what it implies for framing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WsProtocol {
    /// As the client named it; empty when it named none.
    pub name: String,
}

impl WsProtocol {
    pub fn base64(&self) -> bool {
        self.name.contains("base64.")
    }

    pub fn close_signal(&self) -> bool {
        self.name == V5_CHANNEL
    }

    /// Whether the error channel carries a JSON status (v4 and later) or plain text.
    pub fn json_status(&self) -> bool {
        self.name.starts_with("v4.") || self.name.starts_with("v5.")
    }
}

/// True when the request asks for a WebSocket upgrade (upstream `IsWebSocketRequest`).
pub fn is_websocket_request(headers: &HeaderMap) -> bool {
    let upgrade = headers
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"));
    upgrade && connection_has_upgrade(headers)
}

/// True when a `Connection` header lists the `upgrade` token.
pub fn connection_has_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// Picks the first protocol the client offers that `supported` lists; a client offering
/// none gets "" if `supported` has it (upstream's default binary channel protocol).
pub fn negotiate(headers: &HeaderMap, supported: &[&str]) -> Result<WsProtocol, String> {
    let offered: Vec<&str> = headers
        .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    let candidates = if offered.is_empty() {
        vec![""]
    } else {
        offered.clone()
    };
    candidates
        .into_iter()
        .find(|p| supported.contains(p))
        .map(|p| WsProtocol {
            name: p.to_string(),
        })
        .ok_or_else(|| {
            format!("requested protocol(s) are not supported: {offered:?}; supports {supported:?}")
        })
}

/// The 101 answer to a valid WebSocket upgrade, or why it is not one.
pub fn accept_response<B: Default>(
    headers: &HeaderMap,
    protocol: &WsProtocol,
) -> Result<Response<B>, String> {
    let version = headers
        .get(http::header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes);
    if version != Some(b"13") {
        return Err("unsupported or missing Sec-WebSocket-Version (want 13)".into());
    }
    let key = headers
        .get(http::header::SEC_WEBSOCKET_KEY)
        .ok_or("missing Sec-WebSocket-Key")?;
    let mut resp = Response::new(B::default());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(
        http::header::CONNECTION,
        HeaderValue::from_static("Upgrade"),
    );
    let accept =
        HeaderValue::from_str(&derive_accept_key(key.as_bytes())).map_err(|e| e.to_string())?;
    h.insert(http::header::SEC_WEBSOCKET_ACCEPT, accept);
    if !protocol.name.is_empty() {
        let p = HeaderValue::from_str(&protocol.name).map_err(|e| e.to_string())?;
        h.insert(http::header::SEC_WEBSOCKET_PROTOCOL, p);
    }
    Ok(resp)
}

/// One channel of a session: `reader` is what the client sends on it (when the
/// session reads it), `writer` sends to the client.
pub struct WsChannel {
    pub reader: Option<ChannelReader>,
    pub writer: ChannelWriter,
}

/// One WebSocket connection carrying numbered channels.
pub struct WsSession {
    out: mpsc::Sender<Out>,
    writer_done: Option<oneshot::Receiver<()>>,
}

impl WsSession {
    /// Starts the reader and writer tasks; `readable[i]` says whether channel `i` takes
    /// input from the client (input for other channels is dropped, as upstream).
    pub async fn start<IO>(
        io: IO,
        protocol: &WsProtocol,
        readable: &[bool],
        tasks: &Tasks,
    ) -> (Self, Vec<WsChannel>)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
        let (sink, stream) = ws.split();
        let (out_tx, out_rx) = mpsc::channel(OUT_QUEUE);
        let (done_tx, done_rx) = oneshot::channel();
        let closed = CancellationToken::new();
        let mut inputs = Vec::with_capacity(readable.len());
        let mut channels = Vec::with_capacity(readable.len());
        for (i, &read) in readable.iter().enumerate() {
            let (tx, reader) = if read {
                let (tx, reader) = ChannelReader::pair();
                (Some(tx), Some(reader))
            } else {
                (None, None)
            };
            inputs.push(tx);
            let reset = Default::default();
            channels.push(WsChannel {
                reader,
                writer: ChannelWriter::new(out_tx.clone(), i as u32, reset),
            });
        }
        tasks.spawn(write_loop(
            sink,
            out_rx,
            protocol.base64(),
            done_tx,
            closed.clone(),
        ));
        tasks.spawn(read_loop(stream, inputs, protocol.clone(), closed));
        let session = Self {
            out: out_tx,
            writer_done: Some(done_rx),
        };
        (session, channels)
    }

    /// Sends an empty message on `channel`: upstream's "connection established" signal.
    pub async fn announce(&self, channel: u32) {
        let _ = self
            .out
            .send(Out::Data {
                stream: channel,
                data: Bytes::new(),
                fin: false,
            })
            .await;
    }

    /// Ends the session after everything queued so far with a normal Close frame.
    pub async fn close(&mut self) {
        if self.out.send(Out::Close).await.is_ok() {
            if let Some(done) = self.writer_done.take() {
                let _ = done.await;
            }
        }
    }
}

async fn read_loop<S>(
    mut stream: S,
    mut inputs: Vec<Option<mpsc::Sender<Bytes>>>,
    protocol: WsProtocol,
    closed: CancellationToken,
) where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let linger = async {
        closed.cancelled().await;
        tokio::time::sleep(LINGER).await;
    };
    tokio::pin!(linger);
    loop {
        let msg = tokio::select! {
            msg = stream.next() => msg,
            _ = &mut linger => break,
        };
        let data: Bytes = match msg {
            Some(Ok(Message::Binary(b))) => b,
            Some(Ok(Message::Text(t))) => Bytes::copy_from_slice(t.as_bytes()),
            // Pings are answered by tungstenite itself; a Close is answered likewise and
            // the stream then ends.
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "websocket: read failed");
                break;
            }
            None => break,
        };
        let Some((&first, payload)) = data.split_first() else {
            continue;
        };
        if protocol.close_signal() && first == CLOSE_SIGNAL {
            match payload {
                [channel] => {
                    if let Some(input) = inputs.get_mut(*channel as usize) {
                        *input = None; // the reader sees EOF
                    }
                    continue;
                }
                _ => {
                    tracing::debug!("websocket: malformed close signal");
                    break;
                }
            }
        }
        let channel = if protocol.base64() {
            first.wrapping_sub(b'0')
        } else {
            first
        } as usize;
        let Some(Some(input)) = inputs.get(channel) else {
            continue;
        };
        let payload = if protocol.base64() {
            match base64::engine::general_purpose::STANDARD.decode(payload) {
                Ok(decoded) => Bytes::from(decoded),
                Err(e) => {
                    tracing::debug!(channel, error = %e, "websocket: bad base64 frame dropped");
                    continue;
                }
            }
        } else {
            data.slice(1..)
        };
        if !payload.is_empty() && input.send(payload).await.is_err() {
            inputs[channel] = None;
        }
    }
}

async fn write_loop<S>(
    mut sink: S,
    mut out: mpsc::Receiver<Out>,
    base64: bool,
    done: oneshot::Sender<()>,
    closed: CancellationToken,
) where
    S: futures::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
{
    while let Some(item) = out.recv().await {
        let msg = match item {
            // No per-channel close towards the client: the session's Close ends them all.
            Out::Data {
                fin: true,
                ref data,
                ..
            } if data.is_empty() => None,
            Out::Data { stream, data, .. } => Some(encode(stream as u8, &data, base64)),
            Out::Control(_) => None,
            Out::Close => {
                let frame = CloseFrame {
                    code: CloseCode::Normal,
                    reason: "".into(),
                };
                let _ = sink.send(Message::Close(Some(frame))).await;
                closed.cancel();
                let _ = done.send(());
                return;
            }
        };
        // Flush when the queue is drained, whether or not this item made a message.
        let mut sent = Ok(());
        if let Some(msg) = msg {
            sent = sink.feed(msg).await;
        }
        if sent.is_ok() && out.is_empty() {
            sent = sink.flush().await;
        }
        if let Err(e) = sent {
            tracing::debug!(error = %e, "websocket: write failed");
            return;
        }
    }
}

fn encode(channel: u8, data: &[u8], base64: bool) -> Message {
    if base64 {
        let mut text = String::with_capacity(1 + data.len() * 4 / 3 + 4);
        text.push((b'0' + channel) as char);
        base64::engine::general_purpose::STANDARD.encode_string(data, &mut text);
        Message::text(text)
    } else {
        let mut frame = BytesMut::with_capacity(1 + data.len());
        frame.put_u8(channel);
        frame.put_slice(data);
        Message::Binary(frame.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_static(v));
        }
        h
    }

    const EXEC: &[&str] = &[
        V5_CHANNEL,
        V4_CHANNEL,
        V4_BASE64_CHANNEL,
        CHANNEL,
        BASE64_CHANNEL,
        "",
    ];

    #[test]
    fn negotiation_takes_the_clients_first_supported_protocol() {
        let h = headers(&[(
            "sec-websocket-protocol",
            "v6.channel.k8s.io, v5.channel.k8s.io, v4.channel.k8s.io",
        )]);
        assert_eq!(negotiate(&h, EXEC).unwrap().name, V5_CHANNEL);
        assert_eq!(negotiate(&HeaderMap::new(), EXEC).unwrap().name, "");
        let h = headers(&[("sec-websocket-protocol", "v5.channel.k8s.io")]);
        assert!(negotiate(&h, &[V4_CHANNEL])
            .unwrap_err()
            .contains("not supported"));
    }

    #[test]
    fn protocol_flags_follow_the_name() {
        let p = |n: &str| WsProtocol { name: n.into() };
        assert!(p(V5_CHANNEL).close_signal() && p(V5_CHANNEL).json_status());
        assert!(!p(V4_CHANNEL).close_signal() && p(V4_CHANNEL).json_status());
        assert!(p(V4_BASE64_CHANNEL).base64() && !p(CHANNEL).json_status());
        assert!(!p("").base64() && !p("").json_status());
    }

    #[test]
    fn upgrade_detection_and_accept_key() {
        let h = headers(&[
            ("upgrade", "WebSocket"),
            ("connection", "keep-alive, Upgrade"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ]);
        assert!(is_websocket_request(&h));
        let resp: Response<()> = accept_response(
            &h,
            &WsProtocol {
                name: V4_CHANNEL.into(),
            },
        )
        .unwrap();
        assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
        // RFC 6455's own example.
        assert_eq!(
            resp.headers()["sec-websocket-accept"],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(resp.headers()["sec-websocket-protocol"], V4_CHANNEL);
        assert!(!is_websocket_request(&headers(&[
            ("upgrade", "SPDY/3.1"),
            ("connection", "Upgrade")
        ])));
    }

    #[test]
    fn frames_carry_the_channel_byte_or_digit() {
        assert_eq!(
            encode(1, b"hi", false),
            Message::Binary(Bytes::from_static(b"\x01hi"))
        );
        assert_eq!(encode(1, b"hi", true), Message::text("1aGk="));
    }
}
