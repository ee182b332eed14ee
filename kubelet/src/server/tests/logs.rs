//! /containerLogs against a fake CRI: which container is read, the errors, following.

use std::time::Duration;

use gantry_cri::api::ContainerState::{ContainerExited as Exited, ContainerRunning as Running};
use http::StatusCode;
use http_body_util::BodyExt;

use super::super::container_logs::container_logs;
use super::super::fake_cri::FakeRuntime;
use super::super::query::Query;
use super::super::Backend;
use super::{backend, pod};

/// A fake runtime with pod ns/web (uid u1) whose container "app" ran once (attempt 0,
/// exited) and runs again (attempt 1), each with its own log file.
fn web_pod(dir: &std::path::Path) -> FakeRuntime {
    let fake = FakeRuntime::default();
    fake.add_sandbox("sb1", "ns", "web", "u1");
    let log0 = dir.join("0.log");
    let log1 = dir.join("1.log");
    std::fs::write(&log0, "2024-05-01T10:00:00Z stdout F first run\n").unwrap();
    std::fs::write(
        &log1,
        "2024-05-01T10:01:00Z stdout F second run\n2024-05-01T10:01:01Z stderr P long \n2024-05-01T10:01:01Z stderr F line\n",
    )
    .unwrap();
    fake.add_container("c0", "sb1", "app", 0, Exited, log0.to_str().unwrap());
    fake.add_container("c1", "sb1", "app", 1, Running, log1.to_str().unwrap());
    fake
}

async fn logs(
    b: &Backend,
    ns: &str,
    pod: &str,
    c: &str,
    q: &str,
) -> Result<String, (StatusCode, String)> {
    match container_logs(b, ns, pod, c, &Query::parse(Some(q))).await {
        Ok(resp) => {
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            Ok(String::from_utf8(body.to_vec()).unwrap())
        }
        Err(e) => Err((e.status(), e.to_string())),
    }
}

#[tokio::test]
async fn container_logs_read_the_current_container_and_previous_the_one_before() {
    let dir = tempfile::tempdir().unwrap();
    let fake = web_pod(dir.path());
    let b = backend(&fake, vec![pod("ns", "web", "u1", &["app"])]);
    assert_eq!(
        logs(&b, "ns", "web", "app", "").await.unwrap(),
        "second run\nlong line\n"
    );
    assert_eq!(
        logs(&b, "ns", "web", "app", "previous=true").await.unwrap(),
        "first run\n"
    );
    assert_eq!(
        logs(&b, "ns", "web", "app", "tailLines=1").await.unwrap(),
        "line\n"
    );
    assert_eq!(
        logs(
            &b,
            "ns",
            "web",
            "app",
            "timestamps=true&sinceTime=2024-05-01T10:01:01Z"
        )
        .await
        .unwrap(),
        "2024-05-01T10:01:01.000000000Z long line\n"
    );
}

#[tokio::test]
async fn container_logs_errors_name_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let fake = web_pod(dir.path());
    let b = backend(&fake, vec![pod("ns", "web", "u1", &["app", "sidecar"])]);
    let (code, msg) = logs(&b, "ns", "nope", "app", "").await.unwrap_err();
    assert_eq!(
        (code, msg.as_str()),
        (StatusCode::NOT_FOUND, "pod \"nope\" does not exist")
    );
    let (code, msg) = logs(&b, "ns", "web", "db", "").await.unwrap_err();
    assert_eq!(
        (code, msg.as_str()),
        (
            StatusCode::NOT_FOUND,
            "container \"db\" not found in pod \"web\""
        )
    );
    let (code, msg) = logs(&b, "ns", "web", "sidecar", "").await.unwrap_err();
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_eq!(
        msg,
        "container \"sidecar\" in pod \"web\" is waiting to start - no logs yet"
    );
    let (code, msg) = logs(&b, "ns", "web", "app", "tailLines=abc")
        .await
        .unwrap_err();
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(msg.contains("tailLines"), "{msg}");

    // Only one run: no previous container.
    fake.state().containers.retain(|c| c.id == "c1");
    let (code, msg) = logs(&b, "ns", "web", "app", "previous=1")
        .await
        .unwrap_err();
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_eq!(
        msg,
        "previous terminated container \"app\" in pod \"web\" not found"
    );
}

#[tokio::test]
async fn following_a_log_ends_when_the_container_exits() {
    let dir = tempfile::tempdir().unwrap();
    let fake = web_pod(dir.path());
    let b = backend(&fake, vec![pod("ns", "web", "u1", &["app"])]);
    let resp = container_logs(
        &b,
        "ns",
        "web",
        "app",
        &Query::parse(Some("follow=true&tailLines=1")),
    )
    .await
    .unwrap();
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, "line\n");
    std::fs::OpenOptions::new()
        .append(true)
        .open(dir.path().join("1.log"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"2024-05-01T10:02:00Z stdout F bye\n"))
        .unwrap();
    fake.set_state("c1", Exited);
    let rest = tokio::time::timeout(Duration::from_secs(10), body.collect())
        .await
        .expect("the stream ends after the container exits")
        .unwrap()
        .to_bytes();
    assert_eq!(rest, "bye\n");
}
