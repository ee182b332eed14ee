//! Tests across the API's parts: container logs against a fake CRI, the TLS server
//! itself (authentication, /healthz, /pods, the upgrade proxy to a streaming server),
//! and the TokenReview / SubjectAccessReview path against a fake API server.

/// An API client whose calls fail at once (nothing listens on port 1): for paths
/// that must not need the API server.
pub fn unreachable_kube() -> kube::Client {
    // kube's TLS setup uses the process-wide rustls provider; with both ring and
    // aws-lc-rs compiled in (reqwest brings the latter) one must be installed first,
    // as `gantry node` has to before it builds its client.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = kube::Config::new("http://127.0.0.1:1".parse().unwrap());
    kube::Client::try_from(config).unwrap()
}
