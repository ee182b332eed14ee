//! The CRI calls the API makes, typed, on the node's CRI client.

use std::future::Future;

use gantry_cri::api;
use gantry_cri::api::image_service_client::ImageServiceClient;
use gantry_cri::api::runtime_service_client::RuntimeServiceClient;
use gantry_pod_manager::runtime::CriService;
use tonic::Status;

/// Runs `f()` (one CRI call).
async fn call<T, F, Fut>(f: F) -> Result<T, Status>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, Status>> + Send,
    T: Send + 'static,
{
    f().await
}

/// Typed CRI calls; cloning shares the transport.
#[derive(Clone)]
pub struct CriCalls {
    runtime: RuntimeServiceClient<CriService>,
    images: ImageServiceClient<CriService>,
}

impl CriCalls {
    pub fn new(cri: &gantry_pod_manager::Cri) -> CriCalls {
        CriCalls {
            runtime: cri.runtime.clone(),
            images: cri.images.clone(),
        }
    }

    pub async fn list_pod_sandbox(
        &self,
        filter: Option<api::PodSandboxFilter>,
    ) -> Result<Vec<api::PodSandbox>, Status> {
        let mut c = self.runtime.clone();
        call(move || async move {
            c.list_pod_sandbox(api::ListPodSandboxRequest { filter })
                .await
                .map(|r| r.into_inner().items)
        })
        .await
    }

    pub async fn list_containers(
        &self,
        filter: Option<api::ContainerFilter>,
    ) -> Result<Vec<api::Container>, Status> {
        let mut c = self.runtime.clone();
        call(move || async move {
            c.list_containers(api::ListContainersRequest { filter })
                .await
                .map(|r| r.into_inner().containers)
        })
        .await
    }

    pub async fn container_status(&self, id: &str) -> Result<Option<api::ContainerStatus>, Status> {
        let mut c = self.runtime.clone();
        let container_id = id.to_string();
        call(move || async move {
            c.container_status(api::ContainerStatusRequest {
                container_id,
                verbose: false,
            })
            .await
            .map(|r| r.into_inner().status)
        })
        .await
    }

    pub async fn exec(&self, req: api::ExecRequest) -> Result<String, Status> {
        let mut c = self.runtime.clone();
        call(move || async move { c.exec(req).await.map(|r| r.into_inner().url) }).await
    }

    pub async fn attach(&self, req: api::AttachRequest) -> Result<String, Status> {
        let mut c = self.runtime.clone();
        call(move || async move { c.attach(req).await.map(|r| r.into_inner().url) }).await
    }

    pub async fn port_forward(&self, req: api::PortForwardRequest) -> Result<String, Status> {
        let mut c = self.runtime.clone();
        call(move || async move { c.port_forward(req).await.map(|r| r.into_inner().url) }).await
    }

    pub async fn list_container_stats(&self) -> Result<Vec<api::ContainerStats>, Status> {
        let mut c = self.runtime.clone();
        call(move || async move {
            c.list_container_stats(api::ListContainerStatsRequest { filter: None })
                .await
                .map(|r| r.into_inner().stats)
        })
        .await
    }

    pub async fn list_pod_sandbox_stats(&self) -> Result<Vec<api::PodSandboxStats>, Status> {
        let mut c = self.runtime.clone();
        call(move || async move {
            c.list_pod_sandbox_stats(api::ListPodSandboxStatsRequest { filter: None })
                .await
                .map(|r| r.into_inner().stats)
        })
        .await
    }

    pub async fn image_fs_info(&self) -> Result<api::ImageFsInfoResponse, Status> {
        let mut c = self.images.clone();
        call(move || async move {
            c.image_fs_info(api::ImageFsInfoRequest {})
                .await
                .map(|r| r.into_inner())
        })
        .await
    }
}
