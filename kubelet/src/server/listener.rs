//! The listening sockets: the TLS API port (one task per connection, HTTP/1.1 with
//! upgrades) and the optional plain-HTTP healthz port. Stopping closes the listeners,
//! asks each connection to finish what it is serving, and stops waiting after a grace
//! period so a followed log or an open exec cannot hold the node's shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::authn::Authenticator;
use super::authz::Authorizer;
use super::reply::{text, Body};
use super::router::Api;
use super::tls::{cert_identity, server_config};
use super::{Backend, ServerConfig};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A client has this long to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long stopping waits for requests in flight.
const GRACE: Duration = Duration::from_secs(5);

pub async fn serve(
    config: ServerConfig,
    backend: Backend,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let tls = server_config(
        &config.cert_pem,
        &config.key_pem,
        config.client_ca_pem.as_deref(),
    )?;
    let acceptor = TlsAcceptor::from(tls);
    let listener = TcpListener::bind(config.bind)
        .await
        .with_context(|| format!("bind the kubelet API on {}", config.bind))?;
    let healthz = match config.healthz_bind {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("bind the healthz endpoint on {addr}"))?,
        ),
        None => None,
    };
    tracing::info!(address = %config.bind, "serving the kubelet API");

    let token = CancellationToken::new();
    let api = Arc::new(Api {
        authn: Authenticator::new(backend.kube.clone(), config.anonymous, config.webhook_authn),
        authz: Authorizer::new(
            backend.kube.clone(),
            backend.node_name.clone(),
            config.authz_webhook,
        ),
        summary: backend.summaries.clone(),
        backend,
        stop: token.clone(),
    });
    let tracker = TaskTracker::new();
    if let Some(l) = healthz {
        tracker.spawn(serve_healthz(l, token.clone()));
    }
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    tracker.spawn(serve_tls(api.clone(), acceptor.clone(), tcp, peer, token.clone()));
                }
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection to the kubelet API");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    tracing::info!("kubelet API stopping");
    drop(listener);
    token.cancel();
    tracker.close();
    if tokio::time::timeout(GRACE, tracker.wait()).await.is_err() {
        tracing::info!("kubelet API: connections still open after the grace period; leaving them");
    }
    Ok(())
}

fn http1_builder() -> http1::Builder {
    let mut b = http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    b
}

async fn serve_tls(
    api: Arc<Api>,
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    stop: CancellationToken,
) {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(cert_identity)
        .map(Arc::new);
    let service = service_fn(move |req: Request<Incoming>| {
        let api = api.clone();
        let cert = cert.clone();
        async move { Ok::<_, Infallible>(api.handle(req, cert).await) }
    });
    let conn = http1_builder()
        .serve_connection(TokioIo::new(tls), service)
        .with_upgrades();
    finish(conn, stop, peer).await;
}

/// Runs a connection; on stop, lets it finish the request in flight for the grace
/// period.
async fn finish<C, E>(conn: C, stop: CancellationToken, peer: SocketAddr)
where
    C: Future<Output = Result<(), E>> + GracefulConn,
    E: std::fmt::Display,
{
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "kubelet API connection ended");
            }
        }
        _ = stop.cancelled() => {
            conn.as_mut().shutdown();
            let _ = tokio::time::timeout(GRACE, conn).await;
        }
    }
}

/// hyper's graceful shutdown, for both connection types served here.
trait GracefulConn {
    fn shutdown(self: std::pin::Pin<&mut Self>);
}

impl<I, S> GracefulConn for http1::UpgradeableConnection<I, S>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = Body>,
{
    fn shutdown(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S> GracefulConn for http1::Connection<I, S>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S: hyper::service::HttpService<Incoming, ResBody = Body>,
{
    fn shutdown(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// The plain-HTTP healthz endpoint (healthzBindAddress:healthzPort): /healthz answers
/// "ok" without authentication, as upstream's; everything else is 404.
async fn serve_healthz(listener: TcpListener, stop: CancellationToken) {
    loop {
        let (tcp, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a healthz connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let stop = stop.clone();
        tokio::spawn(async move {
            let conn = http1_builder().serve_connection(TokioIo::new(tcp), service_fn(healthz));
            finish(conn, stop, peer).await;
        });
    }
}

async fn healthz(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    Ok(match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/healthz") => text(StatusCode::OK, "ok"),
        _ => text(StatusCode::NOT_FOUND, "404 page not found"),
    })
}
