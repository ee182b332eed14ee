use gantry_cri::api;
use serde_json::{json, Value};

use super::fixtures::*;
use crate::spec::{container_config, ConfigError, ContainerInputs, ImageUser};
use api::security_profile::ProfileType;
use api::NamespaceMode;

fn sc_of(
    pod_sc: Value,
    container_sc: Value,
    user: Option<ImageUser>,
) -> Result<api::LinuxContainerSecurityContext, ConfigError> {
    let p = pod(json!({
        "securityContext": pod_sc,
        "containers": [{"name": "app", "image": "nginx:1", "securityContext": container_sc}],
    }));
    let inputs = ContainerInputs {
        image_user: user,
        ..inputs()
    };
    let config = container_config(
        &p,
        container_named(&p, "app"),
        &node(),
        &Default::default(),
        &inputs,
    )?;
    Ok(config.linux.unwrap().security_context.unwrap())
}

fn uid(u: i64) -> Option<ImageUser> {
    Some(ImageUser {
        uid: Some(u),
        username: String::new(),
    })
}

#[test]
fn namespaces_follow_host_flags_and_process_sharing() {
    // (spec, network, pid, ipc)
    let cases = [
        (
            json!({}),
            NamespaceMode::Pod,
            NamespaceMode::Container,
            NamespaceMode::Pod,
        ),
        (
            json!({"hostNetwork": true}),
            NamespaceMode::Node,
            NamespaceMode::Container,
            NamespaceMode::Pod,
        ),
        (
            json!({"hostPID": true}),
            NamespaceMode::Pod,
            NamespaceMode::Node,
            NamespaceMode::Pod,
        ),
        (
            json!({"hostIPC": true}),
            NamespaceMode::Pod,
            NamespaceMode::Container,
            NamespaceMode::Node,
        ),
        (
            json!({"shareProcessNamespace": true}),
            NamespaceMode::Pod,
            NamespaceMode::Pod,
            NamespaceMode::Pod,
        ),
        (
            json!({"hostPID": true, "shareProcessNamespace": true}),
            NamespaceMode::Pod,
            NamespaceMode::Node,
            NamespaceMode::Pod,
        ),
    ];
    for (spec, network, pid, ipc) in cases {
        let p = pod(spec.clone());
        let want = (network as i32, pid as i32, ipc as i32);
        let sandbox_ns = crate::spec::sandbox_config(&p, 0, &node())
            .linux
            .unwrap()
            .security_context
            .unwrap()
            .namespace_options
            .unwrap();
        let container_ns = app_config(&p, &Default::default())
            .unwrap()
            .linux
            .unwrap()
            .security_context
            .unwrap()
            .namespace_options
            .unwrap();
        assert_eq!(
            (sandbox_ns.network, sandbox_ns.pid, sandbox_ns.ipc),
            want,
            "sandbox {spec}"
        );
        assert_eq!(
            (container_ns.network, container_ns.pid, container_ns.ipc),
            want,
            "container {spec}"
        );
    }
}

#[test]
fn the_container_security_context_wins_over_the_pods() {
    let sc = sc_of(
        json!({"runAsUser": 1000, "runAsGroup": 2000, "seLinuxOptions": {"level": "s0:c1"}}),
        json!({"runAsUser": 3000, "readOnlyRootFilesystem": true, "privileged": true,
               "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]}}),
        uid(0),
    )
    .unwrap();
    assert_eq!(sc.run_as_user.map(|u| u.value), Some(3000));
    assert_eq!(sc.run_as_group.map(|g| g.value), Some(2000));
    assert_eq!(
        sc.selinux_options.map(|o| o.level),
        Some("s0:c1".to_string())
    );
    assert!(sc.readonly_rootfs && sc.privileged);
    let caps = sc.capabilities.unwrap();
    assert_eq!(
        (caps.add_capabilities, caps.drop_capabilities),
        (vec!["NET_ADMIN".to_string()], vec!["ALL".to_string()])
    );
}

#[test]
fn supplemental_groups_list_fs_group_first_then_the_pods_groups() {
    let sc = sc_of(json!({"fsGroup": 500, "supplementalGroups": [10, 20], "supplementalGroupsPolicy": "Strict"}), json!({}), uid(0)).unwrap();
    assert_eq!(sc.supplemental_groups, vec![500, 10, 20]);
    assert_eq!(
        sc.supplemental_groups_policy,
        api::SupplementalGroupsPolicy::Strict as i32
    );
}

#[test]
fn no_new_privs_only_when_privilege_escalation_is_explicitly_denied() {
    let cases = [
        (json!({}), false),
        (json!({"allowPrivilegeEscalation": true}), false),
        (json!({"allowPrivilegeEscalation": false}), true),
    ];
    for (container_sc, want) in cases {
        assert_eq!(
            sc_of(json!({}), container_sc.clone(), uid(0))
                .unwrap()
                .no_new_privs,
            want,
            "{container_sc}"
        );
    }
}

#[test]
fn seccomp_comes_from_the_container_then_the_pod_then_the_node_default() {
    let profile = |t: ProfileType, r: &str| (t as i32, r.to_string());
    let cases = [
        (
            "unset: unconfined",
            json!({}),
            json!({}),
            false,
            profile(ProfileType::Unconfined, ""),
        ),
        (
            "unset with seccompDefault",
            json!({}),
            json!({}),
            true,
            profile(ProfileType::RuntimeDefault, ""),
        ),
        (
            "pod RuntimeDefault",
            json!({"seccompProfile": {"type": "RuntimeDefault"}}),
            json!({}),
            false,
            profile(ProfileType::RuntimeDefault, ""),
        ),
        (
            "container overrides pod",
            json!({"seccompProfile": {"type": "RuntimeDefault"}}),
            json!({"seccompProfile": {"type": "Unconfined"}}),
            true,
            profile(ProfileType::Unconfined, ""),
        ),
        (
            "localhost under the profile root",
            json!({}),
            json!({"seccompProfile": {"type": "Localhost", "localhostProfile": "profiles/audit.json"}}),
            false,
            profile(
                ProfileType::Localhost,
                "/var/lib/kubelet/seccomp/profiles/audit.json",
            ),
        ),
    ];
    for (name, pod_sc, container_sc, default, want) in cases {
        let p = pod(
            json!({"securityContext": pod_sc, "containers": [{"name": "app", "image": "nginx:1", "securityContext": container_sc}]}),
        );
        let mut node = node();
        node.seccomp_default = default;
        let config = container_config(
            &p,
            container_named(&p, "app"),
            &node,
            &Default::default(),
            &inputs(),
        )
        .unwrap();
        let seccomp = config
            .linux
            .unwrap()
            .security_context
            .unwrap()
            .seccomp
            .unwrap();
        assert_eq!(
            (seccomp.profile_type, seccomp.localhost_ref),
            want,
            "{name}"
        );
    }
    let err = sc_of(
        json!({}),
        json!({"seccompProfile": {"type": "Localhost"}}),
        uid(0),
    )
    .unwrap_err();
    assert_eq!(
        err,
        ConfigError("localhostProfile must be set if seccompProfile type is Localhost.".into())
    );
}

#[test]
fn the_image_user_fills_in_when_the_spec_names_none() {
    // (image user, run_as_user, run_as_username)
    let cases = [
        (uid(1001), Some(1001), ""),
        (
            Some(ImageUser {
                uid: None,
                username: "nobody".into(),
            }),
            None,
            "nobody",
        ),
        // An image that names no user runs as root, said explicitly as upstream does.
        (Some(ImageUser::default()), Some(0), ""),
        // Not looked up: left to the runtime.
        (None, None, ""),
    ];
    for (user, want_uid, want_name) in cases {
        let sc = sc_of(json!({}), json!({}), user.clone()).unwrap();
        assert_eq!(
            (sc.run_as_user.map(|u| u.value), sc.run_as_username.as_str()),
            (want_uid, want_name),
            "{user:?}"
        );
    }
    // The spec's user wins over the image's.
    let sc = sc_of(
        json!({"runAsUser": 42}),
        json!({}),
        Some(ImageUser {
            uid: None,
            username: "nobody".into(),
        }),
    )
    .unwrap();
    assert_eq!(
        (sc.run_as_user.map(|u| u.value), sc.run_as_username),
        (Some(42), String::new())
    );
}

#[test]
fn run_as_non_root_refuses_root_and_unverifiable_users() {
    let who = r#"(pod: "web_shop(uid-1)", container: app)"#;
    let cases = [
        (json!({"runAsNonRoot": true, "runAsUser": 0}), uid(1000), Some(format!("container's runAsUser breaks non-root policy {who}"))),
        (json!({"runAsNonRoot": true, "runAsUser": 1000}), uid(0), None),
        (json!({"runAsNonRoot": true}), uid(0), Some(format!("container has runAsNonRoot and image will run as root {who}"))),
        (json!({"runAsNonRoot": true}), Some(ImageUser::default()), Some(format!("container has runAsNonRoot and image will run as root {who}"))),
        (
            json!({"runAsNonRoot": true}),
            Some(ImageUser { uid: None, username: "app".into() }),
            Some(format!("container has runAsNonRoot and image has non-numeric user (app), cannot verify user is non-root {who}")),
        ),
        (json!({"runAsNonRoot": true}), uid(1000), None),
        (
            json!({"runAsNonRoot": true}),
            None,
            Some(format!("container has runAsNonRoot and the image's user is unknown, cannot verify user is non-root {who}")),
        ),
        (json!({"runAsNonRoot": false}), uid(0), None),
    ];
    for (pod_sc, user, want) in cases {
        let got = sc_of(pod_sc.clone(), json!({}), user).map(|_| ());
        assert_eq!(
            got,
            want.map_or(Ok(()), |m| Err(ConfigError(m))),
            "{pod_sc}"
        );
    }
    // The container's runAsNonRoot: false lifts the pod's.
    assert!(sc_of(
        json!({"runAsNonRoot": true}),
        json!({"runAsNonRoot": false}),
        uid(0)
    )
    .is_ok());
}

#[test]
fn masked_and_readonly_paths_are_left_to_the_runtime() {
    for proc_mount in ["Default", "Unmasked"] {
        let sc = sc_of(json!({}), json!({"procMount": proc_mount}), uid(0)).unwrap();
        assert!(
            sc.masked_paths.is_empty() && sc.readonly_paths.is_empty(),
            "{proc_mount}"
        );
    }
}

#[test]
fn the_sandbox_gets_the_pods_identity_sysctls_and_default_seccomp() {
    let p = pod(json!({
        "securityContext": {
            "runAsUser": 1000, "runAsGroup": 3000, "fsGroup": 2000, "supplementalGroups": [4000],
            "seccompProfile": {"type": "Unconfined"},
            "sysctls": [{"name": "net.core.somaxconn", "value": "1024"}],
        },
        "initContainers": [{"name": "setup", "image": "busybox", "securityContext": {"privileged": true}}],
    }));
    let linux = crate::spec::sandbox_config(&p, 0, &node()).linux.unwrap();
    let sc = linux.security_context.unwrap();
    assert_eq!(
        (
            sc.run_as_user.map(|u| u.value),
            sc.run_as_group.map(|g| g.value)
        ),
        (Some(1000), Some(3000))
    );
    assert_eq!(sc.supplemental_groups, vec![2000, 4000]);
    // Any privileged container, init containers too, makes the sandbox privileged.
    assert!(sc.privileged);
    // The pause process always runs under the runtime's default profile (upstream #84623).
    assert_eq!(
        sc.seccomp.map(|s| s.profile_type),
        Some(ProfileType::RuntimeDefault as i32)
    );
    assert_eq!(
        linux.sysctls.get("net.core.somaxconn").map(String::as_str),
        Some("1024")
    );
    assert_eq!(linux.cgroup_parent, node().cgroup_parent);

    let unprivileged = crate::spec::sandbox_config(&pod(json!({})), 0, &node())
        .linux
        .unwrap()
        .security_context
        .unwrap();
    assert!(!unprivileged.privileged);
    assert_eq!(unprivileged.run_as_user, None);
}
