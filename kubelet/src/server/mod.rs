//! The kubelet HTTPS API on :10250, as upstream's pkg/kubelet/server serves it: health,
//! the node's pods, container logs, exec/attach/port-forward (proxied to the CRI
//! runtime's streaming server), stats and metrics. Every request on the TLS port is
//! authenticated (client certificate, bearer token through TokenReview, or anonymous)
//! and authorized (SubjectAccessReview or AlwaysAllow) before it is routed.
//!
//! It knows the node only through [`Backend`]: a CRI client, an API client for the
//! reviews, and a view of the node's pods. It does not know pod workers or containerd.

mod authn;
mod authz;
mod container_logs;
mod cri_calls;
mod listener;
mod log_options;
mod log_reader;
mod metrics;
mod query;
mod reply;
mod resolve;
mod router;
mod streaming;
pub mod summary;
mod tls;
mod ttl_cache;
mod upgrade_proxy;

#[cfg(test)]
mod fake_cri;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

pub use tls::self_signed;

/// How the API is served: addresses, certificates and the authentication and
/// authorization modes of the KubeletConfiguration.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// address:port of the TLS API (upstream default :10250).
    pub bind: SocketAddr,
    /// The serving certificate chain and key (PEM).
    pub cert_pem: String,
    pub key_pem: String,
    /// authentication.x509.clientCAFile contents: client certificates signed by it
    /// authenticate as CN (user) and O (groups).
    pub client_ca_pem: Option<String>,
    /// authentication.anonymous.enabled.
    pub anonymous: bool,
    /// authentication.webhook.enabled: bearer tokens are checked with TokenReview.
    pub webhook_authn: bool,
    /// authorization.mode == "Webhook": SubjectAccessReview; otherwise AlwaysAllow.
    pub authz_webhook: bool,
    /// healthzBindAddress:healthzPort: plain HTTP, /healthz only, no authentication.
    pub healthz_bind: Option<SocketAddr>,
}

/// What the API serves from: the node's runtime, the API server and the node's pods.
#[derive(Clone)]
pub struct Backend {
    pub cri: gantry_pod_manager::Cri,
    /// For TokenReview and SubjectAccessReview.
    pub kube: kube::Client,
    pub node_name: String,
    /// The pods bound to this node (API and static), for /pods and to resolve names.
    pub pods: Arc<dyn Fn() -> Vec<Pod> + Send + Sync>,
    /// The kubelet's root directory, where pods' volumes are (volume stats); none
    /// leaves volumes out of the summary.
    pub volumes_root: Option<std::path::PathBuf>,
    /// volumeStatsAggPeriod: how old a volume's walked usage may get.
    pub volume_stats_every: std::time::Duration,
    /// The summary's state (CPU sample, walked volume usage), one per node: shared by
    /// /stats/summary, /metrics and the eviction manager, so volumes are walked once.
    pub summaries: Arc<summary::SummaryProvider>,
}

/// Serves the API until `stop` resolves: the listeners close, connections in flight
/// are asked to finish, and the function returns. Binding or loading the certificates
/// fails before anything is served.
pub async fn serve(
    config: ServerConfig,
    backend: Backend,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    listener::serve(config, backend, stop).await
}

impl Backend {
    fn cri_calls(&self) -> cri_calls::CriCalls {
        cri_calls::CriCalls::new(&self.cri)
    }
}
