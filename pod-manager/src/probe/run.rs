//! One probe attempt, as upstream's prober runs it: exec through the CRI's ExecSync,
//! an HTTP GET (status 200–399 passes), a TCP connect, or a gRPC health check
//! (SERVING passes), each bounded by the probe's timeoutSeconds. The message of a
//! failure is what the Unhealthy event shows after "Liveness probe failed: ".

use std::net::SocketAddr;
use std::time::Duration;

use gantry_cri::api;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{Container, HTTPGetAction, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::Cri;

/// What upstream's probes and HTTP lifecycle hooks announce as their User-Agent.
pub(crate) const PROBE_AGENT: &str = "kube-probe/1.37";
pub(crate) const LIFECYCLE_AGENT: &str = "kube-lifecycle/1.37";
/// Upstream reads at most 10 KiB of a probe's HTTP answer for its message.
const MAX_BODY: usize = 10 * 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// The check ran and said no.
    Failure(String),
    /// The check could not run (upstream reports "probe errored" and counts it as a
    /// failure).
    Error(String),
}

/// Where a probe of a container is sent.
#[derive(Clone, Debug)]
pub struct Target {
    pub container_id: String,
    /// The pod's IP (the node's for a hostNetwork pod).
    pub pod_ip: String,
}

/// Runs `probe` once against `container`.
pub async fn run(cri: &Cri, probe: &Probe, container: &Container, target: &Target) -> Outcome {
    let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
    if let Some(exec) = &probe.exec {
        let cmd = exec.command.clone().unwrap_or_default();
        return run_exec(cri, &target.container_id, cmd, timeout).await;
    }
    if let Some(http) = &probe.http_get {
        let port = match resolve_port(&http.port, container) {
            Ok(p) => p,
            Err(e) => return Outcome::Error(e),
        };
        let host = http
            .host
            .clone()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| target.pod_ip.clone());
        let scheme = match Scheme::of(http) {
            Ok(s) => s,
            Err(e) => return Outcome::Error(e),
        };
        let (path, headers) = path_and_headers(http);
        return run_http(scheme, &host, port, &path, &headers, timeout).await;
    }
    if let Some(tcp) = &probe.tcp_socket {
        let port = match resolve_port(&tcp.port, container) {
            Ok(p) => p,
            Err(e) => return Outcome::Error(e),
        };
        let host = tcp
            .host
            .clone()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| target.pod_ip.clone());
        return run_tcp(&host, port, timeout).await;
    }
    if let Some(grpc) = &probe.grpc {
        let Ok(port) = u16::try_from(grpc.port) else {
            return Outcome::Error(format!("invalid port number: {}", grpc.port));
        };
        return run_grpc(
            &target.pod_ip,
            port,
            grpc.service.clone().unwrap_or_default(),
            timeout,
        )
        .await;
    }
    Outcome::Error("missing probe handler".to_string())
}

/// What an ExecSync call gave.
pub(crate) enum Exec {
    Exited {
        code: i32,
        stdout: Vec<u8>,
        stderr: Vec<u8>,
    },
    TimedOut,
    /// The runtime could not run it (upstream: "probe errored").
    Failed(String),
}

/// Runs `cmd` in container `id` through the CRI's ExecSync, bounded by `timeout`.
pub(crate) async fn exec_sync(cri: &Cri, id: &str, cmd: &[String], timeout: Duration) -> Exec {
    let request = api::ExecSyncRequest {
        container_id: id.to_string(),
        cmd: cmd.to_vec(),
        timeout: timeout.as_secs() as i64,
    };
    // The runtime enforces the timeout; the margin only bounds a runtime that hangs.
    let answer = tokio::time::timeout(
        timeout + Duration::from_secs(5),
        cri.runtime.clone().exec_sync(request),
    )
    .await;
    match answer {
        Err(_) => Exec::TimedOut,
        Ok(Err(status)) if status.code() == tonic::Code::DeadlineExceeded => Exec::TimedOut,
        Ok(Err(status)) => Exec::Failed(status.message().to_string()),
        Ok(Ok(r)) => {
            let r = r.into_inner();
            Exec::Exited {
                code: r.exit_code,
                stdout: r.stdout,
                stderr: r.stderr,
            }
        }
    }
}

/// A command as Go's %q prints a []string: `["sh" "-c" "exit 1"]`, the way upstream's
/// messages name commands.
pub(crate) fn go_quoted(cmd: &[String]) -> String {
    let parts: Vec<String> = cmd.iter().map(|a| format!("{a:?}")).collect();
    format!("[{}]", parts.join(" "))
}

pub(crate) async fn run_exec(cri: &Cri, id: &str, cmd: Vec<String>, timeout: Duration) -> Outcome {
    match exec_sync(cri, id, &cmd, timeout).await {
        // upstream: exec.NewTimeoutError(fmt.Errorf("command %q timed out", cmd), …)
        Exec::TimedOut => Outcome::Failure(format!("command {} timed out", go_quoted(&cmd))),
        Exec::Failed(e) => Outcome::Error(e),
        Exec::Exited { code: 0, .. } => Outcome::Success,
        Exec::Exited { stdout, stderr, .. } => {
            let mut out = String::from_utf8_lossy(&stdout).into_owned();
            out.push_str(&String::from_utf8_lossy(&stderr));
            Outcome::Failure(out)
        }
    }
}

async fn connect(
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<tokio::net::TcpStream, String> {
    let addr = format_addr(host, port);
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&addr)).await {
        Err(_) => Err(format!("dial tcp {addr}: i/o timeout")),
        Ok(Err(e)) => Err(format!(
            "dial tcp {addr}: connect: {}",
            lower_first(&e.to_string())
        )),
        Ok(Ok(s)) => Ok(s),
    }
}

async fn run_tcp(host: &str, port: u16, timeout: Duration) -> Outcome {
    match connect(host, port, timeout).await {
        Ok(_) => Outcome::Success,
        Err(e) => Outcome::Failure(e),
    }
}

/// The scheme of an httpGet action (upstream accepts HTTP and HTTPS, in any case).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub(crate) fn of(http: &HTTPGetAction) -> Result<Scheme, String> {
        match http.scheme.as_deref().unwrap_or("HTTP") {
            s if s.eq_ignore_ascii_case("http") => Ok(Scheme::Http),
            s if s.eq_ignore_ascii_case("https") => Ok(Scheme::Https),
            other => Err(format!("unsupported scheme: {other:?}")),
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// A connection an HTTP/1.1 request can go over: plain TCP or TLS on top of it.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

async fn open(
    scheme: Scheme,
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<Box<dyn Io>, String> {
    let stream = connect(host, port, timeout).await?;
    if scheme == Scheme::Http {
        return Ok(Box::new(stream));
    }
    let name = super::tls::server_name(host)?;
    let tls = tokio_rustls::TlsConnector::from(super::tls::insecure_client())
        .connect(name, stream)
        .await
        .map_err(|e| format!("remote error: tls: {}", lower_first(&e.to_string())))?;
    Ok(Box::new(tls))
}

/// One HTTP GET, bounded by `timeout`: the status and body, or why the request failed
/// (in Go's client words, naming the URL).
pub(crate) async fn http_get(
    agent: &str,
    scheme: Scheme,
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
    timeout: Duration,
) -> Result<(u16, Bytes), String> {
    let url = format!("{}://{}{path}", scheme.prefix(), format_addr(host, port));
    let attempt = async {
        let stream = open(scheme, host, port, timeout).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let mut request = hyper::Request::get(path);
        let named = |name: &str| headers.iter().any(|(h, _)| h.eq_ignore_ascii_case(name));
        if !named("host") {
            request = request.header("Host", format_addr(host, port));
        }
        if !named("user-agent") {
            request = request.header("User-Agent", agent);
        }
        if !named("accept") {
            request = request.header("Accept", "*/*");
        }
        for (name, value) in headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let request = request
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Ok::<_, String>((status, body))
    };
    match tokio::time::timeout(timeout, attempt).await {
        Err(_) => Err(format!(
            "Get {url:?}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
        )),
        Ok(Err(e)) => Err(format!("Get {url:?}: {e}")),
        Ok(Ok(answer)) => Ok(answer),
    }
}

/// An HTTP probe: a status from 200 to 399 passes.
pub(crate) async fn run_http(
    scheme: Scheme,
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
    timeout: Duration,
) -> Outcome {
    match http_get(PROBE_AGENT, scheme, host, port, path, headers, timeout).await {
        Err(e) => Outcome::Failure(e),
        Ok((status, _)) if (200..400).contains(&status) => Outcome::Success,
        Ok((status, body)) => {
            // Upstream keeps the body out of the message (it only logs it).
            tracing::debug!(host, port, path, status, body = %String::from_utf8_lossy(&body[..body.len().min(MAX_BODY)]), "HTTP probe failed");
            Outcome::Failure(format!("HTTP probe failed with statuscode: {status}"))
        }
    }
}

async fn run_grpc(host: &str, port: u16, service: String, timeout: Duration) -> Outcome {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let addr = format_addr(host, port);
    let endpoint = match tonic::transport::Endpoint::from_shared(format!("http://{addr}")) {
        Ok(e) => e.connect_timeout(timeout).timeout(timeout),
        Err(e) => return Outcome::Error(e.to_string()),
    };
    let channel = match endpoint.connect().await {
        Ok(c) => c,
        Err(_) => {
            return Outcome::Failure(format!(
                "timeout: failed to connect service {addr:?} within {}s",
                timeout.as_secs()
            ))
        }
    };
    match HealthClient::new(channel)
        .check(HealthCheckRequest { service })
        .await
    {
        Ok(r) => {
            let status = r.into_inner().status;
            if status == ServingStatus::Serving as i32 {
                Outcome::Success
            } else {
                let name = ServingStatus::try_from(status)
                    .map(|s| s.as_str_name().to_string())
                    .unwrap_or_else(|_| status.to_string());
                Outcome::Failure(format!("service unhealthy (responded with {name:?})"))
            }
        }
        Err(s) if s.code() == tonic::Code::DeadlineExceeded => Outcome::Failure(format!(
            "timeout: health rpc did not complete within {}s",
            timeout.as_secs()
        )),
        Err(s) => Outcome::Failure(format!("error: health rpc probe failed: {}", s.message())),
    }
}

/// The request path (with its leading slash) and the headers of an httpGet action.
pub(crate) fn path_and_headers(http: &HTTPGetAction) -> (String, Vec<(String, String)>) {
    let path = http.path.clone().unwrap_or_default();
    let path = if path.starts_with('/') {
        path
    } else {
        format!("/{path}")
    };
    let headers = http
        .http_headers
        .iter()
        .flatten()
        .map(|h| (h.name.clone(), h.value.clone()))
        .collect();
    (path, headers)
}

/// A port given by number, or by the name of one of the container's ports.
pub fn resolve_port(port: &IntOrString, container: &Container) -> Result<u16, String> {
    let number = match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => match name.parse::<i32>() {
            Ok(n) => n,
            Err(_) => container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .map(|p| p.container_port)
                .ok_or_else(|| format!("couldn't find port: {name} in {}", container.name))?,
        },
    };
    u16::try_from(number)
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("invalid port number: {number}"))
}

fn format_addr(host: &str, port: u16) -> String {
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, port).to_string(),
        Err(_) => format!("{host}:{port}"),
    }
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn container() -> Container {
        serde_json::from_value(
            json!({"name": "app", "ports": [{"name": "http", "containerPort": 8080}]}),
        )
        .unwrap()
    }

    #[test]
    fn ports_resolve_by_number_and_by_name() {
        let c = container();
        assert_eq!(resolve_port(&IntOrString::Int(80), &c), Ok(80));
        assert_eq!(
            resolve_port(&IntOrString::String("http".into()), &c),
            Ok(8080)
        );
        assert_eq!(resolve_port(&IntOrString::String("81".into()), &c), Ok(81));
        assert_eq!(
            resolve_port(&IntOrString::String("grpc".into()), &c),
            Err("couldn't find port: grpc in app".to_string())
        );
        assert!(resolve_port(&IntOrString::Int(0), &c).is_err());
        assert!(resolve_port(&IntOrString::Int(70000), &c).is_err());
    }

    /// A one-shot HTTP server answering `status` and recording the request head.
    async fn serve_once(status: u16) -> (u16, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.unwrap();
            let body = "not well";
            let answer = format!(
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            s.write_all(answer.as_bytes()).await.unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        (port, task)
    }

    #[tokio::test]
    async fn http_probes_pass_below_400_and_send_upstreams_headers() {
        let (port, seen) = serve_once(204).await;
        let headers = vec![("X-Probe".to_string(), "yes".to_string())];
        let got = run_http(
            Scheme::Http,
            "127.0.0.1",
            port,
            "/healthz",
            &headers,
            Duration::from_secs(2),
        )
        .await;
        let head = seen.await.unwrap();
        assert_eq!(got, Outcome::Success);
        assert!(head.starts_with("GET /healthz HTTP/1.1\r\n"), "{head}");
        let lower = head.to_ascii_lowercase();
        assert!(lower.contains("user-agent: kube-probe/1.37"), "{head}");
        assert!(lower.contains("x-probe: yes"), "{head}");

        let (port, _) = serve_once(500).await;
        let got = run_http(
            Scheme::Http,
            "127.0.0.1",
            port,
            "/",
            &[],
            Duration::from_secs(2),
        )
        .await;
        assert_eq!(
            got,
            Outcome::Failure("HTTP probe failed with statuscode: 500".into())
        );
    }

    /// A one-shot HTTPS server with a self-signed certificate for a name that is not
    /// the address dialled: the probe must not care, as upstream's does not.
    async fn serve_tls_once(status: u16) -> (u16, tokio::task::JoinHandle<String>) {
        let cert = rcgen::generate_simple_self_signed(vec!["elsewhere.example".into()]).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let mut s = acceptor.accept(s).await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.unwrap();
            let answer =
                format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            s.write_all(answer.as_bytes()).await.unwrap();
            s.shutdown().await.ok();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        (port, task)
    }

    #[tokio::test]
    async fn https_probes_skip_certificate_checks_and_judge_the_status() {
        let probe_of = |port: u16| -> Probe {
            serde_json::from_value(json!({
                "httpGet": {"scheme": "HTTPS", "path": "/ready", "port": port},
                "timeoutSeconds": 2
            }))
            .unwrap()
        };
        let (port, seen) = serve_tls_once(200).await;
        let http = probe_of(port).http_get.unwrap();
        let got = run_http(
            Scheme::of(&http).unwrap(),
            "127.0.0.1",
            port,
            "/ready",
            &[],
            Duration::from_secs(2),
        )
        .await;
        assert_eq!(got, Outcome::Success);
        assert!(seen.await.unwrap().starts_with("GET /ready HTTP/1.1\r\n"));

        let (port, _) = serve_tls_once(503).await;
        let got = run_http(
            Scheme::Https,
            "127.0.0.1",
            port,
            "/",
            &[],
            Duration::from_secs(2),
        )
        .await;
        assert_eq!(
            got,
            Outcome::Failure("HTTP probe failed with statuscode: 503".into())
        );

        // A plain HTTP server answering an HTTPS probe fails the handshake, with the URL.
        let (port, _) = serve_once(200).await;
        let Outcome::Failure(why) = run_http(
            Scheme::Https,
            "127.0.0.1",
            port,
            "/",
            &[],
            Duration::from_secs(2),
        )
        .await
        else {
            panic!("an HTTPS probe to a plain HTTP server must fail");
        };
        assert!(
            why.starts_with(&format!("Get \"https://127.0.0.1:{port}/\": ")),
            "{why}"
        );
    }

    #[test]
    fn commands_are_named_as_gos_quoted_slices() {
        let cmd = vec![
            "sh".to_string(),
            "-c".to_string(),
            "echo \"hi\"".to_string(),
        ];
        assert_eq!(go_quoted(&cmd), r#"["sh" "-c" "echo \"hi\""]"#);
    }

    #[test]
    fn schemes_are_http_or_https_in_any_case() {
        let of = |scheme: &str| {
            let http: HTTPGetAction =
                serde_json::from_value(json!({"scheme": scheme, "port": 80})).unwrap();
            Scheme::of(&http)
        };
        assert_eq!(of("https"), Ok(Scheme::Https));
        assert_eq!(of("HTTP"), Ok(Scheme::Http));
        assert_eq!(of("FTP"), Err("unsupported scheme: \"FTP\"".to_string()));
    }

    #[tokio::test]
    async fn tcp_probes_pass_when_something_listens() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(
            run_tcp("127.0.0.1", port, Duration::from_secs(1)).await,
            Outcome::Success
        );
        drop(listener);
        match run_tcp("127.0.0.1", port, Duration::from_secs(1)).await {
            Outcome::Failure(m) => assert!(
                m.starts_with(&format!(
                    "dial tcp 127.0.0.1:{port}: connect: connection refused"
                )),
                "{m}"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn grpc_probes_read_the_serving_status() {
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("db", tonic_health::ServingStatus::NotServing)
            .await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let t = Duration::from_secs(2);
        assert_eq!(
            run_grpc("127.0.0.1", port, String::new(), t).await,
            Outcome::Success
        );
        assert_eq!(
            run_grpc("127.0.0.1", port, "db".into(), t).await,
            Outcome::Failure("service unhealthy (responded with \"NOT_SERVING\")".into())
        );
    }
}
