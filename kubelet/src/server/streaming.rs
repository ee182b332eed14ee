//! /exec, /attach and /portForward: find the running container (or the pod's sandbox)
//! in the runtime, ask the CRI for a streaming URL (Exec, Attach, PortForward) and
//! proxy the client's upgrade there, as upstream's getExec/getAttach/getPortForward
//! do with proxyStream.

use gantry_cri::api;
use http::{HeaderMap, Request, Response};
use hyper::body::Incoming;
use tokio_util::sync::CancellationToken;

use super::query::Query;
use super::reply::{ApiError, Body};
use super::resolve::{is_running, PodTarget};
use super::upgrade_proxy::{self, is_upgrade_request};
use super::Backend;

/// The stream options of exec and attach, as upstream's remotecommand NewOptions
/// reads them: each stream is enabled by the value "1" of `input`, `output`, `error`
/// and `tty` (the parameters the API server sends the kubelet; `stdin`, `stdout`,
/// `stderr` are accepted too, the names clients use towards the API server).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamOptions {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl StreamOptions {
    pub fn from_query(q: &Query) -> Result<StreamOptions, ApiError> {
        let on = |names: &[&str]| names.iter().any(|n| q.get(n) == Some("1"));
        let tty = on(&["tty"]);
        let stdin = on(&["input", "stdin"]);
        let stdout = on(&["output", "stdout"]);
        // A TTY merges stderr into stdout; upstream drops the stderr stream silently.
        let stderr = on(&["error", "stderr"]) && !tty;
        if !stdin && !stdout && !stderr {
            return Err(ApiError::BadRequest(
                "you must specify at least 1 of stdin, stdout, stderr".into(),
            ));
        }
        Ok(StreamOptions {
            stdin,
            stdout,
            stderr,
            tty,
        })
    }
}

/// The ports of a port-forward request, as upstream's portforward NewV4Options reads
/// them: WebSocket clients must name them in `port` (comma-separated or repeated);
/// SPDY clients name each port in its stream's headers, so the list may be empty.
pub fn forward_ports(q: &Query, headers: &HeaderMap) -> Result<Vec<i32>, ApiError> {
    let values = q.all("port");
    let websocket = headers
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"));
    if websocket && values.is_empty() {
        return Err(ApiError::BadRequest(
            "query parameter \"port\" is required".into(),
        ));
    }
    let mut ports = Vec::new();
    for value in values {
        if value.is_empty() {
            return Err(ApiError::BadRequest(
                "query parameter \"port\" cannot be empty".into(),
            ));
        }
        for p in value.split(',') {
            let port: u16 = p.parse().map_err(|e| {
                ApiError::BadRequest(format!("unable to parse {value:?} as a port: {e}"))
            })?;
            if port < 1 {
                return Err(ApiError::BadRequest(format!("port {value:?} must be > 0")));
            }
            ports.push(i32::from(port));
        }
    }
    Ok(ports)
}

/// The names in an /exec or /attach path.
pub struct ContainerPath<'a> {
    pub namespace: &'a str,
    pub pod: &'a str,
    pub uid: Option<&'a str>,
    pub container: &'a str,
}

pub async fn exec(
    backend: &Backend,
    req: Request<Incoming>,
    at: ContainerPath<'_>,
    stop: CancellationToken,
) -> Result<Response<Body>, ApiError> {
    let query = Query::parse(req.uri().query());
    let opts = StreamOptions::from_query(&query)?;
    let cmd: Vec<String> = query
        .all("command")
        .into_iter()
        .map(str::to_string)
        .collect();
    if cmd.is_empty() {
        return Err(ApiError::BadRequest(
            "query parameter \"command\" is required".into(),
        ));
    }
    require_upgrade(&req)?;
    let id = running_container(backend, &at).await?;
    let url = backend
        .cri_calls()
        .exec(api::ExecRequest {
            container_id: id,
            cmd,
            tty: opts.tty,
            stdin: opts.stdin,
            stdout: opts.stdout,
            stderr: opts.stderr,
        })
        .await
        .map_err(|e| ApiError::from_cri(&format!("exec in container {:?}", at.container), &e))?;
    upgrade_proxy::proxy(req, &url, stop).await
}

pub async fn attach(
    backend: &Backend,
    req: Request<Incoming>,
    at: ContainerPath<'_>,
    stop: CancellationToken,
) -> Result<Response<Body>, ApiError> {
    let opts = StreamOptions::from_query(&Query::parse(req.uri().query()))?;
    require_upgrade(&req)?;
    let id = running_container(backend, &at).await?;
    let url = backend
        .cri_calls()
        .attach(api::AttachRequest {
            container_id: id,
            stdin: opts.stdin,
            tty: opts.tty,
            stdout: opts.stdout,
            stderr: opts.stderr,
        })
        .await
        .map_err(|e| ApiError::from_cri(&format!("attach to container {:?}", at.container), &e))?;
    upgrade_proxy::proxy(req, &url, stop).await
}

pub async fn port_forward(
    backend: &Backend,
    req: Request<Incoming>,
    namespace: &str,
    pod: &str,
    uid: Option<&str>,
    stop: CancellationToken,
) -> Result<Response<Body>, ApiError> {
    let ports = forward_ports(&Query::parse(req.uri().query()), req.headers())?;
    require_upgrade(&req)?;
    let target = PodTarget::lookup(backend, namespace, pod, uid)?;
    let sandbox = target
        .sandboxes(backend)
        .await?
        .into_iter()
        .find(|s| s.state == api::PodSandboxState::SandboxReady as i32)
        .ok_or_else(|| ApiError::NotFound(format!("pod not found ({pod:?})")))?;
    let url = backend
        .cri_calls()
        .port_forward(api::PortForwardRequest {
            pod_sandbox_id: sandbox.id,
            port: ports,
        })
        .await
        .map_err(|e| ApiError::from_cri(&format!("port-forward to pod {pod:?}"), &e))?;
    upgrade_proxy::proxy(req, &url, stop).await
}

/// Checked before the CRI call so a plain request does not leave a streaming token
/// behind in the runtime.
fn require_upgrade(req: &Request<Incoming>) -> Result<(), ApiError> {
    if is_upgrade_request(req.headers()) {
        Ok(())
    } else {
        Err(ApiError::BadRequest("Upgrade request required".into()))
    }
}

/// The ID of the running container the path names.
async fn running_container(backend: &Backend, at: &ContainerPath<'_>) -> Result<String, ApiError> {
    let target = PodTarget::lookup(backend, at.namespace, at.pod, at.uid)?;
    let containers = target.containers(backend, at.container).await?;
    if containers.is_empty() && !target.exists(backend).await? {
        return Err(ApiError::NotFound("pod does not exist".into()));
    }
    containers
        .into_iter()
        .find(|c| is_running(c.state))
        .map(|c| c.id)
        .ok_or_else(|| ApiError::NotFound(format!("container not found ({:?})", at.container)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    fn opts(q: &str) -> Result<StreamOptions, ApiError> {
        StreamOptions::from_query(&Query::parse(Some(q)))
    }

    #[test]
    fn streams_are_enabled_by_upstream_parameters() {
        assert_eq!(
            opts("input=1&output=1&error=1").unwrap(),
            StreamOptions {
                stdin: true,
                stdout: true,
                stderr: true,
                tty: false
            }
        );
        assert!(opts("stdin=1").unwrap().stdin);
        // Only "1" counts, as upstream compares.
        assert!(opts("output=true").is_err());
    }

    #[test]
    fn a_tty_drops_stderr() {
        let o = opts("output=1&error=1&tty=1").unwrap();
        assert!(o.tty && o.stdout && !o.stderr);
    }

    #[test]
    fn no_stream_is_a_400() {
        let e = opts("tty=1").unwrap_err();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            e.to_string(),
            "you must specify at least 1 of stdin, stdout, stderr"
        );
    }

    fn ports(q: &str, websocket: bool) -> Result<Vec<i32>, String> {
        let mut h = HeaderMap::new();
        h.insert(
            "upgrade",
            if websocket { "websocket" } else { "SPDY/3.1" }
                .parse()
                .unwrap(),
        );
        forward_ports(&Query::parse(Some(q)), &h).map_err(|e| e.to_string())
    }

    #[test]
    fn ports_come_from_the_query() {
        assert_eq!(
            ports("port=80,443&port=8080", true),
            Ok(vec![80, 443, 8080])
        );
        assert_eq!(ports("", false), Ok(vec![]));
        assert_eq!(
            ports("", true),
            Err("query parameter \"port\" is required".into())
        );
        assert!(ports("port=0", true).unwrap_err().contains("must be > 0"));
        assert!(ports("port=http", false)
            .unwrap_err()
            .contains("unable to parse"));
        assert!(ports("port=70000", true).is_err());
    }
}
