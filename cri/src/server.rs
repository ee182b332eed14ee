//! Serving the CRI on a unix socket.

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

use crate::api::{
    image_service_server::ImageServiceServer, runtime_service_server::RuntimeServiceServer,
};
use crate::config::CriConfig;
use crate::containerd::Containerd;
use crate::engine::Engine;
use crate::error::{CriError, Result};
use crate::grpc::CriServer;
use crate::hosts::RegistryHosts;
use crate::image_pull::Puller;
use crate::images::Images;
use crate::runtime::Runtime;
use crate::streaming::server::StreamingServer;

/// Kubelets send large ListContainers answers back and forth; allow what they do.
const MAX_MESSAGE: usize = 16 << 20;

impl CriServer {
    /// Builds the server and starts its streaming server, which runs until `shutdown`.
    pub async fn new(
        config: &CriConfig,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<Self> {
        let ctd = Containerd::connect_lazy(&config.containerd_address, &config.namespace)?;
        let puller = Puller::new(
            ctd.clone(),
            RegistryHosts::new(config.registry_config_path.clone()),
            config.snapshotter.clone(),
        );
        let images = Arc::new(Images::new(
            ctd.clone(),
            puller,
            config.snapshotter.clone(),
            &config.containerd_root,
        ));
        let engine = Engine::new(ctd.clone(), config.clone(), images.clone());
        let streaming =
            StreamingServer::start(config.stream_address, Arc::new(engine.clone()), shutdown)
                .await?;
        tracing::info!(address = %streaming.addr(), "streaming server for exec, attach and port-forward");
        Ok(CriServer {
            runtime: Arc::new(Runtime::new(ctd, config.clone())),
            engine,
            images,
            streaming,
        })
    }
}

/// Serves the CRI on `config.listen` until `shutdown` completes. A stale socket file
/// left by a crash is replaced; the socket is only for root (mode 0600), like
/// containerd's.
pub async fn serve(
    config: CriConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    // One shutdown signal, seen by the gRPC server and the streaming server.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let server = CriServer::new(&config, stopped(stop_rx.clone())).await?;
    // Settle what a previous run left before taking calls. containerd may be down:
    // then the CRI still serves (Status says why) and recovery waits for it.
    recover_when_containerd_answers(server.engine.clone()).await;
    server.engine.spawn_event_monitor();
    let path = &config.listen;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| {
            CriError::Internal(format!("create socket directory {}: {e}", dir.display()))
        })?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(CriError::Internal(format!(
                "remove stale socket {}: {e}",
                path.display()
            )))
        }
    }
    let listener = UnixListener::bind(path)
        .map_err(|e| CriError::Internal(format!("listen on {}: {e}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| CriError::Internal(format!("chmod {}: {e}", path.display())))?;
    tracing::info!(socket = %path.display(), containerd = %config.containerd_address.display(), namespace = %config.namespace, "serving CRI");
    let result = tonic::transport::Server::builder()
        .add_service(
            RuntimeServiceServer::new(server.clone())
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        )
        .add_service(
            ImageServiceServer::new(server)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        )
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), stopped(stop_rx))
        .await
        .map_err(|e| CriError::Internal(format!("serve CRI on {}: {e}", path.display())));
    let _ = std::fs::remove_file(path);
    result
}

/// Runs `Engine::recover`, retrying while containerd does not answer (up to a minute;
/// after that the CRI serves anyway and calls fail with containerd's error).
async fn recover_when_containerd_answers(engine: Engine) {
    for attempt in 0..30 {
        match engine.recover().await {
            Ok(()) => return,
            Err(CriError::Unavailable(m)) if attempt < 29 => {
                tracing::info!("waiting for containerd before recovery: {m}");
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            }
            Err(e) => {
                tracing::error!(error = %e, "recovery of sandboxes and containers failed");
                return;
            }
        }
    }
}
