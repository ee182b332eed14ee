//! Mounts (defaults, sandbox files, CRI binds, propagation, ordering) and devices.

use super::*;

fn cri_mount(container: &str, host: &str) -> api::Mount {
    api::Mount {
        container_path: container.into(),
        host_path: host.into(),
        ..Default::default()
    }
}

fn o(v: &[&str]) -> Vec<String> {
    strings(v)
}

#[test]
fn default_layout_matches_containerd() {
    let spec = Fx::new().spec();
    let got: Vec<_> = mounts(&spec);
    let want = vec![
        ("/proc", "proc", "proc", o(&["nosuid", "noexec", "nodev"])),
        (
            "/dev",
            "tmpfs",
            "tmpfs",
            o(&["nosuid", "strictatime", "mode=755", "size=65536k"]),
        ),
        (
            "/dev/pts",
            "devpts",
            "devpts",
            o(&[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ]),
        ),
        (
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            o(&["nosuid", "noexec", "nodev"]),
        ),
        (
            "/sys",
            "sysfs",
            "sysfs",
            o(&["nosuid", "noexec", "nodev", "ro"]),
        ),
        (
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            o(&["nosuid", "noexec", "nodev", "relatime", "ro"]),
        ),
        (
            "/etc/hostname",
            "bind",
            "/var/lib/gantry/sb/hostname",
            o(&["rbind", "rprivate", "rw"]),
        ),
        (
            "/etc/hosts",
            "bind",
            "/var/lib/gantry/sb/hosts",
            o(&["rbind", "rprivate", "rw"]),
        ),
        (
            "/etc/resolv.conf",
            "bind",
            "/var/lib/gantry/sb/resolv.conf",
            o(&["rbind", "rprivate", "rw"]),
        ),
        (
            "/dev/shm",
            "bind",
            "/run/gantry/sb/shm",
            o(&["rbind", "rprivate", "rw"]),
        ),
    ];
    let want: Vec<_> = want
        .into_iter()
        .map(|(d, t, s, o)| (d.to_string(), t.to_string(), s.to_string(), o))
        .collect();
    assert_eq!(got, want);
    assert_eq!(linux(&spec).rootfs_propagation(), &None);
}

#[test]
fn without_sandbox_files_the_container_keeps_its_own_tmpfs_shm() {
    let mut fx = Fx::new();
    fx.files = SandboxFiles::default();
    let spec = fx.spec();
    assert_eq!(
        mount_at(&spec, "/dev/shm").map(|m| (m.1, m.2)),
        Some(("tmpfs".into(), "shm".into()))
    );
    assert!(mount_at(&spec, "/etc/hosts").is_none());
}

#[test]
fn host_ipc_pods_share_the_hosts_dev_shm() {
    let mut fx = Fx::new();
    fx.ns.ipc = None;
    let spec = fx.spec();
    assert_eq!(
        mount_at(&spec, "/dev/shm").map(|m| (m.1, m.2)),
        Some(("bind".into(), "/dev/shm".into()))
    );
}

#[test]
fn readonly_rootfs_makes_root_and_sandbox_files_read_only() {
    let mut fx = Fx::new();
    assert_eq!(fx.spec().root().as_ref().and_then(|r| r.readonly()), None);
    fx.sc().readonly_rootfs = true;
    fx.container.mounts = vec![cri_mount("/data", "/srv/data")];
    let spec = fx.spec();
    assert_eq!(
        spec.root()
            .as_ref()
            .map(|r| (r.path().clone(), r.readonly())),
        Some(("rootfs".into(), Some(true)))
    );
    for dest in ["/etc/hostname", "/etc/hosts", "/etc/resolv.conf"] {
        assert_eq!(
            mount_at(&spec, dest).map(|m| m.3),
            Some(o(&["rbind", "rprivate", "ro"])),
            "{dest}"
        );
    }
    // As containerd: the container's own mounts and /dev/shm stay writable.
    assert_eq!(
        mount_at(&spec, "/data").map(|m| m.3),
        Some(o(&["rbind", "rprivate", "rw"]))
    );
    assert_eq!(
        mount_at(&spec, "/dev/shm").map(|m| m.3),
        Some(o(&["rbind", "rprivate", "rw"]))
    );
}

#[test]
fn a_container_mount_replaces_the_sandbox_file_and_the_default_at_its_path() {
    let mut fx = Fx::new();
    fx.container.mounts = vec![
        cri_mount("/etc/hosts", "/var/lib/kubelet/pods/uid-1/etc-hosts"),
        cri_mount("/dev/shm/", "/srv/shm"),
        cri_mount("/sys/fs/cgroup", "/sys/fs/cgroup"),
    ];
    let spec = fx.spec();
    let at = |d: &str| {
        mounts(&spec)
            .into_iter()
            .filter(|m| m.0.trim_end_matches('/') == d)
            .collect::<Vec<_>>()
    };
    assert_eq!(at("/etc/hosts").len(), 1);
    assert_eq!(
        at("/etc/hosts")[0].2,
        "/var/lib/kubelet/pods/uid-1/etc-hosts"
    );
    assert_eq!(at("/dev/shm").len(), 1);
    assert_eq!(at("/dev/shm")[0].2, "/srv/shm");
    assert_eq!(at("/sys/fs/cgroup").len(), 1);
    assert_eq!(at("/sys/fs/cgroup")[0].1, "bind");
}

#[test]
fn mounting_dev_drops_every_default_below_it() {
    let mut fx = Fx::new();
    fx.container.mounts = vec![cri_mount("/dev", "/dev")];
    let spec = fx.spec();
    let below_dev: Vec<_> = mounts(&spec)
        .into_iter()
        .filter(|m| m.0.starts_with("/dev"))
        .collect();
    // The sandbox's /dev/shm is a bind from the sandbox, so it stays (after /dev).
    assert_eq!(
        below_dev
            .iter()
            .map(|m| (m.0.as_str(), m.1.as_str()))
            .collect::<Vec<_>>(),
        vec![("/dev", "bind"), ("/dev/shm", "bind")]
    );
}

#[test]
fn binds_are_sorted_parents_first_keeping_order_among_equals() {
    let mut fx = Fx::new();
    fx.files = SandboxFiles::default();
    fx.container.mounts = vec![
        cri_mount("/data/a/b", "/h/3"),
        cri_mount("/data/z", "/h/2b"),
        cri_mount("/data", "/h/1"),
        cri_mount("/data/y", "/h/2a"),
    ];
    let spec = fx.spec();
    let binds: Vec<_> = mounts(&spec)
        .into_iter()
        .filter(|m| m.1 == "bind")
        .map(|m| m.0)
        .collect();
    assert_eq!(
        binds,
        strings(&["/data", "/data/z", "/data/y", "/data/a/b"])
    );
}

#[test]
fn propagation_table() {
    use api::MountPropagation::*;
    use HostPropagation::*;
    // (propagation per mount, host propagation) -> (options' propagation, rootfs propagation)
    let cases: Vec<(
        Vec<api::MountPropagation>,
        HostPropagation,
        Vec<&str>,
        Option<&str>,
    )> = vec![
        (vec![PropagationPrivate], Private, vec!["rprivate"], None),
        (
            vec![PropagationHostToContainer],
            Slave,
            vec!["rslave"],
            Some("rslave"),
        ),
        (
            vec![PropagationHostToContainer],
            Shared,
            vec!["rslave"],
            Some("rslave"),
        ),
        (
            vec![PropagationBidirectional],
            Shared,
            vec!["rshared"],
            Some("rshared"),
        ),
        (
            vec![PropagationBidirectional, PropagationHostToContainer],
            Shared,
            vec!["rshared", "rslave"],
            Some("rshared"),
        ),
        (
            vec![PropagationHostToContainer, PropagationBidirectional],
            Shared,
            vec!["rslave", "rshared"],
            Some("rshared"),
        ),
    ];
    for (props, host, want_opts, want_rootfs) in cases {
        let mut fx = Fx::new();
        fx.files = SandboxFiles::default();
        for (n, p) in props.iter().enumerate() {
            let src = format!("/mnt/m{n}");
            fx.lookup.propagation.insert(PathBuf::from(&src), host);
            fx.container.mounts.push(api::Mount {
                propagation: *p as i32,
                ..cri_mount(&format!("/m{n}"), &src)
            });
        }
        let spec = fx.spec();
        let got: Vec<String> = mounts(&spec)
            .into_iter()
            .filter(|m| m.1 == "bind")
            .map(|m| m.3[1].clone())
            .collect();
        assert_eq!(got, strings(&want_opts), "{props:?} on {host:?}");
        assert_eq!(
            linux(&spec).rootfs_propagation().as_deref(),
            want_rootfs,
            "{props:?} on {host:?}"
        );
    }
}

#[test]
fn propagation_needs_a_matching_host_mount() {
    use api::MountPropagation::*;
    for (p, host) in [
        (PropagationBidirectional, HostPropagation::Slave),
        (PropagationHostToContainer, HostPropagation::Private),
    ] {
        let mut fx = Fx::new();
        fx.lookup.propagation.insert("/mnt/x".into(), host);
        fx.container.mounts = vec![api::Mount {
            propagation: p as i32,
            ..cri_mount("/x", "/mnt/x")
        }];
        match fx.build() {
            Err(CriError::FailedPrecondition(m)) => {
                assert!(m.contains("/mnt/x") && m.contains("\"app\""), "{m}")
            }
            other => panic!("{p:?} on {host:?}: {other:?}"),
        }
    }
}

#[test]
fn readonly_recursive_readonly_and_extra_options() {
    let mut fx = Fx::new();
    fx.container.mounts = vec![
        api::Mount {
            readonly: true,
            ..cri_mount("/ro", "/h/ro")
        },
        api::Mount {
            readonly: true,
            recursive_read_only: true,
            ..cri_mount("/rro", "/h/rro")
        },
        api::Mount {
            mount_options: strings(&["noexec", "nosuid"]),
            ..cri_mount("/opts", "/h/opts")
        },
    ];
    let spec = fx.spec();
    assert_eq!(
        mount_at(&spec, "/ro").map(|m| m.3),
        Some(o(&["rbind", "rprivate", "ro"]))
    );
    assert_eq!(
        mount_at(&spec, "/rro").map(|m| m.3),
        Some(o(&["rbind", "rprivate", "rro"]))
    );
    assert_eq!(
        mount_at(&spec, "/opts").map(|m| m.3),
        Some(o(&["rbind", "rprivate", "rw", "noexec", "nosuid"]))
    );
}

#[test]
fn invalid_mounts_table() {
    let rro = |m: api::Mount| api::Mount {
        recursive_read_only: true,
        ..m
    };
    let cases: Vec<(api::Mount, bool, &str)> = vec![
        (rro(cri_mount("/a", "/h")), true, "needs readonly"),
        (
            rro(api::Mount {
                readonly: true,
                ..cri_mount("/a", "/h")
            }),
            false,
            "does not support",
        ),
        (
            rro(api::Mount {
                readonly: true,
                propagation: api::MountPropagation::PropagationHostToContainer as i32,
                ..cri_mount("/a", "/h")
            }),
            true,
            "Private",
        ),
        (cri_mount("relative", "/h"), true, "absolute"),
        (cri_mount("/a", ""), true, "host_path is empty"),
        (
            api::Mount {
                image: Some(Default::default()),
                ..cri_mount("/a", "")
            },
            true,
            "image volume",
        ),
        (
            api::Mount {
                uid_mappings: vec![api::IdMapping {
                    host_id: 1000,
                    container_id: 0,
                    length: 1,
                }],
                ..cri_mount("/a", "/h")
            },
            true,
            "id-mapped",
        ),
    ];
    for (mount, rro_supported, part) in cases {
        let mut fx = Fx::new();
        fx.rro = rro_supported;
        fx.container.mounts = vec![mount];
        let msg = fx.invalid();
        assert!(
            msg.contains(part) && msg.contains("\"app\""),
            "{part}: {msg}"
        );
    }
}

#[test]
fn devices_become_nodes_and_allow_rules() {
    let mut fx = Fx::new();
    fx.lookup.devices.insert(
        "/dev/fuse".into(),
        vec![dev("/dev/fuse", LinuxDeviceType::C, 10, 229)],
    );
    fx.lookup.devices.insert(
        "/dev/snd".into(),
        vec![
            dev("/dev/snd/timer", LinuxDeviceType::C, 116, 33),
            dev("/dev/snd/seq", LinuxDeviceType::C, 116, 1),
        ],
    );
    fx.container.devices = vec![
        api::Device {
            container_path: "/dev/fuse".into(),
            host_path: "/dev/fuse".into(),
            permissions: "rwm".into(),
        },
        api::Device {
            container_path: "/dev/sound".into(),
            host_path: "/dev/snd".into(),
            permissions: "r".into(),
        },
    ];
    let spec = fx.spec();
    let l = linux(&spec);
    let nodes: Vec<_> = l
        .devices()
        .iter()
        .flatten()
        .map(|d| {
            (
                d.path().to_string_lossy().into_owned(),
                d.typ(),
                d.major(),
                d.minor(),
                d.file_mode(),
            )
        })
        .collect();
    assert_eq!(
        nodes,
        vec![
            ("/dev/fuse".into(), LinuxDeviceType::C, 10, 229, Some(0o666)),
            (
                "/dev/sound/timer".into(),
                LinuxDeviceType::C,
                116,
                33,
                Some(0o666)
            ),
            (
                "/dev/sound/seq".into(),
                LinuxDeviceType::C,
                116,
                1,
                Some(0o666)
            ),
        ]
    );
    let rules: Vec<_> = l
        .resources()
        .as_ref()
        .and_then(|r| r.devices().clone())
        .unwrap_or_default()
        .iter()
        .map(|r| {
            (
                r.allow(),
                r.typ(),
                r.major(),
                r.minor(),
                r.access().clone().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        rules,
        vec![
            (
                false,
                Some(LinuxDeviceType::A),
                None,
                None,
                "rwm".to_string()
            ),
            (
                true,
                Some(LinuxDeviceType::C),
                Some(10),
                Some(229),
                "rwm".to_string()
            ),
            (
                true,
                Some(LinuxDeviceType::C),
                Some(116),
                Some(33),
                "r".to_string()
            ),
            (
                true,
                Some(LinuxDeviceType::C),
                Some(116),
                Some(1),
                "r".to_string()
            ),
        ]
    );
}

#[test]
fn device_errors() {
    let mut fx = Fx::new();
    fx.container.devices = vec![api::Device {
        container_path: "/dev/x".into(),
        host_path: "/dev/x".into(),
        permissions: "rwx".into(),
    }];
    assert!(fx.invalid().contains("permissions \"rwx\""));
    fx.container.devices[0].permissions = "rw".into();
    assert!(
        matches!(fx.build(), Err(CriError::NotFound(_))),
        "the lookup's error passes through"
    );
}
