//! Where the test bed finds its tools and keeps its state.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// Every bed lives in a directory below this one; nothing a bed creates on disk is
/// outside it, apart from the few host-wide objects listed in [`crate::teardown`].
pub const BED_ROOT: &str = "/var/lib/gantry-e2e";

/// The machine-wide cache of Go-built tools and the registry's image store, filled by
/// `scripts/setup.sh` (see e2e/tools/build.sh and e2e/images/build.sh).
pub fn tools_dir() -> PathBuf {
    std::env::var_os("GANTRY_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/gantry/tools"))
}

/// The repository the harness runs from: cargo's CARGO_MANIFEST_DIR at run time (set
/// for tests), else the one it was built from. The run-time value matters because
/// checkouts in several places share one target directory, and a build made from one
/// of them can be reused by another.
pub fn repo_root() -> PathBuf {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// A tool built by e2e/tools/build.sh.
pub fn tool(name: &str) -> Result<PathBuf> {
    let path = tools_dir().join("bin").join(name);
    if !path.is_file() {
        bail!(
            "{} is missing: run scripts/setup.sh first (it builds the pinned Kubernetes, etcd and cri-tools binaries)",
            path.display()
        );
    }
    Ok(path)
}

/// A program installed from Debian's packages by scripts/setup.sh.
pub fn system_tool(name: &str) -> Result<PathBuf> {
    for dir in [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ] {
        let path = Path::new(dir).join(name);
        if path.is_file() {
            return Ok(path);
        }
    }
    bail!("{name} is not installed: run scripts/setup.sh first (it installs the Debian packages the test bed needs)")
}

/// The registry storage holding the locally built test images.
pub fn registry_storage() -> Result<PathBuf> {
    let dir = tools_dir().join("registry");
    if !dir.join("docker").is_dir() {
        bail!(
            "no test images in {}: run scripts/setup.sh first (it builds them with e2e/images/build.sh)",
            dir.display()
        );
    }
    Ok(dir)
}

/// The CNI plugins from Debian's containernetworking-plugins.
pub const CNI_BIN_DIR: &str = "/usr/lib/cni";

/// The `gantry` binary of this build: $GANTRY_BIN, else beside the running test or
/// testbed executable in cargo's target directory (scripts/setup.sh builds it there).
pub fn gantry_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("GANTRY_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    for dir in exe.ancestors().skip(1).take(2) {
        let candidate = dir.join("gantry");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "no gantry binary next to {}: build it with `cargo build -p gantry` (scripts/setup.sh does) or set GANTRY_BIN",
        exe.display()
    )
}
