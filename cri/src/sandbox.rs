//! Pod sandboxes without a pause container: pinned network, IPC and UTS namespaces that
//! containers join by path, a /dev/shm of their own, the hostname, hosts and
//! resolv.conf files, and the pod network from CNI.
//!
//! The containerd record is written first (phase Creating); every host resource is
//! named after the sandbox id, so `release` finds and removes all of them whether the
//! sandbox is whole, half made, or left by a crash. `release` is safe to call twice.

use std::path::{Path, PathBuf};

use gantry_networking::{cni, dns, hosts_file, netns};
use tracing::Instrument;

use crate::api;
use crate::engine::Engine;
use crate::error::{CriError, Result};
use crate::store::{self, Sandbox, SandboxPhase, SandboxState};

/// containerd's CRI gives each sandbox a 64 MiB /dev/shm.
const SHM_SIZE: &str = "size=65536k";

/// Where one sandbox keeps its host resources.
pub struct SandboxPaths {
    /// Volatile: namespace pins and the /dev/shm mount.
    pub state: PathBuf,
    /// Persistent: hostname, hosts, resolv.conf.
    pub root: PathBuf,
}

impl SandboxPaths {
    pub fn ns_dir(&self) -> PathBuf {
        self.state.join("ns")
    }
    pub fn shm(&self) -> PathBuf {
        self.state.join("shm")
    }
    pub fn hostname(&self) -> PathBuf {
        self.root.join("hostname")
    }
    pub fn hosts(&self) -> PathBuf {
        self.root.join("hosts")
    }
    pub fn resolv_conf(&self) -> PathBuf {
        self.root.join("resolv.conf")
    }
}

/// The namespace modes a sandbox asked for (NODE means the host's).
#[derive(Clone, Copy, Debug)]
pub struct NamespaceModes {
    pub host_network: bool,
    pub host_ipc: bool,
    pub host_pid: bool,
    pub pod_pid: bool,
}

pub fn namespace_modes(config: &api::PodSandboxConfig) -> NamespaceModes {
    let o = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default();
    let node = api::NamespaceMode::Node as i32;
    NamespaceModes {
        host_network: o.network == node,
        host_ipc: o.ipc == node,
        host_pid: o.pid == node,
        pod_pid: o.pid == api::NamespaceMode::Pod as i32,
    }
}

impl Engine {
    pub fn sandbox_paths(&self, id: &str) -> SandboxPaths {
        SandboxPaths {
            state: store::object_dir(&self.config.state_dir, "sandboxes", id),
            root: store::object_dir(&self.config.root_dir, "sandboxes", id),
        }
    }

    pub async fn run_pod_sandbox(
        &self,
        config: Option<api::PodSandboxConfig>,
        runtime_handler: &str,
    ) -> Result<String> {
        let config = config.ok_or_else(|| {
            CriError::InvalidArgument("RunPodSandbox: the sandbox config is required".into())
        })?;
        let m = config.metadata.clone().unwrap_or_default();
        if m.name.is_empty() || m.namespace.is_empty() || m.uid.is_empty() {
            return Err(CriError::InvalidArgument(format!(
                "RunPodSandbox: metadata needs name, namespace and uid (got name {:?}, namespace {:?}, uid {:?})",
                m.name, m.namespace, m.uid
            )));
        }
        if !matches!(runtime_handler, "" | "runc") {
            return Err(CriError::InvalidArgument(format!(
                "RunPodSandbox {}/{}: no runtime handler {runtime_handler:?} (this runtime has \"runc\")",
                m.namespace, m.name
            )));
        }
        let modes = namespace_modes(&config);
        let id = store::new_id();
        let name = store::sandbox_name(&config);
        self.store.reserve_name(&name, &id)?;
        let _guard = self.store.lock(&id).await;
        let sb = Sandbox {
            id: id.clone(),
            config,
            state: SandboxState {
                phase: SandboxPhase::Creating,
                created_at: store::now_ns(),
                ips: Vec::new(),
                host_network: modes.host_network,
                runtime_handler: runtime_handler.to_string(),
                infra_pid: 0,
                released: false,
            },
        };
        if let Err(e) = self.store.create_sandbox(&sb, &name).await {
            self.store.release_name(&name, &id);
            return Err(e);
        }
        let span = tracing::info_span!("sandbox", pod = %format!("{}/{}", m.namespace, m.name), id = %short(&id));
        // Instrumented, not entered: a span guard held across an await moves between
        // worker threads with the task, which corrupts the subscriber's span stacks and
        // makes tracing-subscriber panic under concurrent RunPodSandbox calls.
        async {
            match self.set_up_sandbox(&sb, modes).await {
                Ok((ips, infra_pid)) => {
                    let mut state = sb.state.clone();
                    state.phase = SandboxPhase::Ready;
                    state.ips = ips;
                    state.infra_pid = infra_pid;
                    if let Err(e) = self.store.update_sandbox(&id, state).await {
                        self.roll_back_sandbox(&sb).await;
                        return Err(e);
                    }
                    tracing::info!("sandbox ready");
                    if infra_pid > 0 {
                        self.spawn_infra_waiter(&id);
                    }
                    Ok(id)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "sandbox set-up failed; rolling back");
                    self.roll_back_sandbox(&sb).await;
                    Err(e)
                }
            }
        }
        .instrument(span)
        .await
    }

    async fn roll_back_sandbox(&self, sb: &Sandbox) {
        if let Err(e) = self.release_sandbox(sb).await {
            // The record stays (NotReady is not written): a restart or RemovePodSandbox
            // finishes the release.
            tracing::error!(error = %e, id = %sb.id, "rollback of the sandbox failed");
            return;
        }
        if let Err(e) = self.store.delete(&sb.id).await {
            tracing::error!(error = %e, id = %sb.id, "delete the sandbox record");
        }
        let _ = std::fs::remove_dir_all(self.sandbox_paths(&sb.id).root);
        let _ = std::fs::remove_dir_all(self.sandbox_paths(&sb.id).state);
    }

    /// Creates the namespaces, files, network and (for a shared PID namespace) the
    /// infra process; returns the pod IPs and the infra pid (0 without one).
    async fn set_up_sandbox(
        &self,
        sb: &Sandbox,
        modes: NamespaceModes,
    ) -> Result<(Vec<String>, u32)> {
        let paths = self.sandbox_paths(&sb.id);
        for d in [&paths.state, &paths.root] {
            std::fs::create_dir_all(d).map_err(|e| {
                CriError::Internal(format!("create sandbox directory {}: {e}", d.display()))
            })?;
        }
        let hostname = sandbox_hostname(&sb.config, modes.host_network)?;
        // Host-network pods share the host's UTS namespace too, as upstream.
        let want = netns::NsSet {
            net: !modes.host_network,
            ipc: !modes.host_ipc,
            uts: !modes.host_network,
        };
        let ns_dir = paths.ns_dir();
        let host_name = (!modes.host_network).then(|| hostname.clone());
        tokio::task::spawn_blocking(move || netns::create(&ns_dir, want, host_name.as_deref()))
            .await
            .map_err(|e| CriError::Internal(format!("pin namespaces: {e}")))?
            .map_err(|e| CriError::Internal(format!("pin namespaces: {e}")))?;
        if !modes.host_ipc {
            mount_shm(&paths.shm())?;
        }
        write_sandbox_files(sb, &paths, &hostname, modes.host_network)?;
        crate::failpoint::hit("sandbox-after-namespaces");
        // The network and the infra process need only the pinned namespaces, so they
        // are set up side by side. Both are awaited to the end, even when one fails: the
        // rollback must not race a CNI ADD still running.
        let network = async {
            let ips = if modes.host_network {
                Vec::new()
            } else {
                self.set_up_network(sb).await?
            };
            crate::failpoint::hit("sandbox-after-network");
            Ok(ips)
        };
        let infra = async {
            if modes.pod_pid {
                self.start_infra(sb).await
            } else {
                Ok(0)
            }
        };
        let (ips, infra_pid) = tokio::join!(network, infra);
        Ok((ips?, infra_pid?))
    }

    async fn set_up_network(&self, sb: &Sandbox) -> Result<Vec<String>> {
        let attachment = self.attachment(sb);
        let cni = self.cni.clone();
        let result = timed_cni("add", move || cni.add(&attachment))
            .await
            .map_err(|e| CriError::Internal(format!("CNI ADD: {e}")))?
            .map_err(|e| CriError::Internal(format!("set up the pod network (CNI ADD): {e}")))?;
        Ok(result.ips().iter().map(|ip| ip.to_string()).collect())
    }

    /// The CNI attachment of a sandbox, as containerd's CRI describes it to plugins.
    pub fn attachment(&self, sb: &Sandbox) -> cni::Attachment {
        let m = sb.metadata();
        let port_mappings = sb
            .config
            .port_mappings
            .iter()
            .filter(|p| p.host_port > 0)
            .map(|p| cni::PortMapping {
                host_port: p.host_port as u16,
                container_port: p.container_port as u16,
                protocol: match api::Protocol::try_from(p.protocol) {
                    Ok(api::Protocol::Udp) => cni::Protocol::Udp,
                    Ok(api::Protocol::Sctp) => cni::Protocol::Sctp,
                    _ => cni::Protocol::Tcp,
                },
                host_ip: p.host_ip.clone(),
            })
            .collect();
        let mut a = cni::Attachment::for_pod(
            &sb.id,
            self.sandbox_paths(&sb.id).ns_dir().join("net"),
            &m.namespace,
            &m.name,
            &m.uid,
        );
        a.port_mappings = port_mappings;
        a
    }

    /// Releases the network, namespaces and /dev/shm of a sandbox. Idempotent; CNI DEL
    /// errors are returned so the caller (the kubelet) retries until it succeeds.
    pub async fn release_sandbox(&self, sb: &Sandbox) -> Result<()> {
        let paths = self.sandbox_paths(&sb.id);
        // The infra process and the network need nothing of each other (the netns is
        // pinned by its bind mount): both are released at once, and both run to the end
        // before an error of either is returned.
        let network = async {
            if sb.state.host_network {
                return Ok(());
            }
            let attachment = self.attachment(sb);
            let cni = self.cni.clone();
            timed_cni("del", move || cni.del(&attachment))
                .await
                .map_err(|e| CriError::Internal(format!("CNI DEL: {e}")))?
                .map_err(|e| {
                    CriError::Internal(format!(
                        "tear down the network of pod sandbox {} (CNI DEL): {e}",
                        sb.id
                    ))
                })
        };
        let (infra, network) = tokio::join!(self.remove_infra(&sb.id), network);
        infra?;
        network?;
        unmount(&paths.shm())?;
        let ns_dir = paths.ns_dir();
        tokio::task::spawn_blocking(move || netns::remove(&ns_dir))
            .await
            .map_err(|e| CriError::Internal(format!("remove namespaces: {e}")))?
            .map_err(|e| {
                CriError::Internal(format!(
                    "remove the namespaces of pod sandbox {}: {e}",
                    sb.id
                ))
            })?;
        Ok(())
    }

    pub async fn stop_pod_sandbox(&self, id: &str) -> Result<()> {
        let sb = match self.store.sandbox(id) {
            Ok(sb) => sb,
            // Stop is idempotent, and the kubelet stops sandboxes it only remembers.
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e),
        };
        let containers = self.store.containers_of(&sb.id);
        let stops = containers.iter().map(|c| self.stop_container(&c.id, 0));
        for stopped in futures::future::join_all(stops).await {
            stopped?;
        }
        let _guard = self.store.lock(&sb.id).await;
        let sb = self.store.sandbox(&sb.id)?;
        if sb.state.released {
            return Ok(());
        }
        self.release_sandbox(&sb).await?;
        let mut state = sb.state.clone();
        state.phase = SandboxPhase::NotReady;
        state.released = true;
        self.store.update_sandbox(&sb.id, state).await?;
        tracing::info!(id = %short(&sb.id), "sandbox stopped");
        Ok(())
    }

    pub async fn remove_pod_sandbox(&self, id: &str) -> Result<()> {
        let sb = match self.store.sandbox(id) {
            Ok(sb) => sb,
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e),
        };
        // As containerd: a ready sandbox must be stopped first.
        if sb.ready() {
            return Err(CriError::FailedPrecondition(format!(
                "pod sandbox {} is still running: stop it before removing it",
                sb.id
            )));
        }
        // Unlike a lone RemoveContainer, the pod's removal waits for its containers'
        // release (all at once): nothing of the pod is left when it answers.
        let containers = self.store.containers_of(&sb.id);
        let removals = containers.iter().map(|c| async {
            match self.mark_removed(&c.id).await? {
                Some(id) => self.release_removed(&id).await,
                None => Ok(()),
            }
        });
        for removed in futures::future::join_all(removals).await {
            removed?;
        }
        let _guard = self.store.lock(&sb.id).await;
        let sb = match self.store.sandbox(&sb.id) {
            Ok(sb) => sb,
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e),
        };
        if !sb.state.released {
            self.release_sandbox(&sb).await?;
        }
        let paths = self.sandbox_paths(&sb.id);
        for d in [&paths.state, &paths.root] {
            match std::fs::remove_dir_all(d) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(CriError::Internal(format!(
                        "remove {} of pod sandbox {}: {e}",
                        d.display(),
                        sb.id
                    )))
                }
            }
        }
        self.store.delete(&sb.id).await?;
        tracing::info!(id = %short(&sb.id), "sandbox removed");
        Ok(())
    }

    pub fn pod_sandbox_status(
        &self,
        id: &str,
        verbose: bool,
    ) -> Result<api::PodSandboxStatusResponse> {
        let sb = self.store.sandbox(id)?;
        let status = cri_sandbox_status(&sb);
        let mut info = std::collections::HashMap::new();
        if verbose {
            let paths = self.sandbox_paths(&sb.id);
            let v = serde_json::json!({
                "id": sb.id,
                "phase": format!("{:?}", sb.state.phase),
                "netNamespace": (!sb.state.host_network).then(|| paths.ns_dir().join("net")),
                "hostNetwork": sb.state.host_network,
                "ips": sb.state.ips,
                "runtimeHandler": sb.state.runtime_handler,
            });
            info.insert("info".to_string(), v.to_string());
        }
        let containers_statuses = self
            .store
            .containers_of(&sb.id)
            .iter()
            .map(crate::container::cri_container_status)
            .collect();
        Ok(api::PodSandboxStatusResponse {
            status: Some(status),
            info,
            containers_statuses,
            timestamp: store::now_ns(),
        })
    }

    pub fn list_pod_sandbox(&self, filter: Option<api::PodSandboxFilter>) -> Vec<api::PodSandbox> {
        let f = filter.unwrap_or_default();
        self.store.map_sandboxes(|sb| {
            let picked = sb.state.phase != SandboxPhase::Creating
                && (f.id.is_empty() || sb.id.starts_with(&f.id))
                && f.state
                    .as_ref()
                    .is_none_or(|s| s.state == sandbox_state(sb) as i32)
                && labels_match(&f.label_selector, &sb.config.labels);
            picked.then(|| api::PodSandbox {
                id: sb.id.clone(),
                metadata: Some(sb.metadata()),
                state: sandbox_state(sb) as i32,
                created_at: sb.state.created_at,
                labels: sb.config.labels.clone(),
                annotations: sb.config.annotations.clone(),
                runtime_handler: sb.state.runtime_handler.clone(),
            })
        })
    }
}

/// Runs a CNI command on a blocking thread, timed into
/// gantry_cri_cni_duration_seconds{operation}.
async fn timed_cni<T: Send + 'static>(
    operation: &str,
    run: impl FnOnce() -> T + Send + 'static,
) -> std::result::Result<T, tokio::task::JoinError> {
    let started = std::time::Instant::now();
    let result = tokio::task::spawn_blocking(run).await;
    crate::metrics::CriMetrics::global()
        .cni_duration
        .with_label_values(&[operation])
        .observe(started.elapsed().as_secs_f64());
    result
}

pub fn sandbox_state(sb: &Sandbox) -> api::PodSandboxState {
    if sb.ready() {
        api::PodSandboxState::SandboxReady
    } else {
        api::PodSandboxState::SandboxNotready
    }
}

fn cri_sandbox_status(sb: &Sandbox) -> api::PodSandboxStatus {
    let options = sb
        .config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone());
    let network = (!sb.state.host_network).then(|| api::PodSandboxNetworkStatus {
        ip: sb.state.ips.first().cloned().unwrap_or_default(),
        additional_ips: sb
            .state
            .ips
            .iter()
            .skip(1)
            .map(|ip| api::PodIp { ip: ip.clone() })
            .collect(),
    });
    api::PodSandboxStatus {
        id: sb.id.clone(),
        metadata: Some(sb.metadata()),
        state: sandbox_state(sb) as i32,
        created_at: sb.state.created_at,
        network: Some(network.unwrap_or_default()),
        linux: Some(api::LinuxPodSandboxStatus {
            namespaces: Some(api::Namespace { options }),
        }),
        labels: sb.config.labels.clone(),
        annotations: sb.config.annotations.clone(),
        runtime_handler: sb.state.runtime_handler.clone(),
    }
}

pub fn labels_match(
    selector: &std::collections::HashMap<String, String>,
    labels: &std::collections::HashMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn sandbox_hostname(config: &api::PodSandboxConfig, host_network: bool) -> Result<String> {
    if host_network || config.hostname.is_empty() {
        return host_name();
    }
    Ok(config.hostname.clone())
}

/// The host's name, as the kernel has it now.
pub fn host_name() -> Result<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .map_err(|e| CriError::Internal(format!("read the host name: {e}")))
}

fn write_sandbox_files(
    sb: &Sandbox,
    paths: &SandboxPaths,
    hostname: &str,
    host_network: bool,
) -> Result<()> {
    let write = |p: &Path, content: &str| {
        hosts_file::write_atomically(p, content.as_bytes(), 0o644)
            .map_err(|e| CriError::Internal(format!("write {}: {e}", p.display())))
    };
    write(&paths.hostname(), &format!("{hostname}\n"))?;
    let host_hosts = if host_network {
        std::fs::read_to_string("/etc/hosts").ok()
    } else {
        None
    };
    write(
        &paths.hosts(),
        &hosts_file::hosts_file(host_network, host_hosts.as_deref()),
    )?;
    let dns = sb.config.dns_config.clone().unwrap_or_default();
    let resolv = if dns.servers.is_empty() && dns.searches.is_empty() && dns.options.is_empty() {
        dns::host_resolv_conf(Path::new("/etc/resolv.conf")).unwrap_or_default()
    } else {
        dns::resolv_conf(&dns.servers, &dns.searches, &dns.options)
    };
    write(&paths.resolv_conf(), &resolv)
}

fn mount_shm(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path)
        .map_err(|e| CriError::Internal(format!("create {}: {e}", path.display())))?;
    if is_mountpoint(path) {
        return Ok(());
    }
    let c = |s: &str| std::ffi::CString::new(s).map_err(|_| CriError::Internal("NUL".into()));
    let target = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| CriError::Internal(format!("{} has a NUL", path.display())))?;
    let (src, fstype, data) = (c("shm")?, c("tmpfs")?, c(SHM_SIZE)?);
    let flags = libc::MS_NOEXEC | libc::MS_NOSUID | libc::MS_NODEV;
    // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        return Err(CriError::Internal(format!(
            "mount /dev/shm tmpfs at {}: {e}",
            path.display()
        )));
    }
    Ok(())
}

/// Unmounts `path` if it is a mount point (lazily, so a busy one still goes).
pub fn unmount(path: &Path) -> Result<()> {
    while is_mountpoint(path) {
        let target = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| CriError::Internal(format!("{} has a NUL", path.display())))?;
        // SAFETY: target is a valid NUL-terminated path.
        if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } != 0 {
            let e = std::io::Error::last_os_error();
            return Err(CriError::Internal(format!(
                "unmount {}: {e}",
                path.display()
            )));
        }
    }
    Ok(())
}

/// Whether `path` appears as a mount point in this process's mount table.
pub fn is_mountpoint(path: &Path) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.to_string_lossy();
    table.lines().any(|l| {
        l.split(' ')
            .nth(4)
            .map(crate::oci_spec::unescape_mountinfo)
            .is_some_and(|p| p == want)
    })
}

/// The first 13 characters of an id, as crictl shows them.
pub fn short(id: &str) -> &str {
    &id[..id.len().min(13)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_network_and_ipc_modes_are_read_from_the_security_context() {
        let mut config = api::PodSandboxConfig::default();
        assert!(!namespace_modes(&config).host_network);
        config.linux = Some(api::LinuxPodSandboxConfig {
            security_context: Some(api::LinuxSandboxSecurityContext {
                namespace_options: Some(api::NamespaceOption {
                    network: api::NamespaceMode::Node as i32,
                    ipc: api::NamespaceMode::Node as i32,
                    pid: api::NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        let m = namespace_modes(&config);
        assert!(m.host_network && m.host_ipc && m.pod_pid && !m.host_pid);
    }

    #[test]
    fn label_selectors_need_every_pair() {
        let labels = [("a", "1"), ("b", "2")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let sel = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(labels_match(&sel(&[]), &labels));
        assert!(labels_match(&sel(&[("a", "1")]), &labels));
        assert!(!labels_match(&sel(&[("a", "2")]), &labels));
        assert!(!labels_match(&sel(&[("c", "1")]), &labels));
    }
}
