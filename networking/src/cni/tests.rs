//! CNI execution against fake plugins: shell scripts that record their environment and
//! stdin and print what the test tells them to.

use super::*;
use base64::Engine as _;
use serde_json::json;
use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;

struct Fake {
    dir: tempfile::TempDir,
    cni: Cni,
}

/// One recorded plugin run.
#[derive(Debug)]
struct Call {
    plugin: String,
    command: String,
    env: HashMap<String, String>,
    stdin: Value,
}

impl Fake {
    fn new() -> Fake {
        let dir = tempfile::tempdir().expect("tempdir");
        for sub in ["conf", "bin", "bin2", "cache", "rec"] {
            fs::create_dir(dir.path().join(sub)).expect("mkdir");
        }
        let cni = Cni::new(
            dir.path().join("conf"),
            vec![dir.path().join("bin"), dir.path().join("bin2")],
            dir.path().join("cache"),
        );
        Fake { dir, cni }
    }

    fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    fn conflist(&self, doc: Value) {
        fs::write(self.path("conf").join("10-test.conflist"), doc.to_string()).expect("write");
    }

    /// A plugin whose behaviour per CNI_COMMAND is the shell `case` arms given.
    fn plugin(&self, name: &str, arms: &str) {
        let script = format!(
            r#"#!/bin/sh
rec='{rec}'
n=$(cat "$rec/seq" 2>/dev/null || echo 0)
n=$((n+1))
echo "$n" > "$rec/seq"
p="$rec/$(printf %03d "$n")-{name}-$CNI_COMMAND"
env | grep '^CNI_' > "$p.env"
cat > "$p.stdin"
case "$CNI_COMMAND" in
{arms}
esac
exit 0
"#,
            rec = self.path("rec").display(),
        );
        let path = self.path("bin").join(name);
        fs::write(&path, script).expect("write plugin");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    /// A plugin whose ADD prints `result` and whose DEL and CHECK succeed.
    fn ok_plugin(&self, name: &str, result: &Value) {
        self.plugin(name, &format!("ADD) echo '{result}' ;;"));
    }

    fn calls(&self) -> Vec<Call> {
        let mut names: Vec<String> = fs::read_dir(self.path("rec"))
            .expect("rec")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter_map(|n| n.strip_suffix(".env").map(str::to_string))
            .collect();
        names.sort();
        names
            .iter()
            .map(|n| {
                let mut parts = n.splitn(2, '-');
                let _seq = parts.next();
                let rest = parts.next().expect("name-command");
                let (plugin, command) = rest.rsplit_once('-').expect("command");
                let env = fs::read_to_string(self.path("rec").join(format!("{n}.env")))
                    .expect("env")
                    .lines()
                    .filter_map(|l| l.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                let stdin = fs::read(self.path("rec").join(format!("{n}.stdin"))).expect("stdin");
                Call {
                    plugin: plugin.to_string(),
                    command: command.to_string(),
                    env,
                    stdin: serde_json::from_slice(&stdin).expect("stdin is JSON"),
                }
            })
            .collect()
    }

    fn steps(&self) -> Vec<String> {
        self.calls()
            .iter()
            .map(|c| format!("{} {}", c.command, c.plugin))
            .collect()
    }

    fn cache_file(&self, network: &str) -> PathBuf {
        self.path("cache")
            .join("results")
            .join(format!("{network}-sb1-eth0"))
    }
}

fn result_with_ip(ip: &str) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "sandbox": "/run/netns/x"}],
        "ips": [{"address": ip, "interface": 0}]
    })
}

fn pod() -> Attachment {
    Attachment::for_pod("sb1", "/run/gantry/pods/sb1/net", "default", "web", "uid-1")
}

#[test]
fn add_passes_the_cni_environment_and_config_like_libcni() {
    let f = Fake::new();
    f.conflist(json!({"cniVersion": "1.0.0", "name": "podnet",
        "plugins": [{"type": "p1", "cniVersion": "9.9.9", "bridge": "br0"}]}));
    f.ok_plugin("p1", &result_with_ip("198.18.250.7/24"));

    let result = f.cni.add(&pod()).expect("add");
    assert_eq!(result.primary_ip(), "198.18.250.7".parse().ok());

    let calls = f.calls();
    assert_eq!(calls.len(), 1);
    let env = &calls[0].env;
    assert_eq!(env["CNI_COMMAND"], "ADD");
    assert_eq!(env["CNI_CONTAINERID"], "sb1");
    assert_eq!(env["CNI_NETNS"], "/run/gantry/pods/sb1/net");
    assert_eq!(env["CNI_IFNAME"], "eth0");
    assert_eq!(
        env["CNI_ARGS"],
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;\
         K8S_POD_INFRA_CONTAINER_ID=sb1;K8S_POD_UID=uid-1"
    );
    assert_eq!(
        env["CNI_PATH"],
        format!("{}:{}", f.path("bin").display(), f.path("bin2").display())
    );
    let stdin = &calls[0].stdin;
    assert_eq!(stdin["name"], "podnet");
    assert_eq!(stdin["cniVersion"], "1.0.0", "the list's version wins");
    assert_eq!(stdin["bridge"], "br0", "the plugin's own keys stay");
    assert!(stdin.get("prevResult").is_none());
    // portmap's capability is not declared: no runtimeConfig at all.
    assert!(stdin.get("runtimeConfig").is_none());
}

#[test]
fn each_plugin_gets_the_previous_result_and_add_returns_the_last() {
    let f = Fake::new();
    f.conflist(json!({"cniVersion": "1.0.0", "name": "podnet",
        "plugins": [{"type": "first"}, {"type": "second"}, {"type": "third"}]}));
    let r1 = result_with_ip("10.1.0.2/16");
    let r2 = result_with_ip("10.2.0.2/16");
    let r3 = result_with_ip("10.3.0.2/16");
    f.ok_plugin("first", &r1);
    f.ok_plugin("second", &r2);
    f.ok_plugin("third", &r3);

    let result = f.cni.add(&pod()).expect("add");
    assert_eq!(result.raw(), &r3);
    let calls = f.calls();
    assert_eq!(f.steps(), ["ADD first", "ADD second", "ADD third"]);
    assert!(calls[0].stdin.get("prevResult").is_none());
    assert_eq!(calls[1].stdin["prevResult"], r1);
    assert_eq!(calls[2].stdin["prevResult"], r2);
}

#[test]
fn capability_args_go_only_to_plugins_that_declare_them() {
    let f = Fake::new();
    f.conflist(json!({"cniVersion": "1.0.0", "name": "podnet", "plugins": [
        {"type": "ipam", "runtimeConfig": {"stale": true}},
        {"type": "ports", "capabilities": {"portMappings": true}},
        {"type": "shaper", "capabilities": {"bandwidth": true, "portMappings": false}}
    ]}));
    let r = result_with_ip("10.0.0.2/8");
    for p in ["ipam", "ports", "shaper"] {
        f.ok_plugin(p, &r);
    }
    let mut a = pod();
    a.port_mappings = vec![
        PortMapping {
            host_port: 8080,
            container_port: 80,
            protocol: Protocol::Tcp,
            host_ip: String::new(),
        },
        PortMapping {
            host_port: 5353,
            container_port: 53,
            protocol: Protocol::Udp,
            host_ip: "127.0.0.1".into(),
        },
        // Not published: dropped, as containerd does.
        PortMapping {
            host_port: 0,
            container_port: 9000,
            protocol: Protocol::Sctp,
            host_ip: String::new(),
        },
    ];
    a.bandwidth = Some(Bandwidth {
        ingress_rate: 1_000_000,
        ingress_burst: 2_000_000,
        egress_rate: 3_000_000,
        egress_burst: 4_000_000,
    });
    f.cni.add(&a).expect("add");

    let calls = f.calls();
    assert_eq!(
        calls[0].stdin["runtimeConfig"],
        json!({"stale": true}),
        "a plugin declaring nothing gets nothing injected"
    );
    assert_eq!(
        calls[1].stdin["runtimeConfig"],
        json!({"portMappings": [
            {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
            {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "127.0.0.1"}
        ]})
    );
    assert_eq!(
        calls[2].stdin["runtimeConfig"],
        json!({"bandwidth": {"ingressRate": 1_000_000, "ingressBurst": 2_000_000,
            "egressRate": 3_000_000, "egressBurst": 4_000_000}})
    );
}

#[test]
fn a_failing_plugin_rolls_back_the_whole_chain_and_reports_its_cni_error() {
    let f = Fake::new();
    f.conflist(json!({"cniVersion": "1.0.0", "name": "podnet",
        "plugins": [{"type": "good"}, {"type": "bad"}]}));
    let r1 = result_with_ip("10.1.0.2/16");
    f.ok_plugin("good", &r1);
    f.plugin(
        "bad",
        r#"ADD) echo '{"cniVersion":"1.0.0","code":11,"msg":"try again later","details":"lock busy"}'; exit 1 ;;"#,
    );

    let err = f.cni.add(&pod()).expect_err("add fails");
    let CniError::AddRolledBack { failed } = &err else {
        panic!("not rolled back: {err}");
    };
    let CniError::Plugin {
        command,
        plugin,
        failure,
        ..
    } = failed.as_ref()
    else {
        panic!("not a plugin error: {failed}");
    };
    assert_eq!((*command, plugin.as_str()), ("ADD", "bad"));
    assert!(matches!(
        failure.as_ref(),
        PluginFailure::Error { code: Some(11), .. }
    ));
    assert_eq!(
        err.to_string(),
        "CNI ADD of network \"podnet\" for container sb1: plugin \"bad\": error code 11: \
         try again later (lock busy); rolled back with a DEL of the whole network"
    );
    assert_eq!(f.steps(), ["ADD good", "ADD bad", "DEL bad", "DEL good"]);
    let calls = f.calls();
    assert_eq!(calls[2].env["CNI_COMMAND"], "DEL");
    assert_eq!(
        calls[3].stdin["prevResult"], r1,
        "rollback passes what was added"
    );
    assert!(
        !f.cache_file("podnet").exists(),
        "no cache after a rollback"
    );
}

#[test]
fn a_failed_rollback_keeps_the_cache_for_a_later_del() {
    let f = Fake::new();
    f.conflist(json!({"cniVersion": "1.0.0", "name": "podnet",
        "plugins": [{"type": "good"}, {"type": "bad"}]}));
    // DEL fails while the marker file exists.
    let marker = f.path("del-fails");
    fs::write(&marker, "").expect("marker");
    f.plugin(
        "good",
        &format!(
            "ADD) echo '{}' ;;\nDEL) [ -e '{}' ] && exit 1 ;;",
            result_with_ip("10.1.0.2/16"),
            marker.display()
        ),
    );
    f.plugin("bad", "ADD) exit 3 ;;");

    let err = f.cni.add(&pod()).expect_err("add fails");
    assert!(matches!(err, CniError::AddRollbackFailed { .. }), "{err}");
    assert!(err.to_string().contains("exit status: 3"), "{err}");
    assert!(f.cache_file("podnet").exists());

    fs::remove_file(&marker).expect("rm marker");
    f.cni.del(&pod()).expect("later del");
    assert!(!f.cache_file("podnet").exists());
}

#[test]
fn add_caches_before_returning_and_del_uses_the_cached_config_and_result() {
    let f = Fake::new();
    f.conflist(json!({"cniVersion": "1.0.0", "name": "podnet",
        "plugins": [{"type": "p1", "capabilities": {"portMappings": true}}]}));
    let r = result_with_ip("10.9.0.2/16");
    f.ok_plugin("p1", &r);
    let result = f.cni.add(&pod()).expect("add");

    // The cache is libcni's record: kind, ids, config as base64, the final result.
    let cache: Value =
        serde_json::from_slice(&fs::read(f.cache_file("podnet")).expect("cached")).expect("json");
    assert_eq!(cache["kind"], "cniCacheV1");
    assert_eq!(cache["containerId"], "sb1");
    assert_eq!(cache["ifName"], "eth0");
    assert_eq!(cache["networkName"], "podnet");
    assert_eq!(cache["result"], r);
    assert_eq!(cache["cniArgs"][0], json!(["IgnoreUnknown", "1"]));
    let config = base64::engine::general_purpose::STANDARD
        .decode(cache["config"].as_str().expect("config"))
        .expect("base64");
    let config: Value = serde_json::from_slice(&config).expect("config json");
    assert_eq!(config["plugins"][0]["type"], "p1");
    assert_eq!(f.cni.cached_result(&pod()).expect("read"), Some(result));

    // The node's config changes (another network) before the pod goes away.
    f.conflist(json!({"cniVersion": "1.0.0", "name": "othernet", "plugins": [{"type": "p2"}]}));
    f.ok_plugin("p2", &r);
    // DEL passes the same runtime args as ADD even if the caller has lost them.
    f.cni
        .del(&Attachment::new("sb1", "/gone/netns"))
        .expect("del");
    let calls = f.calls();
    assert_eq!(f.steps(), ["ADD p1", "DEL p1"]);
    assert_eq!(calls[1].stdin["prevResult"], r);
    assert_eq!(calls[1].stdin["name"], "podnet");
    assert_eq!(calls[1].stdin["runtimeConfig"], json!({"portMappings": []}));
    assert_eq!(calls[1].env["CNI_NETNS"], "/gone/netns");
    assert!(calls[1].env["CNI_ARGS"].contains("K8S_POD_NAME=web"));
    assert!(!f.cache_file("podnet").exists());
    assert_eq!(f.cni.cached_result(&pod()).expect("read"), None);
}

#[test]
fn del_without_cache_runs_the_current_chain_without_prev_result_and_repeats_fine() {
    let f = Fake::new();
    f.conflist(json!({"cniVersion": "1.0.0", "name": "podnet",
        "plugins": [{"type": "p1"}, {"type": "p2"}]}));
    f.ok_plugin("p1", &json!({}));
    f.ok_plugin("p2", &json!({}));
    f.cni.del(&pod()).expect("del");
    f.cni.del(&pod()).expect("del again");
    assert_eq!(f.steps(), ["DEL p2", "DEL p1", "DEL p2", "DEL p1"]);
    assert!(f
        .calls()
        .iter()
        .all(|c| c.stdin.get("prevResult").is_none()));
}

#[test]
fn an_unreadable_cache_entry_does_not_block_del_and_is_removed() {
    let f = Fake::new();
    f.conflist(json!({"cniVersion": "1.0.0", "name": "podnet", "plugins": [{"type": "p1"}]}));
    f.ok_plugin("p1", &json!({}));
    fs::create_dir_all(f.path("cache").join("results")).expect("mkdir");
    fs::write(f.cache_file("podnet"), "{ truncated").expect("write");
    f.cni.del(&pod()).expect("del");
    assert_eq!(f.steps(), ["DEL p1"]);
    assert!(!f.cache_file("podnet").exists());
}

#[test]
fn spec_0_3_1_lists_get_no_prev_result_on_del() {
    let f = Fake::new();
    f.conflist(json!({"cniVersion": "0.3.1", "name": "oldnet", "plugins": [{"type": "p1"}]}));
    f.ok_plugin(
        "p1",
        &json!({"cniVersion": "0.3.1", "interfaces": [{"name": "eth0", "sandbox": "/x"}],
            "ips": [{"version": "4", "address": "10.0.0.5/24", "gateway": "10.0.0.1", "interface": 0}]}),
    );
    let r = f.cni.add(&pod()).expect("add");
    assert_eq!(
        r.ips(),
        vec!["10.0.0.5".parse::<std::net::IpAddr>().expect("ip")]
    );
    f.cni.del(&pod()).expect("del");
    let calls = f.calls();
    assert_eq!(calls[1].command, "DEL");
    assert!(calls[1].stdin.get("prevResult").is_none());
    let err = f.cni.check(&pod()).expect_err("no CHECK before 0.4.0");
    assert!(matches!(err, CniError::CheckUnsupported { .. }), "{err}");
}

#[test]
fn check_sends_the_cached_result_and_needs_an_add_first() {
    let f = Fake::new();
    f.conflist(json!({"cniVersion": "1.0.0", "name": "podnet", "plugins": [{"type": "p1"}]}));
    let r = result_with_ip("10.0.0.2/8");
    f.ok_plugin("p1", &r);
    let err = f.cni.check(&pod()).expect_err("nothing added");
    assert!(matches!(err, CniError::NotAttached { .. }), "{err}");
    f.cni.add(&pod()).expect("add");
    f.cni.check(&pod()).expect("check");
    let calls = f.calls();
    assert_eq!(f.steps(), ["ADD p1", "CHECK p1"]);
    assert_eq!(calls[1].stdin["prevResult"], r);
}

#[test]
fn missing_plugin_and_bad_result_are_named() {
    let f = Fake::new();
    f.conflist(json!({"cniVersion": "1.0.0", "name": "podnet", "plugins": [{"type": "nope"}]}));
    let err = f.cni.add(&pod()).expect_err("missing");
    let text = err.to_string();
    assert!(text.contains("plugin \"nope\" is not in"), "{text}");
    assert!(text.contains("container sb1"), "{text}");

    f.conflist(json!({"cniVersion": "1.0.0", "name": "podnet", "plugins": [{"type": "p1"}]}));
    f.plugin("p1", "ADD) echo 'this is not json' ;;");
    let err = f.cni.add(&pod()).expect_err("bad result");
    assert!(err.to_string().contains("invalid result"), "{err}");
    assert_eq!(f.steps(), ["ADD p1", "DEL p1"]);
}

#[test]
fn a_hanging_plugin_is_killed_and_rolled_back() {
    let f = Fake::new();
    f.conflist(json!({"cniVersion": "1.0.0", "name": "podnet", "plugins": [{"type": "slow"}]}));
    f.plugin("slow", "ADD) sleep 30 ;;");
    let cni = Cni {
        timeout: Duration::from_millis(300),
        ..f.cni.clone()
    };
    let start = std::time::Instant::now();
    let err = cni.add(&pod()).expect_err("timeout");
    assert!(start.elapsed() < Duration::from_secs(10));
    assert!(err.to_string().contains("no answer within 300ms"), "{err}");
    assert!(matches!(err, CniError::AddRolledBack { .. }), "{err}");
}

#[test]
fn invalid_attachments_run_no_plugin() {
    let f = Fake::new();
    f.conflist(json!({"cniVersion": "1.0.0", "name": "podnet", "plugins": [{"type": "p1"}]}));
    f.ok_plugin("p1", &json!({}));
    let mut bad_id = pod();
    bad_id.container_id = "../etc".into();
    let mut bad_if = pod();
    bad_if.ifname = "a-very-long-ifname".into();
    for a in [bad_id, bad_if] {
        let err = f.cni.add(&a).expect_err("invalid");
        assert!(matches!(err, CniError::InvalidAttachment { .. }), "{err}");
        assert!(f.cni.del(&a).is_err());
    }
    assert!(f.steps().is_empty());
}

#[test]
fn versions_compare_numerically() {
    assert!(version_at_least("1.0.0", (0, 4, 0)));
    assert!(version_at_least("0.10.0", (0, 4, 0)));
    assert!(version_at_least("0.4", (0, 4, 0)));
    assert!(!version_at_least("0.3.1", (0, 4, 0)));
    assert!(!version_at_least("garbage", (0, 4, 0)));
}
