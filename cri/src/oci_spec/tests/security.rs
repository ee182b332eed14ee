//! Capabilities, privileged mode, seccomp, AppArmor, masked and read-only paths.

use ::oci_spec::runtime::{Capabilities, LinuxSeccompAction};

use super::*;

fn caps(
    spec: &Spec,
) -> (
    Capabilities,
    Capabilities,
    Capabilities,
    Capabilities,
    Capabilities,
) {
    let c = process(spec).capabilities().clone().expect("capabilities");
    let get = |s: &Option<Capabilities>| s.clone().unwrap_or_default();
    (
        get(c.bounding()),
        get(c.effective()),
        get(c.permitted()),
        get(c.inheritable()),
        get(c.ambient()),
    )
}

fn set(v: &[Capability]) -> Capabilities {
    v.iter().copied().collect()
}

fn with_caps(add: &[&str], drop: &[&str], ambient: &[&str]) -> Fx {
    let mut fx = Fx::new();
    fx.sc().capabilities = Some(api::Capability {
        add_capabilities: strings(add),
        drop_capabilities: strings(drop),
        add_ambient_capabilities: strings(ambient),
    });
    fx
}

#[test]
fn default_capabilities_are_containerds_fourteen() {
    let (b, e, p, i, a) = caps(&Fx::new().spec());
    assert_eq!(b.len(), 14);
    assert_eq!(b, set(&DEFAULT_CAPABILITIES));
    assert_eq!((&e, &p), (&b, &b));
    assert!(i.is_empty() && a.is_empty());
}

#[test]
fn capability_add_and_drop_table() {
    let defaults = || DEFAULT_CAPABILITIES.to_vec();
    let without =
        |v: Vec<Capability>, c: Capability| v.into_iter().filter(|x| *x != c).collect::<Vec<_>>();
    let with = |mut v: Vec<Capability>, c: Capability| {
        v.push(c);
        v
    };
    let host: Vec<Capability> = ALL_CAPABILITIES
        .into_iter()
        .filter(|c| *c != Capability::SysResource)
        .collect();
    // (add, drop) -> bounding set
    let cases: Vec<(&[&str], &[&str], Vec<Capability>)> = vec![
        (&["NET_ADMIN"], &[], with(defaults(), Capability::NetAdmin)),
        (&["net_admin"], &[], with(defaults(), Capability::NetAdmin)),
        (
            &["CAP_NET_ADMIN"],
            &[],
            with(defaults(), Capability::NetAdmin),
        ),
        (&[], &["CHOWN"], without(defaults(), Capability::Chown)),
        (
            &[],
            &["cap_chown", "KILL"],
            without(without(defaults(), Capability::Chown), Capability::Kill),
        ),
        (&["ALL"], &[], host.clone()),
        (
            &["all"],
            &["NET_ADMIN"],
            without(host.clone(), Capability::NetAdmin),
        ),
        (
            &["NET_BIND_SERVICE"],
            &["ALL"],
            vec![Capability::NetBindService],
        ),
        (&[], &["ALL"], vec![]),
        (&["SYS_ADMIN"], &["SYS_ADMIN"], defaults()),
    ];
    for (add, drop, want) in cases {
        let (b, e, p, i, a) = caps(&with_caps(add, drop, &[]).spec());
        assert_eq!(b, set(&want), "add {add:?} drop {drop:?}");
        assert_eq!((&e, &p), (&b, &b), "add {add:?} drop {drop:?}");
        assert!(
            i.is_empty() && a.is_empty(),
            "add {add:?} drop {drop:?}: no ambient by default"
        );
    }
}

#[test]
fn ambient_capabilities_are_added_to_every_set() {
    let (b, e, p, i, a) = caps(&with_caps(&[], &[], &["NET_ADMIN"]).spec());
    for s in [&b, &e, &p, &i, &a] {
        assert!(s.contains(&Capability::NetAdmin), "{s:?}");
    }
    assert_eq!(a, set(&[Capability::NetAdmin]));
}

#[test]
fn every_capability_parses_from_its_oci_name() {
    let names: Vec<String> = ALL_CAPABILITIES
        .iter()
        .map(|c| {
            serde_json::to_value(c)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        })
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let (b, ..) = caps(&with_caps(&names, &[], &[]).spec());
    assert_eq!(b, set(&ALL_CAPABILITIES));
}

#[test]
fn unknown_capability_is_invalid_argument() {
    let msg = with_caps(&["NET_WIZARD"], &[], &[]).invalid();
    assert!(
        msg.contains("NET_WIZARD") && msg.contains("add_capabilities"),
        "{msg}"
    );
}

#[test]
fn privileged_gets_every_agent_capability_and_no_confinement() {
    let mut fx = with_caps(&[], &["ALL"], &[]);
    fx.privileged();
    fx.sc().seccomp = Some(api::SecurityProfile {
        profile_type: 0,
        localhost_ref: String::new(),
    });
    fx.sc().masked_paths = strings(&["/proc/kcore"]);
    fx.sc().readonly_paths = strings(&["/proc/sys"]);
    fx.apparmor_default = Some("gantry-default".into());
    fx.lookup.all = vec![
        dev("/dev/sda", LinuxDeviceType::B, 8, 0),
        dev("/dev/kmsg", LinuxDeviceType::C, 1, 11),
    ];
    let spec = fx.spec();
    let (b, e, p, _, _) = caps(&spec);
    assert_eq!(b, set(&fx.host_caps), "drop ALL is ignored when privileged");
    assert!(
        !b.contains(&Capability::SysResource),
        "only what the agent holds"
    );
    assert_eq!((&e, &p), (&b, &b));
    let l = linux(&spec);
    assert_eq!(l.seccomp(), &None);
    assert_eq!((l.masked_paths(), l.readonly_paths()), (&None, &None));
    assert_eq!(process(&spec).apparmor_profile(), &None);
    assert_eq!(
        mount_at(&spec, "/sys").map(|m| m.3),
        Some(strings(&["nosuid", "noexec", "nodev", "rw"]))
    );
    assert!(mount_at(&spec, "/sys/fs/cgroup").is_some_and(|m| m.3.contains(&"rw".into())));
    let rules = l
        .resources()
        .as_ref()
        .and_then(|r| r.devices().clone())
        .unwrap_or_default();
    assert_eq!(rules.len(), 1);
    assert!(rules[0].allow() && rules[0].access().as_deref() == Some("rwm"));
    assert_eq!(rules[0].typ(), Some(LinuxDeviceType::A));
    let nodes: Vec<_> = l
        .devices()
        .iter()
        .flatten()
        .map(|d| d.path().clone())
        .collect();
    assert_eq!(
        nodes,
        vec![PathBuf::from("/dev/sda"), PathBuf::from("/dev/kmsg")]
    );
}

#[test]
fn privileged_container_needs_a_privileged_sandbox() {
    let mut fx = Fx::new();
    fx.sc().privileged = true;
    assert!(fx.invalid().contains("privileged"));
}

#[test]
fn masked_and_readonly_paths_come_from_the_security_context() {
    let mut fx = Fx::new();
    let l = linux(&fx.spec()).clone();
    assert_eq!(
        (l.masked_paths(), l.readonly_paths()),
        (&None, &None),
        "none given, none set"
    );
    fx.sc().masked_paths = strings(&["/proc/kcore", "/sys/firmware"]);
    fx.sc().readonly_paths = strings(&["/proc/sys"]);
    let spec = fx.spec();
    assert_eq!(
        linux(&spec).masked_paths(),
        &Some(strings(&["/proc/kcore", "/sys/firmware"]))
    );
    assert_eq!(
        linux(&spec).readonly_paths(),
        &Some(strings(&["/proc/sys"]))
    );
}

fn seccomp_with(typed: Option<(api::security_profile::ProfileType, &str)>, deprecated: &str) -> Fx {
    let mut fx = Fx::new();
    fx.sc().seccomp = typed.map(|(t, r)| api::SecurityProfile {
        profile_type: t as i32,
        localhost_ref: r.into(),
    });
    #[allow(deprecated)]
    {
        fx.sc().seccomp_profile_path = deprecated.into();
    }
    fx
}

fn allowed(s: &LinuxSeccomp, name: &str) -> bool {
    s.syscalls().iter().flatten().any(|r| {
        r.action() == LinuxSeccompAction::ScmpActAllow
            && r.args().as_ref().is_none_or(|a| a.is_empty())
            && r.names().iter().any(|n| n == name)
    })
}

#[test]
fn seccomp_modes() {
    use api::security_profile::ProfileType::*;
    let profile = r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"name":"sethostname","action":"SCMP_ACT_ERRNO"}]}"#;
    // (typed, deprecated) -> Some(default action) or None (unconfined)
    let cases: Vec<(
        Option<(api::security_profile::ProfileType, &str)>,
        &str,
        Option<LinuxSeccompAction>,
    )> = vec![
        (None, "", None),
        (Some((Unconfined, "")), "", None),
        (None, "unconfined", None),
        (
            Some((RuntimeDefault, "")),
            "",
            Some(LinuxSeccompAction::ScmpActErrno),
        ),
        (
            None,
            "runtime/default",
            Some(LinuxSeccompAction::ScmpActErrno),
        ),
        (
            None,
            "docker/default",
            Some(LinuxSeccompAction::ScmpActErrno),
        ),
        (
            Some((Localhost, "/var/lib/kubelet/seccomp/p.json")),
            "",
            Some(LinuxSeccompAction::ScmpActAllow),
        ),
        (
            None,
            "localhost//var/lib/kubelet/seccomp/p.json",
            Some(LinuxSeccompAction::ScmpActAllow),
        ),
        // The typed field wins over the deprecated string.
        (Some((Unconfined, "")), "runtime/default", None),
    ];
    for (typed, deprecated, want) in cases {
        let mut fx = seccomp_with(typed, deprecated);
        fx.lookup
            .profiles
            .insert("/var/lib/kubelet/seccomp/p.json".into(), profile.into());
        let spec = fx.spec();
        let got = linux(&spec).seccomp().as_ref().map(|s| s.default_action());
        assert_eq!(got, want, "typed {typed:?} deprecated {deprecated:?}");
        if want == Some(LinuxSeccompAction::ScmpActAllow) {
            let s = linux(&spec).seccomp().clone().unwrap_or_default();
            let rule = &s.syscalls().clone().unwrap_or_default()[0];
            assert_eq!(
                rule.names(),
                &strings(&["sethostname"]),
                "Docker's \"name\" is read as names"
            );
        }
    }
}

#[test]
fn seccomp_errors() {
    use api::security_profile::ProfileType::*;
    for (fx, part) in [
        (seccomp_with(None, "bogus"), "invalid profile"),
        (seccomp_with(Some((Localhost, "")), ""), "localhost_ref"),
        (
            seccomp_with(Some((Localhost, "profiles/p.json")), ""),
            "absolute",
        ),
    ] {
        let msg = fx.invalid();
        assert!(msg.contains(part) && msg.contains("seccomp"), "{msg}");
    }
    let mut fx = seccomp_with(Some((Localhost, "/p.json")), "");
    fx.lookup
        .profiles
        .insert("/p.json".into(), "{not json".into());
    assert!(fx.invalid().contains("/p.json"));
    let fx = seccomp_with(Some((Localhost, "/missing.json")), "");
    assert!(matches!(fx.build(), Err(CriError::NotFound(_))));
}

#[test]
fn runtime_default_seccomp_is_an_allow_list_shaped_by_capabilities() {
    use api::security_profile::ProfileType::RuntimeDefault;
    let spec = seccomp_with(Some((RuntimeDefault, "")), "").spec();
    let s = linux(&spec).seccomp().clone().expect("a profile");
    assert_eq!(s.default_action(), LinuxSeccompAction::ScmpActErrno);
    assert!(s
        .architectures()
        .as_ref()
        .is_some_and(|a| a.contains(&::oci_spec::runtime::Arch::ScmpArchX86_64)));
    for name in ["read", "execve", "clone3", "chroot", "ptrace"] {
        let want = !matches!(name, "clone3");
        assert_eq!(allowed(&s, name), want, "{name}");
    }
    for name in [
        "mount",
        "unshare",
        "setns",
        "reboot",
        "init_module",
        "kexec_load",
    ] {
        assert!(
            !allowed(&s, name),
            "{name} needs a capability the container lacks"
        );
    }
    let rules = s.syscalls().clone().unwrap_or_default();
    let clone3 = rules
        .iter()
        .find(|r| r.names() == &strings(&["clone3"]))
        .expect("clone3 rule");
    assert_eq!(
        (clone3.action(), clone3.errno_ret()),
        (LinuxSeccompAction::ScmpActErrno, Some(38))
    );
    assert!(rules
        .iter()
        .any(|r| r.names() == &strings(&["clone"]) && r.args().is_some()));

    let mut fx = seccomp_with(Some((RuntimeDefault, "")), "");
    fx.sc().capabilities = Some(api::Capability {
        add_capabilities: strings(&["SYS_ADMIN"]),
        ..Default::default()
    });
    let s = linux(&fx.spec()).seccomp().clone().expect("a profile");
    assert!(allowed(&s, "mount") && allowed(&s, "clone") && allowed(&s, "clone3"));

    let mut fx = seccomp_with(Some((RuntimeDefault, "")), "");
    let mut own = LinuxSeccomp::default();
    own.set_default_action(LinuxSeccompAction::ScmpActLog);
    fx.seccomp_default = Some(own.clone());
    assert_eq!(
        linux(&fx.spec()).seccomp(),
        &Some(own),
        "the caller's RuntimeDefault profile"
    );
}

#[test]
fn apparmor_profiles() {
    use api::security_profile::ProfileType::*;
    // (typed, deprecated, runtime default) -> profile
    let cases: Vec<(
        Option<(api::security_profile::ProfileType, &str)>,
        &str,
        Option<&str>,
        Option<&str>,
    )> = vec![
        (None, "", None, None),
        (None, "", Some("gantry-default"), Some("gantry-default")),
        (
            Some((RuntimeDefault, "")),
            "",
            Some("gantry-default"),
            Some("gantry-default"),
        ),
        (Some((Unconfined, "")), "", Some("gantry-default"), None),
        (
            Some((Localhost, "localhost/k8s-apparmor-example")),
            "",
            None,
            Some("k8s-apparmor-example"),
        ),
        (
            Some((Localhost, "my-profile")),
            "",
            None,
            Some("my-profile"),
        ),
        (None, "localhost/my-profile", None, Some("my-profile")),
        (None, "unconfined", Some("gantry-default"), None),
    ];
    for (typed, deprecated, default, want) in cases {
        let mut fx = Fx::new();
        fx.apparmor_default = default.map(str::to_string);
        fx.sc().apparmor = typed.map(|(t, r)| api::SecurityProfile {
            profile_type: t as i32,
            localhost_ref: r.into(),
        });
        #[allow(deprecated)]
        {
            fx.sc().apparmor_profile = deprecated.into();
        }
        let spec = fx.spec();
        assert_eq!(
            process(&spec).apparmor_profile().as_deref(),
            want,
            "{typed:?} {deprecated:?} {default:?}"
        );
    }
    let mut fx = Fx::new();
    #[allow(deprecated)]
    {
        fx.sc().apparmor_profile = "my-profile".into();
    }
    assert!(fx.invalid().contains("apparmor"));
}
