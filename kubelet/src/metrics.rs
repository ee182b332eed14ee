//! The kubelet's own metrics in the process's default registry, beside those the pod
//! manager and the embedded CRI register there: kubelet_node_name, kubelet_evictions
//! (counted by the eviction manager through [`record_eviction`]), and the running
//! pods and containers gauges the /metrics handler sets from the runtime at scrape
//! time. Names, types, help and labels are upstream's (pkg/kubelet/metrics).

use std::sync::OnceLock;

use prometheus::{CounterVec, Gauge, GaugeVec, Opts, Registry};

pub struct KubeletMetrics {
    pub node_name: GaugeVec,
    pub evictions: CounterVec,
    pub running_pods: Gauge,
    pub running_containers: GaugeVec,
}

fn alpha(name: &str, help: &str) -> Opts {
    Opts::new(name, format!("[ALPHA] {help}"))
}

impl KubeletMetrics {
    pub fn new(r: &Registry) -> prometheus::Result<KubeletMetrics> {
        let m = KubeletMetrics {
            node_name: GaugeVec::new(
                alpha(
                    "kubelet_node_name",
                    "The node's name. The count is always 1.",
                ),
                &["node"],
            )?,
            evictions: CounterVec::new(
                alpha(
                    "kubelet_evictions",
                    "Cumulative number of pod evictions by eviction signal",
                ),
                &["eviction_signal"],
            )?,
            running_pods: Gauge::with_opts(alpha(
                "kubelet_running_pods",
                "Number of pods that have a running pod sandbox",
            ))?,
            running_containers: GaugeVec::new(
                alpha(
                    "kubelet_running_containers",
                    "Number of containers currently running",
                ),
                &["container_state"],
            )?,
        };
        r.register(Box::new(m.node_name.clone()))?;
        r.register(Box::new(m.evictions.clone()))?;
        r.register(Box::new(m.running_pods.clone()))?;
        r.register(Box::new(m.running_containers.clone()))?;
        Ok(m)
    }
}

/// The process-wide kubelet metrics (registered on first use).
pub fn global() -> &'static KubeletMetrics {
    static GLOBAL: OnceLock<KubeletMetrics> = OnceLock::new();
    GLOBAL.get_or_init(|| {
        KubeletMetrics::new(prometheus::default_registry())
            .expect("the kubelet metrics are registered once")
    })
}

/// Registers every metric of the node (kubelet, pod manager, embedded CRI) so /metrics
/// shows their families from the start, and sets kubelet_node_name.
pub fn register_node(node_name: &str, embedded_cri: bool) {
    global().node_name.with_label_values(&[node_name]).set(1.0);
    gantry_pod_manager::metrics::PodMetrics::global();
    if embedded_cri {
        gantry_cri::metrics::CriMetrics::global();
    }
}

/// The eviction manager evicted a pod for `signal` (upstream's eviction signal name,
/// e.g. "memory.available").
pub fn record_eviction(signal: &str) {
    global().record_eviction(signal);
}

impl KubeletMetrics {
    fn record_eviction(&self, signal: &str) {
        self.evictions.with_label_values(&[signal]).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evictions_count_by_signal() {
        let r = Registry::new();
        let m = KubeletMetrics::new(&r).unwrap();
        m.record_eviction("memory.available");
        m.record_eviction("memory.available");
        m.record_eviction("nodefs.available");
        let mut buf = Vec::new();
        prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &r.gather(), &mut buf)
            .unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert!(
            text.contains("# TYPE kubelet_evictions counter\n"),
            "{text}"
        );
        assert!(
            text.contains("kubelet_evictions{eviction_signal=\"memory.available\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("kubelet_evictions{eviction_signal=\"nodefs.available\"} 1\n"),
            "{text}"
        );
    }
}
