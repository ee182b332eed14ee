//! The proxy between a client's exec/attach/port-forward upgrade and the runtime's
//! streaming server, as upstream's UpgradeAwareHandler (upgradeRequired) does it for
//! the kubelet: open a connection to the URL the CRI returned, send the client's
//! request line and upgrade headers there, relay the answer, and once both sides have
//! switched protocols copy bytes both ways until either side ends. It never looks
//! inside the stream, so SPDY/3.1 and every WebSocket channel protocol pass alike.

use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::reply::{full, ApiError, Body};

const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the streaming server may take to answer the upgrade.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_HEAD: usize = 64 * 1024;
/// A refusal's body is relayed up to this size.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// The request headers that carry the upgrade negotiation to the streaming server.
const FORWARDED: &[&str] = &[
    "upgrade",
    "connection",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "sec-websocket-extensions",
    "x-stream-protocol-version",
    "user-agent",
];

/// Whether the request asks to switch protocols (Connection: upgrade and an Upgrade
/// header), as upstream's httpstream.IsUpgradeRequest checks.
pub fn is_upgrade_request(headers: &HeaderMap) -> bool {
    let connection_upgrade = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    connection_upgrade && headers.contains_key(http::header::UPGRADE)
}

/// Proxies `req` to `location` (an http:// URL from the runtime). Answers what the
/// streaming server answered; on 101 the byte copy runs in a task that `stop` ends.
pub async fn proxy(
    mut req: Request<Incoming>,
    location: &str,
    stop: CancellationToken,
) -> Result<Response<Body>, ApiError> {
    if !is_upgrade_request(req.headers()) {
        return Err(ApiError::BadRequest("Upgrade request required".into()));
    }
    let (authority, path) = parse_location(location)?;
    let mut backend = tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(&authority))
        .await
        .map_err(|_| ApiError::Internal(format!("error dialing backend {authority}: timed out")))?
        .map_err(|e| ApiError::Internal(format!("error dialing backend {authority}: {e}")))?;
    let head = request_head(req.method().as_str(), &path, &authority, req.headers());
    backend.write_all(&head).await.map_err(|e| {
        ApiError::Internal(format!("error sending the request to the backend: {e}"))
    })?;
    let answer = tokio::time::timeout(ANSWER_TIMEOUT, read_head(&mut backend))
        .await
        .map_err(|_| {
            ApiError::Internal("the streaming server did not answer the upgrade".into())
        })??;

    let mut resp = Response::new(full(Bytes::new()));
    *resp.status_mut() = answer.status;
    for (name, value) in &answer.headers {
        if name != CONTENT_LENGTH && name != TRANSFER_ENCODING {
            resp.headers_mut().append(name.clone(), value.clone());
        }
    }
    if answer.status != StatusCode::SWITCHING_PROTOCOLS {
        // A refusal (bad token, unsupported protocol): relay it as it is.
        let body = read_error_body(&mut backend, answer.rest, &answer.headers).await;
        *resp.body_mut() = full(body);
        return Ok(resp);
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let client = match on_upgrade.await {
            Ok(upgraded) => TokioIo::new(upgraded),
            Err(e) => {
                tracing::debug!(error = %e, "the client did not complete the upgrade");
                return;
            }
        };
        tokio::select! {
            _ = splice(client, backend, answer.rest) => {}
            _ = stop.cancelled() => tracing::debug!("server stopping: closing a proxied stream"),
        }
    });
    Ok(resp)
}

/// Copies bytes both ways until either direction ends, then closes both sides (as
/// upstream's handler does once one of its two copy goroutines returns).
async fn splice<C, B>(client: C, backend: B, early: Vec<u8>)
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut br, mut bw) = tokio::io::split(backend);
    // Bytes the streaming server sent right behind its 101 belong to the client.
    if !early.is_empty() && cw.write_all(&early).await.is_err() {
        return;
    }
    tokio::select! {
        r = tokio::io::copy(&mut cr, &mut bw) => {
            tracing::debug!(result = ?r, "client → runtime stream ended");
        }
        r = tokio::io::copy(&mut br, &mut cw) => {
            tracing::debug!(result = ?r, "runtime → client stream ended");
        }
    }
    let _ = cw.shutdown().await;
    let _ = bw.shutdown().await;
}

/// host:port and path?query of an http:// streaming URL.
fn parse_location(location: &str) -> Result<(String, String), ApiError> {
    let bad = |why: &str| {
        ApiError::Internal(format!(
            "streaming URL {location:?} from the runtime: {why}"
        ))
    };
    let uri: Uri = location.parse().map_err(|_| bad("not a URL"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => return Err(bad(&format!("scheme {other:?} is not supported"))),
        None => return Err(bad("not an absolute URL")),
    }
    let host = uri.host().ok_or_else(|| bad("no host"))?;
    let port = uri.port_u16().unwrap_or(80);
    // Bracket IPv6 literals again, as the authority had them.
    let authority = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let path = uri
        .path_and_query()
        .map_or_else(|| "/".to_string(), |p| p.as_str().to_string());
    Ok((authority, path))
}

/// The HTTP/1.1 request head sent to the streaming server.
fn request_head(method: &str, path: &str, authority: &str, headers: &HeaderMap) -> Vec<u8> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {authority}\r\n").into_bytes();
    for name in FORWARDED {
        for value in headers.get_all(*name) {
            head.extend_from_slice(name.as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
    }
    head.extend_from_slice(b"\r\n");
    head
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    /// Bytes read past the head.
    rest: Vec<u8>,
}

async fn read_head<R: AsyncRead + Unpin>(r: &mut R) -> Result<Answer, ApiError> {
    let bad =
        |why: String| ApiError::Internal(format!("reading the streaming server's answer: {why}"));
    let mut buf = Vec::with_capacity(1024);
    loop {
        let mut chunk = [0u8; 4096];
        let n = r.read(&mut chunk).await.map_err(|e| bad(e.to_string()))?;
        if n == 0 {
            return Err(bad("connection closed before the response head".into()));
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut slots = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Response::new(&mut slots);
        match parsed.parse(&buf).map_err(|e| bad(e.to_string()))? {
            httparse::Status::Partial if buf.len() > MAX_HEAD => {
                return Err(bad("response head too large".into()));
            }
            httparse::Status::Partial => continue,
            httparse::Status::Complete(len) => {
                let status = parsed
                    .code
                    .and_then(|c| StatusCode::from_u16(c).ok())
                    .ok_or_else(|| bad("no status code".into()))?;
                let mut headers = HeaderMap::new();
                for h in parsed.headers.iter() {
                    if let (Ok(n), Ok(v)) = (
                        HeaderName::from_bytes(h.name.as_bytes()),
                        HeaderValue::from_bytes(h.value),
                    ) {
                        headers.append(n, v);
                    }
                }
                let rest = buf[len..].to_vec();
                return Ok(Answer {
                    status,
                    headers,
                    rest,
                });
            }
        }
    }
}

/// The body of a refusal: Content-Length bytes, or what arrives until EOF, bounded in
/// size and time.
async fn read_error_body<R: AsyncRead + Unpin>(
    r: &mut R,
    mut body: Vec<u8>,
    headers: &HeaderMap,
) -> Vec<u8> {
    let want = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(MAX_ERROR_BODY)
        .min(MAX_ERROR_BODY);
    let read = async {
        let mut chunk = [0u8; 4096];
        while body.len() < want {
            match r.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => body.extend_from_slice(&chunk[..n]),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
    body.truncate(want);
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_give_authority_and_path() {
        assert_eq!(
            parse_location("http://127.0.0.1:4321/exec/abc?x=1").unwrap(),
            ("127.0.0.1:4321".to_string(), "/exec/abc?x=1".to_string())
        );
        assert_eq!(
            parse_location("http://[::1]:80/attach/t").unwrap(),
            ("[::1]:80".to_string(), "/attach/t".to_string())
        );
        assert!(parse_location("https://h:1/x").is_err());
        assert!(parse_location("/exec/abc").is_err());
    }

    #[test]
    fn only_upgrade_headers_are_forwarded() {
        let mut h = HeaderMap::new();
        h.insert("connection", "Upgrade".parse().unwrap());
        h.insert("upgrade", "SPDY/3.1".parse().unwrap());
        h.append(
            "x-stream-protocol-version",
            "v4.channel.k8s.io".parse().unwrap(),
        );
        h.append(
            "x-stream-protocol-version",
            "v3.channel.k8s.io".parse().unwrap(),
        );
        h.insert("authorization", "Bearer secret".parse().unwrap());
        assert!(is_upgrade_request(&h));
        let head = String::from_utf8(request_head("POST", "/exec/t", "127.0.0.1:9", &h)).unwrap();
        assert!(
            head.starts_with("POST /exec/t HTTP/1.1\r\nHost: 127.0.0.1:9\r\n"),
            "{head}"
        );
        assert!(head.contains("x-stream-protocol-version: v4.channel.k8s.io\r\n"));
        assert!(head.contains("x-stream-protocol-version: v3.channel.k8s.io\r\n"));
        assert!(
            !head.contains("secret"),
            "credentials stay with the kubelet"
        );
        assert!(head.ends_with("\r\n\r\n"));
    }

    #[test]
    fn a_request_without_connection_upgrade_is_not_an_upgrade() {
        let mut h = HeaderMap::new();
        h.insert("upgrade", "websocket".parse().unwrap());
        assert!(!is_upgrade_request(&h));
        h.insert("connection", "keep-alive, Upgrade".parse().unwrap());
        assert!(is_upgrade_request(&h));
    }

    #[tokio::test]
    async fn the_answer_head_is_parsed_and_early_bytes_kept() {
        let raw = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x01a";
        let mut r = &raw[..];
        let a = read_head(&mut r).await.unwrap();
        assert_eq!(a.status, StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(a.headers["upgrade"], "websocket");
        assert_eq!(a.rest, b"\x81\x01a");
    }
}
