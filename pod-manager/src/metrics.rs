//! The kubelet metrics the pod manager measures, with upstream's names, types, labels
//! and buckets (pkg/kubelet/metrics): runtime operations at the CRI client, pod
//! worker syncs, pod start latencies, started pods and containers, and the relist.
//! They live in the process's default registry, as upstream's legacy registry, and
//! the kubelet's /metrics shows them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use prometheus::{
    exponential_buckets, Counter, CounterVec, Histogram, HistogramOpts, HistogramVec, Opts,
    Registry, DEFAULT_BUCKETS,
};
use tonic::Code;

/// Upstream's podStartupDurationBuckets.
const POD_START_BUCKETS: &[f64] = &[
    0.5, 1., 2., 3., 4., 5., 6., 8., 10., 20., 30., 45., 60., 120., 180., 240., 300., 360., 480.,
    600., 900., 1200., 1800., 2700., 3600.,
];

pub struct PodMetrics {
    pub runtime_operations: CounterVec,
    pub runtime_operations_duration: HistogramVec,
    pub runtime_operations_errors: CounterVec,
    pub pod_worker_duration: HistogramVec,
    pub pod_start_duration: Histogram,
    pub pod_start_sli_duration: HistogramVec,
    pub pod_start_total_duration: HistogramVec,
    pub started_pods: Counter,
    pub started_pods_errors: Counter,
    pub started_containers: CounterVec,
    pub started_containers_errors: CounterVec,
    pub pleg_relist_duration: Histogram,
    pub pleg_relist_interval: Histogram,
    pub pleg_last_seen: prometheus::Gauge,
    /// Pod start SLI bookkeeping (upstream's pod startup latency tracker).
    pub startup: StartupTracker,
}

fn alpha(name: &str, help: &str) -> Opts {
    Opts::new(name, format!("[ALPHA] {help}"))
}

fn halpha(name: &str, help: &str, buckets: Vec<f64>) -> HistogramOpts {
    HistogramOpts::new(name, format!("[ALPHA] {help}")).buckets(buckets)
}

impl PodMetrics {
    pub fn new(r: &Registry) -> prometheus::Result<PodMetrics> {
        let m = PodMetrics {
            runtime_operations: CounterVec::new(
                alpha(
                    "kubelet_runtime_operations_total",
                    "Cumulative number of runtime operations by operation type.",
                ),
                &["operation_type"],
            )?,
            runtime_operations_duration: HistogramVec::new(
                halpha(
                    "kubelet_runtime_operations_duration_seconds",
                    "Duration in seconds of runtime operations. Broken down by operation type.",
                    exponential_buckets(0.005, 2.5, 14)?,
                ),
                &["operation_type"],
            )?,
            runtime_operations_errors: CounterVec::new(
                alpha(
                    "kubelet_runtime_operations_errors_total",
                    "Cumulative number of runtime operation errors by operation type.",
                ),
                &["operation_type"],
            )?,
            pod_worker_duration: HistogramVec::new(
                halpha(
                    "kubelet_pod_worker_duration_seconds",
                    "Duration in seconds to sync a single pod. Broken down by operation type: create, update, or sync",
                    DEFAULT_BUCKETS.to_vec(),
                ),
                &["operation_type"],
            )?,
            pod_start_duration: Histogram::with_opts(halpha(
                "kubelet_pod_start_duration_seconds",
                "Duration in seconds from kubelet seeing a pod for the first time to the pod starting to run",
                POD_START_BUCKETS.to_vec(),
            ))?,
            pod_start_sli_duration: HistogramVec::new(
                halpha(
                    "kubelet_pod_start_sli_duration_seconds",
                    "Duration in seconds to start a pod, excluding time to pull images and run init containers, measured from pod creation timestamp to when all its containers are reported as started and observed via watch",
                    POD_START_BUCKETS.to_vec(),
                ),
                &["first_with_network"],
            )?,
            pod_start_total_duration: HistogramVec::new(
                halpha(
                    "kubelet_pod_start_total_duration_seconds",
                    "Duration in seconds to start a pod since creation, including time to pull images and run init containers, measured from pod creation timestamp to when all its containers are reported as started and observed via watch",
                    POD_START_BUCKETS.to_vec(),
                ),
                &["first_with_network"],
            )?,
            started_pods: Counter::with_opts(alpha(
                "kubelet_started_pods_total",
                "Cumulative number of pods started",
            ))?,
            started_pods_errors: Counter::with_opts(alpha(
                "kubelet_started_pods_errors_total",
                "Cumulative number of errors when starting pods",
            ))?,
            started_containers: CounterVec::new(
                alpha(
                    "kubelet_started_containers_total",
                    "Cumulative number of containers started",
                ),
                &["container_type"],
            )?,
            started_containers_errors: CounterVec::new(
                alpha(
                    "kubelet_started_containers_errors_total",
                    "Cumulative number of errors when starting containers",
                ),
                &["container_type", "code"],
            )?,
            pleg_relist_duration: Histogram::with_opts(halpha(
                "kubelet_pleg_relist_duration_seconds",
                "Duration in seconds for relisting pods in PLEG.",
                DEFAULT_BUCKETS.to_vec(),
            ))?,
            pleg_relist_interval: Histogram::with_opts(halpha(
                "kubelet_pleg_relist_interval_seconds",
                "Interval in seconds between relisting in PLEG.",
                DEFAULT_BUCKETS.to_vec(),
            ))?,
            pleg_last_seen: prometheus::Gauge::with_opts(alpha(
                "kubelet_pleg_last_seen_seconds",
                "Timestamp in seconds when PLEG was last seen active.",
            ))?,
            startup: StartupTracker::default(),
        };
        r.register(Box::new(m.runtime_operations.clone()))?;
        r.register(Box::new(m.runtime_operations_duration.clone()))?;
        r.register(Box::new(m.runtime_operations_errors.clone()))?;
        r.register(Box::new(m.pod_worker_duration.clone()))?;
        r.register(Box::new(m.pod_start_duration.clone()))?;
        r.register(Box::new(m.pod_start_sli_duration.clone()))?;
        r.register(Box::new(m.pod_start_total_duration.clone()))?;
        r.register(Box::new(m.started_pods.clone()))?;
        r.register(Box::new(m.started_pods_errors.clone()))?;
        r.register(Box::new(m.started_containers.clone()))?;
        r.register(Box::new(m.started_containers_errors.clone()))?;
        r.register(Box::new(m.pleg_relist_duration.clone()))?;
        r.register(Box::new(m.pleg_relist_interval.clone()))?;
        r.register(Box::new(m.pleg_last_seen.clone()))?;
        Ok(m)
    }

    /// The process-wide metrics, in the default registry (created on first use).
    pub fn global() -> Arc<PodMetrics> {
        static GLOBAL: OnceLock<Arc<PodMetrics>> = OnceLock::new();
        GLOBAL
            .get_or_init(|| {
                Arc::new(
                    PodMetrics::new(prometheus::default_registry())
                        .expect("the kubelet metrics are registered once"),
                )
            })
            .clone()
    }

    /// One relist of the runtime took `took`, `since_last` after the previous one.
    pub fn relisted(&self, took: Duration, since_last: Option<Duration>) {
        self.pleg_relist_duration.observe(took.as_secs_f64());
        if let Some(i) = since_last {
            self.pleg_relist_interval.observe(i.as_secs_f64());
        }
        if let Ok(now) = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH) {
            self.pleg_last_seen.set(now.as_secs_f64());
        }
    }
}

/// The kubelet's CRI client reports each call here (upstream's instrumented runtime
/// and image services): every call counts, failed ones count as errors too.
impl gantry_cri::observe::Observer for PodMetrics {
    fn observe(&self, operation: &str, code: Code, elapsed: Duration) {
        self.runtime_operations
            .with_label_values(&[operation])
            .inc();
        self.runtime_operations_duration
            .with_label_values(&[operation])
            .observe(elapsed.as_secs_f64());
        if code != Code::Ok {
            self.runtime_operations_errors
                .with_label_values(&[operation])
                .inc();
        }
    }
}

/// Upstream's pod startup latency tracker: a pod is tracked only when it has no
/// status.startTime when first seen (it was scheduled after the kubelet started).
/// Its SLI duration is from creationTimestamp to the moment the watch shows every
/// container running, minus the time between its first image pull start and its
/// last image pull end.
#[derive(Default)]
pub struct StartupTracker {
    pods: Mutex<HashMap<String, PodStartup>>,
    first_network_pod_seen: Mutex<bool>,
}

#[derive(Default, Debug, Clone)]
struct PodStartup {
    first_started_pulling: Option<Instant>,
    last_finished_pulling: Option<Instant>,
    observed_running: bool,
    recorded: bool,
}

/// What the tracker needs of a pod as the watch shows it.
pub struct WatchedPod<'a> {
    pub uid: &'a str,
    pub terminal: bool,
    pub has_start_time: bool,
    /// Every container's state is running with a start time.
    pub all_running: bool,
    pub host_network: bool,
    pub created: Option<SystemTime>,
}

/// A pod start to record: (SLI seconds, total seconds, first_with_network label).
pub type StartSample = (f64, f64, &'static str);

impl StartupTracker {
    /// The pod as the watch shows it at `now`; returns the sample once it is due.
    pub fn observed_on_watch(
        &self,
        pod: &WatchedPod,
        now: SystemTime,
        now_mono: Instant,
    ) -> Option<StartSample> {
        let mut pods = lock(&self.pods);
        if pod.terminal {
            pods.remove(pod.uid);
            return None;
        }
        let Some(state) = pods.get_mut(pod.uid) else {
            if !pod.has_start_time {
                pods.insert(pod.uid.to_string(), PodStartup::default());
            }
            return None;
        };
        if !state.observed_running || state.recorded || !pod.all_running {
            return None;
        }
        let created = pod.created?;
        let starting = now.duration_since(created).unwrap_or_default();
        let pulling = match (state.first_started_pulling, state.last_finished_pulling) {
            (Some(a), Some(b)) => b.saturating_duration_since(a),
            (Some(a), None) => now_mono.saturating_duration_since(a),
            _ => Duration::ZERO,
        };
        state.recorded = true;
        let sli = starting.saturating_sub(pulling).as_secs_f64();
        let mut first = lock(&self.first_network_pod_seen);
        let label = if !pod.host_network && !*first {
            *first = true;
            "true"
        } else {
            ""
        };
        Some((sli, starting.as_secs_f64(), label))
    }

    pub fn started_pulling(&self, uid: &str, now: Instant) {
        if let Some(s) = lock(&self.pods).get_mut(uid) {
            s.first_started_pulling.get_or_insert(now);
        }
    }

    pub fn finished_pulling(&self, uid: &str, now: Instant) {
        if let Some(s) = lock(&self.pods).get_mut(uid) {
            s.last_finished_pulling = Some(now);
        }
    }

    /// The node reported a status in which every container runs.
    pub fn status_all_running(&self, uid: &str) {
        if let Some(s) = lock(&self.pods).get_mut(uid) {
            s.observed_running = true;
        }
    }

    pub fn forget(&self, uid: &str) {
        lock(&self.pods).remove(uid);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watched(uid: &str, has_start_time: bool, all_running: bool) -> WatchedPod<'_> {
        WatchedPod {
            uid,
            terminal: false,
            has_start_time,
            all_running,
            host_network: false,
            created: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1000)),
        }
    }

    #[test]
    fn sli_excludes_image_pulls_and_counts_once() {
        let t = StartupTracker::default();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1010);
        let mono = Instant::now();
        assert_eq!(
            t.observed_on_watch(&watched("a", false, false), now, mono),
            None
        );
        t.started_pulling("a", mono);
        t.finished_pulling("a", mono + Duration::from_secs(4));
        // The watch shows it running before the node said so: not yet.
        assert_eq!(
            t.observed_on_watch(&watched("a", true, true), now, mono),
            None
        );
        t.status_all_running("a");
        let (sli, total, first) = t
            .observed_on_watch(&watched("a", true, true), now, mono)
            .unwrap();
        assert_eq!((sli, total, first), (6.0, 10.0, "true"));
        assert_eq!(
            t.observed_on_watch(&watched("a", true, true), now, mono),
            None
        );
    }

    #[test]
    fn pods_already_started_when_first_seen_are_not_tracked() {
        let t = StartupTracker::default();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1010);
        let mono = Instant::now();
        t.observed_on_watch(&watched("b", true, true), now, mono);
        t.status_all_running("b");
        assert_eq!(
            t.observed_on_watch(&watched("b", true, true), now, mono),
            None
        );
    }

    #[test]
    fn only_the_first_network_pod_is_labelled_first_with_network() {
        let t = StartupTracker::default();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1010);
        let mono = Instant::now();
        let mut labels = Vec::new();
        for uid in ["a", "b"] {
            t.observed_on_watch(&watched(uid, false, false), now, mono);
            t.status_all_running(uid);
            labels.push(
                t.observed_on_watch(&watched(uid, true, true), now, mono)
                    .unwrap()
                    .2,
            );
        }
        assert_eq!(labels, ["true", ""]);
    }

    #[test]
    fn runtime_operations_count_calls_and_errors() {
        use gantry_cri::observe::Observer;
        let r = Registry::new();
        let m = PodMetrics::new(&r).unwrap();
        m.observe("run_podsandbox", Code::Ok, Duration::from_millis(20));
        m.observe("run_podsandbox", Code::Unknown, Duration::from_millis(20));
        m.observe("container_status", Code::Ok, Duration::from_millis(1));
        assert_eq!(
            m.runtime_operations
                .with_label_values(&["run_podsandbox"])
                .get(),
            2.0
        );
        assert_eq!(
            m.runtime_operations_errors
                .with_label_values(&["run_podsandbox"])
                .get(),
            1.0
        );
        assert_eq!(
            m.runtime_operations_errors
                .with_label_values(&["container_status"])
                .get(),
            0.0
        );
        assert_eq!(
            m.runtime_operations_duration
                .with_label_values(&["container_status"])
                .get_sample_count(),
            1
        );
    }
}
