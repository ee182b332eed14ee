use serde_json::json;

use super::fixtures::*;
use crate::spec::{container_config, container_hash, referenced_sources, Referenced};

#[test]
fn the_container_config_carries_the_spec_and_the_inputs() {
    let p = pod_with(
        json!({"deletionGracePeriodSeconds": 5}),
        json!({"terminationGracePeriodSeconds": 45, "containers": [{
            "name": "app", "image": "nginx:1", "workingDir": "/srv", "stdin": true, "tty": true,
            "command": ["/bin/sh", "-c"], "args": ["echo $(GREETING) $(UNSET) $$(GREETING)"],
            "env": [{"name": "GREETING", "value": "hello"}],
            "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "FallbackToLogsOnError",
            "ports": [{"name": "http", "containerPort": 80}],
            "lifecycle": {"preStop": {"exec": {"command": ["drain"]}}, "stopSignal": "SIGUSR1"},
        }]}),
    );
    let mut inputs = inputs();
    inputs.mounts = vec![gantry_cri::api::Mount {
        container_path: "/data".into(),
        host_path: "/var/lib/gantry/pods/uid-1/volumes/data".into(),
        ..Default::default()
    }];
    let config = container_config(
        &p,
        container_named(&p, "app"),
        &node(),
        &Default::default(),
        &inputs,
    )
    .unwrap();
    let meta = config.metadata.as_ref().unwrap();
    assert_eq!((meta.name.as_str(), meta.attempt), ("app", 2));
    let image = config.image.as_ref().unwrap();
    assert_eq!(
        (image.image.as_str(), image.user_specified_image.as_str()),
        ("sha256:abc", "nginx:1")
    );
    assert_eq!(config.command, ["/bin/sh", "-c"]);
    assert_eq!(config.args, ["echo hello $(UNSET) $(GREETING)"]);
    assert_eq!(config.working_dir, "/srv");
    assert_eq!(config.log_path, "app/2.log");
    assert_eq!(config.mounts, inputs.mounts);
    assert!(config.stdin && config.tty && !config.stdin_once);
    assert_eq!(config.stop_signal, gantry_cri::api::Signal::Sigusr1 as i32);

    let a = |k: &str| config.annotations.get(k).map(String::as_str);
    assert_eq!(a("io.kubernetes.container.restartCount"), Some("2"));
    assert_eq!(
        a("io.kubernetes.container.terminationMessagePolicy"),
        Some("FallbackToLogsOnError")
    );
    assert_eq!(a("io.kubernetes.pod.terminationGracePeriod"), Some("45"));
    assert_eq!(a("io.kubernetes.pod.deletionGracePeriod"), Some("5"));
    let ports: serde_json::Value =
        serde_json::from_str(a("io.kubernetes.container.ports").unwrap()).unwrap();
    assert_eq!(ports, json!([{"name": "http", "containerPort": 80}]));
    let pre_stop: serde_json::Value =
        serde_json::from_str(a("io.kubernetes.container.preStopHandler").unwrap()).unwrap();
    assert_eq!(pre_stop, json!({"exec": {"command": ["drain"]}}));
    assert_eq!(
        a("io.kubernetes.container.hash").map(str::to_string),
        Some(container_hash(container_named(&p, "app")))
    );

    let l = |k: &str| config.labels.get(k).map(String::as_str);
    assert_eq!(
        (
            l("io.kubernetes.pod.name"),
            l("io.kubernetes.pod.namespace"),
            l("io.kubernetes.pod.uid"),
            l("io.kubernetes.container.name")
        ),
        (Some("web"), Some("shop"), Some("uid-1"), Some("app"))
    );
}

#[test]
fn containers_are_labelled_with_their_kind() {
    let p = pod(json!({
        "initContainers": [{"name": "setup", "image": "i"}, {"name": "proxy", "image": "p", "restartPolicy": "Always"}],
    }));
    for (name, kind) in [("setup", "init"), ("proxy", "sidecar"), ("app", "app")] {
        let config = container_config(
            &p,
            container_named(&p, name),
            &node(),
            &Default::default(),
            &inputs(),
        )
        .unwrap();
        assert_eq!(
            config
                .labels
                .get("io.gantry.container.kind")
                .map(String::as_str),
            Some(kind),
            "{name}"
        );
        assert_eq!(
            config.labels.get("io.gantry.node").map(String::as_str),
            Some("node-1"),
            "the node label lets this agent find its own containers"
        );
    }
}

#[test]
fn the_hash_changes_with_name_or_image_only() {
    let base = pod(
        json!({"containers": [{"name": "app", "image": "nginx:1", "env": [{"name": "A", "value": "1"}]}]}),
    );
    let h = container_hash(container_named(&base, "app"));
    assert_eq!(h, container_hash(container_named(&base, "app")), "stable");
    assert!(!h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit()));
    let variants = [
        (
            json!({"name": "app", "image": "nginx:2", "env": [{"name": "A", "value": "1"}]}),
            false,
        ),
        (
            json!({"name": "other", "image": "nginx:1", "env": [{"name": "A", "value": "1"}]}),
            false,
        ),
        (
            json!({"name": "app", "image": "nginx:1", "env": [{"name": "A", "value": "2"}]}),
            true,
        ),
        (
            json!({"name": "app", "image": "nginx:1", "resources": {"limits": {"cpu": "1"}}}),
            true,
        ),
    ];
    for (container, same) in variants {
        let p = pod(json!({"containers": [container.clone()]}));
        let c = &p.spec.as_ref().unwrap().containers[0];
        assert_eq!(container_hash(c) == h, same, "{container}");
    }
}

#[test]
fn referenced_sources_lists_each_name_once_across_all_container_kinds() {
    let p = pod(json!({
        "initContainers": [{"name": "init", "image": "i", "envFrom": [{"configMapRef": {"name": "shared"}}]}],
        "containers": [{"name": "app", "image": "a",
            "envFrom": [{"secretRef": {"name": "creds"}}, {"configMapRef": {"name": "shared"}}],
            "env": [
                {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "app-config", "key": "k"}}},
                {"name": "B", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "k"}}},
                {"name": "C", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            ]}],
        "ephemeralContainers": [{"name": "debug", "image": "d", "env": [{"name": "D", "valueFrom": {"secretKeyRef": {"name": "debug-token", "key": "t"}}}]}],
    }));
    assert_eq!(
        referenced_sources(&p),
        Referenced {
            config_maps: vec!["shared".into(), "app-config".into()],
            secrets: vec!["creds".into(), "debug-token".into()],
        }
    );
    assert_eq!(referenced_sources(&pod(json!({}))), Referenced::default());
}
