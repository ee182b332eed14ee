//! A CRI runtime for tests: sandboxes, containers, log paths and a streaming URL set
//! by the test, served through the real tonic servers in-process so the API's CRI
//! client path is the production one. Calls the API does not make are Unimplemented.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use gantry_cri::api;
use gantry_cri::api::image_service_server::{ImageService, ImageServiceServer};
use gantry_cri::api::runtime_service_server::{RuntimeService, RuntimeServiceServer};
use gantry_cri::sandbox::labels_match;
use gantry_pod_manager::{labels, Cri};
use tonic::codegen::tokio_stream::Stream;
use tonic::{Request, Response, Status};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[derive(Default)]
pub struct FakeState {
    pub sandboxes: Vec<api::PodSandbox>,
    pub containers: Vec<api::Container>,
    /// Container ID → the log path ContainerStatus reports.
    pub log_paths: HashMap<String, String>,
    /// What Exec, Attach and PortForward answer.
    pub stream_url: String,
    pub exec_requests: Vec<api::ExecRequest>,
    pub port_forward_requests: Vec<api::PortForwardRequest>,
    pub container_stats: Vec<api::ContainerStats>,
}

#[derive(Clone, Default)]
pub struct FakeRuntime {
    pub state: Arc<Mutex<FakeState>>,
}

impl FakeRuntime {
    /// A CRI client calling this runtime in-process.
    pub fn client(&self) -> Cri {
        Cri::in_process(
            RuntimeServiceServer::new(self.clone()),
            ImageServiceServer::new(FakeImages),
        )
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().unwrap()
    }

    pub fn add_sandbox(&self, id: &str, namespace: &str, name: &str, uid: &str) {
        self.state().sandboxes.push(api::PodSandbox {
            id: id.into(),
            metadata: Some(api::PodSandboxMetadata {
                name: name.into(),
                uid: uid.into(),
                namespace: namespace.into(),
                attempt: 0,
            }),
            state: api::PodSandboxState::SandboxReady as i32,
            created_at: 1,
            labels: HashMap::from([
                (labels::POD_NAMESPACE.into(), namespace.into()),
                (labels::POD_NAME.into(), name.into()),
                (labels::POD_UID.into(), uid.into()),
            ]),
            ..Default::default()
        });
    }

    /// A container of the sandbox `sandbox` (which must exist) with its log at `log`.
    pub fn add_container(
        &self,
        id: &str,
        sandbox: &str,
        name: &str,
        attempt: u32,
        state: api::ContainerState,
        log: &str,
    ) {
        let mut s = self.state();
        let sb_labels = s
            .sandboxes
            .iter()
            .find(|sb| sb.id == sandbox)
            .map(|sb| sb.labels.clone())
            .unwrap_or_default();
        let mut labels = sb_labels;
        labels.insert(labels::CONTAINER_NAME.into(), name.into());
        s.containers.push(api::Container {
            id: id.into(),
            pod_sandbox_id: sandbox.into(),
            metadata: Some(api::ContainerMetadata {
                name: name.into(),
                attempt,
            }),
            state: state as i32,
            created_at: i64::from(attempt) + 1,
            labels,
            ..Default::default()
        });
        s.log_paths.insert(id.into(), log.into());
    }

    pub fn set_state(&self, id: &str, state: api::ContainerState) {
        if let Some(c) = self.state().containers.iter_mut().find(|c| c.id == id) {
            c.state = state as i32;
        }
    }
}

/// Methods the API never calls, in the shape #[async_trait] gives trait methods.
macro_rules! unimplemented_rpcs {
    ($($name:ident($req:ident) -> $resp:ty;)*) => {$(
        fn $name<'life0, 'async_trait>(
            &'life0 self,
            _request: Request<api::$req>,
        ) -> Pin<Box<dyn Future<Output = Result<Response<$resp>, Status>> + Send + 'async_trait>>
        where
            'life0: 'async_trait,
            Self: 'async_trait,
        {
            Box::pin(async { Err(Status::unimplemented(stringify!($name))) })
        }
    )*};
}

#[tonic::async_trait]
impl RuntimeService for FakeRuntime {
    type StreamPodSandboxesStream = BoxStream<api::StreamPodSandboxesResponse>;
    type StreamContainersStream = BoxStream<api::StreamContainersResponse>;
    type StreamContainerStatsStream = BoxStream<api::StreamContainerStatsResponse>;
    type StreamPodSandboxStatsStream = BoxStream<api::StreamPodSandboxStatsResponse>;
    type GetContainerEventsStream = BoxStream<api::ContainerEventResponse>;
    type StreamPodSandboxMetricsStream = BoxStream<api::StreamPodSandboxMetricsResponse>;

    async fn list_pod_sandbox(
        &self,
        r: Request<api::ListPodSandboxRequest>,
    ) -> Result<Response<api::ListPodSandboxResponse>, Status> {
        let f = r.into_inner().filter.unwrap_or_default();
        let items = self
            .state()
            .sandboxes
            .iter()
            .filter(|s| {
                labels_match(&f.label_selector, &s.labels)
                    && (f.id.is_empty() || s.id == f.id)
                    && f.state.is_none_or(|st| st.state == s.state)
            })
            .cloned()
            .collect();
        Ok(Response::new(api::ListPodSandboxResponse { items }))
    }

    async fn list_containers(
        &self,
        r: Request<api::ListContainersRequest>,
    ) -> Result<Response<api::ListContainersResponse>, Status> {
        let f = r.into_inner().filter.unwrap_or_default();
        let containers = self
            .state()
            .containers
            .iter()
            .filter(|c| {
                labels_match(&f.label_selector, &c.labels)
                    && (f.id.is_empty() || c.id == f.id)
                    && (f.pod_sandbox_id.is_empty() || c.pod_sandbox_id == f.pod_sandbox_id)
                    && f.state.is_none_or(|st| st.state == c.state)
            })
            .cloned()
            .collect();
        Ok(Response::new(api::ListContainersResponse { containers }))
    }

    async fn container_status(
        &self,
        r: Request<api::ContainerStatusRequest>,
    ) -> Result<Response<api::ContainerStatusResponse>, Status> {
        let id = r.into_inner().container_id;
        let s = self.state();
        let c = s
            .containers
            .iter()
            .find(|c| c.id == id)
            .ok_or_else(|| Status::not_found(format!("container {id:?} not found")))?;
        let status = api::ContainerStatus {
            id: c.id.clone(),
            metadata: c.metadata.clone(),
            state: c.state,
            created_at: c.created_at,
            labels: c.labels.clone(),
            log_path: s.log_paths.get(&id).cloned().unwrap_or_default(),
            ..Default::default()
        };
        Ok(Response::new(api::ContainerStatusResponse {
            status: Some(status),
            ..Default::default()
        }))
    }

    async fn exec(
        &self,
        r: Request<api::ExecRequest>,
    ) -> Result<Response<api::ExecResponse>, Status> {
        let mut s = self.state();
        s.exec_requests.push(r.into_inner());
        Ok(Response::new(api::ExecResponse {
            url: s.stream_url.clone(),
        }))
    }

    async fn attach(
        &self,
        _r: Request<api::AttachRequest>,
    ) -> Result<Response<api::AttachResponse>, Status> {
        Ok(Response::new(api::AttachResponse {
            url: self.state().stream_url.clone(),
        }))
    }

    async fn port_forward(
        &self,
        r: Request<api::PortForwardRequest>,
    ) -> Result<Response<api::PortForwardResponse>, Status> {
        let mut s = self.state();
        s.port_forward_requests.push(r.into_inner());
        Ok(Response::new(api::PortForwardResponse {
            url: s.stream_url.clone(),
        }))
    }

    async fn list_container_stats(
        &self,
        _r: Request<api::ListContainerStatsRequest>,
    ) -> Result<Response<api::ListContainerStatsResponse>, Status> {
        Ok(Response::new(api::ListContainerStatsResponse {
            stats: self.state().container_stats.clone(),
        }))
    }

    unimplemented_rpcs! {
        version(VersionRequest) -> api::VersionResponse;
        run_pod_sandbox(RunPodSandboxRequest) -> api::RunPodSandboxResponse;
        stop_pod_sandbox(StopPodSandboxRequest) -> api::StopPodSandboxResponse;
        remove_pod_sandbox(RemovePodSandboxRequest) -> api::RemovePodSandboxResponse;
        pod_sandbox_status(PodSandboxStatusRequest) -> api::PodSandboxStatusResponse;
        stream_pod_sandboxes(StreamPodSandboxesRequest) -> Self::StreamPodSandboxesStream;
        create_container(CreateContainerRequest) -> api::CreateContainerResponse;
        start_container(StartContainerRequest) -> api::StartContainerResponse;
        stop_container(StopContainerRequest) -> api::StopContainerResponse;
        remove_container(RemoveContainerRequest) -> api::RemoveContainerResponse;
        stream_containers(StreamContainersRequest) -> Self::StreamContainersStream;
        update_container_resources(UpdateContainerResourcesRequest) -> api::UpdateContainerResourcesResponse;
        reopen_container_log(ReopenContainerLogRequest) -> api::ReopenContainerLogResponse;
        exec_sync(ExecSyncRequest) -> api::ExecSyncResponse;
        container_stats(ContainerStatsRequest) -> api::ContainerStatsResponse;
        stream_container_stats(StreamContainerStatsRequest) -> Self::StreamContainerStatsStream;
        pod_sandbox_stats(PodSandboxStatsRequest) -> api::PodSandboxStatsResponse;
        list_pod_sandbox_stats(ListPodSandboxStatsRequest) -> api::ListPodSandboxStatsResponse;
        stream_pod_sandbox_stats(StreamPodSandboxStatsRequest) -> Self::StreamPodSandboxStatsStream;
        update_runtime_config(UpdateRuntimeConfigRequest) -> api::UpdateRuntimeConfigResponse;
        status(StatusRequest) -> api::StatusResponse;
        checkpoint_container(CheckpointContainerRequest) -> api::CheckpointContainerResponse;
        checkpoint_pod(CheckpointPodRequest) -> api::CheckpointPodResponse;
        restore_pod(RestorePodRequest) -> api::RestorePodResponse;
        get_container_events(GetEventsRequest) -> Self::GetContainerEventsStream;
        list_metric_descriptors(ListMetricDescriptorsRequest) -> api::ListMetricDescriptorsResponse;
        list_pod_sandbox_metrics(ListPodSandboxMetricsRequest) -> api::ListPodSandboxMetricsResponse;
        stream_pod_sandbox_metrics(StreamPodSandboxMetricsRequest) -> Self::StreamPodSandboxMetricsStream;
        runtime_config(RuntimeConfigRequest) -> api::RuntimeConfigResponse;
        update_pod_sandbox_resources(UpdatePodSandboxResourcesRequest) -> api::UpdatePodSandboxResourcesResponse;
    }
}

#[derive(Clone, Copy)]
pub struct FakeImages;

#[tonic::async_trait]
impl ImageService for FakeImages {
    type StreamImagesStream = BoxStream<api::StreamImagesResponse>;

    unimplemented_rpcs! {
        list_images(ListImagesRequest) -> api::ListImagesResponse;
        stream_images(StreamImagesRequest) -> Self::StreamImagesStream;
        image_status(ImageStatusRequest) -> api::ImageStatusResponse;
        pull_image(PullImageRequest) -> api::PullImageResponse;
        remove_image(RemoveImageRequest) -> api::RemoveImageResponse;
        image_fs_info(ImageFsInfoRequest) -> api::ImageFsInfoResponse;
    }
}
