//! Attaching sandboxes to the node's CNI network by running the plugin chain, as libcni
//! (containernetworking/cni) does for containerd's CRI, spec versions 0.3.1 to 1.1.
//!
//! ADD runs the chain in order, each plugin getting the previous one's result as
//! `prevResult`; DEL runs it in reverse with the result cached by ADD. The cache follows
//! libcni's layout and format (`<cache_dir>/results/<network>-<container>-<ifname>`,
//! kind `cniCacheV1`), so DEL works after a restart, after the config directory changed,
//! and after the namespace is gone. The loopback interface is not CNI's job here:
//! [`crate::netns::create`] brings `lo` up.

mod attachment;
mod cache;
mod exec;
mod result;
#[cfg(test)]
mod tests;

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::cni_config::{self, CniConfigError, NetworkConfigList};
use attachment::validate;
pub use attachment::{Attachment, Bandwidth, PortMapping, Protocol};
use cache::{CacheEntry, Cached};
pub use exec::PluginFailure;
pub use result::{CniResult, Dns, Interface, IpConfig, IpPrefix, Route};

pub const DEFAULT_IFNAME: &str = "eth0";
/// How long one plugin may run before it is killed.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("load the CNI network config: {0}")]
    Config(#[from] CniConfigError),
    #[error("CNI attachment of container {container_id:?}: {reason}")]
    InvalidAttachment {
        container_id: String,
        reason: String,
    },
    #[error("CNI {command} of network {network:?} for container {container_id}: plugin {plugin:?} is not in {dirs:?}")]
    PluginNotFound {
        command: &'static str,
        network: String,
        container_id: String,
        plugin: String,
        dirs: Vec<PathBuf>,
    },
    #[error("CNI {command} of network {network:?} for container {container_id}: plugin {plugin:?}: {failure}")]
    Plugin {
        command: &'static str,
        network: String,
        container_id: String,
        plugin: String,
        failure: Box<PluginFailure>,
    },
    #[error("CNI ADD of network {network:?} for container {container_id}: the final result is invalid: {reason}")]
    BadResult {
        network: String,
        container_id: String,
        reason: String,
    },
    #[error("{action} CNI cache {path}: {source}")]
    Cache {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{failed}; rolled back with a DEL of the whole network")]
    AddRolledBack { failed: Box<CniError> },
    #[error(
        "{failed}; the rollback DEL failed too (the cache is kept for a later DEL): {rollback}"
    )]
    AddRollbackFailed {
        failed: Box<CniError>,
        rollback: Box<CniError>,
    },
    #[error("CNI CHECK of network {network:?} for container {container_id}: no cached result (never added, or deleted)")]
    NotAttached {
        network: String,
        container_id: String,
    },
    #[error("CNI CHECK of network {network:?}: cniVersion {version} predates CHECK (0.4.0)")]
    CheckUnsupported { network: String, version: String },
}

pub type Result<T, E = CniError> = std::result::Result<T, E>;

/// The arguments of one run of the chain.
struct Run<'a> {
    list: &'a NetworkConfigList,
    container_id: &'a str,
    netns: &'a Path,
    ifname: &'a str,
    args: &'a [(String, String)],
    caps: &'a Map<String, Value>,
}

/// The node's CNI setup: where the network config, the plugins and the cache live.
#[derive(Clone, Debug)]
pub struct Cni {
    pub conf_dir: PathBuf,
    pub bin_dirs: Vec<PathBuf>,
    /// libcni's /var/lib/cni: results are cached under `results/`.
    pub cache_dir: PathBuf,
    /// The time limit of one plugin run.
    pub timeout: Duration,
}

impl Cni {
    pub fn new(
        conf_dir: impl Into<PathBuf>,
        bin_dirs: Vec<PathBuf>,
        cache_dir: impl Into<PathBuf>,
    ) -> Self {
        Cni {
            conf_dir: conf_dir.into(),
            bin_dirs,
            cache_dir: cache_dir.into(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The network sandboxes are attached to: the first config in `conf_dir`.
    pub fn network(&self) -> Result<NetworkConfigList> {
        Ok(cni_config::load_first(&self.conf_dir)?)
    }

    /// Attaches the sandbox: runs ADD on each plugin of the network in order and caches
    /// the result before returning it. When a plugin fails, DEL runs on the whole chain
    /// first, so that no address or rule is left behind.
    pub fn add(&self, a: &Attachment) -> Result<CniResult> {
        let list = self.network()?;
        validate(a, Some(&list.name))?;
        let caps = a.capability_args();
        let run = Run {
            list: &list,
            container_id: &a.container_id,
            netns: &a.netns,
            ifname: &a.ifname,
            args: &a.args,
            caps: &caps,
        };
        let _span =
            tracing::info_span!("cni_add", network = %list.name, container = %a.container_id)
                .entered();
        let path = cache::path(&self.cache_dir, &list.name, a);
        let mut entry = CacheEntry::new(a, &list, &caps);
        // Recorded before the first plugin runs: after a crash mid-chain, DEL still finds
        // the exact config that was used.
        cache::write(&path, &entry)?;

        let mut prev: Option<Value> = None;
        let mut outcome = Ok(());
        for plugin in &list.plugins {
            match self
                .run_plugin("ADD", &run, plugin, prev.as_ref())
                .and_then(|out| {
                    exec::parse_result(&out)
                        .map_err(|failure| plugin_error("ADD", &run, plugin, failure))
                }) {
                Ok(result) => prev = Some(result),
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
        }
        let parsed = outcome.and_then(|()| {
            let last = prev.clone().unwrap_or_else(|| Value::Object(Map::new()));
            CniResult::parse(last).map_err(|reason| CniError::BadResult {
                network: list.name.clone(),
                container_id: a.container_id.clone(),
                reason,
            })
        });
        let failed = match parsed {
            Ok(result) => {
                entry.result = Some(result.raw().clone());
                match cache::write(&path, &entry) {
                    Ok(()) => return Ok(result),
                    Err(e) => e,
                }
            }
            Err(e) => e,
        };
        tracing::warn!(error = %failed, "CNI ADD failed, rolling back");
        match self.del_chain(&run, prev.as_ref()) {
            Ok(()) => {
                // Nothing is attached any more; a stale entry would only cause a DEL that
                // finds nothing, so the ADD error is the one to report.
                if let Err(e) = cache::remove(&path) {
                    tracing::warn!(error = %e, "after rollback");
                }
                Err(CniError::AddRolledBack {
                    failed: Box::new(failed),
                })
            }
            Err(rollback) => Err(CniError::AddRollbackFailed {
                failed: Box::new(failed),
                rollback: Box::new(rollback),
            }),
        }
    }

    /// Detaches the sandbox: DEL on each plugin in reverse order, with the config, args
    /// and result ADD cached. Without a cache entry (never added, or already deleted) DEL
    /// runs with the current config and no prevResult, which plugins accept. The cache
    /// entry goes only after every plugin succeeded, so a failed DEL can be retried.
    pub fn del(&self, a: &Attachment) -> Result<()> {
        validate(a, None)?;
        let _span = tracing::info_span!("cni_del", container = %a.container_id).entered();
        let (entries, unreadable) = cache::entries(&self.cache_dir, a)?;
        if entries.is_empty() {
            let list = self.network()?;
            let caps = a.capability_args();
            let run = Run {
                list: &list,
                container_id: &a.container_id,
                netns: &a.netns,
                ifname: &a.ifname,
                args: &a.args,
                caps: &caps,
            };
            self.del_chain(&run, None)?;
        }
        for Cached { path, entry, list } in &entries {
            let run = Run {
                list,
                container_id: &a.container_id,
                netns: &a.netns,
                ifname: &a.ifname,
                // What ADD saw, as libcni's cached config; an entry without args
                // (written by another tool) falls back to the caller's.
                args: if entry.cni_args.is_empty() {
                    &a.args
                } else {
                    &entry.cni_args
                },
                caps: &entry.capability_args,
            };
            self.del_chain(&run, entry.result.as_ref())?;
            cache::remove(path)?;
        }
        // Entries that could not be read were reported at lookup; DEL went through
        // without them, as libcni does when its cached result is unusable.
        for path in unreadable {
            cache::remove(&path)?;
        }
        Ok(())
    }

    /// Asks each plugin whether the attachment is still as ADD left it (spec 0.4.0+).
    pub fn check(&self, a: &Attachment) -> Result<()> {
        let list = self.network()?;
        validate(a, Some(&list.name))?;
        if !version_at_least(&list.cni_version, (0, 4, 0)) {
            return Err(CniError::CheckUnsupported {
                network: list.name.clone(),
                version: list.cni_version.clone(),
            });
        }
        let cached = cache::entries(&self.cache_dir, a)?
            .0
            .into_iter()
            .find(|c| c.entry.network_name == list.name)
            .and_then(|c| c.entry.result);
        let Some(prev) = cached else {
            return Err(CniError::NotAttached {
                network: list.name.clone(),
                container_id: a.container_id.clone(),
            });
        };
        if list.disable_check {
            return Ok(());
        }
        let caps = a.capability_args();
        let run = Run {
            list: &list,
            container_id: &a.container_id,
            netns: &a.netns,
            ifname: &a.ifname,
            args: &a.args,
            caps: &caps,
        };
        for plugin in &list.plugins {
            self.run_plugin("CHECK", &run, plugin, Some(&prev))?;
        }
        Ok(())
    }

    /// The result ADD cached for this attachment (e.g. the pod IPs after a restart).
    pub fn cached_result(&self, a: &Attachment) -> Result<Option<CniResult>> {
        validate(a, None)?;
        let (entries, _) = cache::entries(&self.cache_dir, a)?;
        Ok(entries
            .into_iter()
            .filter_map(|c| c.entry.result)
            .find_map(|r| CniResult::parse(r).ok()))
    }

    /// DEL on every plugin, last first. prevResult only from spec 0.4.0 on, as libcni.
    fn del_chain(&self, run: &Run, prev: Option<&Value>) -> Result<()> {
        let prev = prev.filter(|_| version_at_least(&run.list.cni_version, (0, 4, 0)));
        for plugin in run.list.plugins.iter().rev() {
            self.run_plugin("DEL", run, plugin, prev)?;
        }
        Ok(())
    }

    fn run_plugin(
        &self,
        command: &'static str,
        run: &Run,
        plugin: &Value,
        prev: Option<&Value>,
    ) -> Result<Vec<u8>> {
        let kind = plugin_type(plugin);
        let path = self
            .find_plugin(kind)
            .ok_or_else(|| CniError::PluginNotFound {
                command,
                network: run.list.name.clone(),
                container_id: run.container_id.to_string(),
                plugin: kind.to_string(),
                dirs: self.bin_dirs.clone(),
            })?;
        let stdin = plugin_stdin(run, plugin, prev).to_string();
        let env = [
            ("CNI_COMMAND", command.to_string()),
            ("CNI_CONTAINERID", run.container_id.to_string()),
            ("CNI_NETNS", run.netns.to_string_lossy().into_owned()),
            ("CNI_IFNAME", run.ifname.to_string()),
            ("CNI_ARGS", cni_args(run.args)),
            ("CNI_PATH", cni_path(&self.bin_dirs)),
        ];
        tracing::debug!(command, plugin = kind, "running CNI plugin");
        exec::run(&path, &env, stdin.as_bytes(), self.timeout)
            .map_err(|failure| plugin_error(command, run, plugin, failure))
    }

    fn find_plugin(&self, kind: &str) -> Option<PathBuf> {
        // A type is a file name, never a path out of the plugin directories.
        if kind.is_empty() || kind.contains('/') || kind == "." || kind == ".." {
            return None;
        }
        self.bin_dirs
            .iter()
            .map(|d| d.join(kind))
            .find(|p| p.is_file())
    }
}

fn plugin_type(plugin: &Value) -> &str {
    plugin["type"].as_str().unwrap_or_default()
}

fn plugin_error(
    command: &'static str,
    run: &Run,
    plugin: &Value,
    failure: PluginFailure,
) -> CniError {
    CniError::Plugin {
        command,
        network: run.list.name.clone(),
        container_id: run.container_id.to_string(),
        plugin: plugin_type(plugin).to_string(),
        failure: Box::new(failure),
    }
}

/// A plugin's stdin: its config with the list's `name` and `cniVersion`, the previous
/// result, and `runtimeConfig` holding only the capability args the plugin declares
/// (libcni's buildOneConfig and injectRuntimeConfig).
fn plugin_stdin(run: &Run, plugin: &Value, prev: Option<&Value>) -> Value {
    let mut conf = plugin.as_object().cloned().unwrap_or_default();
    conf.insert("name".into(), Value::String(run.list.name.clone()));
    conf.insert(
        "cniVersion".into(),
        Value::String(run.list.cni_version.clone()),
    );
    if let Some(prev) = prev {
        conf.insert("prevResult".into(), prev.clone());
    }
    let declared = |cap: &str| {
        conf.get("capabilities")
            .and_then(|c| c.get(cap))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    };
    let runtime: Map<String, Value> = run
        .caps
        .iter()
        .filter(|(cap, _)| declared(cap))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !runtime.is_empty() {
        conf.insert("runtimeConfig".into(), Value::Object(runtime));
    }
    Value::Object(conf)
}

fn cni_args(args: &[(String, String)]) -> String {
    args.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(";")
}

fn cni_path(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .map(|d| d.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(":")
}

/// `major.minor.patch` at least `min`; an unparsable version counts as older.
fn version_at_least(version: &str, min: (u64, u64, u64)) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u64>());
    match (parts.next(), parts.next(), parts.next()) {
        (Some(Ok(a)), Some(Ok(b)), Some(Ok(c))) => (a, b, c) >= min,
        (Some(Ok(a)), Some(Ok(b)), None) => (a, b, 0) >= min,
        _ => false,
    }
}
