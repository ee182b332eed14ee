//! The TLS server end to end: client certificates, anonymous and refused requests,
//! /healthz on both ports, /pods, and exec proxied to a streaming server.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use gantry_cri::api::ContainerState::{ContainerExited as Exited, ContainerRunning as Running};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::super::fake_cri::FakeRuntime;
use super::super::{self_signed, serve, Backend, ServerConfig};
use super::{backend, pod};

pub struct Pki {
    ca_pem: String,
    client_chain: Vec<CertificateDer<'static>>,
    client_key: PrivateKeyDer<'static>,
}

/// A client CA and a client certificate it signs (CN alice, O devs).
pub fn client_pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name.push(DnType::CommonName, "test-ca");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.distinguished_name.push(DnType::CommonName, "alice");
    leaf.distinguished_name
        .push(DnType::OrganizationName, "devs");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        client_chain: vec![cert.der().clone()],
        client_key: PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap(),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct TestServer {
    addr: SocketAddr,
    healthz: SocketAddr,
    server_ca: CertificateDer<'static>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

pub async fn start(b: Backend, pki: &Pki, tune: impl FnOnce(&mut ServerConfig)) -> TestServer {
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let (cert_pem, key_pem) = self_signed("node-a", &[localhost]).unwrap();
    let server_ca = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .last()
        .unwrap()
        .unwrap();
    let addr = SocketAddr::new(localhost, free_port());
    let healthz = SocketAddr::new(localhost, free_port());
    let mut config = ServerConfig {
        bind: addr,
        cert_pem,
        key_pem,
        client_ca_pem: Some(pki.ca_pem.clone()),
        anonymous: false,
        webhook_authn: false,
        authz_webhook: false,
        healthz_bind: Some(healthz),
    };
    tune(&mut config);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(config, b, async move {
        let _ = stopped.await;
    }));
    for _ in 0..100 {
        if TcpStream::connect(addr).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    TestServer {
        addr,
        healthz,
        server_ca,
        stop,
        task,
    }
}

impl TestServer {
    pub async fn connect(&self, pki: Option<&Pki>) -> tokio_rustls::client::TlsStream<TcpStream> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.server_ca.clone()).unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        let config = match pki {
            Some(p) => builder
                .with_client_auth_cert(p.client_chain.clone(), p.client_key.clone_key())
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::IpAddress(self.addr.ip().into()), tcp)
            .await
            .unwrap()
    }

    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("serve returns after stop")
            .unwrap()
            .unwrap();
    }
}

/// Sends one request (closing the connection after it) and returns the whole answer.
pub async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    method: &str,
    path: &str,
    extra: &str,
) -> String {
    let req =
        format!("{method} {path} HTTP/1.1\r\nHost: node-a\r\n{extra}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    // A peer that closes without close_notify ends the read with an error; what was
    // read still counts.
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads an HTTP response head, byte by byte so nothing after it is consumed.
async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        if s.read(&mut b).await.unwrap() == 0 {
            break;
        }
        head.push(b[0]);
    }
    String::from_utf8(head).unwrap()
}

#[tokio::test]
async fn tls_server_authenticates_client_certificates_and_refuses_the_rest() {
    let fake = FakeRuntime::default();
    let pki = client_pki();
    let b = backend(&fake, vec![pod("ns", "web", "u1", &["app"])]);
    let server = start(b, &pki, |_| {}).await;

    let anon = exchange(server.connect(None).await, "GET", "/healthz", "").await;
    assert!(anon.starts_with("HTTP/1.1 401"), "{anon}");
    let token = exchange(
        server.connect(None).await,
        "GET",
        "/pods",
        "Authorization: Bearer abc\r\n",
    )
    .await;
    assert!(
        token.starts_with("HTTP/1.1 401"),
        "without the webhook a token is no credential: {token}"
    );

    let ok = exchange(server.connect(Some(&pki)).await, "GET", "/healthz", "").await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(ok.ends_with("\r\n\r\nok"), "{ok}");
    let pods = exchange(server.connect(Some(&pki)).await, "GET", "/pods", "").await;
    assert!(pods.starts_with("HTTP/1.1 200"), "{pods}");
    assert!(pods.contains("\"kind\":\"PodList\""), "{pods}");
    assert!(pods.contains("\"name\":\"web\""), "{pods}");
    let missing = exchange(server.connect(Some(&pki)).await, "GET", "/nothing", "").await;
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");

    // The plain-HTTP healthz port asks for nothing.
    let plain = exchange(
        TcpStream::connect(server.healthz).await.unwrap(),
        "GET",
        "/healthz",
        "",
    )
    .await;
    assert!(
        plain.starts_with("HTTP/1.1 200") && plain.ends_with("ok"),
        "{plain}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn anonymous_requests_pass_only_when_enabled_and_webhook_authz_failures_are_500() {
    let fake = FakeRuntime::default();
    let pki = client_pki();
    let server = start(backend(&fake, vec![]), &pki, |c| c.anonymous = true).await;
    let anon = exchange(server.connect(None).await, "GET", "/healthz", "").await;
    assert!(anon.starts_with("HTTP/1.1 200"), "{anon}");
    server.shutdown().await;

    // With Webhook authorization and no reachable API server, upstream answers 500.
    let server = start(backend(&fake, vec![]), &pki, |c| c.authz_webhook = true).await;
    let denied = exchange(server.connect(Some(&pki)).await, "GET", "/pods", "").await;
    assert!(denied.starts_with("HTTP/1.1 500"), "{denied}");
    assert!(
        denied.contains(
            "Authorization error (user=alice, verb=get, resource=nodes, subresource=pods)"
        ),
        "{denied}"
    );
    server.shutdown().await;
}

/// A streaming server that answers the upgrade with 101 and then echoes; it hands the
/// request head it saw to the test.
async fn echo_streaming_server() -> (String, tokio::sync::oneshot::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/exec/token123", listener.local_addr().unwrap());
    let (seen, head) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let req = read_head(&mut s).await;
        let _ = seen.send(req);
        s.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n",
        )
        .await
        .unwrap();
        let (mut r, mut w) = s.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
    });
    (url, head)
}

#[tokio::test]
async fn exec_is_proxied_to_the_runtime_streaming_server() {
    let fake = FakeRuntime::default();
    fake.add_sandbox("sb1", "ns", "web", "u1");
    fake.add_container("c1", "sb1", "app", 0, Running, "/dev/null");
    let (url, head) = echo_streaming_server().await;
    fake.state().stream_url = url;
    let pki = client_pki();
    let server = start(
        backend(&fake, vec![pod("ns", "web", "u1", &["app"])]),
        &pki,
        |_| {},
    )
    .await;

    let mut s = server.connect(Some(&pki)).await;
    s.write_all(
        b"POST /exec/ns/web/app?command=sh&command=-c&command=echo%20hi&input=1&output=1&tty=1 HTTP/1.1\r\n\
Host: node-a\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
X-Stream-Protocol-Version: v4.channel.k8s.io\r\nX-Stream-Protocol-Version: v3.channel.k8s.io\r\n\
Authorization: Bearer not-forwarded\r\n\r\n",
    )
    .await
    .unwrap();
    let answer = read_head(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 101"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("x-stream-protocol-version: v4.channel.k8s.io"),
        "{answer}"
    );

    let seen = head.await.unwrap();
    assert!(
        seen.starts_with("POST /exec/token123 HTTP/1.1\r\n"),
        "{seen}"
    );
    assert!(seen.contains("v3.channel.k8s.io"), "{seen}");
    assert!(!seen.contains("not-forwarded"), "{seen}");
    let exec = fake.state().exec_requests[0].clone();
    assert_eq!(exec.container_id, "c1");
    assert_eq!(exec.cmd, ["sh", "-c", "echo hi"]);
    assert!(exec.stdin && exec.stdout && exec.tty && !exec.stderr);

    s.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"ping");
    drop(s);
    server.shutdown().await;
}

#[tokio::test]
async fn exec_without_an_upgrade_or_a_running_container_is_refused() {
    let fake = FakeRuntime::default();
    fake.add_sandbox("sb1", "ns", "web", "u1");
    fake.add_container("c1", "sb1", "app", 0, Exited, "/dev/null");
    let pki = client_pki();
    let server = start(
        backend(&fake, vec![pod("ns", "web", "u1", &["app"])]),
        &pki,
        |_| {},
    )
    .await;
    let plain = exchange(
        server.connect(Some(&pki)).await,
        "POST",
        "/exec/ns/web/app?command=ls&output=1",
        "",
    )
    .await;
    assert!(
        plain.starts_with("HTTP/1.1 400") && plain.contains("Upgrade request required"),
        "{plain}"
    );
    let upgrade = "Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\n";
    let exited = exchange(
        server.connect(Some(&pki)).await,
        "POST",
        "/exec/ns/web/app?command=ls&output=1",
        upgrade,
    )
    .await;
    assert!(
        exited.starts_with("HTTP/1.1 404") && exited.contains("container not found (\"app\")"),
        "{exited}"
    );
    let no_stream = exchange(
        server.connect(Some(&pki)).await,
        "POST",
        "/exec/ns/web/app?command=ls",
        upgrade,
    )
    .await;
    assert!(no_stream.starts_with("HTTP/1.1 400"), "{no_stream}");
    let no_pod = exchange(
        server.connect(Some(&pki)).await,
        "GET",
        "/exec/ns/nope/app?command=ls&output=1",
        upgrade,
    )
    .await;
    assert!(
        no_pod.starts_with("HTTP/1.1 404") && no_pod.contains("pod does not exist"),
        "{no_pod}"
    );
    assert!(fake.state().exec_requests.is_empty());
    server.shutdown().await;
}
