use gantry_cri::api;
use serde_json::json;

use super::fixtures::*;
use crate::spec::{kernel_hostname, sandbox_config, sandbox_config_checked, ConfigError};

#[test]
fn the_sandbox_is_named_logged_and_labelled_for_its_pod() {
    let p = pod_with(
        json!({"labels": {"app": "web"}, "annotations": {"team": "shop"}}),
        json!({}),
    );
    let config = sandbox_config(&p, 3, &node());
    let meta = config.metadata.unwrap();
    assert_eq!(
        (
            meta.name.as_str(),
            meta.namespace.as_str(),
            meta.uid.as_str(),
            meta.attempt
        ),
        ("web", "shop", "uid-1", 3)
    );
    assert_eq!(config.log_directory, "/var/log/pods/shop_web_uid-1");
    let label = |k: &str| config.labels.get(k).map(String::as_str);
    assert_eq!(
        (
            label("app"),
            label("io.kubernetes.pod.name"),
            label("io.kubernetes.pod.namespace"),
            label("io.kubernetes.pod.uid")
        ),
        (Some("web"), Some("web"), Some("shop"), Some("uid-1"))
    );
    assert_eq!(label("io.gantry.node"), Some("node-1"));
    assert_eq!(
        config.annotations.get("team").map(String::as_str),
        Some("shop")
    );
    assert_eq!(config.annotations.len(), 1);
    assert_eq!(
        config.dns_config.unwrap().servers,
        vec!["10.96.0.10".to_string()]
    );
}

#[test]
fn hostnames_follow_upstream_rules() {
    let long = "a".repeat(70);
    let cases = [
        ("the pod's name", json!({}), json!({}), Ok("web".to_string())),
        ("spec.hostname", json!({}), json!({"hostname": "front"}), Ok("front".to_string())),
        ("a long name is cut to 63", json!({"name": long.clone()}), json!({}), Ok("a".repeat(63))),
        (
            "a cut name loses its trailing dashes and dots",
            json!({"name": format!("{}-.-x", "b".repeat(60))}),
            json!({}),
            Ok("b".repeat(60)),
        ),
        ("hostnameOverride wins", json!({}), json!({"hostname": "front", "hostnameOverride": "node.example"}), Ok("node.example".to_string())),
        ("subdomain without FQDN", json!({}), json!({"hostname": "h", "subdomain": "sub"}), Ok("h".to_string())),
        ("setHostnameAsFQDN", json!({}), json!({"hostname": "h", "subdomain": "sub", "setHostnameAsFQDN": true}), Ok("h.sub.shop.svc.cluster.local".to_string())),
        ("setHostnameAsFQDN without subdomain", json!({}), json!({"setHostnameAsFQDN": true}), Ok("web".to_string())),
        (
            "an FQDN longer than 64",
            json!({}),
            json!({"hostname": "h".repeat(40), "subdomain": "sub", "setHostnameAsFQDN": true}),
            Err(format!(
                "failed to construct FQDN from pod hostname and cluster domain, FQDN {}.sub.shop.svc.cluster.local is too long (64 characters is the max, 67 characters requested)",
                "h".repeat(40)
            )),
        ),
        ("an invalid hostname", json!({}), json!({"hostname": "Not_Valid"}), Err(r#"pod Hostname "Not_Valid" is not a valid DNS label"#.to_string())),
    ];
    for (name, meta, spec, want) in cases {
        let p = pod_with(meta, spec);
        assert_eq!(
            kernel_hostname(&p, &node()),
            want.map_err(ConfigError),
            "{name}"
        );
    }
}

#[test]
fn host_network_pods_keep_the_hosts_hostname() {
    let p = pod(json!({"hostNetwork": true, "hostname": "ignored"}));
    assert_eq!(sandbox_config(&p, 0, &node()).hostname, "");
}

#[test]
fn an_unusable_hostname_fails_the_checked_config_and_falls_back_in_the_other() {
    let p = pod(json!({"hostname": "h".repeat(40), "subdomain": "sub", "setHostnameAsFQDN": true}));
    assert!(sandbox_config_checked(&p, 0, &node()).is_err());
    assert_eq!(sandbox_config(&p, 0, &node()).hostname, "web");
}

#[test]
fn host_ports_of_app_containers_become_port_mappings() {
    let p = pod(json!({
        "initContainers": [{"name": "init", "image": "i", "ports": [{"containerPort": 1, "hostPort": 1}]}],
        "containers": [
            {"name": "app", "image": "nginx:1", "ports": [
                {"name": "http", "containerPort": 80, "hostPort": 8080},
                {"name": "dns", "containerPort": 53, "hostPort": 5353, "protocol": "UDP", "hostIP": "10.0.0.5"},
                {"name": "metrics", "containerPort": 9090},
                {"name": "http", "containerPort": 81, "hostPort": 8081},
            ]},
            {"name": "side", "image": "s", "ports": [{"containerPort": 7000, "hostPort": 7000, "protocol": "SCTP"}]},
        ],
    }));
    let mappings: Vec<(i32, i32, i32, String)> = sandbox_config(&p, 0, &node())
        .port_mappings
        .into_iter()
        .map(|m| (m.protocol, m.container_port, m.host_port, m.host_ip))
        .collect();
    assert_eq!(
        mappings,
        vec![
            (api::Protocol::Tcp as i32, 80, 8080, String::new()),
            (api::Protocol::Udp as i32, 53, 5353, "10.0.0.5".to_string()),
            (api::Protocol::Sctp as i32, 7000, 7000, String::new()),
        ]
    );
}
