//! Generates the CRI `runtime.v1` bindings from the api.proto of k8s.io/cri-api at the
//! version pinned with our Kubernetes release (e2e/tools/kubernetes/go.mod), so the RPC
//! set is exactly that release's (the k8s-cri crate trails it by several RPCs). The file
//! is read from Go's module cache, where `go mod download` puts it; it is not copied into
//! this repository. GANTRY_CRI_PROTO may name the file instead. protoc comes from the
//! protoc-bin-vendored crate: the proto needs a newer one than Debian's.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=GANTRY_CRI_PROTO");
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let pins = manifest_dir.join("../e2e/tools/kubernetes/go.mod");
    println!("cargo:rerun-if-changed={}", pins.display());
    let proto = match std::env::var_os("GANTRY_CRI_PROTO") {
        Some(p) => PathBuf::from(p),
        None => cri_api_dir(pins.parent().expect("go.mod has a parent"))
            .join("pkg/apis/runtime/v1/api.proto"),
    };
    let include = proto.parent().expect("proto has a parent").to_path_buf();
    // The proto uses field options (debug_redact) newer than Debian's protoc 3.21.
    let protoc = protoc_bin_vendored::protoc_bin_path()
        .expect("protoc-bin-vendored ships protoc for this platform");
    // SAFETY: build scripts are single-threaded; nothing reads the environment concurrently.
    unsafe { std::env::set_var("PROTOC", protoc) };
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(&[&proto], &[&include])
        .unwrap_or_else(|e| panic!("generate CRI bindings from {}: {e}", proto.display()));
}

/// The module directory of k8s.io/cri-api as resolved by the pinned go.mod.
fn cri_api_dir(module: &Path) -> PathBuf {
    let out = Command::new("go")
        .args(["mod", "download", "-json", "k8s.io/cri-api"])
        .current_dir(module)
        .env("GOFLAGS", "-mod=mod")
        .output()
        .unwrap_or_else(|e| {
            panic!("run `go mod download k8s.io/cri-api` in {} (Go 1.26+ is needed to build gantry-cri): {e}", module.display())
        });
    if !out.status.success() {
        panic!(
            "`go mod download k8s.io/cri-api` in {} failed: {}",
            module.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let info: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("go mod download -json prints JSON");
    PathBuf::from(
        info["Dir"]
            .as_str()
            .expect("go mod download -json names the module directory"),
    )
}
