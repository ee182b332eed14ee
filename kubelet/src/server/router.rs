//! One request through the API: authenticate, authorize (upstream applies both to
//! every path on the TLS port, /healthz included), then route by path to a handler.

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use k8s_openapi::api::core::v1::Pod;
use tokio_util::sync::CancellationToken;

use super::authn::Authenticator;
use super::authz::{request_attributes, Authorizer};
use super::container_logs::container_logs;
use super::metrics;
use super::query::Query;
use super::reply::{json, text, ApiError, Body};
use super::streaming::{self, ContainerPath};
use super::summary::SummaryProvider;
use super::tls::CertIdentity;
use super::Backend;

/// Everything a request needs, shared by all connections.
pub struct Api {
    pub backend: Backend,
    pub authn: Authenticator,
    pub authz: Authorizer,
    pub summary: Arc<SummaryProvider>,
    /// Cancelled when the server stops; long-lived streams end with it.
    pub stop: CancellationToken,
}

impl Api {
    /// Answers one request that arrived with `cert` (the verified client certificate's
    /// identity, if any).
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        cert: Option<Arc<CertIdentity>>,
    ) -> Response<Body> {
        let user = match self
            .authn
            .authenticate(cert.as_deref(), req.headers())
            .await
        {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(path = req.uri().path(), error = %e, "unauthenticated request");
                return ApiError::Unauthorized.into_response();
            }
        };
        let attrs = request_attributes(req.method(), req.uri().path());
        if let Err(e) = self.authz.authorize(&user, &attrs).await {
            tracing::debug!(user = %user.name, path = req.uri().path(), error = %e, "request not authorized");
            return e.into_response();
        }
        self.route(req)
            .await
            .unwrap_or_else(ApiError::into_response)
    }

    async fn route(&self, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
        let path = req.uri().path().to_string();
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let method = req.method().clone();
        let read = method == Method::GET || method == Method::HEAD;
        let stream = method == Method::GET || method == Method::POST;
        // Path parameters must be non-empty, as go-restful's routes require.
        let named = |s: &[&str]| s.iter().all(|p| !p.is_empty());
        let backend = &self.backend;
        match segments.as_slice() {
            ["healthz"] | ["healthz", "ping" | "log" | "syncloop"] => {
                allow(read)?;
                Ok(text(StatusCode::OK, "ok"))
            }
            ["pods"] | ["pods", ""] => {
                allow(read)?;
                json(&k8s_openapi::List::<Pod> {
                    items: (backend.pods)(),
                    metadata: Default::default(),
                })
            }
            ["containerLogs", ns, pod, container] if named(&[ns, pod, container]) => {
                allow(read)?;
                let query = Query::parse(req.uri().query());
                container_logs(backend, ns, pod, container, &query).await
            }
            ["exec" | "attach", ns, pod, rest @ ..] if named(&[ns, pod]) => {
                allow(stream)?;
                let (uid, container) = match rest {
                    [c] if !c.is_empty() => (None, *c),
                    [u, c] if !u.is_empty() && !c.is_empty() => (Some(*u), *c),
                    _ => return Err(not_found()),
                };
                let at = ContainerPath {
                    namespace: ns,
                    pod,
                    uid,
                    container,
                };
                if segments[0] == "exec" {
                    streaming::exec(backend, req, at, self.stop.clone()).await
                } else {
                    streaming::attach(backend, req, at, self.stop.clone()).await
                }
            }
            ["portForward", ns, pod, rest @ ..] if named(&[ns, pod]) => {
                allow(stream)?;
                let uid = match rest {
                    [] => None,
                    [u] if !u.is_empty() => Some(*u),
                    _ => return Err(not_found()),
                };
                streaming::port_forward(backend, req, ns, pod, uid, self.stop.clone()).await
            }
            ["stats", "summary"] => {
                allow(read)?;
                json(&self.summary.summary(backend).await?)
            }
            ["metrics"] => {
                allow(read)?;
                Ok(metrics::response(
                    metrics::kubelet_metrics(backend, &self.summary).await?,
                ))
            }
            ["metrics", "resource"] => {
                allow(read)?;
                let summary = self.summary.summary(backend).await?;
                Ok(metrics::response(metrics::render_resource(&summary)))
            }
            _ => Err(not_found()),
        }
    }
}

fn not_found() -> ApiError {
    ApiError::NotFound("404 page not found".into())
}

fn allow(ok: bool) -> Result<(), ApiError> {
    if ok {
        Ok(())
    } else {
        Err(ApiError::MethodNotAllowed("405: Method Not Allowed".into()))
    }
}
