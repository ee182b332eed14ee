use serde_json::{json, Value};

use super::fixtures::*;
use crate::spec::{
    milli_cpu_to_quota, milli_cpu_to_shares, oom_score_adj, qos_class, sandbox_config,
};

fn c(name: &str, resources: Value) -> Value {
    json!({"name": name, "image": "img", "resources": resources})
}

fn rl(cpu_req: &str, mem_req: &str, cpu_lim: &str, mem_lim: &str) -> Value {
    let list = |cpu: &str, mem: &str| {
        let mut m = serde_json::Map::new();
        if !cpu.is_empty() {
            m.insert("cpu".into(), cpu.into());
        }
        if !mem.is_empty() {
            m.insert("memory".into(), mem.into());
        }
        Value::Object(m)
    };
    json!({"requests": list(cpu_req, mem_req), "limits": list(cpu_lim, mem_lim)})
}

#[test]
fn qos_class_follows_upstream_rules() {
    let cases = [
        (
            "nothing set",
            json!({"containers": [c("a", json!({}))]}),
            "BestEffort",
        ),
        (
            "zero requests count as unset",
            json!({"containers": [c("a", rl("0", "0", "", ""))]}),
            "BestEffort",
        ),
        (
            "limits equal requests",
            json!({"containers": [c("a", rl("1", "1Gi", "1", "1Gi"))]}),
            "Guaranteed",
        ),
        (
            "equal amounts in other units",
            json!({"containers": [c("a", rl("1000m", "1024Mi", "1", "1Gi"))]}),
            "Guaranteed",
        ),
        (
            "only limits (requests default to them in the API)",
            json!({"containers": [c("a", rl("", "", "1", "1Gi"))]}),
            "Burstable",
        ),
        (
            "request below limit",
            json!({"containers": [c("a", rl("500m", "1Gi", "1", "1Gi"))]}),
            "Burstable",
        ),
        (
            "cpu limit only",
            json!({"containers": [c("a", rl("1", "", "1", ""))]}),
            "Burstable",
        ),
        (
            "one container without limits",
            json!({"containers": [c("a", rl("1", "1Gi", "1", "1Gi")), c("b", json!({}))]}),
            "Burstable",
        ),
        (
            "init containers count",
            json!({"containers": [c("a", rl("1", "1Gi", "1", "1Gi"))], "initContainers": [c("i", rl("100m", "", "", ""))]}),
            "Burstable",
        ),
        (
            "other resources do not count",
            json!({"containers": [c("a", json!({"limits": {"nvidia.com/gpu": "1"}}))]}),
            "BestEffort",
        ),
        (
            "pod-level resources decide",
            json!({"resources": rl("2", "2Gi", "2", "2Gi"), "containers": [c("a", json!({}))]}),
            "Guaranteed",
        ),
        (
            "pod-level requests only",
            json!({"resources": rl("2", "", "", ""), "containers": [c("a", rl("1", "1Gi", "1", "1Gi"))]}),
            "Burstable",
        ),
    ];
    for (name, spec, want) in cases {
        assert_eq!(qos_class(&pod(spec)), want, "{name}");
    }
}

#[test]
fn a_qos_class_the_api_recorded_is_kept() {
    let mut p = pod(json!({"containers": [c("a", json!({}))]}));
    p.status = Some(k8s_openapi::api::core::v1::PodStatus {
        qos_class: Some("Burstable".into()),
        ..Default::default()
    });
    assert_eq!(qos_class(&p), "Burstable");
}

#[test]
fn cpu_shares_and_quota_follow_upstream_conversions() {
    // (millicores, shares, quota over 100ms)
    let cases = [
        (0, 2, 0),
        (1, 2, 1000),
        (5, 5, 1000),
        (100, 102, 10_000),
        (1000, 1024, 100_000),
        (2500, 2560, 250_000),
        (1_000_000, 262_144, 100_000_000),
    ];
    for (milli, shares, quota) in cases {
        assert_eq!(
            (
                milli_cpu_to_shares(milli),
                milli_cpu_to_quota(milli, 100_000)
            ),
            (shares, quota),
            "{milli}m"
        );
    }
}

#[test]
fn container_resources_map_requests_and_limits_to_cgroup_settings() {
    // (resources, cpu_shares, cpu_quota, memory_limit)
    let cases = [
        (
            rl("250m", "64Mi", "500m", "128Mi"),
            256,
            50_000,
            134_217_728,
        ),
        // No request: shares from the limit, as the API would default it.
        (rl("", "", "2", "1G"), 2048, 200_000, 1_000_000_000),
        // Nothing: minimum shares, no quota, no memory limit.
        (json!({}), 2, 0, 0),
    ];
    for (resources, shares, quota, memory) in cases {
        let p = pod(json!({"containers": [c("app", resources.clone())]}));
        let config = app_config(&p, &Default::default()).unwrap();
        let r = config.linux.unwrap().resources.unwrap();
        assert_eq!(
            (
                r.cpu_shares,
                r.cpu_period,
                r.cpu_quota,
                r.memory_limit_in_bytes
            ),
            (shares, 100_000, quota, memory),
            "{resources}"
        );
        assert!(r.unified.is_empty());
    }
}

#[test]
fn whole_container_oom_kill_is_asked_for_when_the_node_wants_it() {
    let p = pod(json!({}));
    let mut node = node();
    node.memory_oom_group = true;
    let config = crate::spec::container_config(
        &p,
        container_named(&p, "app"),
        &node,
        &Default::default(),
        &inputs(),
    )
    .unwrap();
    let unified = config.linux.unwrap().resources.unwrap().unified;
    assert_eq!(
        unified.get("memory.oom.group").map(String::as_str),
        Some("1")
    );
}

#[test]
fn oom_score_adjustment_protects_by_qos_class_and_memory_request() {
    let capacity = 10_000_000_000;
    let cases = [
        (
            "guaranteed",
            json!({"containers": [c("app", rl("1", "1G", "1", "1G"))]}),
            -997,
        ),
        (
            "best effort",
            json!({"containers": [c("app", json!({}))]}),
            1000,
        ),
        // 1000 - 1000 * 1G / 10G
        (
            "burstable 10%",
            json!({"containers": [c("app", rl("", "1G", "", ""))]}),
            900,
        ),
        (
            "burstable 25%",
            json!({"containers": [c("app", rl("", "2500M", "", "4G"))]}),
            750,
        ),
        // Requesting (nearly) all memory: kept above Guaranteed.
        (
            "burstable all memory",
            json!({"containers": [c("app", rl("", "10G", "", ""))]}),
            3,
        ),
        (
            "burstable more than all memory",
            json!({"containers": [c("app", rl("", "20G", "", ""))]}),
            3,
        ),
        // A tiny request: kept below BestEffort.
        (
            "burstable no memory request",
            json!({"containers": [c("app", rl("100m", "", "", ""))]}),
            999,
        ),
        (
            "burstable tiny request",
            json!({"containers": [c("app", rl("", "1", "", ""))]}),
            999,
        ),
        (
            "node critical",
            json!({"priorityClassName": "system-node-critical", "priority": 2_000_001_000, "containers": [c("app", json!({}))]}),
            -997,
        ),
        (
            "node critical class without critical priority",
            json!({"priorityClassName": "system-node-critical", "containers": [c("app", json!({}))]}),
            1000,
        ),
    ];
    for (name, spec, want) in cases {
        let p = pod(spec);
        assert_eq!(
            oom_score_adj(&p, container_named(&p, "app"), capacity),
            want,
            "{name}"
        );
    }
}

#[test]
fn a_sidecar_scores_no_higher_than_the_smallest_app_container() {
    let capacity = 10_000_000_000;
    let p = pod(json!({
        "initContainers": [{"name": "side", "image": "img", "restartPolicy": "Always", "resources": rl("", "100M", "", "")}],
        "containers": [c("app", rl("", "2G", "", "")), c("small", rl("", "1G", "", ""))],
    }));
    // Alone it would score 990; the smallest app container (1G) scores 900.
    assert_eq!(
        oom_score_adj(&p, container_named(&p, "side"), capacity),
        900
    );
    assert_eq!(oom_score_adj(&p, container_named(&p, "app"), capacity), 800);
}

#[test]
fn the_oom_score_reaches_the_container_config() {
    let p = pod(json!({"containers": [c("app", rl("", "1G", "", ""))]}));
    let r = app_config(&p, &Default::default())
        .unwrap()
        .linux
        .unwrap()
        .resources
        .unwrap();
    assert_eq!(r.oom_score_adj, 900);
}

#[test]
fn sandbox_resources_count_the_pod_as_the_scheduler_does() {
    // (spec, cpu_shares, cpu_quota, memory_limit)
    let cases = [
        (
            "app containers add up",
            json!({"containers": [c("a", rl("250m", "", "500m", "64Mi")), c("b", rl("250m", "", "1", "64Mi"))]}),
            512,
            150_000,
            128 << 20,
        ),
        (
            "a larger init container sets the floor",
            json!({"initContainers": [c("i", rl("2", "", "2", "1Gi"))], "containers": [c("a", rl("500m", "", "1", "64Mi"))]}),
            2048,
            200_000,
            1 << 30,
        ),
        (
            "sidecars add up and count during later init containers",
            json!({
                "initContainers": [
                    {"name": "s", "image": "img", "restartPolicy": "Always", "resources": rl("500m", "", "500m", "")},
                    c("i", rl("1", "", "1", "")),
                ],
                "containers": [c("a", rl("250m", "", "250m", ""))],
            }),
            1536,
            150_000,
            0,
        ),
        (
            "pod-level resources win",
            json!({"resources": rl("3", "", "4", "2Gi"), "containers": [c("a", rl("1", "", "1", "1Gi"))]}),
            3072,
            400_000,
            2 << 30,
        ),
    ];
    for (name, spec, shares, quota, memory) in cases {
        let config = sandbox_config(&pod(spec), 0, &node());
        let r = config.linux.unwrap().resources.unwrap();
        assert_eq!(
            (r.cpu_shares, r.cpu_quota, r.memory_limit_in_bytes),
            (shares, quota, memory),
            "{name}"
        );
    }
}

#[test]
fn sandbox_overhead_is_treated_as_guaranteed() {
    let config = sandbox_config(
        &pod(json!({"overhead": {"cpu": "250m", "memory": "120Mi"}})),
        0,
        &node(),
    );
    let overhead = config.linux.as_ref().unwrap().overhead.clone().unwrap();
    assert_eq!(
        (
            overhead.cpu_shares,
            overhead.cpu_quota,
            overhead.memory_limit_in_bytes
        ),
        (256, 25_000, 120 << 20)
    );
    let none = sandbox_config(&pod(json!({})), 0, &node())
        .linux
        .unwrap()
        .overhead
        .unwrap();
    assert_eq!(none, Default::default());
}
