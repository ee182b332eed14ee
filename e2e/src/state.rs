//! What a bed has created, written to `<bed>/state.json` before each host resource is
//! made, so teardown (possibly in another process, after a crash) finds all of it.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::process::{self, Recorded};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct BedState {
    pub name: String,
    pub dir: PathBuf,
    /// Daemons in start order; teardown stops them in reverse.
    pub processes: Vec<Recorded>,
    /// Bridges created for node pod networks.
    pub bridges: Vec<String>,
    /// CNI network names: the tag of their iptables rules and cached results.
    pub cni_networks: Vec<String>,
    /// Cgroups made directly below each hierarchy's root (node cgroup roots).
    pub cgroup_roots: Vec<String>,
    /// Subnets (CIDR) of 198.18.0.0/16 handed to nodes of this bed: their pod subnets,
    /// and the links between nodes that are hosts of their own (crate::multinode).
    pub pod_subnets: Vec<String>,
    /// Host-side interfaces other than bridges (veths to network namespaces the bed
    /// pinned below its directory); deleting one deletes its peer.
    #[serde(default)]
    pub links: Vec<String>,
    pub apiserver_url: Option<String>,
    pub registry_addr: Option<String>,
    pub nodes: Vec<String>,
}

impl BedState {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("state.json")
    }

    pub fn load(dir: &Path) -> Result<Self> {
        let path = Self::path(dir);
        let bytes = fs::read(&path).with_context(|| format!("read {}", path.display()))?;
        serde_json::from_slice(&bytes).with_context(|| format!("parse {}", path.display()))
    }

    /// Starts daemon `name` with its log in `<bed>/logs/NAME.log` and records it.
    pub fn spawn(&mut self, name: &str, cmd: std::process::Command) -> Result<Recorded> {
        let log = self.dir.join("logs").join(format!("{name}.log"));
        let p = process::spawn(name, cmd, &log)?;
        self.processes.push(p.clone());
        self.save()?;
        Ok(p)
    }

    /// Writes the state atomically (temp file and rename), so a crash never leaves a
    /// half-written record.
    pub fn save(&self) -> Result<()> {
        let path = Self::path(&self.dir);
        let tmp = path.with_extension("json.tmp");
        fs::write(&tmp, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("write {}", tmp.display()))?;
        fs::rename(&tmp, &path).with_context(|| format!("rename to {}", path.display()))?;
        Ok(())
    }
}
