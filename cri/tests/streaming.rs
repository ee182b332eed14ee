//! The streaming server end to end on 127.0.0.1 with a fake backend, driven by real
//! clients: tokio-tungstenite for WebSocket (v5/v4 exec, v4 port-forward) and a SPDY
//! client built from the server's own framing code, speaking what client-go's
//! spdystream speaks.

use std::collections::HashMap;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use gantry_cri::api;
use gantry_cri::streaming::spdy::{Frame, FrameDecoder, FrameEncoder, Headers};
use gantry_cri::CriError;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::codec::{FramedRead, FramedWrite};

const TIMEOUT: Duration = Duration::from_secs(10);

mod common;
use common::{exec_req, server};

/// Named `streaming` so `cargo test -p gantry-cri streaming` runs these too.
mod streaming {
    use super::*;

    // ---------------------------------------------------------------- WebSocket client

    type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

    async fn ws_connect(url: &str, protocol: &str) -> Ws {
        let url = url.replacen("http://", "ws://", 1);
        let mut req = url.into_client_request().unwrap();
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
        let (ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
        assert_eq!(resp.headers()["sec-websocket-protocol"], protocol);
        ws
    }

    /// Reads until the server closes; returns the bytes per channel.
    async fn ws_collect(ws: &mut Ws) -> HashMap<u8, Vec<u8>> {
        let mut got: HashMap<u8, Vec<u8>> = HashMap::new();
        while let Some(msg) = tokio::time::timeout(TIMEOUT, ws.next())
            .await
            .expect("server closes in time")
        {
            match msg.unwrap() {
                Message::Binary(b) if !b.is_empty() => {
                    got.entry(b[0]).or_default().extend_from_slice(&b[1..])
                }
                Message::Close(frame) => {
                    assert_eq!(frame.map(|f| u16::from(f.code)), Some(1000));
                }
                _ => {}
            }
        }
        got
    }

    #[tokio::test]
    async fn websocket_v5_exec_echoes_stdin_and_reports_exit_code() {
        let (server, _stop) = server().await;
        let url = server
            .exec_url(&exec_req("cat", true, true, false))
            .unwrap();
        let mut ws = ws_connect(&url, "v5.channel.k8s.io").await;
        ws.send(Message::binary(b"\x00hello ".to_vec()))
            .await
            .unwrap();
        ws.send(Message::binary(b"\x00world".to_vec()))
            .await
            .unwrap();
        // v5 CLOSE signal for stdin: the process sees EOF.
        ws.send(Message::binary(vec![255, 0])).await.unwrap();
        let got = ws_collect(&mut ws).await;
        assert_eq!(got[&1], b"hello world");
        assert_eq!(got[&2], b"oops");
        let status: serde_json::Value = serde_json::from_slice(&got[&3]).unwrap();
        assert_eq!(status["status"], "Failure");
        assert_eq!(status["reason"], "NonZeroExitCode");
        assert_eq!(status["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(status["details"]["causes"][0]["message"], "3");
    }

    #[tokio::test]
    async fn websocket_v4_tty_exec_gets_terminal_size_and_success() {
        let (server, _stop) = server().await;
        let url = server
            .exec_url(&exec_req("size", false, false, true))
            .unwrap();
        let mut ws = ws_connect(&url, "v4.channel.k8s.io").await;
        ws.send(Message::binary(
            b"\x04{\"Width\":120,\"Height\":40}".to_vec(),
        ))
        .await
        .unwrap();
        let got = ws_collect(&mut ws).await;
        assert_eq!(got[&1], b"120x40");
        assert_eq!(got[&3], br#"{"status":"Success"}"#);
    }

    #[tokio::test]
    async fn websocket_backend_error_is_an_internal_error_status() {
        let (server, _stop) = server().await;
        let url = server
            .exec_url(&exec_req("fail", false, false, false))
            .unwrap();
        let mut ws = ws_connect(&url, "v4.channel.k8s.io").await;
        let got = ws_collect(&mut ws).await;
        let status: serde_json::Value = serde_json::from_slice(&got[&3]).unwrap();
        assert_eq!(status["reason"], "InternalError");
        assert_eq!(status["code"], 500);
        assert!(
            status["message"]
                .as_str()
                .unwrap()
                .contains("no such command"),
            "{status}"
        );
    }

    #[tokio::test]
    async fn websocket_port_forward_prefixes_ports_and_echoes() {
        let (server, _stop) = server().await;
        let req = api::PortForwardRequest {
            pod_sandbox_id: "sb1".into(),
            port: vec![8080, 1],
        };
        let url = server.port_forward_url(&req).unwrap();
        let mut ws = ws_connect(&url, "v4.channel.k8s.io").await;
        ws.send(Message::binary(b"\x00ping".to_vec()))
            .await
            .unwrap();
        // Read until the echo arrives, then close our side so the echo loop ends.
        let mut got: HashMap<u8, Vec<u8>> = HashMap::new();
        while got.get(&0).map_or(0, Vec::len) < 2 + 4 || got.get(&3).map_or(0, Vec::len) <= 2 {
            let msg = tokio::time::timeout(TIMEOUT, ws.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            if let Message::Binary(b) = msg {
                got.entry(b[0]).or_default().extend_from_slice(&b[1..]);
            }
        }
        assert_eq!(got[&0], [&8080u16.to_le_bytes()[..], b"ping"].concat());
        assert_eq!(&got[&1][..], &8080u16.to_le_bytes());
        assert_eq!(&got[&2][..], &1u16.to_le_bytes());
        let err = String::from_utf8_lossy(&got[&3][2..]).into_owned();
        assert!(
            err.contains("error forwarding port 1 to pod sb1")
                && err.contains("connection refused"),
            "{err}"
        );
    }

    // ---------------------------------------------------------------- SPDY client

    struct Spdy {
        rd: FramedRead<tokio::io::ReadHalf<TcpStream>, FrameDecoder>,
        wr: FramedWrite<tokio::io::WriteHalf<TcpStream>, FrameEncoder>,
        next_id: u32,
        /// Frames read while waiting for a SYN_REPLY, handed out by `next` first.
        pending: std::collections::VecDeque<Frame>,
    }

    /// Upgrades like client-go: `Connection: Upgrade`, `Upgrade: SPDY/3.1` and the
    /// protocol versions; returns the response status line, headers and the session.
    async fn spdy_connect(url: &str, versions: &str) -> (String, String, Option<Spdy>) {
        let rest = url.strip_prefix("http://").unwrap();
        let (host, path) = rest.split_at(rest.find('/').unwrap());
        let mut tcp = TcpStream::connect(host).await.unwrap();
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
         X-Stream-Protocol-Version: {versions}\r\nContent-Length: 0\r\n\r\n"
        );
        tcp.write_all(req.as_bytes()).await.unwrap();
        // Read the response head byte by byte so no SPDY bytes are swallowed.
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let b = tcp.read_u8().await.unwrap();
            head.push(b);
        }
        let head = String::from_utf8(head).unwrap();
        let status = head.lines().next().unwrap().to_string();
        if !status.contains(" 101 ") {
            return (status, head, None);
        }
        let (r, w) = tokio::io::split(tcp);
        let spdy = Spdy {
            rd: FramedRead::new(r, FrameDecoder::new()),
            wr: FramedWrite::new(w, FrameEncoder::new()),
            next_id: 1,
            pending: Default::default(),
        };
        (status, head, Some(spdy))
    }

    impl Spdy {
        /// Opens a stream and waits for its SYN_REPLY (as spdystream's CreateStream does).
        async fn open(&mut self, headers: &[(&str, &str)], fin: bool) -> u32 {
            let id = self.next_id;
            self.next_id += 2;
            let headers: Headers = headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect();
            let syn = Frame::SynStream {
                stream_id: id,
                associated_to: 0,
                priority: 0,
                fin,
                unidirectional: false,
                headers,
            };
            self.wr.send(syn).await.unwrap();
            loop {
                let frame = tokio::time::timeout(TIMEOUT, self.rd.next())
                    .await
                    .expect("reply in time");
                match frame.map(Result::unwrap) {
                    Some(Frame::SynReply { stream_id, .. }) if stream_id == id => return id,
                    Some(other) => self.pending.push_back(other),
                    None => panic!("connection closed before SYN_REPLY for {id}"),
                }
            }
        }

        async fn data(&mut self, id: u32, data: &[u8], fin: bool) {
            let frame = Frame::Data {
                stream_id: id,
                fin,
                data: Bytes::copy_from_slice(data),
            };
            self.wr.send(frame).await.unwrap();
        }

        async fn next(&mut self) -> Option<Frame> {
            if let Some(frame) = self.pending.pop_front() {
                return Some(frame);
            }
            tokio::time::timeout(TIMEOUT, self.rd.next())
                .await
                .expect("frame in time")
                .map(Result::unwrap)
        }

        /// Reads until GOAWAY or EOF: data per stream, and which streams got FIN.
        async fn collect(&mut self) -> (HashMap<u32, BytesMut>, Vec<u32>) {
            let (mut data, mut fins) = (HashMap::<u32, BytesMut>::new(), Vec::new());
            while let Some(frame) = self.next().await {
                match frame {
                    Frame::Data {
                        stream_id,
                        fin,
                        data: d,
                    } => {
                        data.entry(stream_id).or_default().extend_from_slice(&d);
                        if fin {
                            fins.push(stream_id);
                        }
                    }
                    Frame::GoAway { .. } => break,
                    other => panic!("unexpected {other:?}"),
                }
            }
            (data, fins)
        }
    }

    #[tokio::test]
    async fn spdy_v4_exec_streams_stdio_and_reports_exit_code_then_finishes_every_stream() {
        let (server, _stop) = server().await;
        let url = server
            .exec_url(&exec_req("cat", true, true, false))
            .unwrap();
        let (status, head, spdy) = spdy_connect(&url, "v5.channel.k8s.io, v4.channel.k8s.io").await;
        assert!(status.contains("101"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("x-stream-protocol-version: v5.channel.k8s.io"),
            "{head}"
        );
        let mut c = spdy.unwrap();
        let error = c.open(&[("streamType", "error")], true).await;
        let stdin = c.open(&[("streamType", "stdin")], false).await;
        let stdout = c.open(&[("streamType", "stdout")], true).await;
        let stderr = c.open(&[("streamType", "stderr")], true).await;
        c.data(stdin, b"over spdy", true).await;
        let (data, fins) = c.collect().await;
        assert_eq!(&data[&stdout][..], b"over spdy");
        assert_eq!(&data[&stderr][..], b"oops");
        let status: serde_json::Value = serde_json::from_slice(&data[&error]).unwrap();
        assert_eq!(status["reason"], "NonZeroExitCode");
        assert_eq!(status["details"]["causes"][0]["message"], "3");
        for id in [error, stdin, stdout, stderr] {
            assert!(fins.contains(&id), "stream {id} finished: {fins:?}");
        }
    }

    #[tokio::test]
    async fn spdy_v2_attach_reports_failure_as_text_and_success_as_nothing() {
        let (server, _stop) = server().await;
        let req = api::AttachRequest {
            container_id: "c1".into(),
            stdin: true,
            tty: false,
            stdout: true,
            stderr: false,
        };
        let url = server.attach_url(&req).unwrap();
        let (_, _, spdy) = spdy_connect(&url, "v2.channel.k8s.io").await;
        let mut c = spdy.unwrap();
        let error = c.open(&[("streamtype", "error")], true).await;
        let stdin = c.open(&[("streamtype", "stdin")], false).await;
        let stdout = c.open(&[("streamtype", "stdout")], true).await;
        c.data(stdin, b"attached", true).await;
        let (data, _) = c.collect().await;
        assert_eq!(&data[&stdout][..], b"attached");
        assert!(data.get(&error).is_none_or(|d| d.is_empty()));
    }

    #[tokio::test]
    async fn spdy_client_pings_are_answered() {
        let (server, _stop) = server().await;
        let req = api::PortForwardRequest {
            pod_sandbox_id: "sb1".into(),
            port: vec![],
        };
        let url = server.port_forward_url(&req).unwrap();
        let (_, _, spdy) = spdy_connect(&url, "portforward.k8s.io").await;
        let mut c = spdy.unwrap();
        c.wr.send(Frame::Ping { id: 1 }).await.unwrap();
        assert_eq!(c.next().await, Some(Frame::Ping { id: 1 }));
    }

    #[tokio::test]
    async fn spdy_port_forward_pairs_streams_by_request_id() {
        let (server, _stop) = server().await;
        let req = api::PortForwardRequest {
            pod_sandbox_id: "sb1".into(),
            port: vec![8080],
        };
        let url = server.port_forward_url(&req).unwrap();
        let (_, _, spdy) = spdy_connect(&url, "portforward.k8s.io").await;
        let mut c = spdy.unwrap();

        // A good connection: echo, and a clean end (FIN on data and error, nothing written).
        let err0 = c
            .open(
                &[
                    ("streamtype", "error"),
                    ("port", "8080"),
                    ("requestid", "0"),
                ],
                true,
            )
            .await;
        let data0 = c
            .open(
                &[("streamtype", "data"), ("port", "8080"), ("requestid", "0")],
                false,
            )
            .await;
        c.data(data0, b"ping", true).await;
        // A refused one: the error stream says why, as upstream's JSON.
        let err1 = c
            .open(
                &[("streamtype", "error"), ("port", "1"), ("requestid", "1")],
                true,
            )
            .await;
        let _data1 = c
            .open(
                &[("streamtype", "data"), ("port", "1"), ("requestid", "1")],
                false,
            )
            .await;

        let (mut data, mut finished) = (HashMap::<u32, BytesMut>::new(), Vec::new());
        while !(finished.contains(&data0) && finished.contains(&err0) && finished.contains(&err1)) {
            match c.next().await.expect("connection open") {
                Frame::Data {
                    stream_id,
                    fin,
                    data: d,
                } => {
                    data.entry(stream_id).or_default().extend_from_slice(&d);
                    if fin {
                        finished.push(stream_id);
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(&data[&data0][..], b"ping");
        assert!(data.get(&err0).is_none_or(|d| d.is_empty()));
        let err: serde_json::Value = serde_json::from_slice(&data[&err1]).unwrap();
        assert_eq!(err["closeConnection"], true);
        let msg = err["message"].as_str().unwrap();
        assert!(
            msg.contains("error forwarding port 1 to pod sb1")
                && msg.contains("connection refused"),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn spdy_stream_without_port_header_is_reset() {
        let (server, _stop) = server().await;
        let req = api::PortForwardRequest {
            pod_sandbox_id: "sb1".into(),
            port: vec![],
        };
        let url = server.port_forward_url(&req).unwrap();
        let (_, _, spdy) = spdy_connect(&url, "portforward.k8s.io").await;
        let mut c = spdy.unwrap();
        let id = c.open(&[("streamtype", "data")], false).await;
        assert!(
            matches!(c.next().await, Some(Frame::RstStream { stream_id, .. }) if stream_id == id)
        );
    }

    // ---------------------------------------------------------------- HTTP behaviour

    async fn http_status(url: &str, extra_headers: &str) -> (u16, String) {
        let rest = url.strip_prefix("http://").unwrap();
        let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let tcp = TcpStream::connect(host).await.unwrap();
        let (r, mut w) = tokio::io::split(tcp);
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{extra_headers}\r\n"
        );
        w.write_all(req.as_bytes()).await.unwrap();
        let mut lines = BufReader::new(r).lines();
        let status = lines.next_line().await.unwrap().unwrap();
        let mut rest = String::new();
        while let Ok(Some(line)) = lines.next_line().await {
            rest.push_str(&line);
            rest.push('\n');
        }
        (status.split(' ').nth(1).unwrap().parse().unwrap(), rest)
    }

    #[tokio::test]
    async fn tokens_are_single_use_and_unknown_ones_are_404() {
        let (server, _stop) = server().await;
        let url = server
            .exec_url(&exec_req("cat", true, false, false))
            .unwrap();
        assert!(
            url.starts_with(&format!("http://{}/exec/", server.addr())),
            "{url}"
        );
        // A plain GET (no upgrade) uses up the token: 400 for the missing handshake...
        let (code, body) = http_status(&url, "").await;
        assert_eq!(code, 400, "{body}");
        // ...and the URL is dead afterwards.
        assert_eq!(http_status(&url, "").await.0, 404);
        assert_eq!(
            http_status(&format!("http://{}/exec/nosuchtoken", server.addr()), "")
                .await
                .0,
            404
        );
        // A token is only good for its own endpoint.
        let url = server
            .exec_url(&exec_req("cat", true, false, false))
            .unwrap();
        assert_eq!(
            http_status(&url.replace("/exec/", "/attach/"), "").await.0,
            404
        );
    }

    #[tokio::test]
    async fn unsupported_protocol_version_is_forbidden() {
        let (server, _stop) = server().await;
        let url = server
            .exec_url(&exec_req("cat", true, false, false))
            .unwrap();
        let (status, head, spdy) = spdy_connect(&url, "v9.channel.k8s.io").await;
        assert!(spdy.is_none());
        assert!(status.contains(" 403 "), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("x-accepted-stream-protocol-versions: v4.channel.k8s.io"),
            "{head}"
        );
    }

    #[tokio::test]
    async fn url_requests_are_validated_like_upstream() {
        let (server, _stop) = server().await;
        let bad = [
            server.exec_url(&api::ExecRequest {
                container_id: String::new(),
                stdout: true,
                ..Default::default()
            }),
            server.exec_url(&exec_req("sh", false, true, true)),
            server.exec_url(&api::ExecRequest {
                container_id: "c".into(),
                ..Default::default()
            }),
            server.attach_url(&api::AttachRequest {
                container_id: "c".into(),
                tty: true,
                stderr: true,
                ..Default::default()
            }),
            server.port_forward_url(&api::PortForwardRequest {
                pod_sandbox_id: String::new(),
                port: vec![80],
            }),
            server.port_forward_url(&api::PortForwardRequest {
                pod_sandbox_id: "sb".into(),
                port: vec![70000],
            }),
        ];
        for result in bad {
            assert!(
                matches!(result, Err(CriError::InvalidArgument(_))),
                "{result:?}"
            );
        }
    }

    #[tokio::test]
    async fn shutdown_stops_serving() {
        let (server, stop) = server().await;
        let addr = server.addr();
        stop.send(()).unwrap();
        let refused = tokio::time::timeout(TIMEOUT, async {
            loop {
                if TcpStream::connect(addr).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(refused.is_ok(), "listener still accepting after shutdown");
    }
}
