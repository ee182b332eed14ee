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
use crate::metrics::CriMetrics;
use crate::observe::Observed;
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

/// Serves the CRI on `config.listen` until `stop`. A stale socket file left by a crash
/// is replaced; the socket is only for root (mode 0600), like containerd's.
pub async fn serve_until(config: CriConfig, stop: Stop) -> Result<()> {
    let server = start(&config, stop.clone()).await?;
    serve_socket(server, &config.listen, stop).await
}

/// One shutdown signal that any number of servers can wait for.
#[derive(Clone)]
pub struct Stop(tokio::sync::watch::Receiver<bool>);

impl Stop {
    pub fn new(shutdown: impl Future<Output = ()> + Send + 'static) -> Stop {
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = tx.send(true);
        });
        Stop(rx)
    }

    /// Resolves once the shutdown has come.
    pub fn wait(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.0.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }
}

/// Builds the server, settles what a previous run left (recovery) and starts the
/// event monitor: after this the server takes calls, in process or on a socket.
/// containerd may be down: then the CRI still serves (Status says why) and recovery
/// waits for it up to a minute.
pub async fn start(config: &CriConfig, stop: Stop) -> Result<CriServer> {
    let server = CriServer::new(config, stop.wait()).await?;
    recover_when_containerd_answers(server.engine.clone()).await;
    server.engine.spawn_event_monitor();
    server.engine.images.spawn_event_follower();
    Ok(server)
}

/// The tonic services of `server`, with the message limits kubelets need, measured
/// by the `gantry_cri_` operation metrics (in-process and socket calls alike).
pub fn services(
    server: CriServer,
) -> (
    Observed<RuntimeServiceServer<CriServer>>,
    Observed<ImageServiceServer<CriServer>>,
) {
    let metrics = CriMetrics::global();
    (
        Observed::new(
            RuntimeServiceServer::new(server.clone())
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
            metrics.clone(),
        ),
        Observed::new(
            ImageServiceServer::new(server)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
            metrics,
        ),
    )
}

/// Serves `server` on the unix socket `path` until `stop`.
pub async fn serve_socket(server: CriServer, path: &std::path::Path, stop: Stop) -> Result<()> {
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
    tracing::info!(socket = %path.display(), "serving CRI");
    let (runtime, images) = services(server);
    let result = tonic::transport::Server::builder()
        .add_service(runtime)
        .add_service(images)
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), stop.wait())
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
