//! The floor: the benchmark's container started with no agent and no containerd, as
//! bare as it gets on this host. A fresh network namespace (pinned by `unshare`, as
//! `ip netns add` does, but inside the bed directory), the bed's CNI conflist (bridge,
//! host-local, portmap: what the nodes use) run with CNI_COMMAND=ADD plugin by plugin,
//! then `runc run -d` of the busybox image's bundle (unpacked once with umoci from the
//! mirror). Every run is undone (runc delete, CNI DEL, namespace unmounted) whether it
//! worked or not; the namespaces and the cgroup live inside what the bed's teardown
//! removes, as a second line of defence.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::bed::Bed;
use crate::host;
use crate::network;
use crate::paths::{self, CNI_BIN_DIR};

/// One floor start's phases (s).
#[derive(Clone, Debug, serde::Serialize)]
pub struct FloorSample {
    pub netns: f64,
    pub cni_add: f64,
    pub runc_run: f64,
    pub total: f64,
}

pub struct Floor {
    dir: PathBuf,
    bundle: PathBuf,
    conflist: Value,
    cgroup_root: String,
}

/// Prepares the floor: a pod network of its own, the image bundle, a cgroup root (all
/// recorded in the bed's state first).
pub fn prepare(bed: &mut Bed, image: &str) -> Result<Floor> {
    let dir = bed.dir().join("bench-floor");
    fs::create_dir_all(dir.join("ns"))?;
    let net = network::create_node_network(&mut bed.state, "floor", &dir.join("net.d"))?;
    let conf = net.conf_dir.join(format!("10-{}.conflist", net.name));
    let conflist: Value = serde_json::from_slice(&fs::read(&conf)?)?;
    let cgroup_root = format!("gantry-e2e-{}-floor", bed.state.name);
    bed.state.cgroup_roots.push(cgroup_root.clone());
    bed.state.save()?;
    host::create_cgroup_root(&cgroup_root)?;

    let repo = image.split_once('/').map(|(_, rest)| rest).unwrap_or(image);
    let layout = dir.join("oci");
    host::run(
        "skopeo",
        &[
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{}/{repo}", bed.registry_addr),
            &format!("oci:{}:bench", layout.display()),
        ],
    )
    .context("copy the busybox image from the mirror")?;
    let bundle = dir.join("bundle");
    host::run(
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{}:bench", layout.display()),
            &bundle.to_string_lossy(),
        ],
    )
    .context("unpack the busybox image into a runc bundle")?;
    Ok(Floor {
        dir,
        bundle,
        conflist,
        cgroup_root,
    })
}

/// What one run made, undone by `Drop` in reverse order (each step safe if not done).
struct Run<'a> {
    floor: &'a Floor,
    id: String,
    netns: PathBuf,
    netns_made: bool,
    cni_added: bool,
    container_made: bool,
}

impl Floor {
    fn runc(&self) -> Result<Command> {
        let mut cmd = Command::new(paths::system_tool("runc")?);
        cmd.arg("--root").arg(self.dir.join("runc"));
        Ok(cmd)
    }

    /// One start: namespace, CNI ADD, runc run -d (returns once the process runs).
    pub fn start_once(&self, i: usize) -> Result<FloorSample> {
        let id = format!("bench-floor-{i}");
        let mut run = Run {
            floor: self,
            id: id.clone(),
            netns: self.dir.join("ns").join(&id),
            netns_made: false,
            cni_added: false,
            container_made: false,
        };
        self.write_config(&run.netns)?;
        let t0 = Instant::now();
        fs::write(&run.netns, b"")?;
        run.netns_made = true;
        host::run(
            "unshare",
            &[&format!("--net={}", run.netns.display()), "true"],
        )?;
        let t1 = Instant::now();
        run.cni_added = true;
        self.cni("ADD", &id, &run.netns)?;
        let t2 = Instant::now();
        run.container_made = true;
        // The container inherits runc's stdio: a pipe would stay open as long as it
        // runs, so its output goes to a file.
        let log = self.dir.join("runc.log");
        let status = self
            .runc()?
            .args(["run", "-d", "--bundle"])
            .arg(&self.bundle)
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log)?)
            .status()?;
        let t3 = Instant::now();
        if !status.success() {
            bail!("runc run: {}", fs::read_to_string(&log).unwrap_or_default());
        }
        let state = self.runc()?.args(["state", &id]).output()?;
        let status: Value = serde_json::from_slice(&state.stdout).unwrap_or(Value::Null);
        if status["status"] != "running" {
            bail!(
                "the floor container {id} is {} after runc run",
                status["status"]
            );
        }
        drop(run);
        let s = |a: Instant, b: Instant| (b - a).as_secs_f64();
        Ok(FloorSample {
            netns: s(t0, t1),
            cni_add: s(t1, t2),
            runc_run: s(t2, t3),
            total: s(t0, t3),
        })
    }

    fn write_config(&self, netns: &Path) -> Result<()> {
        let path = self.bundle.join("config.json");
        let mut c: Value = serde_json::from_slice(&fs::read(&path)?)?;
        c["process"]["args"] = json!(["sleep", "infinity"]);
        c["process"]["terminal"] = json!(false);
        c["linux"]["cgroupsPath"] = json!(format!("/{}/floor", self.cgroup_root));
        let mut ns: Vec<Value> = c["linux"]["namespaces"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|n| n["type"] != "network")
            .collect();
        ns.push(json!({ "type": "network", "path": netns }));
        c["linux"]["namespaces"] = json!(ns);
        fs::write(&path, serde_json::to_vec_pretty(&c)?)?;
        Ok(())
    }

    /// Runs the conflist's plugins in order (ADD, each given the previous result) or in
    /// reverse (DEL), as libcni does.
    fn cni(&self, command: &str, id: &str, netns: &Path) -> Result<()> {
        let plugins = self.conflist["plugins"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let order: Vec<&Value> = if command == "ADD" {
            plugins.iter().collect()
        } else {
            plugins.iter().rev().collect()
        };
        let mut prev: Option<Value> = None;
        for p in order {
            let mut conf = p.clone();
            conf["name"] = self.conflist["name"].clone();
            conf["cniVersion"] = self.conflist["cniVersion"].clone();
            if let Some(r) = &prev {
                conf["prevResult"] = r.clone();
            }
            let kind = p["type"].as_str().unwrap_or("");
            let mut child = Command::new(Path::new(CNI_BIN_DIR).join(kind))
                .env("CNI_COMMAND", command)
                .env("CNI_CONTAINERID", id)
                .env("CNI_NETNS", netns)
                .env("CNI_IFNAME", "eth0")
                .env("CNI_PATH", CNI_BIN_DIR)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .with_context(|| format!("run CNI plugin {kind}"))?;
            if let Some(mut stdin) = child.stdin.take() {
                stdin.write_all(&serde_json::to_vec(&conf)?)?;
            }
            let out = child.wait_with_output()?;
            if !out.status.success() {
                bail!(
                    "CNI {command} {kind}: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            if command == "ADD" {
                prev = serde_json::from_slice(&out.stdout).ok();
            }
        }
        Ok(())
    }
}

impl Drop for Run<'_> {
    fn drop(&mut self) {
        let f = self.floor;
        if self.container_made {
            if let Ok(mut cmd) = f.runc() {
                let _ = cmd
                    .args(["delete", "--force", &self.id])
                    .stderr(Stdio::null())
                    .status();
            }
        }
        if self.cni_added {
            if let Err(e) = f.cni("DEL", &self.id, &self.netns) {
                eprintln!("bench: floor CNI DEL of {}: {e:#}", self.id);
            }
        }
        if self.netns_made {
            let _ = host::run("umount", &[&self.netns.to_string_lossy()]);
            let _ = fs::remove_file(&self.netns);
        }
    }
}
