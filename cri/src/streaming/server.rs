//! The HTTP side of the streaming server: hands out URLs for validated CRI requests,
//! and routes `GET`/`POST /{exec,attach,portforward}/<token>` to a SPDY or WebSocket
//! session after the upgrade handshake. Unknown, used or expired tokens get 404, as
//! upstream.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::channel::Tasks;
use super::remotecommand::{self, Options, Target};
use super::spdy_session::SpdySession;
use super::tokens::{PendingRequest, TokenCache};
use super::websocket::{self, WsProtocol};
use super::ws_tunnel::{WsTunnel, SPDY_TUNNEL_PORT_FORWARD};
use super::{portforward, StreamBackend};
use crate::api;
use crate::error::CriError;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

const HEADER_PROTOCOL_VERSION: &str = "x-stream-protocol-version";
const HEADER_ACCEPTED_PROTOCOL_VERSIONS: &str = "x-accepted-stream-protocol-versions";

type Body = Full<Bytes>;
/// A handshake refused with this response (boxed: responses are large).
type Refused = Box<Response<Body>>;

/// The streaming server: its address and the pending requests' tokens.
pub struct StreamingServer {
    addr: SocketAddr,
    base_url: String,
    cache: Arc<TokenCache>,
}

struct Shared {
    cache: Arc<TokenCache>,
    backend: Arc<dyn StreamBackend>,
    tasks: Tasks,
}

impl StreamingServer {
    /// Binds `addr` (port 0 picks a free port) and serves until `shutdown` resolves;
    /// then every connection and session is dropped, as upstream's `Stop`.
    pub async fn start(
        addr: SocketAddr,
        backend: Arc<dyn StreamBackend>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<Arc<Self>, CriError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| CriError::Unavailable(format!("streaming server: bind {addr}: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| CriError::Internal(format!("streaming server: local address: {e}")))?;
        let cache = Arc::new(TokenCache::new());
        let shared = Arc::new(Shared {
            cache: cache.clone(),
            backend,
            tasks: Tasks::new(),
        });
        shared.tasks.spawn(accept_loop(listener, shared.clone()));
        let tasks = shared.tasks.clone();
        // This task is owned by `shutdown`: it lives exactly until the server stops.
        tokio::spawn(async move {
            shutdown.await;
            tasks.shutdown().await;
            tracing::info!(%addr, "streaming server stopped");
        });
        tracing::info!(%addr, "streaming server listening");
        Ok(Arc::new(Self {
            addr,
            base_url: format!("http://{addr}"),
            cache,
        }))
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Validates an Exec request and returns the URL the client streams it from.
    pub fn exec_url(&self, req: &api::ExecRequest) -> Result<String, CriError> {
        remotecommand::validate_exec(req)?;
        self.url(PendingRequest::Exec(req.clone()))
    }

    /// Validates an Attach request and returns the URL the client streams it from.
    pub fn attach_url(&self, req: &api::AttachRequest) -> Result<String, CriError> {
        remotecommand::validate_attach(req)?;
        self.url(PendingRequest::Attach(req.clone()))
    }

    /// Validates a PortForward request and returns the URL the client streams it from.
    pub fn port_forward_url(&self, req: &api::PortForwardRequest) -> Result<String, CriError> {
        if req.pod_sandbox_id.is_empty() {
            return Err(CriError::InvalidArgument(
                "port forward: missing required pod_sandbox_id".into(),
            ));
        }
        portforward::ports_from_request(&req.port).map_err(|e| {
            CriError::InvalidArgument(format!(
                "port forward to sandbox {}: {e}",
                req.pod_sandbox_id
            ))
        })?;
        self.url(PendingRequest::PortForward(req.clone()))
    }

    fn url(&self, request: PendingRequest) -> Result<String, CriError> {
        let endpoint = request.endpoint();
        let token = self.cache.insert(request)?;
        Ok(format!("{}/{endpoint}/{token}", self.base_url))
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "streaming server: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let conn_shared = shared.clone();
        shared.tasks.spawn(async move {
            let service = service_fn(move |req| {
                let shared = conn_shared.clone();
                async move { Ok::<_, Infallible>(handle(&shared, req)) }
            });
            let conn = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "streaming server: connection ended");
            }
        });
    }
}

fn text(status: StatusCode, msg: impl Into<String>) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(msg.into())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn not_found() -> Response<Body> {
    text(StatusCode::NOT_FOUND, "404 page not found\n")
}

/// Routes one request. The token is consumed before anything else is checked, so a
/// failed upgrade cannot be retried with the same URL (as upstream).
fn handle(shared: &Shared, mut req: Request<Incoming>) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::POST {
        return text(StatusCode::METHOD_NOT_ALLOWED, "405: Method Not Allowed\n");
    }
    let mut segments = req.uri().path().trim_start_matches('/').split('/');
    let (Some(endpoint), Some(token), None) = (segments.next(), segments.next(), segments.next())
    else {
        return not_found();
    };
    let Some(pending) = shared.cache.consume(token) else {
        return not_found();
    };
    if pending.endpoint() != endpoint {
        return not_found();
    }
    let websocket = websocket::is_websocket_request(req.headers());
    let on_upgrade = hyper::upgrade::on(&mut req);
    let backend = shared.backend.clone();
    let tasks = shared.tasks.clone();
    let headers = req.headers();

    let (opts, target) = match pending {
        PendingRequest::Exec(r) => (
            Options {
                stdin: r.stdin,
                stdout: r.stdout,
                stderr: r.stderr,
                tty: r.tty,
            },
            Target::Exec {
                container_id: r.container_id,
                cmd: r.cmd,
            },
        ),
        PendingRequest::Attach(r) => (
            Options {
                stdin: r.stdin,
                stdout: r.stdout,
                stderr: r.stderr,
                tty: r.tty,
            },
            Target::Attach {
                container_id: r.container_id,
            },
        ),
        PendingRequest::PortForward(r) => {
            return port_forward(
                headers,
                req.uri().query(),
                r,
                on_upgrade,
                backend,
                tasks,
                websocket,
            );
        }
    };

    if websocket {
        let (resp, protocol) = match websocket_accept(headers, remotecommand::WEBSOCKET_PROTOCOLS) {
            Ok(accepted) => accepted,
            Err(refused) => return *refused,
        };
        serve_upgraded(on_upgrade, &tasks, "websocket", move |io, t| {
            remotecommand::serve_websocket(io, protocol, opts, target, backend, t)
        });
        return resp;
    }

    let (resp, protocol) = match spdy_accept(headers, remotecommand::SPDY_PROTOCOLS) {
        Ok(accepted) => accepted,
        Err(refused) => return *refused,
    };
    serve_upgraded(on_upgrade, &tasks, "SPDY", move |io, t| {
        let session = SpdySession::start(io, &t);
        remotecommand::serve_spdy(session, protocol, opts, target, backend, t)
    });
    resp
}

/// Once the client's connection is upgraded, serves it with `serve` as a server task
/// (dropped at shutdown); a failed upgrade is only logged, the client already left.
fn serve_upgraded<F, Fut>(
    on_upgrade: hyper::upgrade::OnUpgrade,
    tasks: &Tasks,
    transport: &'static str,
    serve: F,
) where
    F: FnOnce(TokioIo<hyper::upgrade::Upgraded>, Tasks) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let t = tasks.clone();
    tasks.spawn(async move {
        match on_upgrade.await {
            Ok(io) => serve(TokioIo::new(io), t).await,
            Err(e) => tracing::debug!(error = %e, "streaming: {transport} upgrade failed"),
        }
    });
}

fn port_forward(
    headers: &HeaderMap,
    query: Option<&str>,
    req: api::PortForwardRequest,
    on_upgrade: hyper::upgrade::OnUpgrade,
    backend: Arc<dyn StreamBackend>,
    tasks: Tasks,
    websocket: bool,
) -> Response<Body> {
    let sandbox_id = req.pod_sandbox_id;
    if websocket {
        let (resp, protocol) = match websocket_accept(headers, portforward::WEBSOCKET_PROTOCOLS) {
            Ok(accepted) => accepted,
            Err(refused) => return *refused,
        };
        if protocol.name == SPDY_TUNNEL_PORT_FORWARD {
            serve_upgraded(on_upgrade, &tasks, "websocket", move |io, t| async move {
                let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
                let session = SpdySession::start(WsTunnel::new(ws), &t);
                portforward::serve_spdy(session, sandbox_id, backend, t).await;
            });
            return resp;
        }
        // The ports come from the URL (as kubectl's WebSocket client sends them) or,
        // failing that, from the CRI request.
        let ports = match portforward::ports_from_query(query) {
            Ok(Some(ports)) => ports,
            Ok(None) => match portforward::ports_from_request(&req.port) {
                Ok(ports) if !ports.is_empty() => ports,
                Ok(_) => {
                    return text(
                        StatusCode::BAD_REQUEST,
                        "query parameter \"port\" is required",
                    )
                }
                Err(e) => return text(StatusCode::BAD_REQUEST, e),
            },
            Err(e) => return text(StatusCode::BAD_REQUEST, e),
        };
        serve_upgraded(on_upgrade, &tasks, "websocket", move |io, t| {
            portforward::serve_websocket(io, protocol, ports, sandbox_id, backend, t)
        });
        return resp;
    }
    let (resp, _protocol) = match spdy_accept(headers, portforward::SPDY_PROTOCOLS) {
        Ok(accepted) => accepted,
        Err(refused) => return *refused,
    };
    serve_upgraded(on_upgrade, &tasks, "SPDY", move |io, t| {
        let session = SpdySession::start(io, &t);
        portforward::serve_spdy(session, sandbox_id, backend, t)
    });
    resp
}

/// Negotiates a WebSocket subprotocol and builds the 101 response.
fn websocket_accept(
    headers: &HeaderMap,
    supported: &[&str],
) -> Result<(Response<Body>, WsProtocol), Refused> {
    let protocol = websocket::negotiate(headers, supported).map_err(|e| {
        Box::new(text(
            StatusCode::FORBIDDEN,
            format!("unable to upgrade: {e}"),
        ))
    })?;
    let resp = websocket::accept_response(headers, &protocol).map_err(|e| {
        Box::new(text(
            StatusCode::BAD_REQUEST,
            format!("unable to upgrade: {e}"),
        ))
    })?;
    Ok((resp, protocol))
}

/// Negotiates the stream protocol (upstream `httpstream.Handshake`) and checks the SPDY
/// upgrade headers (upstream `UpgradeResponse`), building the 101 response.
fn spdy_accept(
    headers: &HeaderMap,
    supported: &'static [&'static str],
) -> Result<(Response<Body>, &'static str), Refused> {
    let offered: Vec<&str> = headers
        .get_all(HEADER_PROTOCOL_VERSION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    if offered.is_empty() {
        let msg = "unable to upgrade: header X-Stream-Protocol-Version is missing or has no valid protocols";
        return Err(Box::new(text(StatusCode::BAD_REQUEST, msg)));
    }
    let Some(protocol) = offered
        .iter()
        .find_map(|o| supported.iter().find(|s| *s == o))
    else {
        let mut resp = text(
            StatusCode::FORBIDDEN,
            format!(
                "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server accepts {supported:?}"
            ),
        );
        for s in supported {
            resp.headers_mut().append(
                HEADER_ACCEPTED_PROTOCOL_VERSIONS,
                HeaderValue::from_static(s),
            );
        }
        return Err(Box::new(resp));
    };
    let upgrade_spdy = headers
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("spdy/3.1"));
    if !upgrade_spdy || !websocket::connection_has_upgrade(headers) {
        let msg = "unable to upgrade: missing upgrade headers in request";
        return Err(Box::new(text(StatusCode::BAD_REQUEST, msg)));
    }
    let mut resp = Response::new(Body::default());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(
        http::header::CONNECTION,
        HeaderValue::from_static("Upgrade"),
    );
    h.insert(http::header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    h.insert(HEADER_PROTOCOL_VERSION, HeaderValue::from_static(protocol));
    Ok((resp, protocol))
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

    #[test]
    fn spdy_handshake_negotiates_the_clients_first_supported_version() {
        let h = headers(&[
            ("connection", "Upgrade"),
            ("upgrade", "SPDY/3.1"),
            ("x-stream-protocol-version", "v6.channel.k8s.io"),
            (
                "x-stream-protocol-version",
                "v4.channel.k8s.io, v3.channel.k8s.io",
            ),
        ]);
        let (resp, protocol) = spdy_accept(&h, remotecommand::SPDY_PROTOCOLS).unwrap();
        assert_eq!(protocol, "v4.channel.k8s.io");
        assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(
            resp.headers()["x-stream-protocol-version"],
            "v4.channel.k8s.io"
        );
        assert_eq!(resp.headers()["upgrade"], "SPDY/3.1");
    }

    #[test]
    fn spdy_handshake_refusals_match_upstream_codes() {
        let no_version = headers(&[("connection", "Upgrade"), ("upgrade", "SPDY/3.1")]);
        assert_eq!(
            spdy_accept(&no_version, remotecommand::SPDY_PROTOCOLS)
                .unwrap_err()
                .status(),
            400
        );
        let unknown = headers(&[
            ("connection", "Upgrade"),
            ("upgrade", "SPDY/3.1"),
            ("x-stream-protocol-version", "v9.channel.k8s.io"),
        ]);
        let resp = spdy_accept(&unknown, remotecommand::SPDY_PROTOCOLS).unwrap_err();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            resp.headers()
                .get_all(HEADER_ACCEPTED_PROTOCOL_VERSIONS)
                .iter()
                .count(),
            5
        );
        let not_upgrade = headers(&[("x-stream-protocol-version", "portforward.k8s.io")]);
        assert_eq!(
            spdy_accept(&not_upgrade, portforward::SPDY_PROTOCOLS)
                .unwrap_err()
                .status(),
            400
        );
    }
}
