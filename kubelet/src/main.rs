//! `gantry`: the node agent binary. `gantry node` joins a cluster as a kubelet with
//! Gantry's CRI embedded (or another runtime's); `gantry cri` serves Gantry's CRI
//! alone.

use std::path::PathBuf;

mod agent;
mod bootstrap;
mod cluster;
mod config;
mod events;
mod eviction;
mod image_gc;
mod machine;
mod metrics;
mod node;
mod node_stats;
mod pod_source;
mod rate_limit;
mod runtime;
mod server;
mod static_pods;
mod volume_sources;
mod volume_stats;

use clap::{Args, Parser, Subcommand};
use gantry_cri::CriConfig;

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
// Parsed once at start; the size of the CRI variant does not matter.
#[allow(clippy::large_enum_variant)]
enum Command {
    /// Join the cluster as a node: register the Node, keep its Lease, run the pods bound
    /// to it through the embedded CRI (or another runtime given by
    /// --container-runtime-endpoint) and serve the kubelet API on :10250.
    Node(NodeArgs),
    /// Serve only the CRI runtime.v1 RuntimeService and ImageService on a unix socket
    /// (default /run/gantry/cri.sock), backed by containerd, for crictl or another kubelet.
    Cri(CriArgs),
}

#[derive(Args)]
struct NodeArgs {
    /// A KubeletConfiguration file (kubelet.config.k8s.io/v1beta1, YAML or JSON).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The CRI endpoint of another runtime (default: Gantry's embedded CRI).
    #[arg(long)]
    container_runtime_endpoint: Option<String>,
    #[arg(long)]
    address: Option<String>,
    #[arg(long)]
    port: Option<u16>,
    /// Comma-separated cluster DNS server IPs.
    #[arg(long, value_delimiter = ',')]
    cluster_dns: Option<Vec<String>>,
    #[arg(long)]
    cluster_domain: Option<String>,
    #[arg(long)]
    max_pods: Option<u32>,
    /// Directory of static pod manifests.
    #[arg(long = "pod-manifest-path")]
    static_pod_path: Option<String>,
    #[arg(long)]
    cgroup_root: Option<String>,
    /// The node's kubeconfig; written after TLS bootstrap when missing or expired.
    #[arg(long, default_value = "/var/lib/gantry/kubeconfig")]
    kubeconfig: PathBuf,
    /// A kubeconfig with a bootstrap token, used to request the node's client
    /// certificate when --kubeconfig has none.
    #[arg(long)]
    bootstrap_kubeconfig: Option<PathBuf>,
    /// Where the client certificate and key are kept.
    #[arg(long, default_value = "/var/lib/gantry/pki")]
    cert_dir: PathBuf,
    /// The agent's state directory.
    #[arg(long, default_value = "/var/lib/gantry")]
    root_dir: PathBuf,
    /// The node's name (default: the host name).
    #[arg(long)]
    hostname_override: Option<String>,
    /// The node's address (InternalIP); default: the configured address when it is
    /// not 0.0.0.0.
    #[arg(long)]
    node_ip: Option<String>,
    #[command(flatten)]
    cri: EmbeddedCriArgs,
}

/// Settings of the embedded CRI (ignored with --container-runtime-endpoint).
#[derive(Args)]
struct EmbeddedCriArgs {
    /// The socket the embedded CRI is also served on, for crictl.
    #[arg(long, default_value = "/run/gantry/cri.sock")]
    cri_socket: PathBuf,
    /// The embedded CRI's volatile state.
    #[arg(long, default_value = "/run/gantry/cri")]
    cri_state_dir: PathBuf,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

/// What Gantry's CRI runs on, for `gantry cri` and the embedded CRI alike.
#[derive(Args)]
struct RuntimeArgs {
    /// containerd's gRPC socket.
    #[arg(long, default_value = "/run/containerd/containerd.sock")]
    containerd_address: PathBuf,
    /// containerd namespace for Gantry's images, containers and snapshots.
    #[arg(long, default_value = "gantry")]
    containerd_namespace: String,
    /// containerd's root directory (its snapshotter there is the image filesystem).
    #[arg(long, default_value = "/var/lib/containerd")]
    containerd_root: PathBuf,
    /// Registry host configuration in containerd's hosts.toml layout (DIR/HOST/hosts.toml):
    /// mirrors, plain-HTTP registries.
    #[arg(long, default_value = "/etc/gantry/certs.d")]
    registry_config_path: PathBuf,
    /// CNI network configuration directory.
    #[arg(long, default_value = "/etc/cni/net.d")]
    cni_conf_dir: PathBuf,
    /// CNI plugin directories (repeat the flag for several).
    #[arg(long = "cni-bin-dir", default_values = ["/opt/cni/bin", "/usr/lib/cni"])]
    cni_bin_dirs: Vec<PathBuf>,
    /// runc's state directory (runc --root); the shim's default when not given.
    #[arg(long)]
    runc_root: Option<PathBuf>,
    /// Address of the exec/attach/port-forward streaming server (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    stream_address: std::net::SocketAddr,
    /// Image of the infra process that pods sharing one PID namespace need.
    #[arg(long, default_value = "registry.k8s.io/pause:3.9")]
    pod_infra_image: String,
}

impl RuntimeArgs {
    /// The CRI config, given where its own state goes.
    fn config(
        self,
        listen: PathBuf,
        state_dir: PathBuf,
        root_dir: PathBuf,
        default_cgroup_parent: String,
    ) -> CriConfig {
        CriConfig {
            listen,
            containerd_address: self.containerd_address,
            namespace: self.containerd_namespace,
            containerd_root: self.containerd_root,
            snapshotter: "overlayfs".to_string(),
            registry_config_path: Some(self.registry_config_path),
            cni_conf_dir: self.cni_conf_dir,
            cni_bin_dirs: self.cni_bin_dirs,
            state_dir,
            root_dir,
            runc_root: self.runc_root,
            default_cgroup_parent,
            stream_address: self.stream_address,
            infra_image: self.pod_infra_image,
        }
    }
}

impl NodeArgs {
    fn overrides(&self) -> config::FlagOverrides {
        config::FlagOverrides {
            container_runtime_endpoint: self.container_runtime_endpoint.clone(),
            address: self.address.clone(),
            port: self.port,
            cluster_dns: self.cluster_dns.clone(),
            cluster_domain: self.cluster_domain.clone(),
            max_pods: self.max_pods,
            static_pod_path: self.static_pod_path.clone(),
            cgroup_root: self.cgroup_root.clone(),
        }
    }
}

#[derive(Args)]
struct CriArgs {
    /// Unix socket to serve the CRI on.
    #[arg(long, default_value = "/run/gantry/cri.sock")]
    listen: PathBuf,
    /// Volatile state (stdio FIFOs, namespace pins, /dev/shm mounts); gone after reboot.
    #[arg(long, default_value = "/run/gantry/cri")]
    state_dir: PathBuf,
    /// Persistent state (sandbox hostname/hosts/resolv.conf files, CNI result cache).
    #[arg(long, default_value = "/var/lib/gantry/cri")]
    root_dir: PathBuf,
    /// Cgroup parent of containers whose sandbox names none (cgroupfs path).
    #[arg(long, default_value = "/gantry")]
    default_cgroup_parent: String,
    /// Serve the CRI's operation metrics (gantry_cri_*) and the process metrics in
    /// plain HTTP at /metrics on this address (host:port); off when not given.
    #[arg(long)]
    metrics_bind_address: Option<std::net::SocketAddr>,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

impl CriArgs {
    fn into_config(self) -> CriConfig {
        self.runtime.config(
            self.listen,
            self.state_dir,
            self.root_dir,
            self.default_cgroup_parent,
        )
    }
}

fn main() {
    limit_malloc_arenas();
    let cli = Cli::parse();
    // Both kube's client and the kubelet API use rustls; one process-wide provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let code = match cli.command {
        Command::Node(args) => run_node(args),
        Command::Cri(args) => {
            let metrics = args.metrics_bind_address;
            run_cri(args.into_config(), metrics)
        }
    };
    std::process::exit(code);
}

/// Validates the configuration, then runs the node until SIGTERM or SIGINT.
fn run_node(args: NodeArgs) -> i32 {
    let overrides = args.overrides();
    let loaded = match &args.config {
        Some(path) => config::KubeletConfiguration::load(path, &overrides),
        None => config::KubeletConfiguration::from_flags(&overrides),
    };
    let config = match loaded {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gantry: {e}");
            return 1;
        }
    };
    let node_name = args
        .hostname_override
        .clone()
        .unwrap_or_else(host_name)
        .to_lowercase();
    let node_ip = match args.node_ip.clone().or_else(|| {
        (config.address != "0.0.0.0" && config.address != "::").then(|| config.address.clone())
    }) {
        Some(ip) if ip.parse::<std::net::IpAddr>().is_ok() => ip,
        Some(ip) => {
            eprintln!("gantry: --node-ip {ip:?} is not an IP address");
            return 1;
        }
        None => {
            eprintln!("gantry: give the node's address with --node-ip (or a specific `address` in the configuration)");
            return 1;
        }
    };
    let c = args.cri;
    let cri = c.runtime.config(
        c.cri_socket,
        c.cri_state_dir,
        args.root_dir.join("cri"),
        format!("{}/gantry-cri", config.cgroup_root.trim_end_matches('/')),
    );
    let opts = agent::Options {
        config,
        node_name,
        node_ip,
        kubeconfig: args.kubeconfig,
        bootstrap_kubeconfig: args.bootstrap_kubeconfig,
        cert_dir: args.cert_dir,
        root_dir: args.root_dir,
        cri,
    };
    block_on(async {
        match agent::run(opts, shutdown_signal()).await {
            Ok(()) => 0,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "node agent failed");
                1
            }
        }
    })
}

/// glibc gives each thread that allocates an arena of its own (up to eight per core),
/// and memory freed in one is not reused by the others: a long-running agent whose
/// tasks hop between threads keeps the sum of their peaks resident. Two arenas are
/// enough for two runtime workers and the odd blocking thread.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// How often freed heap memory inside the arenas is handed back to the kernel.
const HEAP_TRIM_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);

/// glibc gives back freed memory only from the top of an arena; pages freed below
/// a live block (a burst of pod starts leaves many) stay resident until
/// `malloc_trim` releases them (it walks the arenas' free lists).
async fn trim_heap_periodically() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    loop {
        tokio::time::sleep(HEAP_TRIM_INTERVAL).await;
        // SAFETY: malloc_trim only returns free pages of the allocator's own arenas.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

/// Runs `main` to its exit code on a multi-threaded runtime.
fn block_on(main: impl std::future::Future<Output = i32>) -> i32 {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => {
            rt.spawn(trim_heap_periodically());
            rt.block_on(main)
        }
        Err(e) => {
            eprintln!("gantry: start the async runtime: {e}");
            1
        }
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".to_string())
}

fn run_cri(config: CriConfig, metrics: Option<std::net::SocketAddr>) -> i32 {
    block_on(async {
        let stop = gantry_cri::server::Stop::new(shutdown_signal());
        if let Some(addr) = metrics {
            // Bind before serving the CRI, so a taken address fails the start.
            let listener = match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(error = %e, %addr, "listen for CRI metrics");
                    return 1;
                }
            };
            gantry_cri::metrics::CriMetrics::global();
            let stop = stop.clone();
            tokio::spawn(async move {
                if let Err(e) = gantry_cri::metrics::serve(listener, stop).await {
                    tracing::error!(error = %e, "serving CRI metrics failed");
                }
            });
        }
        match gantry_cri::server::serve_until(config, stop).await {
            Ok(()) => 0,
            Err(e) => {
                tracing::error!(error = %e, "CRI server failed");
                1
            }
        }
    })
}

/// Resolves on SIGTERM or SIGINT: the server stops taking calls and finishes those in
/// flight.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot listen for SIGTERM/SIGINT; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = int.recv() => tracing::info!("SIGINT: stopping"),
    }
}
