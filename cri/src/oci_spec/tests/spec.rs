//! Namespaces, hostname, sysctls, resources, annotations, the JSON runc reads, and
//! the host helpers.

use ::oci_spec::runtime::LinuxNamespaceType as T;

use super::*;

fn ns(spec: &Spec) -> Vec<(T, Option<String>)> {
    linux(spec)
        .namespaces()
        .iter()
        .flatten()
        .map(|n| {
            (
                n.typ(),
                n.path().as_ref().map(|p| p.to_string_lossy().into_owned()),
            )
        })
        .collect()
}

fn pid_ns(spec: &Spec) -> Option<Option<String>> {
    ns(spec).into_iter().find(|n| n.0 == T::Pid).map(|n| n.1)
}

#[test]
fn namespaces_join_the_sandboxs_and_a_new_mount_namespace() {
    let mut fx = Fx::new();
    fx.sc().namespace_options = Some(api::NamespaceOption {
        pid: api::NamespaceMode::Container as i32,
        ..Default::default()
    });
    let p = |s: &str| Some(s.to_string());
    assert_eq!(
        ns(&fx.spec()),
        vec![
            (T::Pid, None),
            (T::Ipc, p("/run/gantry/ns/ipc-sb")),
            (T::Uts, p("/run/gantry/ns/uts-sb")),
            (T::Network, p("/run/gantry/ns/net-sb")),
            (T::Mount, None),
        ]
    );
    fx.cgroup_v2 = true;
    assert!(
        ns(&fx.spec()).contains(&(T::Cgroup, None)),
        "cgroup v2 gets a cgroup namespace"
    );
    fx.privileged();
    assert!(
        !ns(&fx.spec()).iter().any(|n| n.0 == T::Cgroup),
        "except privileged"
    );
}

#[test]
fn host_network_omits_the_network_namespace_and_hostname_follows_uts() {
    let mut fx = Fx::new();
    assert_eq!(fx.spec().hostname().as_deref(), Some("web"));
    fx.ns.net = None;
    fx.ns.uts = None;
    let spec = fx.spec();
    assert!(
        !ns(&spec).iter().any(|n| n.0 == T::Network || n.0 == T::Uts),
        "{:?}",
        ns(&spec)
    );
    assert_eq!(
        spec.hostname(),
        &None,
        "no hostname in the host's UTS namespace"
    );
}

#[test]
fn pid_namespace_modes() {
    use api::NamespaceMode::*;
    // (mode, sandbox pid ns, target) -> pid entry: None = host, Some(None) = new, Some(Some(p)) = join
    let cases: Vec<(
        Option<api::NamespaceMode>,
        Option<&str>,
        Option<&str>,
        Option<Option<&str>>,
    )> = vec![
        (Some(Container), Some("/proc/4242/ns/pid"), None, Some(None)),
        (
            Some(Pod),
            Some("/proc/4242/ns/pid"),
            None,
            Some(Some("/proc/4242/ns/pid")),
        ),
        (
            None,
            Some("/proc/4242/ns/pid"),
            None,
            Some(Some("/proc/4242/ns/pid")),
        ),
        (Some(Pod), None, None, None),
        (Some(Node), Some("/proc/4242/ns/pid"), None, None),
        (
            Some(Target),
            Some("/proc/4242/ns/pid"),
            Some("/proc/77/ns/pid"),
            Some(Some("/proc/77/ns/pid")),
        ),
    ];
    for (mode, sandbox, target, want) in cases {
        let mut fx = Fx::new();
        fx.ns.pid = sandbox.map(PathBuf::from);
        fx.target_pid_ns = target.map(PathBuf::from);
        if let Some(mode) = mode {
            fx.sc().namespace_options = Some(api::NamespaceOption {
                pid: mode as i32,
                ..Default::default()
            });
        }
        let want = want.map(|w| w.map(str::to_string));
        assert_eq!(
            pid_ns(&fx.spec()),
            want,
            "{mode:?} sandbox {sandbox:?} target {target:?}"
        );
    }
    let mut fx = Fx::new();
    fx.sc().namespace_options = Some(api::NamespaceOption {
        pid: Target as i32,
        target_id: "abc".into(),
        ..Default::default()
    });
    assert!(fx.invalid().contains("\"abc\""));
}

#[test]
fn pod_user_namespaces_are_rejected() {
    let mut fx = Fx::new();
    fx.sc().namespace_options = Some(api::NamespaceOption {
        userns_options: Some(api::UserNamespace {
            mode: api::NamespaceMode::Pod as i32,
            ..Default::default()
        }),
        ..Default::default()
    });
    assert!(fx.invalid().contains("user namespaces"));
    fx.sc().namespace_options = Some(api::NamespaceOption {
        userns_options: Some(api::UserNamespace {
            mode: api::NamespaceMode::Node as i32,
            ..Default::default()
        }),
        ..Default::default()
    });
    assert!(fx.build().is_ok(), "NODE is the host's user namespace");
}

#[test]
fn sysctls_must_be_in_a_namespace_the_pod_owns() {
    // (sysctl, host net, host ipc) -> Ok or Err(part)
    let cases: Vec<(&str, bool, bool, std::result::Result<(), &str>)> = vec![
        ("net.ipv4.ip_forward", false, false, Ok(())),
        ("net.ipv4.ip_forward", true, false, Err("host's network")),
        ("kernel.shmmax", false, false, Ok(())),
        ("kernel.shmmax", false, true, Err("host's IPC")),
        ("fs.mqueue.msg_max", false, true, Err("host's IPC")),
        ("net.core.somaxconn", false, true, Ok(())),
        ("kernel.domainname", false, false, Ok(())),
        ("kernel.hostname", false, false, Err("hostname")),
        ("vm.swappiness", false, false, Err("not in a namespace")),
    ];
    for (key, host_net, host_ipc, want) in cases {
        let mut fx = Fx::new();
        if host_net {
            fx.ns.net = None;
        }
        if host_ipc {
            fx.ns.ipc = None;
        }
        let sysctls = HashMap::from([(key.to_string(), "1".to_string())]);
        fx.sandbox
            .linux
            .get_or_insert_with(Default::default)
            .sysctls = sysctls.clone();
        match (fx.build(), want) {
            (Ok(spec), Ok(())) => assert_eq!(linux(&spec).sysctl(), &Some(sysctls), "{key}"),
            (Err(CriError::InvalidArgument(m)), Err(part)) => {
                assert!(m.contains(key) && m.contains(part), "{key}: {m}")
            }
            (got, want) => {
                panic!("{key} host net {host_net} ipc {host_ipc}: {got:?} want {want:?}")
            }
        }
    }
    assert_eq!(linux(&Fx::new().spec()).sysctl(), &None);
}

#[test]
fn resources_map_onto_linux_resources() {
    let mut fx = Fx::new();
    let r = fx.resources();
    r.cpu_period = 100_000;
    r.cpu_quota = 50_000;
    r.cpu_shares = 512;
    r.cpuset_cpus = "0-1".into();
    r.cpuset_mems = "0".into();
    r.memory_limit_in_bytes = 64 << 20;
    r.hugepage_limits = vec![api::HugepageLimit {
        page_size: "2MB".into(),
        limit: 4 << 20,
    }];
    r.unified = HashMap::from([("memory.high".to_string(), "50000000".to_string())]);
    let spec = fx.spec();
    let res = linux(&spec).resources().clone().expect("resources");
    let cpu = res.cpu().clone().expect("cpu");
    assert_eq!(
        (
            cpu.period(),
            cpu.quota(),
            cpu.shares(),
            cpu.cpus().as_deref(),
            cpu.mems().as_deref()
        ),
        (
            Some(100_000),
            Some(50_000),
            Some(512),
            Some("0-1"),
            Some("0")
        )
    );
    let mem = (*res.memory()).expect("memory");
    assert_eq!(
        (mem.limit(), mem.swap()),
        (Some(64 << 20), Some(64 << 20)),
        "swap defaults to the limit"
    );
    let huge = res.hugepage_limits().clone().unwrap_or_default();
    assert_eq!(
        (huge[0].page_size().as_str(), huge[0].limit()),
        ("2MB", 4 << 20)
    );
    assert_eq!(
        res.unified()
            .as_ref()
            .and_then(|u| u.get("memory.high"))
            .map(String::as_str),
        Some("50000000")
    );
    assert_eq!(
        linux(&spec).cgroups_path().as_deref(),
        Some(Path::new("/kubepods/pod-uid-1/c0ffee"))
    );

    fx.resources().memory_swap_limit_in_bytes = 128 << 20;
    assert_eq!(
        linux(&fx.spec())
            .resources()
            .as_ref()
            .and_then(|r| *r.memory())
            .and_then(|m| m.swap()),
        Some(128 << 20)
    );
    fx.swap_accounting = false;
    fx.hugetlb = false;
    let res = linux(&fx.spec()).resources().clone().expect("resources");
    assert_eq!(
        (*res.memory()).and_then(|m| m.swap()),
        None,
        "no swap accounting, no swap limit"
    );
    assert_eq!(
        res.hugepage_limits(),
        &None,
        "no hugetlb controller, limits dropped"
    );

    let fx = Fx::new();
    let res = linux(&fx.spec()).resources().clone().expect("resources");
    assert_eq!(
        (res.cpu(), res.memory()),
        (&None, &None),
        "zero means unset"
    );
}

#[test]
fn annotations_are_containerds() {
    let mut fx = Fx::new();
    let want = |image: &str| {
        HashMap::from(
            [
                ("io.kubernetes.cri.container-type", "container"),
                ("io.kubernetes.cri.sandbox-id", "5a1d"),
                ("io.kubernetes.cri.sandbox-namespace", "default"),
                ("io.kubernetes.cri.sandbox-uid", "uid-1"),
                ("io.kubernetes.cri.sandbox-name", "web"),
                ("io.kubernetes.cri.container-name", "app"),
                ("io.kubernetes.cri.image-name", image),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string())),
        )
    };
    assert_eq!(fx.spec().annotations(), &Some(want("busybox:1.36")));
    fx.container
        .image
        .get_or_insert_with(Default::default)
        .user_specified_image
        .clear();
    assert_eq!(
        fx.spec().annotations(),
        &Some(want("docker.io/library/busybox:1.36"))
    );
}

#[test]
fn serializes_to_the_json_runc_reads() {
    let mut fx = Fx::new();
    fx.sc().seccomp = Some(api::SecurityProfile {
        profile_type: 0,
        localhost_ref: String::new(),
    });
    fx.image.user = "1000:1000".into();
    fx.resources().memory_limit_in_bytes = 1 << 20;
    let spec = fx.spec();
    let v = serde_json::to_value(&spec).expect("serialize");
    assert_eq!(v["ociVersion"], "1.1.0");
    assert_eq!(v["root"], serde_json::json!({"path": "rootfs"}));
    assert_eq!(v["process"]["args"], serde_json::json!(["sh"]));
    assert_eq!(
        v["process"]["user"],
        serde_json::json!({"uid": 1000, "gid": 1000, "additionalGids": [1000]})
    );
    assert_eq!(v["process"]["cwd"], "/");
    assert_eq!(v["process"]["noNewPrivileges"], false);
    assert!(v["process"]["capabilities"]["bounding"]
        .as_array()
        .is_some_and(|a| a.contains(&"CAP_CHOWN".into())));
    assert_eq!(v["process"].get("rlimits"), None);
    assert_eq!(v["hostname"], "web");
    assert_eq!(
        v["mounts"][0],
        serde_json::json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]})
    );
    assert_eq!(
        v["linux"]["namespaces"][0],
        serde_json::json!({"type": "pid", "path": "/proc/4242/ns/pid"})
    );
    assert!(v["linux"]["namespaces"]
        .as_array()
        .is_some_and(|a| a.contains(&serde_json::json!({"type": "mount"}))));
    assert!(v["linux"]["namespaces"]
        .as_array()
        .is_some_and(|a| a
            .contains(&serde_json::json!({"type": "network", "path": "/run/gantry/ns/net-sb"}))));
    assert_eq!(v["linux"]["cgroupsPath"], "/kubepods/pod-uid-1/c0ffee");
    assert_eq!(
        v["linux"]["resources"]["devices"][0],
        serde_json::json!({"allow": false, "type": "a", "access": "rwm"})
    );
    assert_eq!(
        v["linux"]["resources"]["memory"],
        serde_json::json!({"limit": 1 << 20, "swap": 1 << 20})
    );
    assert_eq!(v["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
    assert_eq!(
        v["linux"]["seccomp"]["architectures"],
        serde_json::json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])
    );
    let clone = v["linux"]["seccomp"]["syscalls"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|r| r["names"] == serde_json::json!(["clone"]))
        })
        .cloned()
        .expect("a clone rule");
    assert_eq!(
        clone["args"][0],
        serde_json::json!({"index": 0, "value": 2114060288u64, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"})
    );
    fn no_nulls(v: &serde_json::Value, at: &str) {
        match v {
            serde_json::Value::Null => panic!("null at {at}"),
            serde_json::Value::Array(a) => a
                .iter()
                .enumerate()
                .for_each(|(i, x)| no_nulls(x, &format!("{at}[{i}]"))),
            serde_json::Value::Object(o) => o
                .iter()
                .for_each(|(k, x)| no_nulls(x, &format!("{at}.{k}"))),
            _ => {}
        }
    }
    no_nulls(&v, "spec");
    // And it reads back unchanged (what runc's decoder sees is what we built).
    let back: Spec = serde_json::from_value(v).expect("deserialize");
    assert_eq!(back, spec);
}

#[test]
fn mountinfo_propagation_is_that_of_the_longest_mount_point() {
    let info = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 22 0:26 / /mnt rw shared:5 master:2 - tmpfs tmpfs rw
31 30 0:27 / /mnt/slave rw master:7 - tmpfs tmpfs rw
32 30 0:28 / /mnt/priv\\040dir rw - tmpfs tmpfs rw
";
    for (path, want) in [
        ("/var/lib/x", HostPropagation::Shared),
        ("/mnt/a", HostPropagation::Shared),
        ("/mnt/slave/x", HostPropagation::Slave),
        ("/mnt/priv dir/x", HostPropagation::Private),
        ("/mnt/privx", HostPropagation::Shared),
    ] {
        assert_eq!(
            host::propagation_in(info, Path::new(path)),
            Some(want),
            "{path}"
        );
    }
}

#[test]
fn fs_host_reads_dev_null() {
    let devs = FsHost.devices(Path::new("/dev/null")).expect("/dev/null");
    assert_eq!(devs.len(), 1);
    assert_eq!(
        (devs[0].kind, devs[0].major, devs[0].minor),
        (LinuxDeviceType::C, 1, 3)
    );
    assert!(matches!(
        FsHost.devices(Path::new("/nonexistent/dev")),
        Err(CriError::NotFound(_))
    ));
}

#[test]
fn capability_masks_use_kernel_bit_order() {
    // runc's bounding set for the default capabilities, as /proc/self/status shows it.
    let mut got = capabilities_from_mask(0xa80425fb);
    let mut want = DEFAULT_CAPABILITIES.to_vec();
    let key = |c: &Capability| format!("{c:?}");
    got.sort_by_key(key);
    want.sort_by_key(key);
    assert_eq!(got, want);
    // This agent's host: everything but CAP_SYS_RESOURCE (bit 24).
    let host = capabilities_from_mask(0x1fffeffffff);
    assert_eq!(host.len(), 40);
    assert!(!host.contains(&Capability::SysResource));
    assert!(FsHost::oom_score_adj().is_ok_and(|v| (-1000..=1000).contains(&v)));
    assert!(FsHost::effective_capabilities().is_ok());
}
