//! The streaming server against client-go's real clients (tests/goclient): SPDY through
//! moby/spdystream and WebSocket through gorilla, the code paths of crictl, the kubelet
//! and kubectl. Skipped (with a note) when `go` is not installed; the Go module cache or
//! proxy must provide k8s.io/client-go; GANTRY_SKIP_GO_TESTS=1 skips them too.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use gantry_cri::api;

mod common;
use common::{exec_req, server};

/// Named `streaming` so `cargo test -p gantry-cri streaming` runs these too.
mod streaming {
    use super::*;

    /// Builds the Go client once per test binary; `None` when Go is unavailable.
    fn goclient() -> Option<PathBuf> {
        static BIN: OnceLock<Option<PathBuf>> = OnceLock::new();
        BIN.get_or_init(|| {
            if std::env::var_os("GANTRY_SKIP_GO_TESTS").is_some() {
                eprintln!("GANTRY_SKIP_GO_TESTS set: skipping client-go interop tests");
                return None;
            }
            if Command::new("go").arg("version").output().is_err() {
                eprintln!("go not installed: skipping client-go interop tests");
                return None;
            }
            let src = std::env::var_os("CARGO_MANIFEST_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
                .join("tests/goclient");
            let bin = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("gantry-goclient");
            let out = Command::new("go")
                .args(["build", "-o"])
                .arg(&bin)
                .arg(".")
                .current_dir(&src)
                .output()
                .expect("run go build");
            assert!(
                out.status.success(),
                "go build: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Some(bin)
        })
        .clone()
    }

    /// Runs the Go client in `mode` against `url` (off the async runtime: it blocks).
    async fn run(mode: &str, url: String) -> serde_json::Value {
        run_with_log(mode, url).await.0
    }

    /// Also returns the client's log (klog on stderr).
    async fn run_with_log(mode: &str, url: String) -> (serde_json::Value, String) {
        let Some(bin) = goclient() else {
            return (serde_json::Value::Null, String::new());
        };
        let mode = mode.to_string();
        let out =
            tokio::task::spawn_blocking(move || Command::new(bin).args([&mode, &url]).output())
                .await
                .unwrap()
                .expect("run goclient");
        assert!(
            out.status.success(),
            "goclient: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let result = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "goclient output {e}: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        (result, String::from_utf8_lossy(&out.stderr).into_owned())
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn client_go_spdy_exec_gets_output_and_exit_code() {
        let (server, _stop) = server().await;
        let got = run(
            "exec-spdy",
            server
                .exec_url(&exec_req("cat", true, true, false))
                .unwrap(),
        )
        .await;
        if got.is_null() {
            return;
        }
        assert_eq!(got["stdout"], "from client-go", "{got}");
        assert_eq!(got["stderr"], "oops", "{got}");
        assert_eq!(got["exitCode"], 3, "{got}");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn client_go_websocket_v5_exec_gets_output_and_exit_code() {
        let (server, _stop) = server().await;
        let got = run(
            "exec-ws",
            server
                .exec_url(&exec_req("cat", true, true, false))
                .unwrap(),
        )
        .await;
        if got.is_null() {
            return;
        }
        assert_eq!(got["stdout"], "from client-go", "{got}");
        assert_eq!(got["stderr"], "oops", "{got}");
        assert_eq!(got["exitCode"], 3, "{got}");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn client_go_spdy_tty_exec_sends_terminal_size() {
        let (server, _stop) = server().await;
        let got = run(
            "exec-tty-spdy",
            server
                .exec_url(&exec_req("size", false, false, true))
                .unwrap(),
        )
        .await;
        if got.is_null() {
            return;
        }
        assert_eq!(got["stdout"], "132x43", "{got}");
        assert_eq!(got["exitCode"], 0, "{got}");
        assert!(got.get("error").is_none(), "{got}");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn client_go_spdy_attach_succeeds() {
        let (server, _stop) = server().await;
        let req = api::AttachRequest {
            container_id: "c1".into(),
            stdin: true,
            tty: false,
            stdout: true,
            stderr: false,
        };
        let got = run("attach-spdy", server.attach_url(&req).unwrap()).await;
        if got.is_null() {
            return;
        }
        assert_eq!(got["stdout"], "from client-go", "{got}");
        assert!(got.get("error").is_none(), "{got}");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn client_go_spdy_port_forward_echoes_and_reports_refused_port() {
        let (server, _stop) = server().await;
        let req = api::PortForwardRequest {
            pod_sandbox_id: "sb1".into(),
            port: vec![8080, 1],
        };
        let (got, log) =
            run_with_log("portforward-spdy", server.port_forward_url(&req).unwrap()).await;
        if got.is_null() {
            return;
        }
        assert_eq!(got["echo"], "ping0ping1", "{got}");
        // client-go logs the error stream's message and ends the whole session, as it does
        // against the upstream kubelet.
        assert_eq!(got["error"], "lost connection to pod", "{got}");
        assert!(log.contains("error forwarding port 1 to pod sb1"), "{log}");
        assert!(log.contains("connection refused"), "{log}");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn client_go_spdy_over_websocket_port_forward_echoes_and_reports_refused_port() {
        let (server, _stop) = server().await;
        let req = api::PortForwardRequest {
            pod_sandbox_id: "sb1".into(),
            port: vec![8080, 1],
        };
        let (got, log) =
            run_with_log("portforward-ws", server.port_forward_url(&req).unwrap()).await;
        if got.is_null() {
            return;
        }
        assert_eq!(got["echo"], "ping0ping1", "{got}");
        // client-go logs the error stream's message and ends the whole session, as it does
        // against the upstream kubelet.
        assert_eq!(got["error"], "lost connection to pod", "{got}");
        assert!(log.contains("error forwarding port 1 to pod sb1"), "{log}");
        assert!(log.contains("connection refused"), "{log}");
    }
}
