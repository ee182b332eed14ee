//! A CRI client: the runtime.v1 RuntimeService and ImageService, either over a unix
//! socket (containerd's CRI plugin, or `gantry cri` in another process) or in-process
//! (Gantry's embedded CRI, called without a socket or HTTP/2 framing).

use std::path::PathBuf;
use std::time::Duration;

use gantry_cri::api::{
    image_service_client::ImageServiceClient, runtime_service_client::RuntimeServiceClient,
};
use gantry_cri::observe::Observed;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, ServiceExt};

/// A gRPC transport, boxed so in-process and socket clients are one type.
pub type CriService = BoxCloneSyncService<
    http::Request<tonic::body::Body>,
    http::Response<tonic::body::Body>,
    TransportError,
>;

/// A transport failure (the socket is gone, the runtime restarted). A concrete type
/// rather than a boxed trait object: futures holding `Box<dyn Error>` as an associated
/// error type trip rustc's higher-ranked `Send` inference in spawned tasks. The cause
/// stays reachable through `source()`, where tonic looks for it to pick the gRPC code.
#[derive(Debug)]
pub struct TransportError(BoxError);

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for TransportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// Every call through a `Cri` counts in upstream's kubelet_runtime_operations_*
/// metrics, as upstream's instrumented runtime and image services count them.
fn observed<S>(inner: S) -> Observed<S> {
    Observed::new(inner, crate::metrics::PodMetrics::global())
}

/// Kubelets exchange large ListContainers answers; allow what they do.
const MAX_MESSAGE: usize = 16 << 20;

/// Both CRI services. Cloning is cheap and clones share the transport.
#[derive(Clone)]
pub struct Cri {
    pub runtime: RuntimeServiceClient<CriService>,
    pub images: ImageServiceClient<CriService>,
    /// Where the runtime is, for messages: a socket path or "embedded".
    pub endpoint: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("CRI endpoint {0:?}: only unix:// sockets are supported")]
    Unsupported(String),
    #[error("CRI endpoint {endpoint}: {message}")]
    Transport { endpoint: String, message: String },
}

impl Cri {
    /// A client of the runtime at `endpoint` (`unix:///path` or a bare path). The
    /// connection is made lazily and re-made after the runtime restarts.
    pub fn connect(endpoint: &str) -> Result<Cri, ConnectError> {
        let path = match endpoint.strip_prefix("unix://") {
            Some(p) => PathBuf::from(p),
            None if endpoint.starts_with('/') => PathBuf::from(endpoint),
            None => return Err(ConnectError::Unsupported(endpoint.to_string())),
        };
        let channel = tonic::transport::Endpoint::try_from("http://[::]:50051")
            .map_err(|e| ConnectError::Transport {
                endpoint: endpoint.to_string(),
                message: e.to_string(),
            })?
            .connect_timeout(Duration::from_secs(10))
            .connect_with_connector_lazy(tower::service_fn(move |_| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }));
        let service =
            BoxCloneSyncService::new(observed(channel.map_err(|e| TransportError(e.into()))));
        Ok(Cri::over(service.clone(), service, endpoint))
    }

    /// A client that calls the given tonic servers directly, in this process.
    pub fn in_process<R, I>(runtime: R, images: I) -> Cri
    where
        R: tower::Service<
                http::Request<tonic::body::Body>,
                Response = http::Response<tonic::body::Body>,
                Error = std::convert::Infallible,
            > + Clone
            + Send
            + Sync
            + 'static,
        R::Future: Send + 'static,
        I: tower::Service<
                http::Request<tonic::body::Body>,
                Response = http::Response<tonic::body::Body>,
                Error = std::convert::Infallible,
            > + Clone
            + Send
            + Sync
            + 'static,
        I::Future: Send + 'static,
    {
        Cri::over(
            BoxCloneSyncService::new(observed(runtime.map_err(|e| TransportError(e.into())))),
            BoxCloneSyncService::new(observed(images.map_err(|e| TransportError(e.into())))),
            "embedded",
        )
    }

    fn over(runtime: CriService, images: CriService, endpoint: &str) -> Cri {
        Cri {
            runtime: RuntimeServiceClient::new(runtime)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
            images: ImageServiceClient::new(images)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
            endpoint: endpoint.to_string(),
        }
    }
}
