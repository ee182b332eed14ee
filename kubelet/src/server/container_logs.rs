//! GET /containerLogs/{namespace}/{pod}/{container}: a container's log, streamed with
//! chunked transfer. Which container instance is read follows upstream's
//! validateContainerLogStatus, computed from the runtime's containers instead of the
//! pod status: the current one, or with `previous` the last terminated one before it;
//! the file is the one ContainerStatus names (log_path).

use std::path::PathBuf;

use bytes::Bytes;
use gantry_cri::api;
use gantry_pod_manager::labels;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::Response;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use super::log_options::LogOptions;
use super::log_reader::{LogFile, ReadOptions};
use super::query::Query;
use super::reply::{ApiError, Body};
use super::resolve::{is_running, PodTarget};
use super::Backend;

/// Where the kubelet keeps pod logs (upstream's podLogsDir default), for runtimes that
/// report a log path relative to the sandbox's log directory.
const POD_LOGS_DIR: &str = "/var/log/pods";

pub async fn container_logs(
    backend: &Backend,
    namespace: &str,
    pod: &str,
    container: &str,
    query: &Query,
) -> Result<Response<Body>, ApiError> {
    let opts = LogOptions::from_query(query)?;
    let target = PodTarget::lookup(backend, namespace, pod, None)?;
    let not_found =
        || ApiError::NotFound(format!("container {container:?} not found in pod {pod:?}"));
    if target.spec_has_container(container) == Some(false) {
        return Err(not_found());
    }
    let containers = target.containers(backend, container).await?;
    if containers.is_empty() {
        if !target.exists(backend).await? {
            return Err(ApiError::NotFound(format!("pod {pod:?} does not exist")));
        }
        if target.pod.is_none() {
            // Only the runtime knows the pod, and it has no such container.
            return Err(not_found());
        }
    }
    let waiting = target.waiting_reason(container);
    let chosen = choose(
        &containers,
        opts.previous,
        waiting.as_deref(),
        pod,
        container,
    )?;

    let status = backend
        .cri_calls()
        .container_status(&chosen.id)
        .await
        .map_err(|e| ApiError::from_cri(&format!("status of container {container:?}"), &e))?
        .ok_or_else(|| {
            ApiError::Internal(format!(
                "the runtime gave no status for container {container:?}"
            ))
        })?;
    if status.log_path.is_empty() {
        return Err(ApiError::BadRequest(format!(
            "container {container:?} in pod {pod:?} has no log file"
        )));
    }
    let path = log_path(&status.log_path, &target, chosen);

    let read = ReadOptions {
        tail_lines: opts.tail_lines,
        limit_bytes: opts.limit_bytes,
        since: opts.since(OffsetDateTime::now_utc()),
        timestamps: opts.timestamps,
        follow: opts.follow,
        stream: opts.stream,
    };
    // Upstream answers a log it cannot read with 400 and the reason.
    let file = LogFile::open(&path, read.tail_lines)
        .await
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;

    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let id = chosen.id.clone();
    let cri = backend.cri_calls();
    let span = tracing::info_span!("container_logs", namespace, pod, container, id = %id);
    tokio::spawn(tracing::Instrument::instrument(
        async move {
            let running = move || {
                let (cri, id) = (cri.clone(), id.clone());
                async move {
                    // A container the runtime no longer knows is not running.
                    cri.container_status(&id)
                        .await
                        .ok()
                        .flatten()
                        .is_some_and(|s| is_running(s.state))
                }
            };
            if let Err(e) = file.stream(&read, running, tx).await {
                tracing::warn!(error = %e, "reading the container log failed");
            }
        },
        span,
    ));

    let body =
        StreamBody::new(ReceiverStream::new(rx).map(|b| Ok::<_, std::io::Error>(Frame::data(b))));
    let mut resp = Response::new(BodyExt::boxed(body));
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(resp)
}

/// The container instance to read, from the runtime's containers of that name (newest
/// first), following upstream's validateContainerLogStatus: the current container is
/// the newest one that started; `previous` is the last terminated one before it. A
/// pod that waits to restart its exited container (crash-loop back-off) has that
/// container as its last termination, so it is both current and previous.
fn choose<'a>(
    containers: &'a [api::Container],
    previous: bool,
    waiting: Option<&str>,
    pod: &str,
    container: &str,
) -> Result<&'a api::Container, ApiError> {
    let created = api::ContainerState::ContainerCreated as i32;
    let exited = api::ContainerState::ContainerExited as i32;
    let started: Vec<&api::Container> = containers.iter().filter(|c| c.state != created).collect();
    if previous {
        let newest_is_current = containers
            .first()
            .is_some_and(|c| c.state != created && !(c.state == exited && waiting.is_some()));
        let index = usize::from(newest_is_current);
        return started.get(index).copied().ok_or_else(|| {
            ApiError::BadRequest(format!(
                "previous terminated container {container:?} in pod {pod:?} not found"
            ))
        });
    }
    if let Some(c) = started.first() {
        return Ok(c);
    }
    // Nothing started yet: upstream's messages for the common waiting reasons.
    let why = match waiting {
        Some("ErrImagePull") => ": image can't be pulled".to_string(),
        Some("ImagePullBackOff") => ": trying and failing to pull image".to_string(),
        Some(reason) if !reason.is_empty() => format!(": {reason}"),
        _ if !containers.is_empty() => ": ContainerCreating".to_string(),
        _ => " - no logs yet".to_string(),
    };
    Err(ApiError::BadRequest(format!(
        "container {container:?} in pod {pod:?} is waiting to start{why}"
    )))
}

/// The log file's path: as the runtime reports it, or (a relative path) under the
/// pod's log directory laid out as upstream lays it out.
fn log_path(reported: &str, target: &PodTarget, c: &api::Container) -> PathBuf {
    let path = PathBuf::from(reported);
    if path.is_absolute() {
        return path;
    }
    let uid = target
        .uid
        .clone()
        .or_else(|| c.labels.get(labels::POD_UID).cloned())
        .unwrap_or_default();
    PathBuf::from(labels::pod_log_dir(
        POD_LOGS_DIR,
        &target.namespace,
        &target.name,
        &uid,
    ))
    .join(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: &str, attempt: u32, state: api::ContainerState) -> api::Container {
        api::Container {
            id: id.into(),
            metadata: Some(api::ContainerMetadata {
                name: "c".into(),
                attempt,
            }),
            state: state as i32,
            created_at: attempt as i64,
            ..Default::default()
        }
    }

    use api::ContainerState::{
        ContainerCreated as Created, ContainerExited as Exited, ContainerRunning as Running,
    };

    fn pick(
        cs: &[api::Container],
        previous: bool,
        waiting: Option<&str>,
    ) -> Result<String, String> {
        choose(cs, previous, waiting, "p", "c")
            .map(|c| c.id.clone())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn current_is_the_newest_started_and_previous_the_one_before() {
        let cs = [c("b", 1, Running), c("a", 0, Exited)];
        assert_eq!(pick(&cs, false, None), Ok("b".into()));
        assert_eq!(pick(&cs, true, None), Ok("a".into()));
    }

    #[test]
    fn without_an_earlier_container_previous_is_not_found() {
        let cs = [c("a", 0, Running)];
        assert_eq!(
            pick(&cs, true, None),
            Err("previous terminated container \"c\" in pod \"p\" not found".into())
        );
    }

    #[test]
    fn in_crash_loop_back_off_the_exited_container_is_the_previous_one() {
        let cs = [c("b", 1, Exited), c("a", 0, Exited)];
        assert_eq!(pick(&cs, false, Some("CrashLoopBackOff")), Ok("b".into()));
        assert_eq!(pick(&cs, true, Some("CrashLoopBackOff")), Ok("b".into()));
        // Terminated for good (restartPolicy Never): the earlier one is previous.
        assert_eq!(pick(&cs, true, None), Ok("a".into()));
    }

    #[test]
    fn a_created_container_is_not_read_until_it_starts() {
        let cs = [c("b", 1, Created), c("a", 0, Exited)];
        assert_eq!(pick(&cs, false, None), Ok("a".into()));
        assert_eq!(pick(&cs, true, None), Ok("a".into()));
        let only = [c("a", 0, Created)];
        assert_eq!(
            pick(&only, false, None),
            Err("container \"c\" in pod \"p\" is waiting to start: ContainerCreating".into())
        );
    }

    #[test]
    fn waiting_messages_follow_upstream() {
        assert_eq!(
            pick(&[], false, Some("ErrImagePull")),
            Err("container \"c\" in pod \"p\" is waiting to start: image can't be pulled".into())
        );
        assert_eq!(
            pick(&[], false, Some("ImagePullBackOff")),
            Err("container \"c\" in pod \"p\" is waiting to start: trying and failing to pull image".into())
        );
        assert_eq!(
            pick(&[], false, None),
            Err("container \"c\" in pod \"p\" is waiting to start - no logs yet".into())
        );
    }
}
