//! `gantry`: the node agent binary. `gantry node` will join a cluster as a kubelet with
//! its CRI embedded; `gantry cri` will serve the CRI alone. Both are described here so
//! that operators and scripts see the shape of the command line; neither runs yet.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "gantry",
    version,
    about = "A Kubernetes node agent: a kubelet with its own CRI runtime, on containerd",
    long_about = "Gantry runs on a machine and joins an existing Kubernetes cluster as a node. \
Pods scheduled to it become sandboxes and containers through Gantry's own CRI \
(runtime.v1) implementation on top of containerd; their volumes are mounted, their \
network is wired through CNI, and their status flows back to the API server."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Join the cluster as a node: register the Node, keep its Lease, run the pods bound
    /// to it through the embedded CRI (or another runtime given by
    /// --container-runtime-endpoint) and serve the kubelet API on :10250.
    Node,
    /// Serve only the CRI runtime.v1 RuntimeService and ImageService on a unix socket
    /// (default /run/gantry/cri.sock), backed by containerd, for crictl or another kubelet.
    Cri,
}

fn main() {
    let cli = Cli::parse();
    let name = match cli.command {
        Command::Node => "node",
        Command::Cri => "cri",
    };
    // Keep the exit explicit rather than pretending to run: scripts must not mistake
    // this build for a working agent.
    eprintln!("gantry: `gantry {name}` is not available in this build yet");
    std::process::exit(2);
}
