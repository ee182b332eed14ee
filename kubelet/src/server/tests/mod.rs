//! Tests across the API's parts: container logs against a fake CRI, the TLS server
//! itself (authentication, /healthz, /pods, the upgrade proxy to a streaming server),
//! and the TokenReview / SubjectAccessReview path against a fake API server.

mod logs;
mod reviews;
mod tls_server;

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};

use super::fake_cri::FakeRuntime;
use super::Backend;

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

pub fn pod(namespace: &str, name: &str, uid: &str, containers: &[&str]) -> Pod {
    let mut p = Pod::default();
    p.metadata.namespace = Some(namespace.into());
    p.metadata.name = Some(name.into());
    p.metadata.uid = Some(uid.into());
    p.spec = Some(PodSpec {
        containers: containers
            .iter()
            .map(|c| Container {
                name: (*c).into(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    });
    p
}

pub fn backend(fake: &FakeRuntime, pods: Vec<Pod>) -> Backend {
    Backend {
        cri: fake.client(),
        kube: unreachable_kube(),
        node_name: "node-a".into(),
        pods: Arc::new(move || pods.clone()),
        volumes_root: None,
        volume_stats_every: std::time::Duration::from_secs(60),
        summaries: Arc::default(),
    }
}
