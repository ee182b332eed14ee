//! Prometheus text exposition: /metrics shows the process's default registry (the
//! kubelet's, the pod manager's and the embedded CRI's metrics, and process_*), with
//! kubelet_running_pods and kubelet_running_containers set from the runtime at scrape
//! time; /metrics/resource (what metrics-server and `kubectl top` read) comes from
//! the summary.

use std::collections::BTreeMap;
use std::fmt::Write;

use gantry_cri::api;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::Response;
use time::OffsetDateTime;

use super::reply::{full, ApiError, Body};
use super::summary::{FsStats, PvcReference, Summary, SummaryProvider, VolumeStats};
use super::Backend;

const CONTENT: &str = "text/plain; version=0.0.4; charset=utf-8";

pub fn response(text: String) -> Response<Body> {
    let mut resp = Response::new(full(text));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(CONTENT));
    resp
}

/// The state label upstream gives a container (kubecontainer.State).
fn state_label(state: i32) -> &'static str {
    match api::ContainerState::try_from(state) {
        Ok(api::ContainerState::ContainerCreated) => "created",
        Ok(api::ContainerState::ContainerRunning) => "running",
        Ok(api::ContainerState::ContainerExited) => "exited",
        _ => "unknown",
    }
}

pub async fn kubelet_metrics(
    backend: &Backend,
    summary: &SummaryProvider,
) -> Result<String, ApiError> {
    let cri = backend.cri_calls();
    let sandboxes = cri
        .list_pod_sandbox(None)
        .await
        .map_err(|e| ApiError::from_cri("list pod sandboxes", &e))?;
    let containers = cri
        .list_containers(None)
        .await
        .map_err(|e| ApiError::from_cri("list containers", &e))?;
    set_running(crate::metrics::global(), &sandboxes, &containers);
    let volumes: Vec<VolumeStats> = (backend.pods)()
        .iter()
        .filter_map(|p| Some(summary.volumes(backend, p, p.metadata.uid.as_deref()?)))
        .flatten()
        .collect();
    let mut text = gantry_cri::metrics::render_default();
    text.push_str(&render_volume_stats(&volumes));
    Ok(text)
}

/// Upstream's kubelet_volume_stats_* gauges (its volume stats collector): one series
/// per PVC, labelled by the claim's namespace and name, once its usage has been
/// walked. Volumes without a claim have none.
fn render_volume_stats(volumes: &[VolumeStats]) -> String {
    type Field = fn(&FsStats) -> Option<u64>;
    let families: [(&str, &str, Field); 6] = [
        (
            "kubelet_volume_stats_available_bytes",
            "Number of available bytes in the volume",
            |f| f.available_bytes,
        ),
        (
            "kubelet_volume_stats_capacity_bytes",
            "Capacity in bytes of the volume",
            |f| f.capacity_bytes,
        ),
        (
            "kubelet_volume_stats_inodes",
            "Maximum number of inodes in the volume",
            |f| f.inodes,
        ),
        (
            "kubelet_volume_stats_inodes_free",
            "Number of free inodes in the volume",
            |f| f.inodes_free,
        ),
        (
            "kubelet_volume_stats_inodes_used",
            "Number of used inodes in the volume",
            |f| f.inodes_used,
        ),
        (
            "kubelet_volume_stats_used_bytes",
            "Number of used bytes in the volume",
            |f| f.used_bytes,
        ),
    ];
    let mut seen = std::collections::BTreeSet::new();
    let claims: Vec<(&PvcReference, &FsStats)> = volumes
        .iter()
        .filter_map(|v| Some((v.pvc_ref.as_ref()?, &v.fs)))
        .filter(|(_, fs)| fs.used_bytes.is_some() && fs.inodes_used.is_some())
        .filter(|(c, _)| seen.insert((c.namespace.clone(), c.name.clone())))
        .collect();
    let mut out = String::new();
    if claims.is_empty() {
        return out;
    }
    for (name, help, field) in families {
        let _ = writeln!(out, "# HELP {name} [ALPHA] {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for (claim, fs) in &claims {
            if let Some(v) = field(fs) {
                let _ = writeln!(
                    out,
                    "{name}{{namespace=\"{}\",persistentvolumeclaim=\"{}\"}} {v}",
                    escape(&claim.namespace),
                    escape(&claim.name)
                );
            }
        }
    }
    out
}

/// Pods count once however many ready sandboxes they have (by UID), as upstream
/// counts pods "that have a running pod sandbox"; containers by state, every state
/// shown.
fn set_running(
    m: &crate::metrics::KubeletMetrics,
    sandboxes: &[api::PodSandbox],
    containers: &[api::Container],
) {
    let ready = api::PodSandboxState::SandboxReady as i32;
    let running_pods: std::collections::BTreeSet<String> = sandboxes
        .iter()
        .filter(|s| s.state == ready)
        .map(|s| {
            s.metadata
                .as_ref()
                .map_or_else(|| s.id.clone(), |m| m.uid.clone())
        })
        .collect();
    let mut by_state: BTreeMap<&str, u64> = ["created", "exited", "running", "unknown"]
        .into_iter()
        .map(|s| (s, 0))
        .collect();
    for c in containers {
        *by_state.entry(state_label(c.state)).or_default() += 1;
    }
    m.running_pods.set(running_pods.len() as f64);
    for (state, n) in by_state {
        m.running_containers
            .with_label_values(&[state])
            .set(n as f64);
    }
}

/// Label values escaped as the text format requires.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn parse_ms(t: &str) -> Option<i128> {
    OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp_nanos() / 1_000_000)
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64, time: &str) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        let l: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect();
        out.push_str(&l.join(","));
        out.push('}');
    }
    let _ = write!(out, " {value}");
    if let Some(ms) = parse_ms(time) {
        let _ = write!(out, " {ms}");
    }
    out.push('\n');
}

/// Upstream's resource metrics (all STABLE), from the summary's CPU and working-set
/// numbers; series the summary has no number for are left out.
pub fn render_resource(s: &Summary) -> String {
    let mut cpu_c = String::new();
    let mut mem_c = String::new();
    let mut start_c = String::new();
    let mut cpu_p = String::new();
    let mut mem_p = String::new();
    for p in &s.pods {
        let (ns, pod) = (p.pod_ref.namespace.as_str(), p.pod_ref.name.as_str());
        for c in &p.containers {
            let labels = [
                ("container", c.name.as_str()),
                ("namespace", ns),
                ("pod", pod),
            ];
            if let Some(cpu) = &c.cpu {
                if let Some(v) = cpu.usage_core_nano_seconds {
                    sample(
                        &mut cpu_c,
                        "container_cpu_usage_seconds_total",
                        &labels,
                        v as f64 / 1e9,
                        &cpu.time,
                    );
                }
            }
            if let Some(m) = &c.memory {
                if let Some(v) = m.working_set_bytes {
                    sample(
                        &mut mem_c,
                        "container_memory_working_set_bytes",
                        &labels,
                        v as f64,
                        &m.time,
                    );
                }
            }
            if let Some(start) = c.start_time.as_deref().and_then(parse_ms) {
                let _ = writeln!(
                    start_c,
                    "container_start_time_seconds{{container=\"{}\",namespace=\"{}\",pod=\"{}\"}} {}",
                    escape(&c.name),
                    escape(ns),
                    escape(pod),
                    start as f64 / 1e3
                );
            }
        }
        let labels = [("namespace", ns), ("pod", pod)];
        if let Some(cpu) = &p.cpu {
            if let Some(v) = cpu.usage_core_nano_seconds {
                sample(
                    &mut cpu_p,
                    "pod_cpu_usage_seconds_total",
                    &labels,
                    v as f64 / 1e9,
                    &cpu.time,
                );
            }
        }
        if let Some(m) = &p.memory {
            if let Some(v) = m.working_set_bytes {
                sample(
                    &mut mem_p,
                    "pod_memory_working_set_bytes",
                    &labels,
                    v as f64,
                    &m.time,
                );
            }
        }
    }
    let mut out = String::new();
    let family = |out: &mut String, name: &str, kind: &str, help: &str, body: &str| {
        let _ = writeln!(out, "# HELP {name} [STABLE] {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        out.push_str(body);
    };
    family(
        &mut out,
        "container_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the container in core-seconds",
        &cpu_c,
    );
    family(
        &mut out,
        "container_memory_working_set_bytes",
        "gauge",
        "Current working set of the container in bytes",
        &mem_c,
    );
    family(
        &mut out,
        "container_start_time_seconds",
        "gauge",
        "Start time of the container since unix epoch in seconds",
        &start_c,
    );
    let mut node_cpu = String::new();
    if let Some(cpu) = &s.node.cpu {
        if let Some(v) = cpu.usage_core_nano_seconds {
            sample(
                &mut node_cpu,
                "node_cpu_usage_seconds_total",
                &[],
                v as f64 / 1e9,
                &cpu.time,
            );
        }
    }
    family(
        &mut out,
        "node_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the node in core-seconds",
        &node_cpu,
    );
    let mut node_mem = String::new();
    if let Some(m) = &s.node.memory {
        if let Some(v) = m.working_set_bytes {
            sample(
                &mut node_mem,
                "node_memory_working_set_bytes",
                &[],
                v as f64,
                &m.time,
            );
        }
    }
    family(
        &mut out,
        "node_memory_working_set_bytes",
        "gauge",
        "Current working set of the node in bytes",
        &node_mem,
    );
    family(
        &mut out,
        "pod_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the pod in core-seconds",
        &cpu_p,
    );
    family(
        &mut out,
        "pod_memory_working_set_bytes",
        "gauge",
        "Current working set of the pod in bytes",
        &mem_p,
    );
    family(
        &mut out,
        "resource_scrape_error",
        "gauge",
        "1 if there was an error while getting container metrics, 0 otherwise",
        "resource_scrape_error 0\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox(uid: &str, ready: bool) -> api::PodSandbox {
        api::PodSandbox {
            id: format!("sb-{uid}"),
            metadata: Some(api::PodSandboxMetadata {
                uid: uid.into(),
                ..Default::default()
            }),
            state: if ready {
                api::PodSandboxState::SandboxReady
            } else {
                api::PodSandboxState::SandboxNotready
            } as i32,
            ..Default::default()
        }
    }

    fn container(state: api::ContainerState) -> api::Container {
        api::Container {
            state: state as i32,
            ..Default::default()
        }
    }

    #[test]
    fn running_pods_and_containers_by_state() {
        use api::ContainerState::*;
        let registry = prometheus::Registry::new();
        let m = crate::metrics::KubeletMetrics::new(&registry).unwrap();
        set_running(
            &m,
            &[sandbox("a", true), sandbox("b", true), sandbox("c", false)],
            &[
                container(ContainerRunning),
                container(ContainerRunning),
                container(ContainerExited),
            ],
        );
        let mut buf = Vec::new();
        prometheus::Encoder::encode(
            &prometheus::TextEncoder::new(),
            &registry.gather(),
            &mut buf,
        )
        .unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert!(text.contains("\nkubelet_running_pods 2\n"), "{text}");
        assert!(text.contains("kubelet_running_containers{container_state=\"running\"} 2\n"));
        assert!(text.contains("kubelet_running_containers{container_state=\"exited\"} 1\n"));
        assert!(text.contains("kubelet_running_containers{container_state=\"created\"} 0\n"));
        assert!(text.contains("# TYPE kubelet_running_pods gauge\n"));
        assert!(text.contains(
            "# HELP kubelet_running_pods [ALPHA] Number of pods that have a running pod sandbox\n"
        ));
    }

    #[test]
    fn resource_metrics_come_from_the_summary() {
        use super::super::summary::*;
        let t = "2024-05-01T10:00:00Z".to_string();
        let s = Summary {
            node: NodeStats {
                node_name: "n".into(),
                start_time: None,
                cpu: Some(CpuStats {
                    time: t.clone(),
                    usage_nano_cores: None,
                    usage_core_nano_seconds: Some(2_500_000_000),
                }),
                memory: None,
                fs: None,
                runtime: None,
            },
            pods: vec![PodStats {
                pod_ref: PodReference {
                    name: "web".into(),
                    namespace: "ns".into(),
                    uid: "u".into(),
                },
                start_time: None,
                containers: vec![ContainerStats {
                    name: "app".into(),
                    start_time: Some(t.clone()),
                    cpu: None,
                    memory: Some(MemoryStats {
                        time: t.clone(),
                        working_set_bytes: Some(1024),
                        ..Default::default()
                    }),
                    rootfs: None,
                }],
                cpu: None,
                memory: None,
                network: None,
                process_stats: None,
                volumes: Vec::new(),
            }],
        };
        let text = render_resource(&s);
        assert!(
            text.contains("\nnode_cpu_usage_seconds_total 2.5 1714557600000\n"),
            "{text}"
        );
        assert!(text.contains("container_memory_working_set_bytes{container=\"app\",namespace=\"ns\",pod=\"web\"} 1024 1714557600000\n"), "{text}");
        assert!(text.contains("container_start_time_seconds{container=\"app\",namespace=\"ns\",pod=\"web\"} 1714557600\n"), "{text}");
        // No number, no series: the container's CPU and the node's memory are absent.
        assert!(
            !text.contains("container_cpu_usage_seconds_total{"),
            "{text}"
        );
        assert!(!text.contains("\nnode_memory_working_set_bytes "), "{text}");
        assert!(text.contains("\nresource_scrape_error 0\n"));
    }

    #[test]
    fn volume_stats_cover_each_walked_claim_once() {
        use super::super::summary::*;
        let volume = |name: &str, claim: Option<&str>, walked: bool| VolumeStats {
            fs: FsStats {
                time: "t".into(),
                available_bytes: Some(700),
                capacity_bytes: Some(1000),
                used_bytes: walked.then_some(300),
                inodes_free: Some(90),
                inodes: Some(100),
                inodes_used: walked.then_some(10),
            },
            name: name.into(),
            pvc_ref: claim.map(|c| PvcReference {
                name: c.into(),
                namespace: "ns".into(),
            }),
        };
        let text = render_volume_stats(&[
            volume("data", Some("claim-a"), true),
            volume("again", Some("claim-a"), true),
            volume("scratch", None, true),
            volume("fresh", Some("claim-b"), false),
        ]);
        assert!(
            text.contains("# TYPE kubelet_volume_stats_used_bytes gauge\n"),
            "{text}"
        );
        assert!(text.contains(
            "kubelet_volume_stats_used_bytes{namespace=\"ns\",persistentvolumeclaim=\"claim-a\"} 300\n"
        ), "{text}");
        assert!(text.contains(
            "kubelet_volume_stats_capacity_bytes{namespace=\"ns\",persistentvolumeclaim=\"claim-a\"} 1000\n"
        ), "{text}");
        assert_eq!(
            text.matches("kubelet_volume_stats_inodes_free{").count(),
            1,
            "{text}"
        );
        assert!(!text.contains("claim-b"), "not walked yet: {text}");
        assert!(render_volume_stats(&[volume("scratch", None, true)]).is_empty());
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
