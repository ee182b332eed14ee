//! The node's CRI runtime: Gantry's CRI embedded in this process (the default), or
//! another runtime's socket (`--container-runtime-endpoint`).

use anyhow::{Context, Result};
use gantry_cri::server::{self, Stop};
use gantry_cri::CriConfig;
use gantry_pod_manager::Cri;

/// Starts the embedded CRI: recovery first, then it serves this process's calls
/// directly and `config.listen` for crictl.
pub async fn embedded(config: &CriConfig, stop: Stop) -> Result<Cri> {
    let server = server::start(config, stop.clone())
        .await
        .context("start the embedded CRI")?;
    let (runtime, images) = server::services(server.clone());
    let listen = config.listen.clone();
    tokio::spawn(async move {
        if let Err(e) = server::serve_socket(server, &listen, stop).await {
            tracing::error!(error = %e, "serving the CRI socket failed; the node goes on without it");
        }
    });
    Ok(Cri::in_process(runtime, images))
}

/// A client of the runtime at `endpoint`.
pub fn remote(endpoint: &str) -> Result<Cri> {
    Ok(Cri::connect(endpoint)?)
}
