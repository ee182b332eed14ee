//! Finding the node's CNI network: as libcni and the container runtimes do, the first
//! file (by name) in the config directory that is a valid `.conflist`, or a single
//! plugin `.conf`/`.json` promoted to a list.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// A loaded network configuration list.
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkConfigList {
    pub name: String,
    pub cni_version: String,
    /// The plugin configurations, in chain order.
    pub plugins: Vec<Value>,
    /// The list's `disableCheck`: CHECK is skipped for this network.
    pub disable_check: bool,
    pub source: PathBuf,
}

impl NetworkConfigList {
    /// The plugin types of the chain (`bridge`, `portmap`, ...).
    pub fn plugin_types(&self) -> Vec<String> {
        self.plugins
            .iter()
            .filter_map(|p| p["type"].as_str().map(str::to_string))
            .collect()
    }

    /// The list as a `.conflist` document, the form libcni keeps in its result cache.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "cniVersion": self.cni_version,
            "name": self.name,
            "disableCheck": self.disable_check,
            "plugins": self.plugins,
        })
    }

    /// A list from a parsed `.conflist` (or single-plugin `.conf`) document, if valid.
    pub fn from_json(v: &Value, source: &Path) -> Option<NetworkConfigList> {
        let name = v["name"].as_str()?.to_string();
        let cni_version = v["cniVersion"].as_str().unwrap_or("0.4.0").to_string();
        let plugins = match v.get("plugins") {
            Some(Value::Array(p)) if !p.is_empty() => p.clone(),
            Some(_) => return None,
            None if v.get("type").is_some() => vec![v.clone()],
            None => return None,
        };
        if plugins.iter().any(|p| p["type"].as_str().is_none()) {
            return None;
        }
        Some(NetworkConfigList {
            name,
            cni_version,
            plugins,
            disable_check: v["disableCheck"].as_bool().unwrap_or(false),
            source: source.to_path_buf(),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CniConfigError {
    #[error("read CNI config dir {dir}: {source}")]
    ReadDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("no network config found in {0}")]
    NoConfig(PathBuf),
}

/// The first valid network configuration in `dir`. Invalid files are skipped (and
/// reported in the error when none is valid), as libcni does.
pub fn load_first(dir: &Path) -> Result<NetworkConfigList, CniConfigError> {
    let entries = fs::read_dir(dir).map_err(|source| CniConfigError::ReadDir {
        dir: dir.to_path_buf(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("conflist" | "conf" | "json")
            )
        })
        .collect();
    files.sort();
    for file in files {
        let Ok(text) = fs::read_to_string(&file) else {
            continue;
        };
        if let Some(list) = parse(&text, &file) {
            return Ok(list);
        }
    }
    Err(CniConfigError::NoConfig(dir.to_path_buf()))
}

fn parse(text: &str, source: &Path) -> Option<NetworkConfigList> {
    let v: Value = serde_json::from_str(text).ok()?;
    NetworkConfigList::from_json(&v, source)
}

/// The plugin binaries of `list` that none of `bin_dirs` holds.
pub fn missing_plugins(list: &NetworkConfigList, bin_dirs: &[PathBuf]) -> Vec<String> {
    list.plugin_types()
        .into_iter()
        .filter(|t| !bin_dirs.iter().any(|d| d.join(t).is_file()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(files: &[(&str, &str)]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "gantry-cni-test-{}-{}",
            std::process::id(),
            files.iter().map(|f| f.0).collect::<Vec<_>>().join("-")
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("temp dir");
        for (name, body) in files {
            fs::write(dir.join(name), body).expect("write");
        }
        dir
    }

    #[test]
    fn first_valid_file_by_name_wins_and_invalid_ones_are_skipped() {
        let dir = dir_with(&[
            ("05-broken.conflist", "{ not json"),
            (
                "10-net.conflist",
                r#"{"cniVersion":"1.0.0","name":"net","plugins":[{"type":"bridge"},{"type":"portmap"}]}"#,
            ),
            (
                "20-other.conflist",
                r#"{"cniVersion":"1.0.0","name":"other","plugins":[{"type":"bridge"}]}"#,
            ),
        ]);
        let list = load_first(&dir).expect("a config");
        assert_eq!(list.name, "net");
        assert_eq!(list.plugin_types(), vec!["bridge", "portmap"]);
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn single_plugin_conf_becomes_a_list() {
        let dir = dir_with(&[(
            "99-loop.conf",
            r#"{"cniVersion":"0.4.0","name":"lo","type":"loopback"}"#,
        )]);
        let list = load_first(&dir).expect("a config");
        assert_eq!(list.plugin_types(), vec!["loopback"]);
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn to_json_round_trips() {
        let list = parse(
            r#"{"cniVersion":"1.0.0","name":"n","disableCheck":true,"plugins":[{"type":"bridge","bridge":"b0"}]}"#,
            Path::new("x"),
        )
        .expect("valid");
        assert!(list.disable_check);
        assert_eq!(
            NetworkConfigList::from_json(&list.to_json(), Path::new("x")),
            Some(list)
        );
    }

    #[test]
    fn empty_dir_says_no_config() {
        let dir = dir_with(&[]);
        assert!(matches!(load_first(&dir), Err(CniConfigError::NoConfig(_))));
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn missing_binaries_are_named() {
        let list = parse(
            r#"{"name":"n","plugins":[{"type":"bridge"},{"type":"nope"}]}"#,
            Path::new("x"),
        )
        .expect("valid");
        let bin = dir_with(&[("bridge", "")]);
        assert_eq!(
            missing_plugins(&list, std::slice::from_ref(&bin)),
            vec!["nope"]
        );
        let _ = fs::remove_dir_all(bin);
    }
}
