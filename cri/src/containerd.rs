//! The connection to containerd: one channel, and requests stamped with Gantry's
//! namespace (and, while a pull runs, its lease).

use std::path::Path;

use containerd_client::services::v1::{
    content_client::ContentClient, diff_client::DiffClient, images_client::ImagesClient,
    leases_client::LeasesClient, snapshots::snapshots_client::SnapshotsClient,
    version_client::VersionClient,
};
use tonic::transport::Channel;
use tonic::Request;

use crate::error::{CriError, Result};

#[derive(Clone)]
pub struct Containerd {
    channel: Channel,
    namespace: String,
}

impl Containerd {
    /// Connects lazily: containerd may start after Gantry, and calls fail with
    /// Unavailable until it answers.
    pub fn connect_lazy(address: &Path, namespace: &str) -> Result<Self> {
        let path = address.to_path_buf();
        let channel = tonic::transport::Endpoint::try_from("http://[::]:50051")
            .map_err(|e| CriError::Internal(format!("containerd endpoint: {e}")))?
            .connect_with_connector_lazy(tower_service(path));
        Ok(Containerd {
            channel,
            namespace: namespace.to_string(),
        })
    }

    /// A request in Gantry's namespace.
    pub fn req<T>(&self, msg: T) -> Request<T> {
        self.req_leased(msg, None)
    }

    /// A request in Gantry's namespace that also holds `lease` (content and snapshots
    /// it creates are kept from garbage collection until the lease goes).
    pub fn req_leased<T>(&self, msg: T, lease: Option<&str>) -> Request<T> {
        let mut req = Request::new(msg);
        if let Ok(v) = self.namespace.parse() {
            req.metadata_mut().insert("containerd-namespace", v);
        }
        if let Some(Ok(v)) = lease.map(str::parse) {
            req.metadata_mut().insert("containerd-lease", v);
        }
        req
    }

    pub fn version(&self) -> VersionClient<Channel> {
        VersionClient::new(self.channel.clone())
    }
    pub fn content(&self) -> ContentClient<Channel> {
        ContentClient::new(self.channel.clone()).max_decoding_message_size(64 << 20)
    }
    pub fn images(&self) -> ImagesClient<Channel> {
        ImagesClient::new(self.channel.clone())
    }
    pub fn snapshots(&self) -> SnapshotsClient<Channel> {
        SnapshotsClient::new(self.channel.clone())
    }
    pub fn diff(&self) -> DiffClient<Channel> {
        DiffClient::new(self.channel.clone())
    }
    pub fn leases(&self) -> LeasesClient<Channel> {
        LeasesClient::new(self.channel.clone())
    }
}

fn tower_service(
    path: std::path::PathBuf,
) -> impl tower::Service<
    tonic::transport::Uri,
    Response = hyper_util::rt::TokioIo<tokio::net::UnixStream>,
    Error = std::io::Error,
    Future = impl Send,
> + Clone {
    tower::service_fn(move |_| {
        let path = path.clone();
        async move {
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                tokio::net::UnixStream::connect(path).await?,
            ))
        }
    })
}
