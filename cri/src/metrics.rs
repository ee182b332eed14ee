//! The CRI server's own operation metrics, measured where calls enter it (in process
//! or on the socket): `gantry_cri_operations_total{operation_type}`,
//! `gantry_cri_operations_errors_total{operation_type,code}` and
//! `gantry_cri_operations_duration_seconds{operation_type}`, with upstream's CRI
//! operation names and the buckets of upstream's runtime operation histogram.
//! `gantry node` shows them on its /metrics; `gantry cri --metrics-bind-address`
//! serves them (and the process metrics) on their own address.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus::{
    exponential_buckets, CounterVec, Encoder, HistogramOpts, HistogramVec, Opts, Registry,
    TextEncoder,
};
use tonic::Code;

use crate::observe::{code_name, Observer};

pub struct CriMetrics {
    pub operations: CounterVec,
    pub errors: CounterVec,
    pub duration: HistogramVec,
    /// `gantry_cri_cni_duration_seconds{operation}`: the CNI ADD and DEL inside
    /// RunPodSandbox and StopPodSandbox (the pod start's network share, for benchmarks).
    pub cni_duration: HistogramVec,
}

impl CriMetrics {
    /// The metrics, registered in `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<CriMetrics> {
        let operations = CounterVec::new(
            Opts::new(
                "gantry_cri_operations_total",
                "Cumulative number of CRI calls served, by operation type.",
            ),
            &["operation_type"],
        )?;
        let errors = CounterVec::new(
            Opts::new(
                "gantry_cri_operations_errors_total",
                "Cumulative number of CRI calls answered with an error, by operation type and gRPC code.",
            ),
            &["operation_type", "code"],
        )?;
        // As upstream's kubelet_runtime_operations_duration_seconds: 5 ms to ~745 s.
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "gantry_cri_operations_duration_seconds",
                "Duration in seconds of CRI calls served, by operation type.",
            )
            .buckets(exponential_buckets(0.005, 2.5, 14)?),
            &["operation_type"],
        )?;
        let cni_duration = HistogramVec::new(
            HistogramOpts::new(
                "gantry_cri_cni_duration_seconds",
                "Duration in seconds of the CNI plugin chain run for a pod sandbox, by operation (add, del).",
            )
            .buckets(exponential_buckets(0.001, 2.0, 16)?),
            &["operation"],
        )?;
        registry.register(Box::new(operations.clone()))?;
        registry.register(Box::new(cni_duration.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        Ok(CriMetrics {
            operations,
            errors,
            duration,
            cni_duration,
        })
    }

    /// The process-wide metrics, in the default registry (created on first use).
    pub fn global() -> Arc<CriMetrics> {
        static GLOBAL: OnceLock<Arc<CriMetrics>> = OnceLock::new();
        GLOBAL
            .get_or_init(|| {
                Arc::new(
                    CriMetrics::new(prometheus::default_registry())
                        .expect("the CRI metrics are registered once"),
                )
            })
            .clone()
    }
}

impl Observer for CriMetrics {
    fn observe(&self, operation: &str, code: Code, elapsed: Duration) {
        self.operations.with_label_values(&[operation]).inc();
        self.duration
            .with_label_values(&[operation])
            .observe(elapsed.as_secs_f64());
        if code != Code::Ok {
            self.errors
                .with_label_values(&[operation, code_name(code)])
                .inc();
        }
    }
}

/// The default registry in the Prometheus text format (0.0.4).
pub fn render_default() -> String {
    let mut buf = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&prometheus::gather(), &mut buf) {
        tracing::warn!(error = %e, "encoding metrics");
    }
    String::from_utf8(buf).unwrap_or_default()
}

/// Serves GET /metrics (the default registry) in plain HTTP on `listener` until `stop`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    stop: crate::server::Stop,
) -> std::io::Result<()> {
    use http_body_util::Full;
    use hyper::service::service_fn;
    tracing::info!(address = %listener.local_addr()?, "serving CRI metrics");
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.wait() => return Ok(()),
        };
        let (stream, _) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors, say: the server goes on once the pressure passes.
                tracing::warn!(error = %e, "CRI metrics: accept");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        tokio::spawn(async move {
            let svc = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                let resp = if req.uri().path() == "/metrics" {
                    http::Response::builder()
                        .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
                        .body(Full::new(bytes::Bytes::from(render_default())))
                } else {
                    http::Response::builder().status(404).body(Full::new(
                        bytes::Bytes::from_static(b"404 page not found\n"),
                    ))
                };
                resp
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .await
            {
                tracing::debug!(error = %e, "metrics connection");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_counted_by_code_and_successes_are_not() {
        let registry = Registry::new();
        let m = CriMetrics::new(&registry).unwrap();
        m.observe("container_status", Code::Ok, Duration::from_millis(3));
        m.observe("container_status", Code::NotFound, Duration::from_millis(7));
        m.observe("run_podsandbox", Code::Ok, Duration::from_secs(2));
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&registry.gather(), &mut buf)
            .unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert!(
            text.contains("gantry_cri_operations_total{operation_type=\"container_status\"} 2\n"),
            "{text}"
        );
        assert!(text.contains(
            "gantry_cri_operations_errors_total{code=\"NotFound\",operation_type=\"container_status\"} 1\n"
        ), "{text}");
        assert!(!text.contains("code=\"OK\""), "{text}");
        // 2 s falls in the bucket 0.005·2.5^6 ≈ 1.22 < 2 ≤ 3.05.
        assert!(text.contains(
            "gantry_cri_operations_duration_seconds_bucket{operation_type=\"run_podsandbox\",le=\"1.220703125\"} 0\n"
        ), "{text}");
        assert!(text.contains(
            "gantry_cri_operations_duration_seconds_bucket{operation_type=\"run_podsandbox\",le=\"3.0517578125\"} 1\n"
        ), "{text}");
    }
}
