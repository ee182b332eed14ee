//! The connection to containerd: one channel, and requests stamped with Gantry's
//! namespace (and, while a pull runs, its lease).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use containerd_client::services::v1::{
    containers_client::ContainersClient, content_client::ContentClient, diff_client::DiffClient,
    events_client::EventsClient, images_client::ImagesClient, leases_client::LeasesClient,
    snapshots::snapshots_client::SnapshotsClient, tasks_client::TasksClient,
    version_client::VersionClient, CreateRequest, DeleteRequest, ListRequest,
};
use tonic::transport::Channel;
use tonic::Request;

use crate::error::{CriError, Result};
use crate::image_pull::{expire_in, unique_suffix};

#[derive(Clone)]
pub struct Containerd {
    channel: Channel,
    namespace: String,
    /// One lease per prefix made ahead of need (see [`Containerd::create_lease`]).
    spare_leases: Arc<Mutex<HashMap<&'static str, (String, Instant)>>>,
}

/// A lease of Gantry's: its id, and the prefix it was named by.
pub struct Lease {
    pub id: String,
    prefix: &'static str,
}

/// How long a lease made ahead is used at most: it still has most of its hour before
/// containerd expires it when the work it covers begins.
const SPARE_LEASE_AGE: Duration = Duration::from_secs(300);

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
            spare_leases: Default::default(),
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
    pub fn containers(&self) -> ContainersClient<Channel> {
        ContainersClient::new(self.channel.clone()).max_decoding_message_size(64 << 20)
    }
    pub fn tasks(&self) -> TasksClient<Channel> {
        TasksClient::new(self.channel.clone())
    }
    pub fn events(&self) -> EventsClient<Channel> {
        EventsClient::new(self.channel.clone())
    }
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// A lease named `prefix-…` that expires by itself after an hour, so work cut short
    /// by a crash (a pull, a container being created) is collected by containerd (and
    /// at the next start, which deletes every `gantry-` lease). The one made ahead when
    /// the last lease of `prefix` was let go is taken when it is fresh, so the work does
    /// not wait for containerd to write a lease.
    pub async fn create_lease(&self, prefix: &'static str) -> Result<Lease> {
        let spare = self.spares().remove(prefix);
        if let Some((id, made)) = spare {
            if made.elapsed() < SPARE_LEASE_AGE {
                return Ok(Lease { id, prefix });
            }
            let ctd = self.clone();
            tokio::spawn(async move { ctd.delete_lease_now(&id).await });
        }
        let id = self.new_lease(prefix).await?;
        Ok(Lease { id, prefix })
    }

    async fn new_lease(&self, prefix: &str) -> Result<String> {
        let id = format!("{prefix}-{}", unique_suffix());
        let labels = HashMap::from([("containerd.io/gc.expire".to_string(), expire_in(3600))]);
        self.leases()
            .create(self.req(CreateRequest {
                id: id.clone(),
                labels,
            }))
            .await
            .map_err(|s| CriError::containerd(format!("create lease {id}"), s))?;
        Ok(id)
    }

    fn spares(&self) -> std::sync::MutexGuard<'_, HashMap<&'static str, (String, Instant)>> {
        self.spare_leases.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Deletes every lease whose id starts with `prefix`, synchronously (containerd
    /// collects what they held before this returns).
    pub async fn delete_stale_leases(&self, prefix: &str) -> Result<()> {
        let leases = self
            .leases()
            .list(self.req(ListRequest { filters: vec![] }))
            .await
            .map_err(|s| CriError::containerd("list leases", s))?
            .into_inner()
            .leases;
        for l in leases.into_iter().filter(|l| l.id.starts_with(prefix)) {
            tracing::info!(lease = %l.id, "deleting a lease left by the previous run");
            self.leases()
                .delete(self.req(DeleteRequest {
                    id: l.id.clone(),
                    sync: true,
                }))
                .await
                .map_err(|s| CriError::containerd(format!("delete lease {}", l.id), s))?;
        }
        Ok(())
    }

    /// Deletes a lease and waits for that (a failure is only logged, since the lease
    /// expires anyway).
    pub async fn delete_lease(&self, lease: Lease) {
        self.delete_lease_now(&lease.id).await;
    }

    /// Lets a lease go: it is deleted in the background (a failure is only logged,
    /// since the lease expires anyway), and then the next lease of its prefix is made
    /// ahead of need unless one is waiting already. Of two made at once, the newer is
    /// kept and the other deleted.
    pub fn release_lease(&self, lease: Lease) {
        let ctd = self.clone();
        tokio::spawn(async move {
            ctd.delete_lease_now(&lease.id).await;
            if ctd.spares().contains_key(lease.prefix) {
                return;
            }
            let Ok(id) = ctd.new_lease(lease.prefix).await else {
                return;
            };
            let displaced = ctd.spares().insert(lease.prefix, (id, Instant::now()));
            if let Some((id, _)) = displaced {
                ctd.delete_lease_now(&id).await;
            }
        });
    }

    async fn delete_lease_now(&self, id: &str) {
        if let Err(s) = self
            .leases()
            .delete(self.req(DeleteRequest {
                id: id.to_string(),
                sync: false,
            }))
            .await
        {
            tracing::warn!(lease = id, error = %s.message(), "delete lease (it expires by itself)");
        }
    }
}

/// The runc shim's options (containerd's `containerd.runc.v1.Options`), which
/// containerd-client does not generate: only the fields Gantry sets.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RuncOptions {
    /// runc's state directory (`runc --root`).
    #[prost(string, tag = "7")]
    pub root: String,
    #[prost(bool, tag = "9")]
    pub systemd_cgroup: bool,
}

impl RuncOptions {
    pub const TYPE_URL: &'static str = "containerd.runc.v1.Options";

    pub fn to_any(&self) -> prost_types::Any {
        prost_types::Any {
            type_url: Self::TYPE_URL.to_string(),
            value: prost::Message::encode_to_vec(self),
        }
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
