//! Measuring gRPC calls as they pass a tower service: the method, the gRPC status code
//! and the time from the request to the end of the response body. It knows nothing of
//! the CRI beyond method names; the CRI server wraps its services with it (the
//! `gantry_cri_` metrics) and the kubelet's CRI client wraps its transport with it
//! (upstream's `kubelet_runtime_operations_*`).
//!
//! A unary call's status is in the response trailers, or in the headers of a
//! trailers-only error answer; a call is recorded once, when its body ends, fails or
//! is dropped (a dropped body without a status was cancelled by the caller).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame};
use tonic::body::Body;
use tonic::Code;

/// Receives one record per finished call.
pub trait Observer: Send + Sync + 'static {
    /// `operation` is upstream's snake_case name of the method (`run_podsandbox`).
    fn observe(&self, operation: &str, code: Code, elapsed: Duration);
}

/// Upstream's operation_type for a CRI method: the method in snake_case with
/// "pod_sandbox" written "podsandbox", as pkg/kubelet/kuberuntime's instrumented
/// services name them; UpdateContainerResources is upstream's "update_container".
pub fn operation_name(method: &str) -> String {
    if method == "UpdateContainerResources" {
        return "update_container".into();
    }
    let mut out = String::with_capacity(method.len() + 4);
    for (i, ch) in method.chars().enumerate() {
        if ch.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(ch.to_ascii_lowercase());
        } else {
            out.push(ch);
        }
    }
    out.replace("pod_sandbox", "podsandbox")
}

/// The name Go's grpc gives a code (codes.Code.String()), which upstream's metric
/// labels and CRI clients show.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// A service whose calls are reported to an observer.
#[derive(Clone)]
pub struct Observed<S> {
    inner: S,
    observer: Arc<dyn Observer>,
}

impl<S> Observed<S> {
    pub fn new(inner: S, observer: Arc<dyn Observer>) -> Self {
        Observed { inner, observer }
    }
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for Observed<S> {
    const NAME: &'static str = S::NAME;
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send + 'static>>;

impl<S> tower::Service<http::Request<Body>> for Observed<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let method = req.uri().path().rsplit('/').next().unwrap_or_default();
        let mut record = Record {
            observer: self.observer.clone(),
            operation: operation_name(method),
            start: Instant::now(),
            code: None,
            done: false,
        };
        let fut = self.inner.call(req);
        Box::pin(async move {
            match fut.await {
                Ok(resp) => {
                    // A trailers-only answer (an error) carries the status in its headers.
                    record.code = status_of(resp.headers());
                    let (parts, body) = resp.into_parts();
                    Ok(http::Response::from_parts(
                        parts,
                        Body::new(ObservedBody {
                            inner: body,
                            record,
                        }),
                    ))
                }
                Err(e) => {
                    // The transport failed: tonic reports such a call as Unavailable.
                    record.code = Some(Code::Unavailable);
                    record.finish();
                    Err(e)
                }
            }
        })
    }
}

fn status_of(headers: &http::HeaderMap) -> Option<Code> {
    let v = headers.get("grpc-status")?.to_str().ok()?;
    Some(Code::from_i32(v.trim().parse().ok()?))
}

struct Record {
    observer: Arc<dyn Observer>,
    operation: String,
    start: Instant,
    code: Option<Code>,
    done: bool,
}

impl Record {
    fn finish(&mut self) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let code = self.code.unwrap_or(Code::Cancelled);
        self.observer
            .observe(&self.operation, code, self.start.elapsed());
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        self.finish();
    }
}

struct ObservedBody {
    inner: Body,
    record: Record,
}

impl HttpBody for ObservedBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(status_of) {
                    this.record.code = Some(code);
                    this.record.finish();
                }
            }
            Poll::Ready(Some(Err(e))) => {
                this.record.code.get_or_insert(e.code());
                this.record.finish();
            }
            Poll::Ready(None) => {
                // A body that ended without trailers after a header status, or a
                // server that closed the stream: what the headers said, else Unknown.
                this.record.code.get_or_insert(Code::Unknown);
                this.record.finish();
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_names_follow_upstreams_instrumented_services() {
        for (method, op) in [
            ("RunPodSandbox", "run_podsandbox"),
            ("PodSandboxStatus", "podsandbox_status"),
            ("ListPodSandbox", "list_podsandbox"),
            ("ListPodSandboxStats", "list_podsandbox_stats"),
            ("CreateContainer", "create_container"),
            ("ContainerStatus", "container_status"),
            ("UpdateContainerResources", "update_container"),
            ("ImageFsInfo", "image_fs_info"),
            ("ExecSync", "exec_sync"),
            ("Version", "version"),
        ] {
            assert_eq!(operation_name(method), op, "{method}");
        }
    }

    #[derive(Default)]
    struct Seen(std::sync::Mutex<Vec<(String, Code)>>);

    impl Observer for Seen {
        fn observe(&self, operation: &str, code: Code, _: Duration) {
            self.0.lock().unwrap().push((operation.to_string(), code));
        }
    }

    /// A server answering the way tonic does: a success with grpc-status 0 in the
    /// trailers after the message, an error as a trailers-only answer.
    fn server(
        req: http::Request<Body>,
    ) -> std::future::Ready<Result<http::Response<Body>, std::convert::Infallible>> {
        use http_body_util::{BodyExt, StreamBody};
        let resp = if req.uri().path().ends_with("/ContainerStatus") {
            http::Response::builder()
                .header("grpc-status", "5")
                .body(Body::empty())
                .unwrap()
        } else {
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
            let frames: Vec<Result<Frame<Bytes>, tonic::Status>> = vec![
                Ok(Frame::data(Bytes::from_static(b"\0\0\0\0\0"))),
                Ok(Frame::trailers(trailers)),
            ];
            let body = StreamBody::new(futures::stream::iter(frames)).boxed_unsync();
            http::Response::new(Body::new(body))
        };
        std::future::ready(Ok(resp))
    }

    async fn call(
        svc: &mut Observed<
            impl tower::Service<
                    http::Request<Body>,
                    Response = http::Response<Body>,
                    Error = std::convert::Infallible,
                    Future = impl Send + 'static,
                > + Clone,
        >,
        path: &str,
    ) {
        use http_body_util::BodyExt;
        use tower::{Service, ServiceExt};
        let req = http::Request::builder()
            .uri(format!("http://x{path}"))
            .body(Body::empty())
            .unwrap();
        let resp = svc.ready().await.unwrap().call(req).await.unwrap();
        let _ = resp.into_body().collect().await;
    }

    #[tokio::test]
    async fn calls_are_recorded_once_with_the_status_of_trailers_or_headers() {
        let seen = Arc::new(Seen::default());
        let mut svc = Observed::new(tower::service_fn(server), seen.clone());
        call(&mut svc, "/runtime.v1.RuntimeService/RunPodSandbox").await;
        call(&mut svc, "/runtime.v1.RuntimeService/ContainerStatus").await;
        // A caller that drops the answer unread cancelled the call.
        let req = http::Request::builder()
            .uri("http://x/runtime.v1.ImageService/PullImage")
            .body(Body::empty())
            .unwrap();
        drop(tower::Service::call(&mut svc, req).await.unwrap());
        assert_eq!(
            *seen.0.lock().unwrap(),
            [
                ("run_podsandbox".to_string(), Code::Ok),
                ("container_status".to_string(), Code::NotFound),
                ("pull_image".to_string(), Code::Cancelled),
            ]
        );
    }

    #[test]
    fn codes_are_named_as_go_names_them() {
        assert_eq!(code_name(Code::Cancelled), "Canceled");
        assert_eq!(code_name(Code::NotFound), "NotFound");
        assert_eq!(code_name(Code::Ok), "OK");
    }
}
