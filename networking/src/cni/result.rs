//! The result of a CNI ADD (spec 1.0/1.1; 0.3.x and 0.4.0 results have the same shape
//! apart from an `ips[].version` field, which is ignored).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::Deserialize;
use serde_json::Value;

/// An address with its prefix length, as CNI writes it: `198.18.250.5/24`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpPrefix {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

impl FromStr for IpPrefix {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, len) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} has no /prefix"))?;
        let addr: IpAddr = addr.parse().map_err(|e| format!("{s:?}: {e}"))?;
        let prefix_len: u8 = len.parse().map_err(|e| format!("{s:?}: {e}"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix_len > max {
            return Err(format!("{s:?}: prefix longer than {max}"));
        }
        Ok(IpPrefix { addr, prefix_len })
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub mac: Option<String>,
    /// The netns path for interfaces inside the sandbox; `None` for host-side ones (the
    /// bridge, the veth's host end).
    pub sandbox: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpConfig {
    pub address: IpPrefix,
    pub gateway: Option<IpAddr>,
    /// Index into [`CniResult::interfaces`].
    pub interface: Option<usize>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub dst: IpPrefix,
    pub gw: Option<IpAddr>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dns {
    pub nameservers: Vec<String>,
    pub domain: Option<String>,
    pub search: Vec<String>,
    pub options: Vec<String>,
}

/// A parsed ADD result, keeping the plugin's JSON for prevResult and the cache.
#[derive(Clone, Debug, PartialEq)]
pub struct CniResult {
    pub cni_version: String,
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
    raw: Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawResult {
    #[serde(default)]
    cni_version: String,
    #[serde(default)]
    interfaces: Vec<RawInterface>,
    #[serde(default)]
    ips: Vec<RawIp>,
    #[serde(default)]
    routes: Vec<RawRoute>,
    #[serde(default)]
    dns: RawDns,
}

#[derive(Deserialize)]
struct RawInterface {
    name: String,
    mac: Option<String>,
    sandbox: Option<String>,
}

#[derive(Deserialize)]
struct RawIp {
    address: String,
    gateway: Option<String>,
    interface: Option<usize>,
}

#[derive(Deserialize)]
struct RawRoute {
    dst: String,
    gw: Option<String>,
}

#[derive(Default, Deserialize)]
struct RawDns {
    #[serde(default)]
    nameservers: Vec<String>,
    domain: Option<String>,
    #[serde(default)]
    search: Vec<String>,
    #[serde(default)]
    options: Vec<String>,
}

fn parse_ip(s: &str) -> Result<IpAddr, String> {
    s.parse().map_err(|e| format!("{s:?}: {e}"))
}

impl CniResult {
    /// Parses a result document; the error says which field is wrong.
    pub fn parse(raw: Value) -> Result<CniResult, String> {
        let r: RawResult = serde_json::from_value(raw.clone()).map_err(|e| e.to_string())?;
        let interfaces: Vec<Interface> = r
            .interfaces
            .into_iter()
            .map(|i| Interface {
                name: i.name,
                mac: i.mac.filter(|m| !m.is_empty()),
                sandbox: i.sandbox.filter(|s| !s.is_empty()),
            })
            .collect();
        let mut ips = Vec::with_capacity(r.ips.len());
        for ip in r.ips {
            if let Some(i) = ip.interface.filter(|i| *i >= interfaces.len()) {
                return Err(format!(
                    "ip {} names interface {i} of {}",
                    ip.address,
                    interfaces.len()
                ));
            }
            ips.push(IpConfig {
                address: ip.address.parse()?,
                gateway: ip.gateway.as_deref().map(parse_ip).transpose()?,
                interface: ip.interface,
            });
        }
        let mut routes = Vec::with_capacity(r.routes.len());
        for route in r.routes {
            routes.push(Route {
                dst: route.dst.parse()?,
                gw: route.gw.as_deref().map(parse_ip).transpose()?,
            });
        }
        Ok(CniResult {
            cni_version: r.cni_version,
            interfaces,
            ips,
            routes,
            dns: Dns {
                nameservers: r.dns.nameservers,
                domain: r.dns.domain,
                search: r.dns.search,
                options: r.dns.options,
            },
            raw,
        })
    }

    /// The plugin's JSON, as passed on as prevResult and cached.
    pub fn raw(&self) -> &Value {
        &self.raw
    }

    /// The interface an IP is on, when the plugin said.
    pub fn interface_of(&self, ip: &IpConfig) -> Option<&Interface> {
        ip.interface.and_then(|i| self.interfaces.get(i))
    }

    /// The pod's addresses, IPv4 first then IPv6 (each in result order, without
    /// duplicates), as the CRI's PodSandboxNetworkStatus wants them (`ip` then
    /// `additional_ips`; containerd's CRI orders them the same way). Addresses on host-side
    /// interfaces (no `sandbox`) are not the pod's and are left out.
    pub fn ips(&self) -> Vec<IpAddr> {
        let pod_side = self.ips.iter().filter(|ip| match self.interface_of(ip) {
            Some(iface) => iface.sandbox.is_some(),
            None => true,
        });
        let mut v4: Vec<IpAddr> = Vec::new();
        let mut v6: Vec<IpAddr> = Vec::new();
        for ip in pod_side {
            let list = if ip.address.addr.is_ipv4() {
                &mut v4
            } else {
                &mut v6
            };
            if !list.contains(&ip.address.addr) {
                list.push(ip.address.addr);
            }
        }
        v4.extend(v6);
        v4
    }

    /// The first of [`CniResult::ips`].
    pub fn primary_ip(&self) -> Option<IpAddr> {
        self.ips().first().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bridge_result(version: &str) -> Value {
        json!({
            "cniVersion": version,
            "interfaces": [
                {"name": "cni0", "mac": "aa:aa:aa:aa:aa:aa"},
                {"name": "veth1", "mac": "bb:bb:bb:bb:bb:bb"},
                {"name": "eth0", "mac": "cc:cc:cc:cc:cc:cc", "sandbox": "/run/netns/x"}
            ],
            "ips": [
                {"version": "6", "address": "2001:db8::5/64", "interface": 2},
                {"version": "4", "address": "198.18.250.5/24", "gateway": "198.18.250.1", "interface": 2},
                {"version": "4", "address": "198.18.250.1/24", "interface": 0}
            ],
            "routes": [{"dst": "0.0.0.0/0", "gw": "198.18.250.1"}],
            "dns": {"nameservers": ["198.19.0.10"], "search": ["svc"]}
        })
    }

    #[test]
    fn v4_comes_first_and_host_side_addresses_are_not_the_pods() {
        for version in ["0.3.1", "0.4.0", "1.0.0"] {
            let r = CniResult::parse(bridge_result(version)).expect("parse");
            let want: Vec<IpAddr> = vec![
                "198.18.250.5".parse().expect("ip"),
                "2001:db8::5".parse().expect("ip"),
            ];
            assert_eq!(r.ips(), want, "version {version}");
            assert_eq!(r.primary_ip(), Some(want[0]));
            let eth0 = r.interface_of(&r.ips[1]).expect("iface");
            assert_eq!(eth0.name, "eth0");
            assert_eq!(r.ips[1].address.to_string(), "198.18.250.5/24");
            assert_eq!(r.ips[1].gateway, Some("198.18.250.1".parse().expect("ip")));
            assert_eq!(r.routes[0].dst.prefix_len, 0);
            assert_eq!(r.dns.nameservers, vec!["198.19.0.10"]);
            assert_eq!(r.raw(), &bridge_result(version));
        }
    }

    #[test]
    fn ips_without_interface_count_as_the_pods() {
        let r = CniResult::parse(json!({"cniVersion": "1.0.0",
            "ips": [{"address": "10.0.0.2/8"}, {"address": "10.0.0.2/8"}]}))
        .expect("parse");
        assert_eq!(r.ips(), vec!["10.0.0.2".parse::<IpAddr>().expect("ip")]);
    }

    #[test]
    fn empty_result_has_no_ip() {
        let r = CniResult::parse(json!({"cniVersion": "1.0.0"})).expect("parse");
        assert_eq!(r.primary_ip(), None);
        assert!(r.interfaces.is_empty());
    }

    #[test]
    fn bad_results_say_what_is_wrong() {
        let cases = [
            (json!({"ips": [{"address": "10.0.0.2"}]}), "no /prefix"),
            (json!({"ips": [{"address": "10.0.0.300/8"}]}), "10.0.0.300"),
            (
                json!({"ips": [{"address": "10.0.0.2/33"}]}),
                "longer than 32",
            ),
            (
                json!({"ips": [{"address": "10.0.0.2/8", "interface": 3}]}),
                "interface 3",
            ),
            (json!({"ips": "nope"}), "invalid type"),
            (json!({"routes": [{"dst": "x/1"}]}), "\"x/1\""),
        ];
        for (doc, want) in cases {
            let err = CniResult::parse(doc.clone()).expect_err("invalid");
            assert!(err.contains(want), "{doc}: {err}");
        }
    }
}
