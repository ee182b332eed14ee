//! `gantry node`: starts the runtime, gets credentials, registers the Node and runs
//! its pods until SIGTERM. Stopping the agent leaves every pod running; the next start
//! adopts them (pod workers read the runtime's state afresh).

use std::path::PathBuf;

use anyhow::{Context, Result};
use gantry_cri::api;
use gantry_cri::server::Stop;
use gantry_cri::CriConfig;
use gantry_pod_manager::manager::PodManager;
use gantry_pod_manager::pod_cgroups::{CgroupFs, NodeAllocatable, PodCgroups};
use gantry_pod_manager::spec::{HostDns, NodeContext};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::bootstrap::{self, Credentials};
use crate::cluster::{ApiCluster, LocalCluster};
use crate::config::{parse_duration, KubeletConfiguration};
use crate::events::Recorder;
use crate::eviction::{self, thresholds::Signal, thresholds::Thresholds};
use crate::machine::Machine;
use crate::node::{NodeAgent, NodeSpec};
use crate::rate_limit::RateLimiter;
use crate::{image_gc, pod_source, runtime, server, static_pods};
use std::sync::Arc;

pub struct Options {
    pub config: KubeletConfiguration,
    pub node_name: String,
    pub node_ip: String,
    pub kubeconfig: PathBuf,
    pub bootstrap_kubeconfig: Option<PathBuf>,
    pub cert_dir: PathBuf,
    pub root_dir: PathBuf,
    /// The embedded CRI's settings (used when no runtime endpoint is configured).
    pub cri: CriConfig,
}

pub async fn run(
    opts: Options,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let config = &opts.config;
    let standalone = opts.bootstrap_kubeconfig.is_none() && !opts.kubeconfig.exists();
    // Refused before anything starts: standalone mode has nothing to run without
    // static pods.
    if standalone && config.static_pod_path.is_empty() {
        anyhow::bail!(
            "no --kubeconfig ({} does not exist) and no --bootstrap-kubeconfig: standalone mode runs static pods only, and staticPodPath is not set",
            opts.kubeconfig.display()
        );
    }
    let stop = Stop::new(shutdown);
    crate::metrics::register_node(
        &opts.node_name,
        config.container_runtime_endpoint.is_empty(),
    );
    let cri = if config.container_runtime_endpoint.is_empty() {
        runtime::embedded(&opts.cri, stop.clone()).await?
    } else {
        runtime::remote(&config.container_runtime_endpoint)?
    };
    let runtime_name = runtime_name(&cri).await;
    tracing::info!(runtime = %cri.endpoint, name = %runtime_name, "container runtime");

    if standalone {
        return run_standalone(opts, cri, runtime_name, stop).await;
    }
    let creds = Credentials {
        node_name: opts.node_name.clone(),
        kubeconfig: opts.kubeconfig.clone(),
        bootstrap_kubeconfig: opts.bootstrap_kubeconfig.clone(),
        cert_dir: opts.cert_dir.clone(),
    };
    let client = bootstrap::client(&creds).await?;
    if config.rotate_certificates {
        tokio::spawn(bootstrap::rotate_forever(creds.clone(), client.clone()));
    }
    let limiter = Arc::new(RateLimiter::kubelet_default());
    let (events, post_events) = Recorder::new(client.clone(), &opts.node_name, limiter.clone());
    tokio::spawn(post_events);

    prepare_root_dir(&opts.root_dir)?;
    // Validated with the configuration: this cannot fail here.
    let thresholds = Thresholds::from_config(config).map_err(|e| anyhow::anyhow!(e))?;
    let machine = Machine::read(&opts.root_dir);
    let reserved = node_reserved(config, &machine, &thresholds);
    let pressure = eviction::Pressure::default();
    let agent = NodeAgent {
        spec: NodeSpec {
            name: opts.node_name.clone(),
            ip: opts.node_ip.clone(),
            port: config.port,
            max_pods: config.max_pods,
            provider_id: config.provider_id.clone(),
            lease_duration_seconds: config.node_lease_duration_seconds,
            update_every: parse_duration(&config.node_status_update_frequency)
                .unwrap_or(std::time::Duration::from_secs(10)),
            report_every: parse_duration(&config.node_status_report_frequency)
                .unwrap_or(std::time::Duration::from_secs(300)),
            reserved,
        },
        client: client.clone(),
        cri: cri.clone(),
        machine: machine.clone(),
        events: events.clone(),
        pressure: pressure.clone(),
    };
    agent.register().await?;
    events.node_event("Normal", "Starting", "Starting kubelet.");
    tokio::spawn(async move { agent.run().await });

    let cluster = ApiCluster::new(client.clone(), events.clone(), limiter);
    tokio::spawn(cluster.clone().post_statuses());
    let node = node_context(config, &opts, &machine, &reserved);
    let cgroups = pod_cgroups(config, &machine)?;
    if cgroups.is_some() && enforces_pods(config) {
        events.node_event(
            "Normal",
            "NodeAllocatableEnforced",
            "Updated Node Allocatable limit across pods",
        );
    }
    let static_dir =
        (!config.static_pod_path.is_empty()).then(|| PathBuf::from(&config.static_pod_path));
    let mut sources = vec![pod_source::SOURCE];
    if static_dir.is_some() {
        sources.push(static_pods::SOURCE);
    }
    let manager = PodManager::new(cri.clone(), cluster, node, runtime_name, &sources, cgroups);
    manager.set_admit_handler(eviction::admit_handler(pressure.clone()));
    tokio::spawn(manager.clone().watch_runtime());
    let pods_of = manager.clone();
    let backend = server::Backend {
        cri: cri.clone(),
        kube: client.get(),
        node_name: opts.node_name.clone(),
        pods: Arc::new(move || pods_of.pods()),
        volumes_root: Some(opts.root_dir.clone()),
        volume_stats_every: parse_duration(&config.volume_stats_agg_period)
            .unwrap_or(std::time::Duration::from_secs(60)),
        summaries: Arc::default(),
    };
    let image_gc = image_gc::SharedImageGc::new(config.image_gc_policy(), cri.clone());
    tokio::spawn(
        eviction::EvictionManager {
            config: thresholds,
            pressure,
            pods: manager.clone(),
            backend: backend.clone(),
            events: events.clone(),
            root_dir: opts.root_dir.clone(),
            reclaimer: Box::new(image_gc.clone()),
        }
        .run(),
    );
    let mirrors = Arc::new(pod_source::MirrorPods::default());
    tokio::spawn(pod_source::watch_api(
        client.clone(),
        opts.node_name.clone(),
        manager.clone(),
        mirrors.clone(),
    ));
    if let Some(dir) = static_dir {
        tokio::spawn(static_pods::run(
            dir,
            opts.node_name.clone(),
            manager.clone(),
            Some((client.clone(), mirrors)),
        ));
    }

    rotate_logs(config, &opts, &cri);
    tokio::spawn(image_gc.run(Some(events.clone())));
    let api = api_server(config, &opts, &manager)?;
    let serving = tokio::spawn(server::serve(api, backend, stop.wait()));

    stop.wait().await;
    match serving.await {
        Ok(Err(e)) => tracing::warn!(error = %format!("{e:#}"), "kubelet API"),
        Err(e) => tracing::warn!(error = %e, "kubelet API task"),
        Ok(Ok(())) => {}
    }
    tracing::info!("stopping; pods keep running");
    Ok(())
}

/// Standalone mode (no kubeconfig, no bootstrap kubeconfig): the static pods of
/// staticPodPath run with no API server at all, as upstream's kubelet without
/// --kubeconfig. Statuses and events go to the log; there is no kubelet API, since
/// its authentication and authorization need the API server.
async fn run_standalone(
    opts: Options,
    cri: gantry_pod_manager::Cri,
    runtime_name: String,
    stop: Stop,
) -> Result<()> {
    let config = &opts.config;
    tracing::info!(static_pod_path = %config.static_pod_path, "standalone: no API server; running static pods only");
    prepare_root_dir(&opts.root_dir)?;
    let machine = Machine::read(&opts.root_dir);
    let thresholds = Thresholds::from_config(config).map_err(|e| anyhow::anyhow!(e))?;
    let node = node_context(
        config,
        &opts,
        &machine,
        &node_reserved(config, &machine, &thresholds),
    );
    let cgroups = pod_cgroups(config, &machine)?;
    let manager = PodManager::new(
        cri.clone(),
        Arc::new(LocalCluster),
        node,
        runtime_name,
        &[static_pods::SOURCE],
        cgroups,
    );
    tokio::spawn(manager.clone().watch_runtime());
    tokio::spawn(static_pods::run(
        PathBuf::from(&config.static_pod_path),
        opts.node_name.clone(),
        manager,
        None,
    ));
    rotate_logs(config, &opts, &cri);
    tokio::spawn(image_gc::SharedImageGc::new(config.image_gc_policy(), cri.clone()).run(None));
    stop.wait().await;
    tracing::info!("stopping; pods keep running");
    Ok(())
}

fn rotate_logs(config: &KubeletConfiguration, opts: &Options, cri: &gantry_pod_manager::Cri) {
    tokio::spawn(gantry_pod_manager::log_rotation::run(
        cri.clone(),
        opts.node_name.clone(),
        gantry_pod_manager::log_rotation::LogPolicy {
            max_size: config.container_log_max_size().unwrap_or(10 << 20),
            max_files: config.container_log_max_files as usize,
        },
    ));
}

/// upstream's node allocatable reservation: systemReserved plus kubeReserved, plus the
/// hard eviction thresholds of memory.available and nodefs.available.
fn node_reserved(
    config: &KubeletConfiguration,
    machine: &Machine,
    thresholds: &Thresholds,
) -> crate::node::Reserved {
    use gantry_pod_manager::spec::quantity::Quantity as Q;
    let reserved = |name: &str, milli: bool| -> i64 {
        [&config.system_reserved, &config.kube_reserved]
            .iter()
            .filter_map(|m| m.get(name))
            .filter_map(|v| Q::parse(v).ok())
            .map(|q| if milli { q.milli_value() } else { q.value() })
            .sum()
    };
    let hard = |signal: Signal, capacity: i64| -> i64 {
        thresholds
            .thresholds
            .iter()
            .filter(|t| t.signal == signal && t.is_hard())
            .map(|t| t.value.quantity(capacity).value)
            .max()
            .unwrap_or(0)
    };
    crate::node::Reserved {
        cpu_millis: reserved("cpu", true),
        memory: reserved("memory", false)
            + hard(Signal::MemoryAvailable, machine.memory_bytes as i64),
        ephemeral_storage: reserved("ephemeral-storage", false)
            + hard(
                Signal::NodeFsAvailable,
                machine.ephemeral_storage_bytes as i64,
            ),
    }
}

/// What the node contributes to every pod's configs.
fn node_context(
    config: &KubeletConfiguration,
    opts: &Options,
    machine: &Machine,
    reserved: &crate::node::Reserved,
) -> NodeContext {
    let (cpu, memory, storage) = reserved.allocatable(machine);
    NodeContext {
        node_name: opts.node_name.clone(),
        node_ips: vec![opts.node_ip.clone()],
        cluster_dns: config.cluster_dns.clone(),
        cluster_domain: config.cluster_domain.clone(),
        host_dns: read_resolv_conf(&config.resolv_conf),
        pod_logs_dir: config.pod_logs_dir.clone(),
        volumes_root: opts.root_dir.to_string_lossy().into_owned(),
        cgroup_parent: gantry_pod_manager::pod_cgroups::kubepods_name(&config.cgroup_root),
        cgroups_per_qos: config.cgroups_per_qos,
        allocatable_cpu_millis: cpu,
        allocatable_memory: memory,
        allocatable_ephemeral_storage: storage,
        memory_capacity: machine.memory_bytes as i64,
        resolv_conf_disabled: config.resolv_conf.is_empty(),
        seccomp_profile_root: opts.root_dir.join("seccomp").to_string_lossy().into_owned(),
        ..Default::default()
    }
}

fn enforces_pods(config: &KubeletConfiguration) -> bool {
    config.enforce_node_allocatable.iter().any(|v| v == "pods")
}

/// The node's QoS and pod cgroups (cgroupsPerQOS), set up before any pod runs:
/// `<cgroupRoot>/kubepods` limited to capacity minus systemReserved and kubeReserved
/// when enforceNodeAllocatable has "pods" (else to the capacity), as upstream.
fn pod_cgroups(
    config: &KubeletConfiguration,
    machine: &Machine,
) -> Result<Option<Arc<PodCgroups>>> {
    if !config.cgroups_per_qos {
        return Ok(None);
    }
    let fs = CgroupFs::detect().context("find the cgroup filesystem")?;
    let capacity = NodeAllocatable {
        milli_cpu: machine.cpus as i64 * 1000,
        memory: machine.memory_bytes as i64,
        // The smaller of kernel.pid_max and kernel.threads-max (upstream's pidlimit).
        pids: eviction::signals::pids(std::path::Path::new("/")).map_or(0, |o| o.capacity),
    };
    let allocatable = if enforces_pods(config) {
        let list = |m: &std::collections::BTreeMap<String, String>| {
            m.iter()
                .map(|(k, v)| (k.clone(), Quantity(v.clone())))
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        let (system, kube) = (list(&config.system_reserved), list(&config.kube_reserved));
        NodeAllocatable::from_capacity(capacity, &[&system, &kube])
    } else {
        capacity
    };
    let cgroups = PodCgroups::start(fs, &config.cgroup_root, allocatable, config.pod_pids_limit)
        .context("set up the node's pod cgroups")?;
    tracing::info!(kubepods = %cgroups.kubepods(), cpu_millis = allocatable.milli_cpu, memory = allocatable.memory, pids = allocatable.pids, "pod cgroups ready");
    Ok(Some(Arc::new(cgroups)))
}

/// The kubelet API's settings: the configured serving certificate, or a self-signed
/// one for the node's name and address (upstream's default without serverTLSBootstrap).
fn api_server<C: gantry_pod_manager::cluster::Cluster>(
    config: &KubeletConfiguration,
    opts: &Options,
    _manager: &Arc<PodManager<C>>,
) -> Result<server::ServerConfig> {
    let read = |p: &str| std::fs::read_to_string(p).with_context(|| format!("read {p}"));
    let (cert_pem, key_pem) = if !config.tls_cert_file.is_empty() {
        (
            read(&config.tls_cert_file)?,
            read(&config.tls_private_key_file)?,
        )
    } else {
        let ip: std::net::IpAddr = opts
            .node_ip
            .parse()
            .with_context(|| format!("node IP {}", opts.node_ip))?;
        server::self_signed(&opts.node_name, &[ip])?
    };
    let client_ca = &config.authentication.x509.client_ca_file;
    let client_ca_pem = (!client_ca.is_empty())
        .then(|| read(client_ca))
        .transpose()?;
    let address: std::net::IpAddr = config
        .address
        .parse()
        .with_context(|| format!("address {}", config.address))?;
    let healthz_bind = (config.healthz_port != 0)
        .then(|| -> Result<std::net::SocketAddr> {
            let ip: std::net::IpAddr = config
                .healthz_bind_address
                .parse()
                .with_context(|| format!("healthzBindAddress {}", config.healthz_bind_address))?;
            Ok((ip, config.healthz_port).into())
        })
        .transpose()?;
    Ok(server::ServerConfig {
        bind: (address, config.port).into(),
        cert_pem,
        key_pem,
        client_ca_pem,
        anonymous: config.authentication.anonymous.enabled,
        webhook_authn: config.authentication.webhook.enabled,
        authz_webhook: config.authorization.mode == "Webhook",
        healthz_bind,
    })
}

/// The runtime's name, the prefix of container IDs in pod status (`containerd://`).
async fn runtime_name(cri: &gantry_pod_manager::Cri) -> String {
    for _ in 0..60 {
        match cri
            .runtime
            .clone()
            .version(api::VersionRequest::default())
            .await
        {
            Ok(v) => return v.into_inner().runtime_name,
            Err(e) => {
                tracing::info!(error = %e.message(), "waiting for the container runtime");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
    "containerd".to_string()
}

/// The host's resolv.conf for dnsPolicy Default (missing file: no servers, as
/// upstream with resolvConf "").
fn read_resolv_conf(path: &str) -> HostDns {
    let text = if path.is_empty() {
        String::new()
    } else {
        std::fs::read_to_string(path).unwrap_or_default()
    };
    parse_resolv_conf(&text)
}

fn parse_resolv_conf(text: &str) -> HostDns {
    let mut dns = HostDns::default();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("");
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => dns.servers.extend(words.next().map(str::to_string)),
            // The last search line wins, as in the resolver.
            Some("search") | Some("domain") => dns.searches = words.map(str::to_string).collect(),
            Some("options") => dns.options.extend(words.map(str::to_string)),
            _ => {}
        }
    }
    dns
}

/// Creates the root directory and makes it a shared mount, as upstream's kubelet does,
/// so that volumes can be mounted into containers with mount propagation.
fn prepare_root_dir(dir: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create root dir {}", dir.display()))?;
    gantry_pod_manager::pod_volumes::share_root_dir(dir)
        .with_context(|| format!("error making {} rshared", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_is_parsed_like_the_resolver() {
        let dns = parse_resolv_conf(
            "# comment\nnameserver 10.0.0.1\nnameserver 10.0.0.2 # second\nsearch a.example b.example\nsearch c.example\noptions ndots:2 edns0\n",
        );
        assert_eq!(dns.servers, ["10.0.0.1", "10.0.0.2"]);
        assert_eq!(dns.searches, ["c.example"]);
        assert_eq!(dns.options, ["ndots:2", "edns0"]);
    }
}
