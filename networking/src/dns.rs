//! The resolv.conf a sandbox gets from the CRI's DNSConfig.

use std::io;
use std::path::Path;

/// resolv.conf text for the CRI's DNS servers, searches and options, in the order
/// containerd's CRI writes them (`search`, then one `nameserver` line per server, then
/// `options`); an empty list gives no line. When all three are empty this is empty and
/// the caller uses the host's file instead ([`host_resolv_conf`]), as containerd does.
pub fn resolv_conf(servers: &[String], searches: &[String], options: &[String]) -> String {
    let non_blank = |list: &[String]| -> Vec<String> {
        list.iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    };
    let (servers, searches, options) =
        (non_blank(servers), non_blank(searches), non_blank(options));
    let mut out = String::new();
    if !searches.is_empty() {
        out.push_str(&format!("search {}\n", searches.join(" ")));
    }
    for server in &servers {
        out.push_str(&format!("nameserver {server}\n"));
    }
    if !options.is_empty() {
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    out
}

/// The host's resolv.conf (normally /etc/resolv.conf), for pods that set no DNS config.
pub fn host_resolv_conf(path: &Path) -> io::Result<String> {
    std::fs::read_to_string(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn resolv_conf_table() {
        // (servers, searches, options, resolv.conf)
        type Case = (
            &'static [&'static str],
            &'static [&'static str],
            &'static [&'static str],
            &'static str,
        );
        let cases: &[Case] = &[
            (&[], &[], &[], ""),
            (&["10.0.0.10"], &[], &[], "nameserver 10.0.0.10\n"),
            (
                &["198.19.0.10", "2001:db8::a"],
                &["ns.svc.cluster.local", "svc.cluster.local"],
                &["ndots:5", "timeout:2"],
                "search ns.svc.cluster.local svc.cluster.local\n\
                 nameserver 198.19.0.10\n\
                 nameserver 2001:db8::a\n\
                 options ndots:5 timeout:2\n",
            ),
            (&[], &["example.com"], &[], "search example.com\n"),
            (&[], &[], &["ndots:1"], "options ndots:1\n"),
            (&["  1.1.1.1 ", ""], &[""], &[], "nameserver 1.1.1.1\n"),
        ];
        for (servers, searches, options, want) in cases {
            assert_eq!(
                resolv_conf(&v(servers), &v(searches), &v(options)),
                *want,
                "servers {servers:?} searches {searches:?} options {options:?}"
            );
        }
    }

    #[test]
    fn host_resolv_conf_is_read_verbatim_and_missing_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("resolv.conf");
        std::fs::write(&path, "nameserver 127.0.0.53\noptions edns0\n").expect("write");
        assert_eq!(
            host_resolv_conf(&path).expect("read"),
            "nameserver 127.0.0.53\noptions edns0\n"
        );
        let err = host_resolv_conf(&dir.path().join("nope")).expect_err("missing");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
