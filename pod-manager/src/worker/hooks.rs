//! Lifecycle hooks, as upstream's handler runner: postStart runs right after a
//! container starts (a failure gives FailedPostStartHook and the container is killed),
//! preStop runs before a container is stopped and counts against its grace period (a
//! failure gives FailedPreStopHook; the stop goes on). Handlers are exec (through
//! ExecSync), httpGet (only a failed request fails it) and sleep.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Pod};

use super::{field_path, Worker};
use crate::cluster::Cluster;
use crate::probe::run::{self, Exec};

/// Upstream never lets a stop have less than this after a preStop hook.
const MINIMUM_GRACE_SECONDS: i64 = 2;

impl<C: Cluster> Worker<C> {
    /// Runs `c`'s postStart hook; false if it failed (the caller kills the container).
    pub(super) async fn post_start(&self, pod: &Pod, c: &Container, id: &str) -> bool {
        let Some(handler) = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()) else {
            return true;
        };
        match self.run_handler(pod, c, id, handler, None).await {
            Ok(()) => true,
            Err(msg) => {
                tracing::warn!(container = %c.name, "{msg}");
                self.cluster.event(
                    pod,
                    Some(field_path(pod, &c.name)),
                    "Warning",
                    "FailedPostStartHook",
                    &msg,
                );
                false
            }
        }
    }

    /// Stops container `id` (of spec `c`, if known) within `grace` seconds, its preStop
    /// hook first; the hook's time comes out of the grace period, as upstream's
    /// killContainer.
    pub(super) async fn kill_container(
        &self,
        pod: &Pod,
        c: Option<&Container>,
        id: &str,
        grace: i64,
    ) -> Result<(), tonic::Status> {
        let mut grace = grace.max(0);
        let pre_stop = c.and_then(|c| Some((c, c.lifecycle.as_ref()?.pre_stop.as_ref()?)));
        if let Some((c, handler)) = pre_stop.filter(|_| grace > 0) {
            let started = Instant::now();
            let limit = Duration::from_secs(grace as u64);
            match tokio::time::timeout(limit, self.run_handler(pod, c, id, handler, Some(limit)))
                .await
            {
                Ok(Ok(())) => {}
                Ok(Err(msg)) => {
                    tracing::warn!(container = %c.name, "{msg}");
                    self.cluster.event(
                        pod,
                        Some(field_path(pod, &c.name)),
                        "Warning",
                        "FailedPreStopHook",
                        &msg,
                    );
                }
                Err(_) => {
                    tracing::info!(container = %c.name, grace, "the preStop hook used the whole grace period");
                }
            }
            grace -= started.elapsed().as_secs() as i64;
            grace = grace.max(MINIMUM_GRACE_SECONDS);
        }
        self.stop_container(id, grace).await
    }

    async fn run_handler(
        &self,
        pod: &Pod,
        c: &Container,
        id: &str,
        handler: &LifecycleHandler,
        limit: Option<Duration>,
    ) -> Result<(), String> {
        let who = format!(
            "for Container {:?} in Pod \"{}_{}({})\"",
            c.name,
            pod.metadata.name.as_deref().unwrap_or_default(),
            pod.metadata.namespace.as_deref().unwrap_or_default(),
            self.uid
        );
        if let Some(exec) = &handler.exec {
            let cmd = exec.command.clone().unwrap_or_default();
            // No timeout of its own upstream; a preStop hook is bounded by the grace.
            let timeout = limit.unwrap_or(Duration::from_secs(3600));
            // upstream: "Exec lifecycle hook (%v) … failed - error: %v, message: %q", the
            // error being the CRI client's "command '%s' exited with %d: %s".
            let (error, output) = match run::exec_sync(&self.cri, id, &cmd, timeout).await {
                Exec::Exited { code: 0, .. } => return Ok(()),
                Exec::Exited {
                    code,
                    stdout,
                    stderr,
                } => {
                    let stderr = String::from_utf8_lossy(&stderr).into_owned();
                    let mut output = String::from_utf8_lossy(&stdout).into_owned();
                    output.push_str(&stderr);
                    (
                        format!("command '{}' exited with {code}: {stderr}", cmd.join(" ")),
                        output,
                    )
                }
                Exec::TimedOut => (
                    format!("command {} timed out", run::go_quoted(&cmd)),
                    String::new(),
                ),
                Exec::Failed(e) => (e, String::new()),
            };
            return Err(format!(
                "Exec lifecycle hook ([{}]) {who} failed - error: {error}, message: {output:?}",
                cmd.join(" ")
            ));
        }
        if let Some(http) = &handler.http_get {
            let (path, headers) = run::path_and_headers(http);
            let fail =
                |e: String| format!("HTTP lifecycle hook ({path}) {who} failed - error: {e}");
            let port = run::resolve_port(&http.port, c).map_err(fail)?;
            let scheme = run::Scheme::of(http).map_err(fail)?;
            let host = http
                .host
                .clone()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| self.pod_ip.clone());
            let timeout = limit.unwrap_or(Duration::from_secs(60));
            // Upstream fails an HTTP hook only when the request fails, not on its status.
            return run::http_get(
                run::LIFECYCLE_AGENT,
                scheme,
                &host,
                port,
                &path,
                &headers,
                timeout,
            )
            .await
            .map(|_| ())
            .map_err(fail);
        }
        if let Some(sleep) = &handler.sleep {
            tokio::time::sleep(Duration::from_secs(sleep.seconds.max(0) as u64)).await;
            return Ok(());
        }
        Err(format!("lifecycle hook {who} has no handler"))
    }
}
