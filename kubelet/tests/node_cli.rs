//! `gantry node` refuses what it cannot run with a message naming the problem, before
//! it starts anything (no containerd or API server is needed to see it).

use std::process::Command;

fn gantry_node(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .arg("node")
        .args(args)
        .output()
        .expect("run gantry node");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("gantry-node-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write temp file");
    path
}

#[test]
fn an_unknown_configuration_field_is_named() {
    let config = temp_file(
        "unknown.yaml",
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\ncpuManagerPolicy: static\n",
    );
    let (code, err) = gantry_node(&[
        "--config",
        config.to_str().unwrap(),
        "--node-ip",
        "10.0.0.1",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cpuManagerPolicy"), "{err}");
}

#[test]
fn a_bad_node_ip_is_refused() {
    let (code, err) = gantry_node(&["--node-ip", "not-an-ip"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("--node-ip \"not-an-ip\" is not an IP address"),
        "{err}"
    );
    let (code, err) = gantry_node(&[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--node-ip"), "{err}");
}

#[test]
fn standalone_without_static_pods_is_refused_before_anything_starts() {
    let missing = std::env::temp_dir().join("gantry-node-cli-no-such-kubeconfig");
    let (code, err) = gantry_node(&[
        "--node-ip",
        "10.0.0.1",
        "--kubeconfig",
        missing.to_str().unwrap(),
        // Nothing listens here: the refusal must come before the runtime is touched.
        "--containerd-address",
        "/nonexistent/containerd.sock",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("staticPodPath is not set"), "{err}");
}
