use std::collections::HashSet;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod;
use serde_json::json;

use super::config::{resource_config_for_pod, NodeAllocatable, ResourceConfig};
use super::fs::{cpu_shares_to_weight, CgroupFs, Hierarchy};
use super::*;

fn pod(uid: &str, spec: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "p", "namespace": "ns", "uid": uid},
        "spec": spec,
    }))
    .unwrap()
}

fn res(requests: serde_json::Value, limits: serde_json::Value) -> serde_json::Value {
    json!({"requests": requests, "limits": limits})
}

fn guaranteed(uid: &str) -> Pod {
    pod(
        uid,
        json!({"containers": [{"name": "a", "resources": res(
            json!({"cpu": "500m", "memory": "64Mi"}), json!({"cpu": "500m", "memory": "64Mi"}))}]}),
    )
}

fn burstable(uid: &str, cpu_request: &str) -> Pod {
    pod(
        uid,
        json!({"containers": [{"name": "a", "resources": res(
            json!({"cpu": cpu_request}), json!({"memory": "128Mi"}))}]}),
    )
}

fn best_effort(uid: &str) -> Pod {
    pod(uid, json!({"containers": [{"name": "a"}]}))
}

#[test]
fn pod_cgroup_settings_follow_upstreams_resource_config_for_pod() {
    let mi = 1i64 << 20;
    let cases: Vec<(&str, Pod, ResourceConfig)> = vec![
        (
            "guaranteed: shares, quota and memory",
            guaranteed("g"),
            ResourceConfig {
                cpu_shares: Some(512),
                cpu_quota: Some(50_000),
                cpu_period: Some(100_000),
                memory: Some(64 * mi),
                pids_limit: None,
            },
        ),
        (
            "burstable with a memory limit on every container but no CPU limit",
            burstable("b", "250m"),
            ResourceConfig {
                cpu_shares: Some(256),
                memory: Some(128 * mi),
                ..Default::default()
            },
        ),
        (
            "burstable where one container has no memory limit: no pod memory limit",
            pod(
                "b2",
                json!({"containers": [
                    {"name": "a", "resources": res(json!({"cpu": "100m"}), json!({"cpu": "200m", "memory": "32Mi"}))},
                    {"name": "b", "resources": res(json!({"cpu": "100m"}), json!({"cpu": "300m"}))},
                ]}),
            ),
            ResourceConfig {
                cpu_shares: Some(204),
                cpu_quota: Some(50_000),
                cpu_period: Some(100_000),
                ..Default::default()
            },
        ),
        (
            "an init container larger than the app containers sets the pod's size",
            pod(
                "i",
                json!({
                    "initContainers": [{"name": "init", "resources": res(
                        json!({"cpu": "1", "memory": "256Mi"}), json!({"cpu": "1", "memory": "256Mi"}))}],
                    "containers": [{"name": "a", "resources": res(
                        json!({"cpu": "200m", "memory": "64Mi"}), json!({"cpu": "200m", "memory": "64Mi"}))}],
                }),
            ),
            ResourceConfig {
                cpu_shares: Some(1024),
                cpu_quota: Some(100_000),
                cpu_period: Some(100_000),
                memory: Some(256 * mi),
                pids_limit: None,
            },
        ),
        (
            "a sidecar adds to the app containers; the init container after it counts with it",
            pod(
                "s",
                json!({
                    "initContainers": [
                        {"name": "side", "restartPolicy": "Always", "resources": res(
                            json!({"cpu": "100m", "memory": "16Mi"}), json!({"cpu": "100m", "memory": "16Mi"}))},
                        {"name": "init", "resources": res(
                            json!({"cpu": "300m", "memory": "16Mi"}), json!({"cpu": "300m", "memory": "16Mi"}))},
                    ],
                    "containers": [{"name": "a", "resources": res(
                        json!({"cpu": "200m", "memory": "64Mi"}), json!({"cpu": "200m", "memory": "64Mi"}))}],
                }),
            ),
            ResourceConfig {
                // max(100m + 200m, 100m + 300m) = 400m; memory max(16+64, 16+16) = 80Mi
                cpu_shares: Some(409),
                cpu_quota: Some(40_000),
                cpu_period: Some(100_000),
                memory: Some(80 * mi),
                pids_limit: None,
            },
        ),
        (
            "pod-level resources replace the containers' sums",
            pod(
                "l",
                json!({
                    "resources": res(json!({"cpu": "1", "memory": "1Gi"}), json!({"cpu": "2", "memory": "1Gi"})),
                    "containers": [{"name": "a"}],
                }),
            ),
            ResourceConfig {
                cpu_shares: Some(1024),
                cpu_quota: Some(200_000),
                cpu_period: Some(100_000),
                memory: Some(1024 * mi),
                pids_limit: None,
            },
        ),
        (
            "overhead adds to requests and to non-zero limits",
            pod(
                "o",
                json!({
                    "overhead": {"cpu": "100m", "memory": "10Mi"},
                    "containers": [{"name": "a", "resources": res(
                        json!({"cpu": "400m", "memory": "100Mi"}), json!({"cpu": "400m", "memory": "100Mi"}))}],
                }),
            ),
            ResourceConfig {
                cpu_shares: Some(512),
                cpu_quota: Some(50_000),
                cpu_period: Some(100_000),
                memory: Some(110 * mi),
                pids_limit: None,
            },
        ),
        (
            "best effort: the minimum shares only",
            best_effort("e"),
            ResourceConfig {
                cpu_shares: Some(2),
                ..Default::default()
            },
        ),
    ];
    for (what, pod, want) in cases {
        assert_eq!(resource_config_for_pod(&pod, -1), want, "{what}");
    }
    let limited = resource_config_for_pod(&best_effort("e"), 64);
    assert_eq!(
        limited.pids_limit,
        Some(64),
        "podPidsLimit applies when > 0"
    );
    assert_eq!(
        resource_config_for_pod(&best_effort("e"), 0).pids_limit,
        None
    );
}

#[test]
fn cpu_weight_is_converted_from_shares_as_upstream() {
    assert_eq!(cpu_shares_to_weight(2), 1);
    assert_eq!(cpu_shares_to_weight(1024), 39);
    assert_eq!(cpu_shares_to_weight(262_144), 10_000);
}

#[test]
fn node_allocatable_is_capacity_minus_reservations() {
    let capacity = NodeAllocatable {
        milli_cpu: 2000,
        memory: 4 << 30,
        pids: 4_194_304,
    };
    let list = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    k8s_openapi::apimachinery::pkg::api::resource::Quantity(v.to_string()),
                )
            })
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let system = list(&[("cpu", "500m"), ("memory", "1Gi")]);
    let kube = list(&[("memory", "512Mi"), ("pid", "1000")]);
    let a = NodeAllocatable::from_capacity(capacity, &[&system, &kube]);
    assert_eq!(a.milli_cpu, 1500);
    assert_eq!(a.memory, (4 << 30) - (1 << 30) - (512 << 20));
    assert_eq!(a.pids, 4_193_304);
    let c = a.config();
    assert_eq!(c.cpu_shares, Some(1536));
    assert_eq!(c.memory, Some(a.memory));
    assert_eq!(c.pids_limit, Some(4_193_304));
}

#[test]
fn the_cgroup_mode_comes_from_the_mounts() {
    let hybrid = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    let CgroupFs::V1 { hierarchies } = CgroupFs::from_mountinfo(hybrid) else {
        panic!("hybrid is v1");
    };
    assert_eq!(
        hierarchies[0],
        Hierarchy {
            root: "/sys/fs/cgroup/cpu,cpuacct".into(),
            controllers: vec!["cpu".into(), "cpuacct".into()]
        }
    );
    assert!(
        hierarchies[2].controllers.is_empty(),
        "name=systemd has no controller"
    );
    assert_eq!(hierarchies.len(), 4, "the empty cgroup2 is a hierarchy too");
    let v2 = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
    assert_eq!(
        CgroupFs::from_mountinfo(v2),
        CgroupFs::V2 {
            root: "/sys/fs/cgroup".into()
        }
    );
}

fn read(p: PathBuf) -> String {
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_string()
}

/// A fake v1 cgroupfs: one directory per hierarchy, the node's cgroup root made.
fn fake_v1(dir: &Path) -> CgroupFs {
    let mut hierarchies = Vec::new();
    for (name, controllers) in [
        ("cpu,cpuacct", vec!["cpu", "cpuacct"]),
        ("memory", vec!["memory"]),
        ("pids", vec!["pids"]),
        ("cpuset", vec!["cpuset"]),
        ("systemd", vec![]),
    ] {
        let root = dir.join(name);
        std::fs::create_dir_all(root.join("node")).unwrap();
        hierarchies.push(Hierarchy {
            root,
            controllers: controllers.into_iter().map(String::from).collect(),
        });
    }
    std::fs::write(dir.join("cpuset/cpuset.cpus"), "0-1\n").unwrap();
    std::fs::write(dir.join("cpuset/cpuset.mems"), "0\n").unwrap();
    CgroupFs::V1 { hierarchies }
}

fn allocatable() -> NodeAllocatable {
    NodeAllocatable {
        milli_cpu: 2000,
        memory: 1 << 30,
        pids: 10_000,
    }
}

#[test]
fn v1_qos_and_pod_cgroups_are_made_sized_and_removed_in_every_hierarchy() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let cgroups = PodCgroups::start(fake_v1(d), "/node", allocatable(), 100).unwrap();
    assert_eq!(cgroups.kubepods(), "/node/kubepods");
    assert_eq!(read(d.join("cpu,cpuacct/node/kubepods/cpu.shares")), "2048");
    assert_eq!(
        read(d.join("memory/node/kubepods/memory.limit_in_bytes")),
        (1u64 << 30).to_string()
    );
    assert_eq!(read(d.join("pids/node/kubepods/pids.max")), "10000");
    assert_eq!(
        read(d.join("cpu,cpuacct/node/kubepods/besteffort/cpu.shares")),
        "2"
    );
    assert_eq!(
        read(d.join("cpu,cpuacct/node/kubepods/burstable/cpu.shares")),
        "2"
    );
    assert_eq!(
        read(d.join("cpuset/node/kubepods/burstable/cpuset.cpus")),
        "0-1"
    );

    let g = cgroups.ensure(&guaranteed("g1")).unwrap();
    assert_eq!(g, "/node/kubepods/podg1");
    let cpu = d.join("cpu,cpuacct/node/kubepods/podg1");
    assert_eq!(read(cpu.join("cpu.shares")), "512");
    assert_eq!(read(cpu.join("cpu.cfs_period_us")), "100000");
    assert_eq!(read(cpu.join("cpu.cfs_quota_us")), "50000");
    assert_eq!(
        read(d.join("memory/node/kubepods/podg1/memory.limit_in_bytes")),
        (64u64 << 20).to_string()
    );
    assert_eq!(read(d.join("pids/node/kubepods/podg1/pids.max")), "100");
    assert_eq!(read(d.join("cpuset/node/kubepods/podg1/cpuset.mems")), "0");

    let b = cgroups.ensure(&burstable("b1", "250m")).unwrap();
    assert_eq!(b, "/node/kubepods/burstable/podb1");
    cgroups.ensure(&burstable("b2", "500m")).unwrap();
    let burstable_shares = d.join("cpu,cpuacct/node/kubepods/burstable/cpu.shares");
    assert_eq!(
        read(burstable_shares.clone()),
        "768",
        "shares of 250m + 500m"
    );
    assert_eq!(
        cgroups.ensure(&best_effort("e1")).unwrap(),
        "/node/kubepods/besteffort/pode1"
    );

    // A container cgroup below the pod's (as the runtime makes it), then removal.
    std::fs::create_dir_all(d.join("systemd/node/kubepods/burstable/podb1/ctr")).unwrap();
    cgroups.remove("b1").unwrap();
    for h in ["cpu,cpuacct", "memory", "pids", "cpuset", "systemd"] {
        assert!(
            !d.join(h).join("node/kubepods/burstable/podb1").exists(),
            "{h}"
        );
    }
    assert_eq!(
        read(burstable_shares),
        "512",
        "b1's request no longer counts"
    );
    cgroups.remove("b1").unwrap();
}

#[test]
fn orphaned_pod_cgroups_go_once_empty_and_live_ones_stay() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let fs = fake_v1(d);
    // Left by an earlier run: one empty, one with a process still in it.
    for uid in ["gone", "busy", "kept"] {
        fs.create(&format!("/node/kubepods/besteffort/pod{uid}"))
            .unwrap();
    }
    std::fs::write(
        d.join("pids/node/kubepods/besteffort/podbusy/cgroup.procs"),
        "4242\n",
    )
    .unwrap();
    let cgroups = PodCgroups::start(fs, "/node", allocatable(), -1).unwrap();
    cgroups.ensure(&guaranteed("mine")).unwrap();
    let live: HashSet<String> = ["kept".to_string()].into();
    let removed = cgroups.remove_orphans(&live);
    assert_eq!(removed, ["gone"]);
    assert!(!d.join("memory/node/kubepods/besteffort/podgone").exists());
    assert!(d.join("memory/node/kubepods/besteffort/podbusy").exists());
    assert!(d.join("memory/node/kubepods/besteffort/podkept").exists());
    assert!(
        d.join("memory/node/kubepods/podmine").exists(),
        "made by this process for a running pod"
    );
}

#[test]
fn a_pod_cgroup_whose_removal_failed_is_swept_once_it_can_go() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let cgroups = PodCgroups::start(fake_v1(d), "/node", allocatable(), -1).unwrap();
    cgroups.ensure(&best_effort("x")).unwrap();
    // The last hierarchy's cgroup cannot be removed (a stand-in for EBUSY): the others go.
    let stuck = d.join("systemd/node/kubepods/besteffort/podx");
    std::fs::remove_dir(&stuck).unwrap();
    std::fs::write(&stuck, "").unwrap();
    assert!(cgroups.remove("x").is_err());
    assert!(!d.join("memory/node/kubepods/besteffort/podx").exists());
    // Once it can go, the sweep (the pod is no longer live) removes it.
    std::fs::remove_file(&stuck).unwrap();
    std::fs::create_dir(&stuck).unwrap();
    assert_eq!(cgroups.remove_orphans(&HashSet::new()), ["x"]);
    assert!(!stuck.exists());
}

#[test]
fn a_missing_cgroup_root_is_refused_as_upstream() {
    let tmp = tempfile::tempdir().unwrap();
    let err = PodCgroups::start(fake_v1(tmp.path()), "/elsewhere", allocatable(), -1)
        .err()
        .unwrap();
    assert_eq!(
        err.to_string(),
        "invalid configuration: cgroup-root \"/elsewhere\" doesn't exist"
    );
}

#[test]
fn v2_pod_cgroups_get_weights_cpu_max_and_delegated_controllers() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    std::fs::write(
        root.join("cgroup.controllers"),
        "cpuset cpu io memory hugetlb pids rdma\n",
    )
    .unwrap();
    std::fs::create_dir(root.join("node")).unwrap();
    let fs = CgroupFs::V2 { root: root.clone() };
    let cgroups = PodCgroups::start(fs, "/node", allocatable(), 50).unwrap();
    assert_eq!(
        read(root.join("node/kubepods/cpu.weight")),
        cpu_shares_to_weight(2048).to_string()
    );
    assert_eq!(
        read(root.join("node/kubepods/memory.max")),
        (1u64 << 30).to_string()
    );
    cgroups.ensure(&guaranteed("g")).unwrap();
    let pod = root.join("node/kubepods/podg");
    assert_eq!(
        read(pod.join("cpu.weight")),
        cpu_shares_to_weight(512).to_string()
    );
    assert_eq!(read(pod.join("cpu.max")), "50000 100000");
    assert_eq!(read(pod.join("memory.max")), (64u64 << 20).to_string());
    assert_eq!(read(pod.join("pids.max")), "50");
    cgroups.ensure(&burstable("b", "100m")).unwrap();
    assert!(
        !root.join("node/kubepods/burstable/podb/cpu.max").exists(),
        "no CPU limit: no quota"
    );
    for level in ["", "node", "node/kubepods", "node/kubepods/burstable"] {
        assert_eq!(
            read(root.join(level).join("cgroup.subtree_control")),
            "+cpuset +cpu +io +memory +hugetlb +pids",
            "{level}"
        );
    }
    cgroups.remove("g").unwrap();
    assert!(!pod.exists());
}

#[test]
fn the_sandbox_goes_in_the_pod_cgroup_under_its_qos_class() {
    let node = crate::spec::NodeContext {
        cgroup_parent: "/node/kubepods".into(),
        cgroups_per_qos: true,
        ..Default::default()
    };
    let parent = |p: &Pod| {
        crate::spec::sandbox_config(p, 0, &node)
            .linux
            .unwrap()
            .cgroup_parent
    };
    assert_eq!(parent(&guaranteed("g")), "/node/kubepods/podg");
    assert_eq!(
        parent(&burstable("b", "1")),
        "/node/kubepods/burstable/podb"
    );
    assert_eq!(parent(&best_effort("e")), "/node/kubepods/besteffort/pode");
    let flat = crate::spec::NodeContext {
        cgroups_per_qos: false,
        ..node.clone()
    };
    let config = crate::spec::sandbox_config(&guaranteed("g"), 0, &flat);
    assert_eq!(config.linux.unwrap().cgroup_parent, "/node/kubepods");
}

fn guaranteed_sized(uid: &str, cpu: &str, memory: &str) -> Pod {
    let r = json!({"cpu": cpu, "memory": memory});
    pod(
        uid,
        json!({"containers": [{"name": "a", "resources": res(r.clone(), r)}]}),
    )
}

#[test]
fn during_a_resize_the_pod_cgroup_covers_both_sizes_then_settles_on_the_new_one() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let cgroups = PodCgroups::start(fake_v1(d), "/node", allocatable(), 0).unwrap();
    let cpu = d.join("cpu,cpuacct/node/kubepods/podr");
    let memory = d.join("memory/node/kubepods/podr/memory.limit_in_bytes");
    let before = guaranteed_sized("r", "500m", "128Mi");
    cgroups.ensure(&before).unwrap();
    assert_eq!(read(cpu.join("cpu.cfs_quota_us")), "50000");

    // CPU down, memory up: while the containers still run at the old size, the pod
    // cgroup holds the larger of each.
    let after = guaranteed_sized("r", "200m", "256Mi");
    cgroups.ensure_covering(&after, Some(&before)).unwrap();
    assert_eq!(read(cpu.join("cpu.cfs_quota_us")), "50000");
    assert_eq!(read(cpu.join("cpu.shares")), "512");
    assert_eq!(read(memory.clone()), (256u64 << 20).to_string());

    // Once they follow, it settles on the new size.
    cgroups.ensure(&after).unwrap();
    assert_eq!(read(cpu.join("cpu.cfs_quota_us")), "20000");
    assert_eq!(read(cpu.join("cpu.shares")), "204");
    assert_eq!(read(memory), (256u64 << 20).to_string());
}

#[test]
fn covering_takes_the_larger_setting_and_unlimited_wins() {
    let a = ResourceConfig {
        cpu_shares: Some(100),
        cpu_quota: Some(20_000),
        cpu_period: Some(100_000),
        memory: Some(1 << 20),
        pids_limit: Some(50),
    };
    let b = ResourceConfig {
        cpu_shares: Some(300),
        cpu_quota: Some(-1),
        cpu_period: Some(100_000),
        memory: Some(-1),
        pids_limit: Some(10),
    };
    let c = a.covering(&b);
    assert_eq!(c.cpu_shares, Some(300));
    assert_eq!(c.cpu_quota, Some(-1));
    assert_eq!(c.memory, Some(-1));
    assert_eq!(c.pids_limit, Some(50));
    assert_eq!(a.covering(&a), a);
}
