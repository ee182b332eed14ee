//! The image mirror: the distribution registry from Debian, on 127.0.0.1 only, serving
//! the locally built test images (e2e/images/build.sh) from the machine-wide store.

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use anyhow::Result;

use crate::bed::free_port;
use crate::paths;
use crate::process::{self, Recorded};
use crate::state::BedState;
use crate::wait;

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
    let p = process::spawn("registry", cmd, &state.dir.join("logs/registry.log"))?;
    state.processes.push(p.clone());
    state.registry_addr = Some(addr.clone());
    state.save()?;
    wait_http_ok(&p, &addr, "/v2/", Duration::from_secs(30))?;
    Ok(addr)
}

/// Waits until `GET path` on plain-HTTP `addr` answers 200, failing early (with the
/// daemon's log) if the daemon exits.
pub fn wait_http_ok(p: &Recorded, addr: &str, path: &str, timeout: Duration) -> Result<()> {
    wait::until(
        &format!("{} to answer GET {path} on {addr}", p.name),
        timeout,
        || {
            if !p.is_alive() {
                return Err(wait::fatal(format!(
                    "{} exited: {}",
                    p.name,
                    p.log_tail(30)
                )));
            }
            Ok((http_status(addr, path)? == 200).then_some(()))
        },
    )
}

/// The status code of a plain HTTP/1.0 GET to a loopback address.
pub fn http_status(addr: &str, path: &str) -> Result<u16> {
    use std::io::{Read, Write};
    let sock: SocketAddr = addr.parse()?;
    let mut s = TcpStream::connect_timeout(&sock, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head)?;
    let text = String::from_utf8_lossy(&head);
    let code = text.split_whitespace().nth(1).unwrap_or("").parse()?;
    Ok(code)
}
