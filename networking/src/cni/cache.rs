//! The result cache, in libcni's layout and format so that DEL finds what ADD used even
//! after a restart or a config change: `<cache_dir>/results/<network>-<container>-<ifname>`
//! holding a `cniCacheV1` record.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Attachment, CniError, Result};
use crate::cni_config::NetworkConfigList;
use crate::hosts_file::write_atomically;

const CACHE_KIND: &str = "cniCacheV1";

/// libcni's cache record; `config` is the network list document, base64 as Go writes
/// a `[]byte`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct CacheEntry {
    pub(super) kind: String,
    pub(super) container_id: String,
    pub(super) config: String,
    pub(super) if_name: String,
    pub(super) network_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(super) netns: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) cni_args: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub(super) capability_args: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) result: Option<Value>,
}

impl CacheEntry {
    /// The record of an ADD about to run, without a result yet.
    pub(super) fn new(a: &Attachment, list: &NetworkConfigList, caps: &Map<String, Value>) -> Self {
        CacheEntry {
            kind: CACHE_KIND.into(),
            container_id: a.container_id.clone(),
            config: base64::engine::general_purpose::STANDARD.encode(list.to_json().to_string()),
            if_name: a.ifname.clone(),
            network_name: list.name.clone(),
            netns: a.netns.to_string_lossy().into_owned(),
            cni_args: a.args.clone(),
            capability_args: caps.clone(),
            result: None,
        }
    }

    pub(super) fn config_list(&self, path: &Path) -> Option<NetworkConfigList> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&self.config)
            .ok()?;
        let doc: Value = serde_json::from_slice(&bytes).ok()?;
        NetworkConfigList::from_json(&doc, path)
    }
}

/// A usable cache entry with the network list it recorded.
pub(super) struct Cached {
    pub(super) path: PathBuf,
    pub(super) entry: CacheEntry,
    pub(super) list: NetworkConfigList,
}

pub(super) fn path(cache_dir: &Path, network: &str, a: &Attachment) -> PathBuf {
    cache_dir
        .join("results")
        .join(format!("{network}-{}-{}", a.container_id, a.ifname))
}

/// The cache entries of this container and interface, whatever network they are for
/// (the config may have changed since ADD); and the paths of matching entries that
/// cannot be used.
pub(super) fn entries(cache_dir: &Path, a: &Attachment) -> Result<(Vec<Cached>, Vec<PathBuf>)> {
    let dir = cache_dir.join("results");
    let read = match fs::read_dir(&dir) {
        Ok(r) => r,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((vec![], vec![])),
        Err(source) => {
            return Err(CniError::Cache {
                action: "list",
                path: dir,
                source,
            })
        }
    };
    let suffix = format!("-{}-{}", a.container_id, a.ifname);
    let mut paths: Vec<PathBuf> = read
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(&suffix) && n.len() > suffix.len())
        })
        .collect();
    paths.sort();
    let (mut good, mut bad) = (Vec::new(), Vec::new());
    for path in paths {
        let entry = fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<CacheEntry>(&b).ok());
        match entry {
            Some(e) if e.container_id == a.container_id && e.if_name == a.ifname => {
                if e.kind != CACHE_KIND {
                    tracing::warn!(path = %path.display(), kind = %e.kind, "CNI cache entry of unknown kind");
                    bad.push(path);
                } else if let Some(list) = e.config_list(&path) {
                    good.push(Cached {
                        path,
                        entry: e,
                        list,
                    });
                } else {
                    tracing::warn!(path = %path.display(), "CNI cache entry without a usable config");
                    bad.push(path);
                }
            }
            // Another container whose id ends the same way.
            Some(_) => {}
            None => {
                tracing::warn!(path = %path.display(), "unreadable CNI cache entry");
                bad.push(path);
            }
        }
    }
    Ok((good, bad))
}

pub(super) fn write(path: &Path, entry: &CacheEntry) -> Result<()> {
    let io_err = |source| CniError::Cache {
        action: "write",
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io_err)?;
    }
    let bytes = serde_json::to_vec(entry).map_err(|e| io_err(e.into()))?;
    write_atomically(path, &bytes, 0o600).map_err(io_err)
}

pub(super) fn remove(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(CniError::Cache {
            action: "remove",
            path: path.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}
