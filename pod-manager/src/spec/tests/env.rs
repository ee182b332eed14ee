use serde_json::json;

use super::fixtures::*;
use crate::spec::{service_env, ConfigError, EnvSources};

fn with_env(env: serde_json::Value) -> k8s_openapi::api::core::v1::Pod {
    pod(json!({"containers": [{"name": "app", "image": "nginx:1", "env": env}]}))
}

fn sources() -> EnvSources {
    EnvSources {
        config_maps: [
            config_map("app-config", json!({"MODE": "prod", "LEVEL": "3"})),
            ("missing-cm".to_string(), None),
        ]
        .into(),
        secrets: [
            secret("db", &[("password", "s3cr=t"), ("user", "admin")]),
            ("missing-secret".to_string(), None),
        ]
        .into(),
        services: vec![],
    }
}

#[test]
fn service_links_name_every_port_of_cluster_ip_services_of_the_namespace() {
    let services = [
        service(
            "shop",
            "my-db.v2",
            "10.96.3.4",
            json!([{"name": "pg", "port": 5432}, {"name": "metrics", "port": 9187, "protocol": "UDP"}]),
        ),
        service("shop", "headless", "None", json!([{"port": 80}])),
        service("shop", "no-ip", "", json!([{"port": 80}])),
        service("other", "elsewhere", "10.96.9.9", json!([{"port": 80}])),
    ];
    let env = service_env("shop", true, &services);
    assert_eq!(
        env,
        pairs(&[
            ("MY_DB_V2_SERVICE_HOST", "10.96.3.4"),
            ("MY_DB_V2_SERVICE_PORT", "5432"),
            ("MY_DB_V2_SERVICE_PORT_PG", "5432"),
            ("MY_DB_V2_SERVICE_PORT_METRICS", "9187"),
            ("MY_DB_V2_PORT", "tcp://10.96.3.4:5432"),
            ("MY_DB_V2_PORT_5432_TCP", "tcp://10.96.3.4:5432"),
            ("MY_DB_V2_PORT_5432_TCP_PROTO", "tcp"),
            ("MY_DB_V2_PORT_5432_TCP_PORT", "5432"),
            ("MY_DB_V2_PORT_5432_TCP_ADDR", "10.96.3.4"),
            ("MY_DB_V2_PORT_9187_UDP", "udp://10.96.3.4:9187"),
            ("MY_DB_V2_PORT_9187_UDP_PROTO", "udp"),
            ("MY_DB_V2_PORT_9187_UDP_PORT", "9187"),
            ("MY_DB_V2_PORT_9187_UDP_ADDR", "10.96.3.4"),
        ])
    );
}

#[test]
fn the_kubernetes_service_links_even_when_service_links_are_disabled() {
    let services = [
        service(
            "default",
            "kubernetes",
            "10.96.0.1",
            json!([{"name": "https", "port": 443}]),
        ),
        service(
            "default",
            "other-default",
            "10.96.0.2",
            json!([{"port": 80}]),
        ),
        service("shop", "cart", "10.96.5.5", json!([{"port": 80}])),
    ];
    let names = |links| -> Vec<String> {
        service_env("shop", links, &services)
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| k.ends_with("_SERVICE_HOST"))
            .collect()
    };
    assert_eq!(
        names(true),
        ["CART_SERVICE_HOST", "KUBERNETES_SERVICE_HOST"]
    );
    assert_eq!(names(false), ["KUBERNETES_SERVICE_HOST"]);
}

#[test]
fn a_namespace_service_named_kubernetes_replaces_the_masters() {
    let services = [
        service("default", "kubernetes", "10.96.0.1", json!([{"port": 443}])),
        service("shop", "kubernetes", "10.96.7.7", json!([{"port": 8443}])),
    ];
    let env = service_env("shop", true, &services);
    assert!(env.contains(&("KUBERNETES_SERVICE_HOST".into(), "10.96.7.7".into())));
    assert!(!env.iter().any(|(_, v)| v == "10.96.0.1"));
}

#[test]
fn ipv6_service_urls_bracket_the_address_and_leading_digits_get_an_underscore() {
    let env = service_env(
        "shop",
        true,
        &[service("shop", "9lives", "fd00::10", json!([{"port": 80}]))],
    );
    assert!(env.contains(&("_9LIVES_PORT".into(), "tcp://[fd00::10]:80".into())));
    assert!(env.contains(&("_9LIVES_SERVICE_HOST".into(), "fd00::10".into())));
}

#[test]
fn env_from_adds_config_maps_and_secrets_with_their_prefix() {
    let pod = pod(
        json!({"containers": [{"name": "app", "image": "nginx:1", "envFrom": [
            {"configMapRef": {"name": "app-config"}, "prefix": "CFG_"},
            {"secretRef": {"name": "db"}},
        ]}]}),
    );
    let config = app_config(&pod, &sources()).unwrap();
    assert_eq!(
        envs(&config),
        pairs(&[
            ("CFG_LEVEL", "3"),
            ("CFG_MODE", "prod"),
            ("password", "s3cr=t"),
            ("user", "admin")
        ])
    );
}

#[test]
fn env_from_a_missing_source_fails_unless_optional() {
    let cases = [
        (
            json!({"configMapRef": {"name": "missing-cm"}}),
            Some(r#"configmap "missing-cm" not found"#),
        ),
        (
            json!({"secretRef": {"name": "missing-secret"}}),
            Some(r#"secret "missing-secret" not found"#),
        ),
        (
            json!({"configMapRef": {"name": "missing-cm", "optional": true}}),
            None,
        ),
        (
            json!({"secretRef": {"name": "missing-secret", "optional": true}}),
            None,
        ),
    ];
    for (from, want) in cases {
        let pod =
            pod(json!({"containers": [{"name": "app", "image": "nginx:1", "envFrom": [from]}]}));
        let got = app_config(&pod, &sources()).map(|c| c.envs.len());
        match want {
            Some(message) => assert_eq!(got, Err(ConfigError(message.into())), "{from}"),
            None => assert_eq!(got, Ok(0), "{from}"),
        }
    }
}

#[test]
fn env_from_keys_that_cannot_name_a_variable_are_skipped_others_kept() {
    // A digit first is fine under upstream's relaxed rule; '=' never is.
    let mut sources = sources();
    sources.config_maps.extend([config_map(
        "odd",
        json!({"1st": "a", "has=eq": "b", "ok": "c"}),
    )]);
    let pod = pod(
        json!({"containers": [{"name": "app", "image": "nginx:1", "envFrom": [{"configMapRef": {"name": "odd"}}]}]}),
    );
    assert_eq!(
        envs(&app_config(&pod, &sources).unwrap()),
        pairs(&[("1st", "a"), ("ok", "c")])
    );
}

#[test]
fn env_values_expand_earlier_variables_env_from_and_service_links() {
    let mut sources = sources();
    sources.services = vec![service("shop", "cart", "10.96.5.5", json!([{"port": 80}]))];
    let pod = pod(json!({"containers": [{"name": "app", "image": "nginx:1",
    "envFrom": [{"configMapRef": {"name": "app-config"}}],
    "env": [
        {"name": "A", "value": "a"},
        {"name": "B", "value": "$(A)-$(MODE)-$(CART_SERVICE_HOST)"},
        {"name": "C", "value": "$(LATER) $$(A) $(NOPE)"},
        {"name": "LATER", "value": "late"},
    ]}]}));
    let config = app_config(&pod, &sources).unwrap();
    let env = envs(&config);
    let get = |n: &str| env.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
    assert_eq!(get("B"), Some("a-prod-10.96.5.5"));
    // Declared later, escaped and undefined references stay as written.
    assert_eq!(get("C"), Some("$(LATER) $(A) $(NOPE)"));
}

#[test]
fn env_overrides_env_from_which_overrides_service_links_keeping_first_places() {
    let mut sources = sources();
    sources.services = vec![service("shop", "mode", "10.96.5.6", json!([]))];
    sources.config_maps.extend([config_map(
        "over",
        json!({"MODE_SERVICE_HOST": "from-cm", "MODE": "cm"}),
    )]);
    let pod = pod(json!({"containers": [{"name": "app", "image": "nginx:1",
        "envFrom": [{"configMapRef": {"name": "over"}}],
        "env": [{"name": "MODE", "value": "env"}, {"name": "EXTRA", "value": "x"}]}]}));
    let config = app_config(&pod, &sources).unwrap();
    assert_eq!(
        envs(&config),
        pairs(&[
            ("MODE_SERVICE_HOST", "from-cm"),
            ("MODE", "env"),
            ("EXTRA", "x")
        ])
    );
}

#[test]
fn field_refs_read_the_pod_the_node_and_the_sandbox() {
    let pod_ = |path: &str| {
        pod_with(
            json!({"labels": {"app": "web", "tier": "front"}, "annotations": {"note": "say \"hi\"\n"}}),
            json!({"nodeName": "node-1", "serviceAccountName": "robot", "containers": [{"name": "app", "image": "nginx:1",
                "env": [{"name": "V", "valueFrom": {"fieldRef": {"fieldPath": path}}}]}]}),
        )
    };
    let mut node = node();
    node.node_ips = vec!["10.0.0.5".into(), "fd00::5".into()];
    let cases = [
        ("metadata.name", "web"),
        ("metadata.namespace", "shop"),
        ("metadata.uid", "uid-1"),
        ("metadata.labels['tier']", "front"),
        ("metadata.labels['absent']", ""),
        ("metadata.annotations['note']", "say \"hi\"\n"),
        ("metadata.labels", "app=\"web\"\ntier=\"front\""),
        ("metadata.annotations", "note=\"say \\\"hi\\\"\\n\""),
        ("spec.nodeName", "node-1"),
        ("spec.serviceAccountName", "robot"),
        ("status.hostIP", "10.0.0.5"),
        ("status.hostIPs", "10.0.0.5,fd00::5"),
        ("status.podIP", "10.244.1.7"),
        ("status.podIPs", "10.244.1.7,fd00:244::7"),
    ];
    let mut inputs = inputs();
    // The sandbox reports IPv6 first; the node's family (IPv4) comes first.
    inputs.pod_ips = vec!["fd00:244::7".into(), "10.244.1.7".into()];
    for (path, want) in cases {
        let pod = pod_(path);
        let config = crate::spec::container_config(
            &pod,
            container_named(&pod, "app"),
            &node,
            &sources(),
            &inputs,
        )
        .unwrap();
        assert_eq!(envs(&config), pairs(&[("V", want)]), "{path}");
    }
}

#[test]
fn unsupported_field_refs_are_config_errors() {
    for (path, message) in [
        (
            "spec.restartPolicy",
            "unsupported fieldPath: spec.restartPolicy",
        ),
        (
            "metadata.generateName",
            "field label not supported: metadata.generateName",
        ),
        (
            "metadata.name['x']",
            "field label does not support subscript: metadata.name['x']",
        ),
    ] {
        let pod = with_env(json!([{"name": "V", "valueFrom": {"fieldRef": {"fieldPath": path}}}]));
        assert_eq!(
            app_config(&pod, &sources()).map(|_| ()),
            Err(ConfigError(message.into())),
            "{path}"
        );
    }
}

#[test]
fn resource_field_refs_divide_round_up_and_default_limits_to_allocatable() {
    let resources = json!({"requests": {"cpu": "250m", "memory": "100Mi"}, "limits": {"cpu": "1500m", "memory": "1Gi"}});
    let cases = [
        (json!({"resource": "limits.cpu"}), "2"),
        (json!({"resource": "limits.cpu", "divisor": "1m"}), "1500"),
        (json!({"resource": "requests.cpu", "divisor": "100m"}), "3"),
        (
            json!({"resource": "limits.memory", "divisor": "1Mi"}),
            "1024",
        ),
        (json!({"resource": "requests.memory"}), "104857600"),
        (
            json!({"resource": "requests.memory", "divisor": "1Gi"}),
            "1",
        ),
        // No ephemeral-storage limit: the node's allocatable (100Gi).
        (
            json!({"resource": "limits.ephemeral-storage", "divisor": "1Gi"}),
            "100",
        ),
        (json!({"resource": "requests.ephemeral-storage"}), "0"),
        // Another container's limits: `side` has none, so the node's 4 cpus.
        (
            json!({"resource": "limits.cpu", "containerName": "side"}),
            "4",
        ),
        (
            json!({"resource": "limits.memory", "containerName": "side", "divisor": "1Gi"}),
            "8",
        ),
    ];
    for (selector, want) in cases {
        let pod = pod(json!({"containers": [
            {"name": "app", "image": "nginx:1", "resources": resources,
             "env": [{"name": "V", "valueFrom": {"resourceFieldRef": selector}}]},
            {"name": "side", "image": "busybox"},
        ]}));
        assert_eq!(
            env_value(&pod, &sources(), "V").as_deref(),
            Some(want),
            "{selector}"
        );
    }
    for (selector, message) in [
        (
            json!({"resource": "limits.nvidia.com/gpu"}),
            "unsupported container resource : limits.nvidia.com/gpu",
        ),
        (
            json!({"resource": "limits.cpu", "containerName": "ghost"}),
            "container ghost not found",
        ),
    ] {
        let pod = with_env(json!([{"name": "V", "valueFrom": {"resourceFieldRef": selector}}]));
        assert_eq!(
            app_config(&pod, &sources()).map(|_| ()),
            Err(ConfigError(message.into()))
        );
    }
}

#[test]
fn key_refs_read_config_maps_and_secrets_and_respect_optional() {
    let key_ref = |kind: &str, name: &str, key: &str, optional: bool| {
        with_env(
            json!([{"name": "V", "valueFrom": {kind: {"name": name, "key": key, "optional": optional}}}]),
        )
    };
    let ok = [
        (
            key_ref("configMapKeyRef", "app-config", "MODE", false),
            Some("prod"),
        ),
        (
            key_ref("secretKeyRef", "db", "password", false),
            Some("s3cr=t"),
        ),
        (key_ref("configMapKeyRef", "app-config", "NOPE", true), None),
        (key_ref("secretKeyRef", "db", "nope", true), None),
        (key_ref("configMapKeyRef", "missing-cm", "k", true), None),
        (key_ref("secretKeyRef", "missing-secret", "k", true), None),
    ];
    for (pod, want) in ok {
        assert_eq!(env_value(&pod, &sources(), "V").as_deref(), want);
    }
    let errors = [
        (
            key_ref("configMapKeyRef", "app-config", "NOPE", false),
            "couldn't find key NOPE in ConfigMap shop/app-config",
        ),
        (
            key_ref("secretKeyRef", "db", "nope", false),
            "couldn't find key nope in Secret shop/db",
        ),
        (
            key_ref("configMapKeyRef", "missing-cm", "k", false),
            r#"configmap "missing-cm" not found"#,
        ),
        (
            key_ref("secretKeyRef", "missing-secret", "k", false),
            r#"secret "missing-secret" not found"#,
        ),
    ];
    for (pod, message) in errors {
        assert_eq!(
            app_config(&pod, &sources()).map(|_| ()),
            Err(ConfigError(message.into()))
        );
    }
}

#[test]
fn a_source_the_caller_did_not_fetch_is_reported_as_such() {
    let pod = with_env(
        json!([{"name": "V", "valueFrom": {"configMapKeyRef": {"name": "unfetched", "key": "k"}}}]),
    );
    let err = app_config(&pod, &sources()).unwrap_err();
    assert!(err.0.contains("not fetched"), "{err}");
}

#[test]
fn an_empty_value_without_a_source_is_an_empty_variable() {
    let pod = with_env(json!([{"name": "EMPTY"}, {"name": "ALSO", "value": ""}]));
    assert_eq!(
        envs(&app_config(&pod, &sources()).unwrap()),
        pairs(&[("EMPTY", ""), ("ALSO", "")])
    );
}
