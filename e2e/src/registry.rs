//! The image mirror: the distribution registry from Debian, on 127.0.0.1 only, serving
//! the locally built test images (e2e/images/build.sh) from the machine-wide store.

use std::fs;
use std::process::Command;
use std::time::Duration;

use anyhow::Result;

use crate::bed::free_port;
use crate::http::wait_http_ok;
use crate::paths;
use crate::state::BedState;

/// The registries the mirror stands in for. Each image is stored under its original
/// path without the registry host (registry.k8s.io/pause:3.9 is `pause:3.9`).
pub const MIRRORED: &[&str] = &[
    "registry.k8s.io",
    "k8s.gcr.io",
    "gcr.io",
    "public.ecr.aws",
    "docker.io",
];

pub fn start(state: &mut BedState) -> Result<String> {
    let storage = paths::registry_storage()?;
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let dir = state.dir.join("registry");
    fs::create_dir_all(&dir)?;
    let config = dir.join("config.yml");
    fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: {addr}\n",
            storage.display()
        ),
    )?;
    let mut cmd = Command::new(paths::system_tool("docker-registry")?);
    cmd.arg("serve").arg(&config);
    let p = state.spawn("registry", cmd)?;
    state.registry_addr = Some(addr.clone());
    state.save()?;
    wait_http_ok(&p, &addr, "/v2/", Duration::from_secs(30))?;
    Ok(addr)
}
