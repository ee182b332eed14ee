//! Registry hosts in containerd's own format (hosts.toml under a config_path), so one
//! mirror configuration serves containerd's CRI plugin and Gantry alike:
//!
//! ```toml
//! server = "https://registry.k8s.io"
//! [host."http://127.0.0.1:5000"]
//!   capabilities = ["pull", "resolve"]
//! ```
//!
//! As in containerd, the `host` entries are tried in file order, then `server`; a
//! registry without a file uses DIR/_default/hosts.toml, else `https://REGISTRY`
//! (`registry-1.docker.io` for docker.io, plain HTTP for loopback registries).

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{CriError, Result};

/// One place to fetch a registry's content from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// `host[:port]` as used in URLs.
    pub host: String,
    pub plain_http: bool,
    /// May resolve tags to digests (containerd's "resolve" capability).
    pub resolve: bool,
}

#[derive(Clone, Debug, Default)]
pub struct RegistryHosts {
    dir: Option<PathBuf>,
}

impl RegistryHosts {
    pub fn new(dir: Option<PathBuf>) -> Self {
        RegistryHosts { dir }
    }

    /// The endpoints for `registry` (as named in image references), in the order to try.
    pub fn endpoints(&self, registry: &str) -> Result<Vec<Endpoint>> {
        if let Some(dir) = &self.dir {
            for candidate in [registry, "_default"] {
                let file = dir.join(candidate).join("hosts.toml");
                if file.is_file() {
                    return parse_hosts_file(&file, registry);
                }
            }
        }
        Ok(vec![default_endpoint(registry)])
    }
}

fn default_endpoint(registry: &str) -> Endpoint {
    let host = if registry == "docker.io" {
        "registry-1.docker.io".to_string()
    } else {
        registry.to_string()
    };
    Endpoint {
        plain_http: is_loopback(&host),
        host,
        resolve: true,
    }
}

fn is_loopback(host: &str) -> bool {
    let name = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host);
    matches!(name, "localhost" | "127.0.0.1" | "[::1]") || name.starts_with("127.")
}

fn parse_hosts_file(file: &Path, registry: &str) -> Result<Vec<Endpoint>> {
    let text = fs::read_to_string(file)
        .map_err(|e| CriError::Internal(format!("read registry hosts {}: {e}", file.display())))?;
    parse_hosts(&text, registry)
        .map_err(|e| CriError::InvalidArgument(format!("registry hosts {}: {e}", file.display())))
}

fn parse_hosts(text: &str, registry: &str) -> std::result::Result<Vec<Endpoint>, String> {
    let doc: toml::Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
    let mut endpoints = Vec::new();
    if let Some(hosts) = doc.get("host").and_then(|h| h.as_table()) {
        for (url, settings) in hosts {
            let caps: Vec<&str> = settings
                .get("capabilities")
                .and_then(|c| c.as_array())
                .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
                .unwrap_or_else(|| vec!["pull", "resolve"]);
            if !caps.contains(&"pull") {
                continue;
            }
            let mut ep = parse_url(url)?;
            ep.resolve = caps.contains(&"resolve");
            endpoints.push(ep);
        }
    }
    match doc.get("server").and_then(|s| s.as_str()) {
        Some(server) => {
            let ep = parse_url(server)?;
            if !endpoints.contains(&ep) {
                endpoints.push(ep);
            }
        }
        None => {
            let ep = default_endpoint(registry);
            if !endpoints.contains(&ep) {
                endpoints.push(ep);
            }
        }
    }
    Ok(endpoints)
}

fn parse_url(url: &str) -> std::result::Result<Endpoint, String> {
    let (plain_http, rest) = if let Some(r) = url.strip_prefix("http://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("https://") {
        (false, r)
    } else {
        (false, url)
    };
    let host = rest.split('/').next().unwrap_or("").to_string();
    if host.is_empty() {
        return Err(format!("no host in {url:?}"));
    }
    Ok(Endpoint {
        host,
        plain_http,
        resolve: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_comes_before_server_and_keeps_its_scheme() {
        let eps = parse_hosts(
            "server = \"https://registry.k8s.io\"\n[host.\"http://127.0.0.1:5000\"]\ncapabilities = [\"pull\", \"resolve\"]\n",
            "registry.k8s.io",
        )
        .expect("valid");
        assert_eq!(
            eps,
            vec![
                Endpoint {
                    host: "127.0.0.1:5000".into(),
                    plain_http: true,
                    resolve: true
                },
                Endpoint {
                    host: "registry.k8s.io".into(),
                    plain_http: false,
                    resolve: true
                },
            ]
        );
    }

    #[test]
    fn server_equal_to_mirror_is_listed_once() {
        let eps = parse_hosts(
            "server = \"http://127.0.0.1:5000\"\n[host.\"http://127.0.0.1:5000\"]\ncapabilities = [\"pull\", \"resolve\"]\n",
            "docker.io",
        )
        .expect("valid");
        assert_eq!(eps.len(), 1);
    }

    #[test]
    fn pull_only_mirror_cannot_resolve_tags_and_push_only_is_skipped() {
        let eps = parse_hosts(
            "[host.\"https://a\"]\ncapabilities = [\"pull\"]\n[host.\"https://b\"]\ncapabilities = [\"push\"]\n",
            "quay.io",
        )
        .expect("valid");
        assert_eq!(
            eps[0],
            Endpoint {
                host: "a".into(),
                plain_http: false,
                resolve: false
            }
        );
        assert_eq!(eps[1].host, "quay.io");
        assert_eq!(eps.len(), 2);
    }

    #[test]
    fn defaults_follow_containerd() {
        let hosts = RegistryHosts::new(None);
        assert_eq!(
            hosts.endpoints("docker.io").expect("ok")[0].host,
            "registry-1.docker.io"
        );
        assert!(hosts.endpoints("localhost:5000").expect("ok")[0].plain_http);
        assert!(!hosts.endpoints("gcr.io").expect("ok")[0].plain_http);
    }

    #[test]
    fn malformed_file_is_an_error_naming_the_problem() {
        assert!(parse_hosts("server = ", "x").is_err());
    }
}
