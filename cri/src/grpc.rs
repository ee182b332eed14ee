//! The thin gRPC layer: maps the tonic-generated CRI traits onto the domain services
//! and their errors onto gRPC status codes. RPCs not built yet answer Unimplemented,
//! naming the RPC, which crictl and the kubelet report as such.

use std::pin::Pin;
use std::sync::Arc;

use base64::Engine as _;
use futures::{Stream, StreamExt};
use oci_client::secrets::RegistryAuth;
use tonic::{Request, Response, Status};

use crate::api::{
    self, image_service_server::ImageService, runtime_service_server::RuntimeService,
};
use crate::engine::Engine;
use crate::error::CriError;
use crate::images::Images;
use crate::runtime::Runtime;
use crate::streaming::server::StreamingServer;

/// The CRI server: one value serves both services.
#[derive(Clone)]
pub struct CriServer {
    pub runtime: Arc<Runtime>,
    pub images: Arc<Images>,
    pub engine: Engine,
    pub streaming: Arc<StreamingServer>,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

macro_rules! not_yet {
    ($($method:ident($req:ty) -> $resp:ty;)*) => {
        $(
            // Spelled out as #[tonic::async_trait] would expand it: the attribute does
            // not see into macro output.
            fn $method<'life0, 'async_trait>(
                &'life0 self,
                _request: Request<$req>,
            ) -> Pin<Box<dyn std::future::Future<Output = Result<Response<$resp>, Status>> + Send + 'async_trait>>
            where
                'life0: 'async_trait,
                Self: 'async_trait,
            {
                Box::pin(async move {
                    Err(Status::unimplemented(concat!(
                        "gantry: ", stringify!($method), " is not implemented yet"
                    )))
                })
            }
        )*
    };
}

#[tonic::async_trait]
impl RuntimeService for CriServer {
    async fn version(
        &self,
        _r: Request<api::VersionRequest>,
    ) -> Result<Response<api::VersionResponse>, Status> {
        Ok(Response::new(self.runtime.version()))
    }

    async fn status(
        &self,
        r: Request<api::StatusRequest>,
    ) -> Result<Response<api::StatusResponse>, Status> {
        Ok(Response::new(
            self.runtime.status(r.into_inner().verbose).await,
        ))
    }

    async fn runtime_config(
        &self,
        _r: Request<api::RuntimeConfigRequest>,
    ) -> Result<Response<api::RuntimeConfigResponse>, Status> {
        Ok(Response::new(self.runtime.runtime_config()))
    }

    async fn update_runtime_config(
        &self,
        r: Request<api::UpdateRuntimeConfigRequest>,
    ) -> Result<Response<api::UpdateRuntimeConfigResponse>, Status> {
        self.runtime.update_runtime_config(r.into_inner()).await;
        Ok(Response::new(api::UpdateRuntimeConfigResponse {}))
    }

    async fn run_pod_sandbox(
        &self,
        r: Request<api::RunPodSandboxRequest>,
    ) -> Result<Response<api::RunPodSandboxResponse>, Status> {
        let r = r.into_inner();
        let pod_sandbox_id = self
            .engine
            .run_pod_sandbox(r.config, &r.runtime_handler)
            .await?;
        Ok(Response::new(api::RunPodSandboxResponse { pod_sandbox_id }))
    }

    async fn stop_pod_sandbox(
        &self,
        r: Request<api::StopPodSandboxRequest>,
    ) -> Result<Response<api::StopPodSandboxResponse>, Status> {
        self.engine
            .stop_pod_sandbox(&r.into_inner().pod_sandbox_id)
            .await?;
        Ok(Response::new(api::StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(
        &self,
        r: Request<api::RemovePodSandboxRequest>,
    ) -> Result<Response<api::RemovePodSandboxResponse>, Status> {
        self.engine
            .remove_pod_sandbox(&r.into_inner().pod_sandbox_id)
            .await?;
        Ok(Response::new(api::RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(
        &self,
        r: Request<api::PodSandboxStatusRequest>,
    ) -> Result<Response<api::PodSandboxStatusResponse>, Status> {
        let r = r.into_inner();
        Ok(Response::new(
            self.engine
                .pod_sandbox_status(&r.pod_sandbox_id, r.verbose)?,
        ))
    }

    async fn list_pod_sandbox(
        &self,
        r: Request<api::ListPodSandboxRequest>,
    ) -> Result<Response<api::ListPodSandboxResponse>, Status> {
        let items = self.engine.list_pod_sandbox(r.into_inner().filter);
        Ok(Response::new(api::ListPodSandboxResponse { items }))
    }

    async fn create_container(
        &self,
        r: Request<api::CreateContainerRequest>,
    ) -> Result<Response<api::CreateContainerResponse>, Status> {
        let r = r.into_inner();
        let container_id = self
            .engine
            .create_container(&r.pod_sandbox_id, r.config)
            .await?;
        Ok(Response::new(api::CreateContainerResponse { container_id }))
    }

    async fn start_container(
        &self,
        r: Request<api::StartContainerRequest>,
    ) -> Result<Response<api::StartContainerResponse>, Status> {
        self.engine
            .start_container(&r.into_inner().container_id)
            .await?;
        Ok(Response::new(api::StartContainerResponse {}))
    }

    async fn stop_container(
        &self,
        r: Request<api::StopContainerRequest>,
    ) -> Result<Response<api::StopContainerResponse>, Status> {
        let r = r.into_inner();
        self.engine
            .stop_container(&r.container_id, r.timeout)
            .await?;
        Ok(Response::new(api::StopContainerResponse {}))
    }

    async fn remove_container(
        &self,
        r: Request<api::RemoveContainerRequest>,
    ) -> Result<Response<api::RemoveContainerResponse>, Status> {
        self.engine
            .remove_container(&r.into_inner().container_id)
            .await?;
        Ok(Response::new(api::RemoveContainerResponse {}))
    }

    async fn list_containers(
        &self,
        r: Request<api::ListContainersRequest>,
    ) -> Result<Response<api::ListContainersResponse>, Status> {
        let containers = self.engine.list_containers(r.into_inner().filter);
        Ok(Response::new(api::ListContainersResponse { containers }))
    }

    async fn container_status(
        &self,
        r: Request<api::ContainerStatusRequest>,
    ) -> Result<Response<api::ContainerStatusResponse>, Status> {
        let r = r.into_inner();
        Ok(Response::new(
            self.engine.container_status(&r.container_id, r.verbose)?,
        ))
    }

    async fn update_container_resources(
        &self,
        r: Request<api::UpdateContainerResourcesRequest>,
    ) -> Result<Response<api::UpdateContainerResourcesResponse>, Status> {
        let r = r.into_inner();
        self.engine
            .update_container_resources(&r.container_id, r.linux)
            .await?;
        Ok(Response::new(api::UpdateContainerResourcesResponse {}))
    }

    async fn reopen_container_log(
        &self,
        r: Request<api::ReopenContainerLogRequest>,
    ) -> Result<Response<api::ReopenContainerLogResponse>, Status> {
        self.engine
            .reopen_container_log(&r.into_inner().container_id)
            .await?;
        Ok(Response::new(api::ReopenContainerLogResponse {}))
    }

    async fn exec_sync(
        &self,
        r: Request<api::ExecSyncRequest>,
    ) -> Result<Response<api::ExecSyncResponse>, Status> {
        let r = r.into_inner();
        Ok(Response::new(
            self.engine
                .exec_sync(&r.container_id, r.cmd, r.timeout)
                .await?,
        ))
    }

    async fn get_container_events(
        &self,
        _r: Request<api::GetEventsRequest>,
    ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        let rx = self.engine.subscribe_events();
        let stream = tokio_stream::wrappers::BroadcastStream::new(rx)
            .filter_map(|e| async move { e.ok().map(|e| Ok(Arc::unwrap_or_clone(e))) });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn container_stats(
        &self,
        r: Request<api::ContainerStatsRequest>,
    ) -> Result<Response<api::ContainerStatsResponse>, Status> {
        let stats = self
            .engine
            .container_stats(&r.into_inner().container_id)
            .await?;
        Ok(Response::new(api::ContainerStatsResponse {
            stats: Some(stats),
        }))
    }

    async fn list_container_stats(
        &self,
        r: Request<api::ListContainerStatsRequest>,
    ) -> Result<Response<api::ListContainerStatsResponse>, Status> {
        let stats = self
            .engine
            .list_container_stats(r.into_inner().filter)
            .await?;
        Ok(Response::new(api::ListContainerStatsResponse { stats }))
    }

    async fn pod_sandbox_stats(
        &self,
        r: Request<api::PodSandboxStatsRequest>,
    ) -> Result<Response<api::PodSandboxStatsResponse>, Status> {
        let stats = self
            .engine
            .pod_sandbox_stats(&r.into_inner().pod_sandbox_id)
            .await?;
        Ok(Response::new(api::PodSandboxStatsResponse {
            stats: Some(stats),
        }))
    }

    async fn list_pod_sandbox_stats(
        &self,
        r: Request<api::ListPodSandboxStatsRequest>,
    ) -> Result<Response<api::ListPodSandboxStatsResponse>, Status> {
        let stats = self
            .engine
            .list_pod_sandbox_stats(r.into_inner().filter)
            .await?;
        Ok(Response::new(api::ListPodSandboxStatsResponse { stats }))
    }

    async fn list_metric_descriptors(
        &self,
        _r: Request<api::ListMetricDescriptorsRequest>,
    ) -> Result<Response<api::ListMetricDescriptorsResponse>, Status> {
        // The kubelet takes pod metrics from ListPodSandboxStats; no extra metrics.
        Ok(Response::new(api::ListMetricDescriptorsResponse::default()))
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _r: Request<api::ListPodSandboxMetricsRequest>,
    ) -> Result<Response<api::ListPodSandboxMetricsResponse>, Status> {
        Ok(Response::new(api::ListPodSandboxMetricsResponse::default()))
    }

    async fn update_pod_sandbox_resources(
        &self,
        r: Request<api::UpdatePodSandboxResourcesRequest>,
    ) -> Result<Response<api::UpdatePodSandboxResourcesResponse>, Status> {
        // The kubelet sizes the pod cgroup itself (cgroupfs driver); the runtime only
        // has to know the sandbox. As containerd, nothing else is done.
        self.engine.store.sandbox(&r.into_inner().pod_sandbox_id)?;
        Ok(Response::new(api::UpdatePodSandboxResourcesResponse {}))
    }

    async fn stream_pod_sandboxes(
        &self,
        r: Request<api::StreamPodSandboxesRequest>,
    ) -> Result<Response<Self::StreamPodSandboxesStream>, Status> {
        let items = self.engine.list_pod_sandbox(r.into_inner().filter);
        Ok(Response::new(paged(items, |pod_sandboxes| {
            api::StreamPodSandboxesResponse { pod_sandboxes }
        })))
    }

    async fn stream_containers(
        &self,
        r: Request<api::StreamContainersRequest>,
    ) -> Result<Response<Self::StreamContainersStream>, Status> {
        let items = self.engine.list_containers(r.into_inner().filter);
        Ok(Response::new(paged(items, |containers| {
            api::StreamContainersResponse { containers }
        })))
    }

    async fn stream_container_stats(
        &self,
        r: Request<api::StreamContainerStatsRequest>,
    ) -> Result<Response<Self::StreamContainerStatsStream>, Status> {
        let items = self
            .engine
            .list_container_stats(r.into_inner().filter)
            .await?;
        Ok(Response::new(paged(items, |container_stats| {
            api::StreamContainerStatsResponse { container_stats }
        })))
    }

    async fn stream_pod_sandbox_stats(
        &self,
        r: Request<api::StreamPodSandboxStatsRequest>,
    ) -> Result<Response<Self::StreamPodSandboxStatsStream>, Status> {
        let items = self
            .engine
            .list_pod_sandbox_stats(r.into_inner().filter)
            .await?;
        Ok(Response::new(paged(items, |pod_sandbox_stats| {
            api::StreamPodSandboxStatsResponse { pod_sandbox_stats }
        })))
    }

    async fn stream_pod_sandbox_metrics(
        &self,
        _r: Request<api::StreamPodSandboxMetricsRequest>,
    ) -> Result<Response<Self::StreamPodSandboxMetricsStream>, Status> {
        Ok(Response::new(paged(Vec::new(), |pod_sandbox_metrics| {
            api::StreamPodSandboxMetricsResponse {
                pod_sandbox_metrics,
            }
        })))
    }

    async fn exec(
        &self,
        r: Request<api::ExecRequest>,
    ) -> Result<Response<api::ExecResponse>, Status> {
        let r = r.into_inner();
        let c = self.engine.store.container(&r.container_id)?;
        let url = self.streaming.exec_url(&api::ExecRequest {
            container_id: c.id,
            ..r
        })?;
        Ok(Response::new(api::ExecResponse { url }))
    }

    async fn attach(
        &self,
        r: Request<api::AttachRequest>,
    ) -> Result<Response<api::AttachResponse>, Status> {
        let r = r.into_inner();
        let c = self.engine.store.container(&r.container_id)?;
        let url = self.streaming.attach_url(&api::AttachRequest {
            container_id: c.id,
            ..r
        })?;
        Ok(Response::new(api::AttachResponse { url }))
    }

    async fn port_forward(
        &self,
        r: Request<api::PortForwardRequest>,
    ) -> Result<Response<api::PortForwardResponse>, Status> {
        let r = r.into_inner();
        let sb = self.engine.store.sandbox(&r.pod_sandbox_id)?;
        let url = self.streaming.port_forward_url(&api::PortForwardRequest {
            pod_sandbox_id: sb.id,
            ..r
        })?;
        Ok(Response::new(api::PortForwardResponse { url }))
    }

    not_yet! {
        checkpoint_container(api::CheckpointContainerRequest) -> api::CheckpointContainerResponse;
        checkpoint_pod(api::CheckpointPodRequest) -> api::CheckpointPodResponse;
        restore_pod(api::RestorePodRequest) -> api::RestorePodResponse;
    }

    type StreamPodSandboxesStream = BoxStream<api::StreamPodSandboxesResponse>;
    type StreamContainersStream = BoxStream<api::StreamContainersResponse>;
    type StreamContainerStatsStream = BoxStream<api::StreamContainerStatsResponse>;
    type StreamPodSandboxStatsStream = BoxStream<api::StreamPodSandboxStatsResponse>;
    type StreamPodSandboxMetricsStream = BoxStream<api::StreamPodSandboxMetricsResponse>;
    type GetContainerEventsStream = BoxStream<api::ContainerEventResponse>;
}

#[tonic::async_trait]
impl ImageService for CriServer {
    async fn list_images(
        &self,
        r: Request<api::ListImagesRequest>,
    ) -> Result<Response<api::ListImagesResponse>, Status> {
        let filter = r.into_inner().filter.and_then(|f| f.image);
        let images = self.images.list(filter.as_ref()).await?;
        Ok(Response::new(api::ListImagesResponse { images }))
    }

    async fn image_status(
        &self,
        r: Request<api::ImageStatusRequest>,
    ) -> Result<Response<api::ImageStatusResponse>, Status> {
        let r = r.into_inner();
        let spec = required_image(r.image.as_ref())?;
        let (image, info) = self.images.status(spec, r.verbose).await?;
        Ok(Response::new(api::ImageStatusResponse { image, info }))
    }

    async fn pull_image(
        &self,
        r: Request<api::PullImageRequest>,
    ) -> Result<Response<api::PullImageResponse>, Status> {
        let r = r.into_inner();
        let spec = required_image(r.image.as_ref())?;
        let auth = registry_auth(r.auth.as_ref())?;
        let image_ref = self.images.pull(spec, auth).await?;
        Ok(Response::new(api::PullImageResponse { image_ref }))
    }

    async fn remove_image(
        &self,
        r: Request<api::RemoveImageRequest>,
    ) -> Result<Response<api::RemoveImageResponse>, Status> {
        let r = r.into_inner();
        let spec = required_image(r.image.as_ref())?;
        self.images.remove(spec).await?;
        Ok(Response::new(api::RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _r: Request<api::ImageFsInfoRequest>,
    ) -> Result<Response<api::ImageFsInfoResponse>, Status> {
        let usage = self.images.fs_usage().await?;
        // Images and containers' writable layers share the snapshotter's filesystem.
        Ok(Response::new(api::ImageFsInfoResponse {
            image_filesystems: vec![usage.clone()],
            container_filesystems: vec![usage],
        }))
    }

    type StreamImagesStream = BoxStream<api::StreamImagesResponse>;

    async fn stream_images(
        &self,
        r: Request<api::StreamImagesRequest>,
    ) -> Result<Response<Self::StreamImagesStream>, Status> {
        let filter = r.into_inner().filter.and_then(|f| f.image);
        let images = self.images.list(filter.as_ref()).await?;
        Ok(Response::new(paged(images, |images| {
            api::StreamImagesResponse { images }
        })))
    }
}

/// The Stream* RPCs: the list answer cut into pages, so no message outgrows the gRPC
/// limit however many objects there are.
fn paged<T: Send + 'static, R: Send + 'static>(
    items: Vec<T>,
    wrap: impl Fn(Vec<T>) -> R + Send + 'static,
) -> BoxStream<R> {
    const PAGE: usize = 500;
    let mut pages = Vec::new();
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        pages.push(wrap(items.by_ref().take(PAGE).collect()));
    }
    Box::pin(futures::stream::iter(pages.into_iter().map(Ok)))
}

fn required_image(spec: Option<&api::ImageSpec>) -> Result<&str, Status> {
    match spec.map(|s| s.image.as_str()) {
        Some(s) if !s.trim().is_empty() => Ok(s),
        _ => Err(CriError::InvalidArgument(
            "image spec is required: the request names no image".to_string(),
        )
        .into()),
    }
}

/// Registry credentials from the request (imagePullSecrets arrive this way): a user
/// name and password, the same as base64 `user:password` in `auth`, or a token.
pub fn registry_auth(auth: Option<&api::AuthConfig>) -> Result<RegistryAuth, Status> {
    let Some(a) = auth else {
        return Ok(RegistryAuth::Anonymous);
    };
    if !a.username.is_empty() || !a.password.is_empty() {
        return Ok(RegistryAuth::Basic(a.username.clone(), a.password.clone()));
    }
    if !a.auth.is_empty() {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(a.auth.trim())
            .map_err(|e| {
                CriError::InvalidArgument(format!("auth config: `auth` is not base64: {e}"))
            })?;
        let text = String::from_utf8(decoded).map_err(|_| {
            CriError::InvalidArgument("auth config: `auth` is not UTF-8".to_string())
        })?;
        let (user, pass) = text.split_once(':').ok_or_else(|| {
            CriError::InvalidArgument("auth config: `auth` is not user:password".to_string())
        })?;
        return Ok(RegistryAuth::Basic(user.to_string(), pass.to_string()));
    }
    if !a.registry_token.is_empty() {
        return Ok(RegistryAuth::Bearer(a.registry_token.clone()));
    }
    if !a.identity_token.is_empty() {
        return Ok(RegistryAuth::Bearer(a.identity_token.clone()));
    }
    Ok(RegistryAuth::Anonymous)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_field_decodes_to_basic_credentials() {
        let a = api::AuthConfig {
            auth: "dXNlcjpwYXNz".to_string(),
            ..Default::default()
        };
        assert!(
            matches!(registry_auth(Some(&a)), Ok(RegistryAuth::Basic(u, p)) if u == "user" && p == "pass")
        );
        let bad = api::AuthConfig {
            auth: "***".to_string(),
            ..Default::default()
        };
        assert_eq!(
            registry_auth(Some(&bad)).map(|_| ()).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        assert!(matches!(registry_auth(None), Ok(RegistryAuth::Anonymous)));
    }

    #[test]
    fn missing_image_spec_is_invalid_argument() {
        assert_eq!(
            required_image(None).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        let empty = api::ImageSpec::default();
        assert_eq!(
            required_image(Some(&empty)).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }
}
