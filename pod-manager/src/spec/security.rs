//! Pod and container security contexts → the CRI's Linux security contexts, as
//! upstream's kuberuntime security_context.go, kuberuntime_sandbox_linux.go,
//! kuberuntime_security_profile.go and pkg/securitycontext.

use gantry_cri::api;
use k8s_openapi::api::core::v1::{
    Container, Pod, PodSecurityContext, SELinuxOptions, SeccompProfile, SecurityContext,
};

use super::{pod_ref, ConfigError, ImageUser, NodeContext};

use api::security_profile::ProfileType;
use api::NamespaceMode;

fn pod_sc(pod: &Pod) -> Option<&PodSecurityContext> {
    pod.spec.as_ref()?.security_context.as_ref()
}

fn flag(value: Option<bool>) -> bool {
    value.unwrap_or(false)
}

/// The namespaces of the pod's sandbox and containers (upstream's NamespacesForPod):
/// the node's for hostNetwork/hostPID/hostIPC; the pod's shared PID namespace with
/// shareProcessNamespace; otherwise one PID namespace per container.
pub fn namespace_options(pod: &Pod) -> api::NamespaceOption {
    let spec = pod.spec.as_ref();
    let host = |f: fn(&k8s_openapi::api::core::v1::PodSpec) -> Option<bool>| {
        spec.and_then(f).unwrap_or(false)
    };
    let pid = if host(|s| s.host_pid) {
        NamespaceMode::Node
    } else if host(|s| s.share_process_namespace) {
        NamespaceMode::Pod
    } else {
        NamespaceMode::Container
    };
    api::NamespaceOption {
        network: if host(|s| s.host_network) {
            NamespaceMode::Node
        } else {
            NamespaceMode::Pod
        } as i32,
        pid: pid as i32,
        ipc: if host(|s| s.host_ipc) {
            NamespaceMode::Node
        } else {
            NamespaceMode::Pod
        } as i32,
        ..Default::default()
    }
}

/// Whether any container of the pod (init, app, ephemeral) is privileged: the runtime
/// must then be ready to run privileged containers in the sandbox.
pub fn has_privileged_container(pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    let privileged =
        |sc: Option<&SecurityContext>| sc.and_then(|sc| sc.privileged).unwrap_or(false);
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .any(|c| privileged(c.security_context.as_ref()))
        || spec
            .ephemeral_containers
            .iter()
            .flatten()
            .any(|c| privileged(c.security_context.as_ref()))
}

/// fsGroup first, then supplementalGroups, as upstream lists them.
fn supplemental_groups(pod: &Pod) -> Vec<i64> {
    let Some(sc) = pod_sc(pod) else {
        return Vec::new();
    };
    sc.fs_group
        .into_iter()
        .chain(sc.supplemental_groups.iter().flatten().copied())
        .collect()
}

fn supplemental_groups_policy(pod: &Pod) -> i32 {
    match pod_sc(pod).and_then(|sc| sc.supplemental_groups_policy.as_deref()) {
        Some("Strict") => api::SupplementalGroupsPolicy::Strict as i32,
        _ => api::SupplementalGroupsPolicy::Merge as i32,
    }
}

fn selinux(options: Option<&SELinuxOptions>) -> Option<api::SeLinuxOption> {
    options.map(|o| api::SeLinuxOption {
        user: o.user.clone().unwrap_or_default(),
        role: o.role.clone().unwrap_or_default(),
        r#type: o.type_.clone().unwrap_or_default(),
        level: o.level.clone().unwrap_or_default(),
    })
}

/// The sandbox's security context (upstream's generatePodSandboxLinuxConfig). The
/// sandbox always runs under the runtime's default seccomp profile, whatever the pod
/// asks for its containers (upstream issue #84623: it lets pods use strict profiles).
pub fn sandbox_security_context(pod: &Pod) -> api::LinuxSandboxSecurityContext {
    let sc = pod_sc(pod);
    api::LinuxSandboxSecurityContext {
        namespace_options: Some(namespace_options(pod)),
        selinux_options: selinux(sc.and_then(|sc| sc.se_linux_options.as_ref())),
        run_as_user: sc
            .and_then(|sc| sc.run_as_user)
            .map(|value| api::Int64Value { value }),
        run_as_group: sc
            .and_then(|sc| sc.run_as_group)
            .map(|value| api::Int64Value { value }),
        supplemental_groups: supplemental_groups(pod),
        supplemental_groups_policy: supplemental_groups_policy(pod),
        privileged: has_privileged_container(pod),
        seccomp: Some(api::SecurityProfile {
            profile_type: ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        }),
        ..Default::default()
    }
}

/// The container's security context over the pod's (upstream's
/// DetermineEffectiveSecurityContext): the pod contributes its user, group, SELinux and
/// runAsNonRoot; every field the container sets wins.
pub fn effective_security_context(pod: &Pod, container: &Container) -> SecurityContext {
    let mut effective = pod_sc(pod)
        .map(|p| SecurityContext {
            se_linux_options: p.se_linux_options.clone(),
            windows_options: p.windows_options.clone(),
            run_as_user: p.run_as_user,
            run_as_group: p.run_as_group,
            run_as_non_root: p.run_as_non_root,
            ..Default::default()
        })
        .unwrap_or_default();
    let Some(c) = container.security_context.as_ref() else {
        return effective;
    };
    macro_rules! overlay {
        ($($field:ident),*) => {$(
            if c.$field.is_some() {
                effective.$field = c.$field.clone();
            }
        )*};
    }
    overlay!(
        se_linux_options,
        windows_options,
        capabilities,
        privileged,
        run_as_user,
        run_as_group,
        run_as_non_root,
        read_only_root_filesystem,
        allow_privilege_escalation,
        proc_mount,
        seccomp_profile,
        app_armor_profile
    );
    effective
}

/// The container's security context (upstream's determineEffectiveSecurityContext).
/// `image_user` is the user the image runs as, used when the spec names none.
pub fn container_security_context(
    pod: &Pod,
    container: &Container,
    node: &NodeContext,
    image_user: Option<&ImageUser>,
) -> Result<api::LinuxContainerSecurityContext, ConfigError> {
    let effective = effective_security_context(pod, container);
    let mut sc = api::LinuxContainerSecurityContext {
        capabilities: effective.capabilities.as_ref().map(|caps| api::Capability {
            add_capabilities: caps.add.clone().unwrap_or_default(),
            drop_capabilities: caps.drop.clone().unwrap_or_default(),
            add_ambient_capabilities: Vec::new(),
        }),
        selinux_options: selinux(effective.se_linux_options.as_ref()),
        run_as_user: effective.run_as_user.map(|value| api::Int64Value { value }),
        run_as_group: effective
            .run_as_group
            .map(|value| api::Int64Value { value }),
        privileged: flag(effective.privileged),
        readonly_rootfs: flag(effective.read_only_root_filesystem),
        namespace_options: Some(namespace_options(pod)),
        supplemental_groups: supplemental_groups(pod),
        supplemental_groups_policy: supplemental_groups_policy(pod),
        // Only an explicit allowPrivilegeEscalation: false sets no_new_privs.
        no_new_privs: effective.allow_privilege_escalation == Some(false),
        seccomp: Some(seccomp_profile(pod, container, node)?),
        // Left empty, the runtime masks its default paths. An Unmasked procMount
        // also sends empty lists (upstream's ConvertToRuntimeMaskedPaths).
        masked_paths: Vec::new(),
        readonly_paths: Vec::new(),
        ..Default::default()
    };
    if sc.run_as_user.is_none() {
        // As upstream: the image's numeric user, or its user name for the runtime to
        // resolve; an image that names neither runs as root.
        if let Some(user) = image_user {
            sc.run_as_user = Some(api::Int64Value {
                value: user.uid.unwrap_or(0),
            })
            .filter(|_| user.uid.is_some() || user.username.is_empty());
            sc.run_as_username = user.username.clone();
        }
    }
    Ok(sc)
}

/// The seccomp profile of a container: its own field, else the pod's, else the node's
/// default (seccompDefault: RuntimeDefault, otherwise Unconfined). Localhost profiles
/// live under the node's seccomp profile root.
fn seccomp_profile(
    pod: &Pod,
    container: &Container,
    node: &NodeContext,
) -> Result<api::SecurityProfile, ConfigError> {
    let field: Option<&SeccompProfile> = container
        .security_context
        .as_ref()
        .and_then(|sc| sc.seccomp_profile.as_ref())
        .or_else(|| pod_sc(pod).and_then(|sc| sc.seccomp_profile.as_ref()));
    let profile = |t: ProfileType, localhost_ref: String| api::SecurityProfile {
        profile_type: t as i32,
        localhost_ref,
    };
    Ok(
        match field.map(|f| (f.type_.as_str(), f.localhost_profile.as_deref())) {
            None if node.seccomp_default => profile(ProfileType::RuntimeDefault, String::new()),
            None => profile(ProfileType::Unconfined, String::new()),
            Some(("RuntimeDefault", _)) => profile(ProfileType::RuntimeDefault, String::new()),
            Some(("Localhost", Some(path))) if !path.is_empty() => {
                let root = node.seccomp_profile_root.trim_end_matches('/');
                let full = if root.is_empty() {
                    path.to_string()
                } else {
                    format!("{root}/{path}")
                };
                profile(ProfileType::Localhost, full)
            }
            Some(("Localhost", _)) => {
                return Err(ConfigError(
                    "localhostProfile must be set if seccompProfile type is Localhost.".into(),
                ))
            }
            Some(_) => profile(ProfileType::Unconfined, String::new()),
        },
    )
}

/// upstream's verifyRunAsNonRoot: with runAsNonRoot, an explicit runAsUser 0 or an
/// image that runs as root (or as a user name that cannot be checked) is refused.
/// Without the image's user (`None`), only an explicit runAsUser can be checked, and a
/// container without one is refused rather than run unverified.
pub fn verify_run_as_non_root(
    pod: &Pod,
    container: &Container,
    image_user: Option<&ImageUser>,
) -> Result<(), ConfigError> {
    let effective = effective_security_context(pod, container);
    if effective.run_as_non_root != Some(true) {
        return Ok(());
    }
    let who = format!("(pod: {:?}, container: {})", pod_ref(pod), container.name);
    if let Some(uid) = effective.run_as_user {
        return if uid == 0 {
            Err(ConfigError(format!(
                "container's runAsUser breaks non-root policy {who}"
            )))
        } else {
            Ok(())
        };
    }
    match image_user {
        None => Err(ConfigError(format!(
            "container has runAsNonRoot and the image's user is unknown, cannot verify user is non-root {who}"
        ))),
        Some(ImageUser { uid: Some(0), .. }) => Err(ConfigError(format!("container has runAsNonRoot and image will run as root {who}"))),
        Some(ImageUser { uid: None, username }) if username.is_empty() => {
            Err(ConfigError(format!("container has runAsNonRoot and image will run as root {who}")))
        }
        Some(ImageUser { uid: None, username }) => Err(ConfigError(format!(
            "container has runAsNonRoot and image has non-numeric user ({username}), cannot verify user is non-root {who}"
        ))),
        Some(_) => Ok(()),
    }
}
