//! A test bed: control plane, image mirror and containerd, with nodes added on demand.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::containerd::{self, Containerd};
use crate::control_plane::{self, ControlPlane};
use crate::kubectl::Kubectl;
use crate::paths::BED_ROOT;
use crate::reference_node::{self, ReferenceNode};
use crate::registry;
use crate::state::BedState;
use crate::teardown;

#[derive(Clone, Debug)]
pub struct BedOptions {
    /// Names the bed's directory (`/var/lib/gantry-e2e/NAME`); a leftover bed of the
    /// same name is torn down first.
    pub name: String,
    /// Users whose API requests the apiserver writes to an audit log (Metadata level;
    /// every other user at level None), e.g. `system:node:NAME` to count what a node
    /// asks. Empty (the default): no audit log.
    pub audit_users: Vec<String>,
}

impl BedOptions {
    pub fn named(name: &str) -> Self {
        BedOptions {
            name: name.to_string(),
            audit_users: Vec::new(),
        }
    }
}

pub struct Bed {
    pub state: BedState,
    pub control_plane: ControlPlane,
    pub registry_addr: String,
    pub containerd: Containerd,
    /// Whether dropping the bed leaves it running (the `testbed up` command).
    detached: bool,
}

impl Bed {
    /// Starts a bed. If starting fails half-way, whatever was started is torn down.
    pub fn start(opts: &BedOptions) -> Result<Bed> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            anyhow::bail!(
                "the test bed runs as root: it manages containerd, mounts, cgroups and network"
            );
        }
        let dir = Path::new(BED_ROOT).join(&opts.name);
        if dir.exists() {
            teardown::teardown(&dir)
                .with_context(|| format!("tear down the leftover bed {}", dir.display()))?;
        }
        fs::create_dir_all(dir.join("logs"))?;
        let mut state = BedState {
            name: opts.name.clone(),
            dir: dir.clone(),
            ..Default::default()
        };
        state.save()?;
        match Self::start_in(&mut state, &opts.audit_users) {
            Ok((control_plane, registry_addr, containerd)) => Ok(Bed {
                state,
                control_plane,
                registry_addr,
                containerd,
                detached: false,
            }),
            Err(e) => {
                if let Err(t) = teardown::teardown(&dir) {
                    eprintln!("testbed: teardown after a failed start also failed: {t:#}");
                }
                Err(e.context(format!("start test bed {}", opts.name)))
            }
        }
    }

    fn start_in(
        state: &mut BedState,
        audit_users: &[String],
    ) -> Result<(ControlPlane, String, Containerd)> {
        let registry_addr = registry::start(state)?;
        let cp = control_plane::start(state, audit_users)?;
        let cni_conf_dir = state.dir.join("cni").join("containerd-cri").join("net.d");
        let containerd = containerd::start(state, &registry_addr, &cni_conf_dir)?;
        Ok((cp, registry_addr, containerd))
    }

    pub fn dir(&self) -> &Path {
        &self.state.dir
    }

    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// kubectl with the admin kubeconfig.
    pub fn kubectl(&self) -> Result<Kubectl> {
        Kubectl::new(&self.control_plane.admin_kubeconfig)
    }

    /// Adds the reference node (the upstream kubelet on containerd's CRI plugin) and
    /// waits until it is Ready. A bed has at most one: it owns containerd's CNI config.
    pub fn start_reference_node(&mut self, name: &str) -> Result<ReferenceNode> {
        reference_node::start(self, name, reference_node::Runtime::Containerd)
            .with_context(|| format!("start reference node {name}"))
    }

    /// Adds a node of the upstream kubelet on Gantry's CRI (`cri`, started with
    /// `start_gantry_cri`), and waits until it is Ready.
    pub fn start_upstream_kubelet_on(
        &mut self,
        name: &str,
        cri: &crate::gantry_cri::GantryCri,
    ) -> Result<ReferenceNode> {
        reference_node::start(self, name, reference_node::Runtime::Gantry(cri))
            .with_context(|| format!("start the upstream kubelet {name} on gantry cri"))
    }

    /// Starts `gantry cri` on the bed's containerd, with its own CNI network.
    pub fn start_gantry_cri(&mut self, name: &str) -> Result<crate::gantry_cri::GantryCri> {
        crate::gantry_cri::start(self, name).with_context(|| format!("start gantry cri {name}"))
    }

    /// Leaves the bed running after this value is dropped; `testbed down` ends it.
    pub fn detach(mut self) -> PathBuf {
        self.detached = true;
        self.state.dir.clone()
    }

    /// Tears the bed down now and reports anything that stayed behind.
    pub fn teardown(mut self) -> Result<()> {
        self.detached = true;
        teardown::teardown(&self.state.dir)?;
        let left = teardown::leftovers(&self.state.dir, &self.state);
        if !left.is_empty() {
            anyhow::bail!("bed {} left behind: {}", self.state.name, left.join("; "));
        }
        Ok(())
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        if !self.detached {
            if let Err(e) = teardown::teardown(&self.state.dir) {
                eprintln!("testbed: teardown of {} failed: {e:#}", self.state.name);
            }
        }
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
