//! `testbed`: the test bed from the command line.
//!
//!   testbed up [--name dev] [--apply DIR_OR_FILE]...   start a bed with a Gantry node
//!              [--node-kind gantry|reference|cri]       (the reference node, or a bare
//!                                                       `gantry cri` and no node), apply
//!                                                       manifests, wait for their pods,
//!                                                       leave it running
//!   testbed down [--name dev | --all]                   tear beds down
//!   testbed env [--name dev]                            shell lines to use kubectl on it

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use gantry_e2e::gantry_node::{self, NodeRuntime};
use gantry_e2e::state::BedState;
use gantry_e2e::{paths, teardown, wait, Bed, BedOptions, BED_ROOT};

#[derive(Parser)]
#[command(
    name = "testbed",
    about = "Gantry's test bed: a local cluster on real components"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum NodeKind {
    Gantry,
    Reference,
    /// No node: a standalone `gantry cri` on the bed's containerd, for crictl and
    /// critest (no kubelet removes what they make).
    Cri,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start a bed (control plane, image mirror, containerd) with a node (`gantry node`
    /// on its embedded CRI, or the reference node), apply manifests, wait until their
    /// pods run, and leave everything running.
    Up {
        #[arg(long, default_value = "dev")]
        name: String,
        /// Manifest files or directories to `kubectl apply` once the node is Ready.
        #[arg(long)]
        apply: Vec<PathBuf>,
        /// Name of the node.
        #[arg(long, default_value = "gantry")]
        node: String,
        /// Which node: `gantry` (gantry node, embedded CRI), `reference` (the
        /// upstream kubelet on containerd's CRI plugin) or `cri` (no node, a bare
        /// `gantry cri`).
        #[arg(long, default_value = "gantry")]
        node_kind: NodeKind,
    },
    /// Tear down a bed and everything it made on the host.
    Down {
        #[arg(long, default_value = "dev")]
        name: String,
        /// Every bed on this machine, and the host-wide guard.
        #[arg(long)]
        all: bool,
    },
    /// Print shell lines that point kubectl at a running bed.
    Env {
        #[arg(long, default_value = "dev")]
        name: String,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Up {
            name,
            apply,
            node,
            node_kind,
        } => up(&name, &apply, &node, node_kind),
        Cmd::Down { name, all } => {
            if all {
                teardown::teardown_all()
            } else {
                teardown::teardown(&Path::new(BED_ROOT).join(&name))
            }
        }
        Cmd::Env { name } => {
            let dir = Path::new(BED_ROOT).join(&name);
            BedState::load(&dir).with_context(|| format!("no bed named {name} is running"))?;
            print_env(&dir);
            Ok(())
        }
    }
}

fn up(name: &str, manifests: &[PathBuf], node: &str, kind: NodeKind) -> Result<()> {
    let started = std::time::Instant::now();
    let mut bed = Bed::start(&BedOptions::named(name))?;
    eprintln!(
        "testbed: control plane, mirror and containerd up in {:.1?}",
        started.elapsed()
    );
    let cri_socket = match kind {
        NodeKind::Gantry => {
            let n = gantry_node::start(&mut bed, node, NodeRuntime::Embedded)
                .with_context(|| format!("start gantry node {node}"))?;
            Some(n.cri_socket)
        }
        NodeKind::Reference => {
            bed.start_reference_node(node)?;
            None
        }
        NodeKind::Cri => Some(bed.start_gantry_cri(node)?.socket),
    };
    eprintln!("testbed: node {node} Ready after {:.1?}", started.elapsed());
    let kubectl = bed.kubectl()?;
    for m in manifests {
        print!("{}", kubectl.run(&["apply", "-f", &m.to_string_lossy()])?);
    }
    if !manifests.is_empty() {
        wait::until(
            "every pod of the applied manifests to run",
            Duration::from_secs(300),
            || {
                let pods = kubectl.get_json(&["pods", "--all-namespaces"])?;
                let items = pods["items"].as_array().cloned().unwrap_or_default();
                let waiting: Vec<String> = items
                    .iter()
                    .filter(|p| {
                        p["status"]["phase"] != "Running" && p["status"]["phase"] != "Succeeded"
                    })
                    .map(|p| format!("{}={}", p["metadata"]["name"], p["status"]["phase"]))
                    .collect();
                if waiting.is_empty() && !items.is_empty() {
                    Ok(Some(()))
                } else {
                    anyhow::bail!("not running yet: {}", waiting.join(", "))
                }
            },
        )?;
        print!("{}", kubectl.run(&["get", "pods", "-o", "wide"])?);
    }
    let dir = bed.detach();
    eprintln!(
        "testbed: bed {name} is up ({:.1?}); to use it:",
        started.elapsed()
    );
    print_env(&dir);
    if let Some(socket) = cri_socket {
        println!(
            "export CONTAINER_RUNTIME_ENDPOINT=unix://{}",
            socket.display()
        );
    }
    Ok(())
}

fn print_env(dir: &Path) {
    println!(
        "export KUBECONFIG={}",
        dir.join("admin.kubeconfig").display()
    );
    println!(
        "export PATH={}:$PATH",
        paths::tools_dir().join("bin").display()
    );
}
