//! Health on a Gantry node as users see it: probes restarting and gating containers,
//! each probe kind passing and failing, lifecycle hooks around the container, and a
//! rollout held by unready pods.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use base64::Engine;
use serde_json::Value;

use super::{container_status, example, pod};
use crate::kubectl::Kubectl;
use crate::wait;

/// The pod's Ready condition is True.
fn ready(p: &Value) -> bool {
    p["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// probe-kinds.yaml on upstream's agnhost: an HTTPS readiness probe passes against a
/// self-signed TLS server and fails against plain HTTP; a gRPC readiness probe passes
/// against SERVING and a gRPC liveness probe restarts the container once it answers
/// NOT_SERVING; an exec probe that outlives its timeout fails and its process is killed.
pub(super) fn probe_kinds_pass_and_fail(k: &Kubectl) -> Result<()> {
    let cert = rcgen::generate_simple_self_signed(vec!["probe.example".to_string()])?;
    let b64 = |pem: String| base64::engine::general_purpose::STANDARD.encode(pem);
    let secret = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "probe-tls"},
        "type": "kubernetes.io/tls",
        "data": {
            "tls.crt": b64(cert.cert.pem()),
            "tls.key": b64(cert.signing_key.serialize_pem()),
        },
    });
    k.apply_yaml(&secret.to_string())?;
    k.run(&["apply", "-f", &example("probe-kinds.yaml")])?;
    for name in ["https-ready", "grpc-ready"] {
        wait::until(
            &format!("{name} to be ready through its probe"),
            Duration::from_secs(120),
            || Ok(ready(&pod(k, name)?).then_some(())),
        )?;
    }

    let p = wait::until(
        "grpc-liveness to be restarted once its health service says NOT_SERVING",
        Duration::from_secs(120),
        || {
            let p = pod(k, "grpc-liveness")?;
            let restarts = container_status(&p, "health")
                .and_then(|s| s["restartCount"].as_u64())
                .unwrap_or(0);
            Ok((restarts >= 1).then_some(p))
        },
    )?;
    let describe = k.run(&["describe", "pod", "grpc-liveness"])?;
    for event in [
        r#"Liveness probe failed: service unhealthy (responded with "NOT_SERVING")"#,
        "Container health failed liveness probe, will be restarted",
    ] {
        ensure!(
            describe.contains(event),
            "describe lacks {event:?}:\n{describe}"
        );
    }
    let last = &container_status(&p, "health").context("no health status")?["lastState"];
    ensure!(
        !last["terminated"].is_null(),
        "the liveness-killed container has no terminated lastState: {last}"
    );

    // The failing pods have been probed for as long as grpc-liveness took to fail.
    for (name, container, event) in [
        (
            "https-to-plain",
            "web",
            r#"Readiness probe failed: Get "https://"#,
        ),
        (
            "exec-timeout",
            "app",
            r#"Readiness probe failed: command ["sh" "-c" "sleep 30"] timed out"#,
        ),
    ] {
        let p = pod(k, name)?;
        let s = container_status(&p, container).cloned().unwrap_or_default();
        ensure!(
            !s["state"]["running"].is_null()
                && s["ready"] == false
                && s["restartCount"] == 0
                && !ready(&p),
            "{name} should run, unready and never restarted: {s}"
        );
        let describe = k.run(&["describe", "pod", name])?;
        ensure!(
            describe.contains(event),
            "describe of {name} lacks {event:?}:\n{describe}"
        );
    }
    // Every timed-out probe was killed: at most the attempt in flight is left.
    let ps = k.run(&["exec", "exec-timeout", "--", "ps"])?;
    let sleepers = ps.lines().filter(|l| l.contains("sleep 30")).count();
    ensure!(
        sleepers <= 1,
        "{sleepers} probe processes outlived their timeout in exec-timeout:\n{ps}"
    );

    for name in [
        "https-ready",
        "https-to-plain",
        "grpc-ready",
        "grpc-liveness",
        "exec-timeout",
    ] {
        k.run(&["delete", "pod", name, "--wait=false"])?;
    }
    k.run(&["delete", "secret", "probe-tls"])?;
    Ok(())
}

/// probes.yaml: a failing liveness probe gets the container killed and restarted with
/// Unhealthy and Killing events; a failing readiness probe keeps a running pod out of
/// Ready while its passing tcpSocket liveness probe leaves it alone; a startup probe
/// holds readiness back until it passes.
pub(super) fn probes_drive_restarts_and_readiness(k: &Kubectl) -> Result<()> {
    k.run(&["apply", "-f", &example("probes.yaml")])?;
    // The startup probe passes 15 s after the start: before that, running but not ready.
    let p = wait::until("startup-file to run", Duration::from_secs(90), || {
        let p = pod(k, "startup-file")?;
        Ok(container_status(&p, "app")
            .is_some_and(|s| !s["state"]["running"].is_null())
            .then_some(p))
    })?;
    let s = container_status(&p, "app").cloned().unwrap_or_default();
    let running_for = s["state"]["running"]["startedAt"]
        .as_str()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map(|t| jiff::Timestamp::now().duration_since(t).as_secs())
        .with_context(|| format!("startup-file runs without a startedAt: {s}"))?;
    ensure!(
        running_for < 15,
        "startup-file was first seen running {running_for}s after its start, too late to see its startup probe hold it back"
    );
    ensure!(
        s["started"] == false && !ready(&p),
        "startup-file is started or ready {running_for}s after its start, before its startup probe can pass: {s}"
    );
    wait::until("startup-file to be ready", Duration::from_secs(60), || {
        let p = pod(k, "startup-file")?;
        Ok(ready(&p).then_some(()))
    })?;

    let p = wait::until(
        "liveness-exec to be restarted by its liveness probe",
        Duration::from_secs(120),
        || {
            let p = pod(k, "liveness-exec")?;
            let restarts = container_status(&p, "app")
                .and_then(|s| s["restartCount"].as_u64())
                .unwrap_or(0);
            Ok((restarts >= 1).then_some(p))
        },
    )?;
    let last = &container_status(&p, "app").context("no app status")?["lastState"]["terminated"];
    ensure!(
        !last.is_null() && last["exitCode"] != 0,
        "the liveness-killed container's lastState: {last}"
    );
    let describe = k.run(&["describe", "pod", "liveness-exec"])?;
    for event in [
        "Liveness probe failed: cat: can't open '/tmp/healthy'",
        "Container app failed liveness probe, will be restarted",
    ] {
        ensure!(
            describe.contains(event),
            "describe lacks {event:?}:\n{describe}"
        );
    }

    let p = pod(k, "readiness-http")?;
    let s = container_status(&p, "web").cloned().unwrap_or_default();
    ensure!(
        !s["state"]["running"].is_null()
            && s["ready"] == false
            && s["restartCount"] == 0
            && !ready(&p),
        "readiness-http should run, unready and never restarted: {s}"
    );
    let describe = k.run(&["describe", "pod", "readiness-http"])?;
    ensure!(
        describe.contains("Readiness probe failed: HTTP probe failed with statuscode: 404"),
        "describe lacks the readiness failure:\n{describe}"
    );
    for name in ["liveness-exec", "readiness-http", "startup-file"] {
        k.run(&["delete", "pod", name, "--wait=false"])?;
    }
    Ok(())
}

/// rollout.yaml: version 2 of the Deployment never becomes ready, so its rollout stops
/// at one new (running, unready) pod while both version 1 pods stay available.
pub(super) fn unready_pods_hold_a_rollout(k: &Kubectl) -> Result<()> {
    k.run(&["apply", "-f", &example("rollout.yaml")])?;
    k.run(&["rollout", "status", "deployment/rollout", "--timeout=120s"])?;
    k.run(&["set", "env", "deployment/rollout", "VERSION=2"])?;
    let unready_new = |p: &Value| {
        let s = container_status(p, "app").cloned().unwrap_or_default();
        !s["state"]["running"].is_null() && s["ready"] == false
    };
    wait::until(
        "a version 2 pod to run unready",
        Duration::from_secs(90),
        || {
            let list = k.get_json(&["pods", "-l", "app=rollout"])?;
            Ok(list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .any(unready_new)
                .then_some(()))
        },
    )?;
    // Give the rollout time to go on if it wrongly would.
    std::thread::sleep(Duration::from_secs(10));
    let d = k.get_json(&["deployment", "rollout"])?;
    let status = &d["status"];
    ensure!(
        status["updatedReplicas"] == 1
            && status["availableReplicas"] == 2
            && status["readyReplicas"] == 2,
        "the rollout went on past an unready pod: {status}"
    );
    let stuck = k.run(&["rollout", "status", "deployment/rollout", "--timeout=3s"]);
    ensure!(stuck.is_err(), "rollout status says done: {stuck:?}");
    k.run(&["delete", "deployment", "rollout", "--wait=false"])?;
    Ok(())
}

/// hooks.yaml: postStart runs after the start; preStop (exec, and httpGet) runs on
/// deletion before the container gets SIGTERM; a failing postStart hook gives FailedPostStartHook and the
/// container is killed and restarted.
pub(super) fn hooks_run_around_the_container(k: &Kubectl) -> Result<()> {
    k.run(&["apply", "-f", &example("hooks.yaml")])?;
    wait::until("the hooks pod to run", Duration::from_secs(90), || {
        Ok((pod(k, "hooks")?["status"]["phase"] == "Running").then_some(()))
    })?;
    let file = k.run(&["exec", "hooks", "--", "cat", "/tmp/poststart"])?;
    ensure!(
        file.trim() == "ran",
        "the postStart hook's file holds {file:?}"
    );

    k.run(&["delete", "pod", "hooks", "--wait=false"])?;
    // During the preStop hook's 3 s the log has its line and no SIGTERM yet.
    let seen = wait::until(
        "the preStop hook's line before SIGTERM",
        Duration::from_secs(30),
        || {
            let logs = k.run(&["logs", "hooks"]).unwrap_or_default();
            Ok((logs.contains("prestop") && !logs.contains("got TERM")).then_some(logs))
        },
    )?;
    ensure!(seen.contains("started"), "logs while stopping: {seen:?}");
    // The container lingers 2 s after its "got TERM" line, so the line can be read.
    let logs = wait::until("SIGTERM after the hook", Duration::from_secs(30), || {
        let logs = k.run(&["logs", "hooks"])?;
        Ok(logs.contains("got TERM").then_some(logs))
    })?;
    let pre = logs.find("prestop").unwrap_or(usize::MAX);
    let term = logs.find("got TERM").unwrap_or(0);
    ensure!(pre < term, "SIGTERM came before the preStop hook: {logs:?}");

    // The httpGet preStop hook reaches the container (on the pod's IP) before SIGTERM,
    // as kube-lifecycle.
    wait::until("hook-http to run", Duration::from_secs(90), || {
        Ok((pod(k, "hook-http")?["status"]["phase"] == "Running").then_some(()))
    })?;
    k.run(&["delete", "pod", "hook-http", "--wait=false"])?;
    let logs = wait::until("hook-http to get SIGTERM", Duration::from_secs(30), || {
        let logs = k.run(&["logs", "hook-http"])?;
        Ok(logs.contains("got TERM").then_some(logs))
    })?;
    let request = logs
        .find("GET /prestop-http HTTP/1.1")
        .unwrap_or(usize::MAX);
    let term = logs.find("got TERM").unwrap_or(0);
    ensure!(
        request < term
            && logs
                .to_ascii_lowercase()
                .contains("user-agent: kube-lifecycle/1.37"),
        "the preStop httpGet request should come first, from kube-lifecycle: {logs:?}"
    );
    let failed = k.get_json(&[
        "events",
        "--field-selector",
        "involvedObject.name=hook-http,reason=FailedPreStopHook",
    ])?;
    ensure!(
        failed["items"].as_array().is_none_or(|a| a.is_empty()),
        "the httpGet preStop hook failed: {failed}"
    );

    wait::until(
        "hook-fails to be restarted after its postStart hook failed",
        Duration::from_secs(120),
        || {
            let p = pod(k, "hook-fails")?;
            let restarts = container_status(&p, "app")
                .and_then(|s| s["restartCount"].as_u64())
                .unwrap_or(0);
            Ok((restarts >= 1).then_some(()))
        },
    )?;
    let describe = k.run(&["describe", "pod", "hook-fails"])?;
    ensure!(
        describe.contains("FailedPostStartHook")
            && describe.contains(
                "Exec lifecycle hook ([sh -c echo no way >&2; exit 7]) for Container \"app\" in Pod \"hook-fails_default("
            )
            && describe.contains(
                "failed - error: command 'sh -c echo no way >&2; exit 7' exited with 7: no way"
            ),
        "describe lacks FailedPostStartHook:\n{describe}"
    );
    k.run(&["delete", "pod", "hook-fails", "--wait=false"])?;
    Ok(())
}
