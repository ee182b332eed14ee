use super::*;
use serde_json::{json, Value};

const SEC: i64 = 1_000_000_000;

fn pod(spec: Value) -> Pod {
    pod_with(spec, json!(null))
}

fn pod_with(spec: Value, status: Value) -> Pod {
    let mut full = json!({"containers": [{"name": "app", "image": "nginx:1"}]});
    if let (Value::Object(b), Value::Object(o)) = (&mut full, spec) {
        b.extend(o);
    }
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "shop", "uid": "uid-1", "generation": 4},
        "spec": full,
        "status": status,
    }))
    .unwrap()
}

fn sandbox() -> Option<SandboxView> {
    Some(SandboxView {
        id: "sb1".into(),
        ready: true,
        ips: vec!["10.244.1.7".into()],
    })
}

fn running(name: &str, attempt: u32) -> ContainerView {
    ContainerView {
        name: name.into(),
        id: format!("{name}-{attempt}"),
        attempt,
        state: ContainerState::Running,
        created_at: (10 + i64::from(attempt)) * SEC,
        started_at: (11 + i64::from(attempt)) * SEC,
        image: "nginx:1".into(),
        image_ref: "docker.io/library/nginx@sha256:1".into(),
        ..Default::default()
    }
}

fn exited(name: &str, attempt: u32, code: i32) -> ContainerView {
    ContainerView {
        state: ContainerState::Exited,
        exit_code: code,
        finished_at: (12 + i64::from(attempt)) * SEC,
        reason: if code == 0 { "Completed" } else { "Error" }.into(),
        ..running(name, attempt)
    }
}

fn facts() -> WorkerFacts {
    WorkerFacts {
        runtime_name: "containerd".into(),
        host_ips: vec!["10.0.0.5".into()],
        ..Default::default()
    }
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(1_000).unwrap())
}

fn status(pod: &Pod, containers: Vec<ContainerView>, facts: &WorkerFacts) -> PodStatus {
    let view = RuntimeView {
        sandbox: sandbox(),
        containers,
    };
    pod_status(pod, &view, facts, &now())
}

fn phase_of(pod: &Pod, containers: Vec<ContainerView>, facts: &WorkerFacts) -> String {
    status(pod, containers, facts).phase.unwrap()
}

fn state_of<'a>(s: &'a PodStatus, name: &str) -> &'a ContainerStatus {
    s.container_statuses
        .iter()
        .chain(&s.init_container_statuses)
        .flatten()
        .find(|c| c.name == name)
        .unwrap()
}

fn waiting_reason(c: &ContainerStatus) -> Option<&str> {
    c.state.as_ref()?.waiting.as_ref()?.reason.as_deref()
}

fn cond<'a>(s: &'a PodStatus, t: &str) -> &'a PodCondition {
    s.conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == t)
        .unwrap()
}

fn two_apps(policy: &str) -> Pod {
    pod(
        json!({"restartPolicy": policy, "containers": [{"name": "a", "image": "i"}, {"name": "b", "image": "i"}]}),
    )
}

#[test]
fn phase_follows_upstream_get_phase() {
    let init = json!({"initContainers": [{"name": "init", "image": "i"}]});
    let mut terminal = facts();
    terminal.terminal = true;
    let live = facts();
    let cases: Vec<(&str, Pod, Vec<ContainerView>, &WorkerFacts, &str)> = vec![
        (
            "nothing created yet",
            pod(json!({})),
            vec![],
            &live,
            "Pending",
        ),
        (
            "an init container running",
            pod(init.clone()),
            vec![running("init", 0)],
            &live,
            "Pending",
        ),
        (
            "init done, app created",
            pod(init.clone()),
            vec![exited("init", 0, 0), running("app", 0)],
            &live,
            "Running",
        ),
        (
            "one app running",
            pod(json!({})),
            vec![running("app", 0)],
            &live,
            "Running",
        ),
        (
            "one of two started",
            two_apps("Always"),
            vec![running("a", 0)],
            &live,
            "Pending",
        ),
        (
            "Always: exited containers restart",
            two_apps("Always"),
            vec![exited("a", 0, 0), exited("b", 0, 1)],
            &live,
            "Running",
        ),
        (
            "OnFailure: all succeeded",
            two_apps("OnFailure"),
            vec![exited("a", 0, 0), exited("b", 0, 0)],
            &live,
            "Succeeded",
        ),
        (
            "OnFailure: a failure restarts",
            two_apps("OnFailure"),
            vec![exited("a", 0, 0), exited("b", 0, 1)],
            &live,
            "Running",
        ),
        (
            "Never: all succeeded",
            two_apps("Never"),
            vec![exited("a", 0, 0), exited("b", 0, 0)],
            &live,
            "Succeeded",
        ),
        (
            "Never: one failed",
            two_apps("Never"),
            vec![exited("a", 0, 0), exited("b", 0, 2)],
            &live,
            "Failed",
        ),
        (
            "Never: one still running",
            two_apps("Never"),
            vec![running("a", 0), exited("b", 0, 2)],
            &live,
            "Running",
        ),
        (
            "Never: a failed init container",
            pod(
                json!({"restartPolicy": "Never", "initContainers": [{"name": "init", "image": "i"}]}),
            ),
            vec![exited("init", 0, 1)],
            &live,
            "Failed",
        ),
        (
            "OnFailure: a failed init container retries",
            pod(
                json!({"restartPolicy": "OnFailure", "initContainers": [{"name": "init", "image": "i"}]}),
            ),
            vec![exited("init", 0, 1)],
            &live,
            "Pending",
        ),
        (
            "terminal pod under Always, all 0",
            two_apps("Always"),
            vec![exited("a", 0, 0), exited("b", 0, 0)],
            &terminal,
            "Succeeded",
        ),
        (
            "terminal pod under Always, one failed",
            two_apps("Always"),
            vec![exited("a", 0, 0), exited("b", 0, 137)],
            &terminal,
            "Failed",
        ),
        (
            "container restartPolicy Never overrides the pod's Always",
            pod(
                json!({"restartPolicy": "Always", "containers": [{"name": "app", "image": "i", "restartPolicy": "Never"}]}),
            ),
            vec![exited("app", 0, 3)],
            &live,
            "Failed",
        ),
        (
            "a restart rule on the exit code",
            pod(
                json!({"restartPolicy": "Never", "containers": [{"name": "app", "image": "i", "restartPolicy": "Never",
                "restartPolicyRules": [{"action": "Restart", "exitCodes": {"operator": "In", "values": [42]}}]}]}),
            ),
            vec![exited("app", 0, 42)],
            &live,
            "Running",
        ),
    ];
    for (name, pod, containers, facts, want) in cases {
        assert_eq!(phase_of(&pod, containers, facts), want, "{name}");
    }
}

#[test]
fn a_static_pod_does_not_become_terminal_from_the_workers_decision() {
    let mut p = two_apps("Always");
    p.metadata.annotations = Some(
        [(
            "kubernetes.io/config.source".to_string(),
            "file".to_string(),
        )]
        .into(),
    );
    let mut terminal = facts();
    terminal.terminal = true;
    assert_eq!(
        phase_of(&p, vec![exited("a", 0, 0), exited("b", 0, 0)], &terminal),
        "Running"
    );
}

#[test]
fn a_terminal_phase_is_never_left() {
    for old in ["Succeeded", "Failed"] {
        let p = pod_with(
            json!({}),
            json!({"phase": old, "reason": "Evicted", "message": "low memory"}),
        );
        let s = status(&p, vec![running("app", 0)], &facts());
        assert_eq!(
            (s.phase.as_deref(), s.reason.as_deref()),
            (Some(old), Some("Evicted"))
        );
    }
    // A reason belongs to its phase: it goes when the phase changes.
    let p = pod_with(json!({}), json!({"phase": "Pending", "reason": "Waiting"}));
    assert_eq!(status(&p, vec![running("app", 0)], &facts()).reason, None);
}

#[test]
fn sidecars_hold_the_pod_pending_only_until_they_start() {
    let spec = json!({"restartPolicy": "Never", "initContainers": [{"name": "proxy", "image": "p", "restartPolicy": "Always",
        "startupProbe": {"exec": {"command": ["true"]}}}]});
    let p = pod(spec);
    let mut started = facts();
    started.started.insert("proxy".into(), true);
    assert_eq!(phase_of(&p, vec![running("proxy", 0)], &facts()), "Pending");
    assert_eq!(
        phase_of(&p, vec![running("proxy", 0), running("app", 0)], &started),
        "Running"
    );
    // Once an app container started, a sidecar restarting (not yet started) does not
    // put the pod back to Pending.
    assert_eq!(
        phase_of(&p, vec![running("proxy", 1), running("app", 0)], &facts()),
        "Running"
    );
    // A running sidecar keeps the pod Running after the app exits, until the worker
    // stops it; stopped, the sidecar does not count.
    assert_eq!(
        phase_of(&p, vec![running("proxy", 0), exited("app", 0, 0)], &started),
        "Running"
    );
    assert_eq!(
        phase_of(
            &p,
            vec![exited("proxy", 0, 137), exited("app", 0, 0)],
            &started
        ),
        "Succeeded"
    );
}

#[test]
fn containers_not_created_yet_wait_with_the_workers_reason_or_the_default() {
    let p = pod(json!({"initContainers": [{"name": "init", "image": "i"}]}));
    let mut f = facts();
    f.waiting.insert(
        "init".into(),
        ("ErrImagePull".into(), "manifest unknown".into()),
    );
    let s = status(&p, vec![], &f);
    let init = state_of(&s, "init");
    assert_eq!(waiting_reason(init), Some("ErrImagePull"));
    assert_eq!(
        init.state
            .as_ref()
            .unwrap()
            .waiting
            .as_ref()
            .unwrap()
            .message
            .as_deref(),
        Some("manifest unknown")
    );
    assert_eq!(waiting_reason(state_of(&s, "app")), Some("PodInitializing"));
    let s = status(&pod(json!({})), vec![], &facts());
    assert_eq!(
        waiting_reason(state_of(&s, "app")),
        Some("ContainerCreating")
    );
    assert_eq!(
        (
            state_of(&s, "app").image.as_str(),
            state_of(&s, "app").ready
        ),
        ("nginx:1", false)
    );
}

#[test]
fn a_running_container_shows_its_id_image_start_and_attempt() {
    let s = status(
        &pod(json!({})),
        vec![exited("app", 0, 1), running("app", 1)],
        &facts(),
    );
    let app = state_of(&s, "app");
    assert_eq!(app.container_id.as_deref(), Some("containerd://app-1"));
    assert_eq!(app.image_id, "docker.io/library/nginx@sha256:1");
    assert_eq!(app.restart_count, 1);
    let started = app
        .state
        .as_ref()
        .unwrap()
        .running
        .as_ref()
        .unwrap()
        .started_at
        .clone();
    assert_eq!(started.map(|t| t.0.as_second()), Some(12));
    assert_eq!((app.started, app.ready), (Some(true), true));
    // The previous attempt is the last termination.
    let last = app
        .last_state
        .as_ref()
        .unwrap()
        .terminated
        .as_ref()
        .unwrap();
    assert_eq!(
        (last.exit_code, last.container_id.as_deref()),
        (1, Some("containerd://app-0"))
    );
}

#[test]
fn readiness_needs_the_probe_when_there_is_one() {
    let probed = pod(
        json!({"containers": [{"name": "app", "image": "i", "readinessProbe": {"exec": {"command": ["true"]}}}]}),
    );
    let mut f = facts();
    assert!(!state_of(&status(&probed, vec![running("app", 0)], &f), "app").ready);
    f.ready.insert("app".into(), true);
    assert!(state_of(&status(&probed, vec![running("app", 0)], &f), "app").ready);
    // Readiness of an exited container does not count.
    assert!(!state_of(&status(&probed, vec![exited("app", 0, 0)], &f), "app").ready);
    // A startup probe not passed yet: not started, not ready.
    let slow = pod(
        json!({"containers": [{"name": "app", "image": "i", "startupProbe": {"exec": {"command": ["true"]}}}]}),
    );
    let app = status(&slow, vec![running("app", 0)], &facts());
    assert_eq!(
        (state_of(&app, "app").started, state_of(&app, "app").ready),
        (Some(false), false)
    );
}

#[test]
fn a_crashing_container_waits_with_its_last_termination() {
    let mut f = facts();
    f.waiting.insert(
        "app".into(),
        (
            "CrashLoopBackOff".into(),
            "back-off 10s restarting failed container".into(),
        ),
    );
    let s = status(
        &pod(json!({})),
        vec![exited("app", 0, 1), exited("app", 1, 2)],
        &f,
    );
    let app = state_of(&s, "app");
    assert_eq!(waiting_reason(app), Some("CrashLoopBackOff"));
    assert_eq!(
        app.last_state
            .as_ref()
            .unwrap()
            .terminated
            .as_ref()
            .unwrap()
            .exit_code,
        2
    );
    assert_eq!(app.restart_count, 1);
    // Under Never it will not run again: it stays terminated whatever the worker says.
    let s = status(
        &pod(json!({"restartPolicy": "Never"})),
        vec![exited("app", 0, 1)],
        &f,
    );
    assert_eq!(
        state_of(&s, "app")
            .state
            .as_ref()
            .unwrap()
            .terminated
            .as_ref()
            .unwrap()
            .exit_code,
        1
    );
}

#[test]
fn a_created_container_waits_without_reason() {
    let created = ContainerView {
        state: ContainerState::Created,
        started_at: 0,
        ..running("app", 0)
    };
    let s = status(&pod(json!({})), vec![created], &facts());
    let waiting = state_of(&s, "app")
        .state
        .as_ref()
        .unwrap()
        .waiting
        .clone()
        .unwrap();
    assert_eq!(waiting.reason, None);
}

#[test]
fn a_running_container_the_runtime_lost_is_shown_terminated_not_waiting() {
    let old = json!({"phase": "Running", "containerStatuses": [{"name": "app", "image": "nginx:1", "imageID": "", "ready": true,
        "restartCount": 3, "state": {"running": {"startedAt": "2024-01-01T00:00:00Z"}}}]});
    let p = pod_with(json!({}), old.clone());
    let s = status(&p, vec![], &facts());
    let app = state_of(&s, "app");
    let last = app
        .last_state
        .as_ref()
        .unwrap()
        .terminated
        .as_ref()
        .unwrap();
    assert_eq!(
        (last.reason.as_deref(), last.exit_code, app.restart_count),
        (Some("ContainerStatusUnknown"), 137, 4)
    );
    assert_eq!(s.phase.as_deref(), Some("Running"));
    // Reported in an unknown state: terminated, restart counted.
    let unknown = ContainerView {
        state: ContainerState::Unknown,
        ..running("app", 3)
    };
    let s = status(&p, vec![unknown], &facts());
    let term = state_of(&s, "app")
        .state
        .as_ref()
        .unwrap()
        .terminated
        .clone()
        .unwrap();
    assert_eq!(
        (term.reason.as_deref(), state_of(&s, "app").restart_count),
        (Some("ContainerStatusUnknown"), 4)
    );
}

#[test]
fn an_old_terminated_status_is_kept_when_the_container_is_gone() {
    let old = json!({"phase": "Running", "containerStatuses": [{"name": "app", "image": "nginx:1", "imageID": "x", "ready": false,
        "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]});
    let s = status(
        &pod_with(json!({"restartPolicy": "Never"}), old),
        vec![],
        &facts(),
    );
    assert_eq!(state_of(&s, "app").image_id, "x");
    assert_eq!(s.phase.as_deref(), Some("Succeeded"));
}

#[test]
fn an_init_container_removed_after_app_containers_started_counts_as_completed() {
    let p = pod(json!({"initContainers": [{"name": "init", "image": "i"}]}));
    let s = status(&p, vec![running("app", 0)], &facts());
    let init = state_of(&s, "init");
    let term = init.state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!(
        (term.exit_code, term.reason.as_deref(), init.ready),
        (0, Some("Completed"), true)
    );
    assert_eq!(cond(&s, "Initialized").status, "True");
}

#[test]
fn a_deleted_pod_shows_no_restart_reasons() {
    let mut p = pod(json!({}));
    p.metadata.deletion_timestamp = Some(now());
    let mut f = facts();
    f.waiting
        .insert("app".into(), ("CrashLoopBackOff".into(), String::new()));
    let s = status(&p, vec![exited("app", 0, 1)], &f);
    assert!(state_of(&s, "app")
        .state
        .as_ref()
        .unwrap()
        .terminated
        .is_some());
}

#[test]
fn conditions_follow_the_sandbox_init_containers_and_readiness() {
    let p = pod(json!({"initContainers": [{"name": "init1", "image": "i"}],
        "containers": [{"name": "a", "image": "i"}, {"name": "b", "image": "i", "readinessProbe": {"exec": {"command": ["x"]}}}]}));
    let s = status(&p, vec![running("init1", 0)], &facts());
    let i = cond(&s, "Initialized");
    assert_eq!(
        (i.status.as_str(), i.reason.as_deref()),
        ("False", Some("ContainersNotInitialized"))
    );
    assert_eq!(
        i.message.as_deref(),
        Some("containers with incomplete status: [init1]")
    );
    let cr = cond(&s, "ContainersReady");
    assert_eq!(
        (cr.reason.as_deref(), cr.message.as_deref()),
        (
            Some("ContainersNotReady"),
            Some("containers with unready status: [a b]")
        )
    );
    let r = cond(&s, "Ready");
    assert_eq!(
        (r.status.as_str(), r.reason.as_deref(), r.message.clone()),
        ("False", Some("ContainersNotReady"), cr.message.clone())
    );
    assert_eq!(cond(&s, "PodReadyToStartContainers").status, "True");
    assert_eq!(cond(&s, "PodScheduled").status, "True");

    let mut f = facts();
    f.ready.insert("b".into(), true);
    let s = status(
        &p,
        vec![exited("init1", 0, 0), running("a", 0), running("b", 0)],
        &f,
    );
    for t in ["Initialized", "ContainersReady", "Ready"] {
        assert_eq!(cond(&s, t).status, "True", "{t}");
    }
    assert_eq!(cond(&s, "Ready").observed_generation, Some(4));
}

#[test]
fn sandbox_readiness_needs_an_ip_off_the_host_network() {
    let cases = [
        (None, false, "False"),
        (Some((false, vec!["10.244.1.7"])), false, "False"),
        (Some((true, vec![])), false, "False"),
        (Some((true, vec![])), true, "True"),
        (Some((true, vec!["10.244.1.7"])), false, "True"),
    ];
    for (sandbox, host_network, want) in cases {
        let view = RuntimeView {
            sandbox: sandbox.clone().map(|(ready, ips)| SandboxView {
                id: "sb".into(),
                ready,
                ips: ips.into_iter().map(String::from).collect(),
            }),
            containers: vec![],
        };
        let s = pod_status(
            &pod(json!({"hostNetwork": host_network})),
            &view,
            &facts(),
            &now(),
        );
        assert_eq!(
            cond(&s, "PodReadyToStartContainers").status,
            want,
            "{sandbox:?} {host_network}"
        );
    }
}

#[test]
fn a_sidecar_must_start_to_initialize_and_be_ready_for_containers_ready() {
    let p = pod(
        json!({"initContainers": [{"name": "proxy", "image": "p", "restartPolicy": "Always",
        "readinessProbe": {"exec": {"command": ["x"]}}}]}),
    );
    let s = status(&p, vec![running("proxy", 0), running("app", 0)], &facts());
    assert_eq!(cond(&s, "Initialized").status, "True");
    assert_eq!(
        cond(&s, "ContainersReady").message.as_deref(),
        Some("containers with unready status: [proxy]")
    );
}

#[test]
fn readiness_gates_hold_ready_until_their_conditions_are_true() {
    let spec = json!({"readinessGates": [{"conditionType": "example.com/lb"}]});
    let s = status(&pod(spec.clone()), vec![running("app", 0)], &facts());
    let r = cond(&s, "Ready");
    assert_eq!(
        (r.status.as_str(), r.reason.as_deref()),
        ("False", Some("ReadinessGatesNotReady"))
    );
    assert_eq!(
        r.message.as_deref(),
        Some(r#"corresponding condition of pod readiness gate "example.com/lb" does not exist."#)
    );

    let gate = |status: &str| json!({"conditions": [{"type": "example.com/lb", "status": status}]});
    let s = status(
        &pod_with(spec.clone(), gate("False")),
        vec![running("app", 0)],
        &facts(),
    );
    assert_eq!(
        cond(&s, "Ready").message.as_deref(),
        Some(r#"the status of pod readiness gate "example.com/lb" is not "True", but False"#)
    );
    let s = status(
        &pod_with(spec, gate("True")),
        vec![running("app", 0)],
        &facts(),
    );
    assert_eq!(cond(&s, "Ready").status, "True");
    // The gate's condition, owned by someone else, is kept.
    assert_eq!(cond(&s, "example.com/lb").status, "True");
}

#[test]
fn terminal_pods_are_not_ready_with_the_phase_as_reason() {
    let cases = [("Never", 0, "PodCompleted"), ("Never", 1, "PodFailed")];
    for (policy, code, reason) in cases {
        let s = status(
            &pod(json!({"restartPolicy": policy})),
            vec![exited("app", 0, code)],
            &facts(),
        );
        for t in ["ContainersReady", "Ready"] {
            assert_eq!(
                (cond(&s, t).status.as_str(), cond(&s, t).reason.as_deref()),
                ("False", Some(reason)),
                "{t} {code}"
            );
        }
    }
    let s = status(
        &pod(json!({"restartPolicy": "Never"})),
        vec![exited("app", 0, 0)],
        &facts(),
    );
    assert_eq!(
        cond(&s, "Initialized").reason.as_deref(),
        Some("PodCompleted")
    );
}

#[test]
fn transition_times_change_only_with_the_status() {
    let earlier = "2024-01-01T00:00:00Z";
    let old = json!({"phase": "Running", "conditions": [
        {"type": "Ready", "status": "True", "lastTransitionTime": earlier},
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": earlier},
        {"type": "ContainersReady", "status": "False", "lastTransitionTime": earlier},
        {"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI"},
    ]});
    let s = status(&pod_with(json!({}), old), vec![running("app", 0)], &facts());
    let time = |t: &str| {
        cond(&s, t)
            .last_transition_time
            .clone()
            .map(|t| t.0.to_string())
    };
    assert_eq!(time("Ready"), Some(earlier.to_string()));
    assert_eq!(time("PodScheduled"), Some(earlier.to_string()));
    assert_eq!(time("ContainersReady"), Some(now().0.to_string()));
    assert_eq!(
        cond(&s, "DisruptionTarget").reason.as_deref(),
        Some("EvictionByEvictionAPI")
    );
    // Each condition appears once.
    assert_eq!(s.conditions.as_ref().unwrap().len(), 6);
}

#[test]
fn addresses_times_and_qos_are_reported() {
    let mut f = facts();
    f.host_ips = vec!["10.0.0.5".into(), "fd00::5".into()];
    f.start_time = Some(now());
    let view = RuntimeView {
        sandbox: Some(SandboxView {
            id: "sb".into(),
            ready: true,
            ips: vec!["fd00:244::7".into(), "10.244.1.7".into()],
        }),
        containers: vec![running("app", 0)],
    };
    let s = pod_status(&pod(json!({})), &view, &f, &now());
    let ips: Vec<String> = s.pod_ips.iter().flatten().map(|ip| ip.ip.clone()).collect();
    assert_eq!(
        (s.pod_ip.as_deref(), ips),
        (
            Some("10.244.1.7"),
            vec!["10.244.1.7".to_string(), "fd00:244::7".to_string()]
        )
    );
    let host_ips: Vec<String> = s
        .host_ips
        .iter()
        .flatten()
        .map(|ip| ip.ip.clone())
        .collect();
    assert_eq!(
        (s.host_ip.as_deref(), host_ips.len()),
        (Some("10.0.0.5"), 2)
    );
    assert_eq!(s.start_time, Some(now()));
    assert_eq!(s.qos_class.as_deref(), Some("BestEffort"));
    assert_eq!(s.observed_generation, Some(4));

    // A sandbox that is not ready keeps the IPs the API shows.
    let old = json!({"podIP": "10.244.9.9", "podIPs": [{"ip": "10.244.9.9"}], "startTime": "2024-01-01T00:00:00Z"});
    let view = RuntimeView {
        sandbox: Some(SandboxView {
            ready: false,
            ..view.sandbox.clone().unwrap()
        }),
        containers: vec![],
    };
    let s = pod_status(&pod_with(json!({}), old), &view, &f, &now());
    assert_eq!(s.pod_ip.as_deref(), Some("10.244.9.9"));
    assert_eq!(s.start_time.map(|t| t.0.as_second()), Some(1_704_067_200));

    // hostNetwork pods have the node's IPs.
    let s = pod_status(
        &pod(json!({"hostNetwork": true})),
        &RuntimeView::default(),
        &f,
        &now(),
    );
    assert_eq!(s.pod_ip.as_deref(), Some("10.0.0.5"));
}

#[test]
fn container_resources_show_what_runs_and_allocated_resources_what_was_admitted() {
    let p = pod(json!({"containers": [
        {"name": "app", "image": "nginx:1", "resources": {
            "requests": {"cpu": "200m", "memory": "64Mi"}, "limits": {"cpu": "200m", "memory": "64Mi"}}},
        {"name": "plain", "image": "nginx:1"}
    ]}));
    let mut f = facts();
    // The app container still runs with its size from before a resize.
    let before: k8s_openapi::api::core::v1::ResourceRequirements = serde_json::from_value(json!({
        "requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "100m", "memory": "64Mi"}}))
    .unwrap();
    f.resources.insert("app".into(), before.clone());
    let s = status(&p, vec![running("app", 0), exited("plain", 0, 0)], &f);
    let app = state_of(&s, "app");
    assert_eq!(app.resources.as_ref(), Some(&before));
    let admitted = app.allocated_resources.as_ref().unwrap();
    assert_eq!(admitted["cpu"].0, "200m");
    assert_eq!(admitted["memory"].0, "64Mi");
    let plain = state_of(&s, "plain");
    assert_eq!(
        plain.resources,
        Some(Default::default()),
        "upstream shows resources: {{}}"
    );
    assert_eq!(plain.allocated_resources, None);
}

#[test]
fn resize_conditions_come_from_the_worker_and_old_ones_go() {
    let resize = |t: &str, reason: Option<&str>| PodCondition {
        type_: t.into(),
        status: "True".into(),
        reason: reason.map(Into::into),
        ..Default::default()
    };
    let p = pod_with(
        json!({}),
        json!({"conditions": [
            {"type": "PodResizeInProgress", "status": "True"},
            {"type": "DisruptionTarget", "status": "True"}
        ]}),
    );
    let mut f = facts();
    f.resize_conditions = vec![resize("PodResizePending", Some("Deferred"))];
    let s = status(&p, vec![running("app", 0)], &f);
    let types: Vec<&str> = s
        .conditions
        .iter()
        .flatten()
        .map(|c| c.type_.as_str())
        .collect();
    assert_eq!(
        types,
        [
            "DisruptionTarget",
            "PodResizePending",
            "PodReadyToStartContainers",
            "Initialized",
            "Ready",
            "ContainersReady",
            "PodScheduled"
        ]
    );
    assert_eq!(
        cond(&s, "PodResizePending").reason.as_deref(),
        Some("Deferred")
    );
}
