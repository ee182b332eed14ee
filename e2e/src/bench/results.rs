//! What one benchmark run measured, as stored in results.json.

use std::collections::BTreeMap;

use serde::Serialize;

use super::audit::Requests;
use super::floor::FloorSample;
use super::procs::Memory;

#[derive(Debug, Default, Serialize)]
pub struct Results {
    pub date: String,
    pub machine: BTreeMap<String, String>,
    pub versions: BTreeMap<String, String>,
    pub rounds: u32,
    pub quick: bool,
    pub p1_pods: usize,
    pub p2_pods: usize,
    pub steady_pods: usize,
    /// Length of the P4/P7 windows (s); rates are scaled to 60 s.
    pub window_seconds: f64,
    pub gantry: SetupResults,
    pub reference: SetupResults,
    pub floor: Vec<FloorSample>,
    pub notes: Vec<String>,
    pub wall_seconds: f64,
}

#[derive(Debug, Default, Serialize)]
pub struct SetupResults {
    /// P1: create call → Running / Ready seen on the watch, per pod (s).
    pub p1_running: Vec<f64>,
    pub p1_ready: Vec<f64>,
    /// P2: create of the first pod → all Running / Ready, per round (s).
    pub p2_all_running: Vec<f64>,
    pub p2_all_ready: Vec<f64>,
    /// P6: delete call (grace 0) → DELETED seen on the watch, per pod (s).
    pub p6_delete: Vec<f64>,
    pub memory: Option<MemoryResult>,
    pub cpu: Option<CpuResult>,
    /// P5: critest's operation durations (s).
    pub p5: BTreeMap<String, Vec<f64>>,
    /// Over every P1 run: the increase of each runtime operation's duration sum (s)
    /// (kubelet_runtime_operations_duration_seconds by operation_type, and Gantry's
    /// CNI ADD as "cni_add"), and the P1 pods it covers.
    pub phase_sums: BTreeMap<String, f64>,
    pub phase_pods: usize,
    /// P7: the node's API requests in the idle window (no benchmark pods) and in the P4
    /// window (steady pods).
    pub requests_idle: Option<Requests>,
    pub requests_busy: Option<Requests>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct MemoryResult {
    pub pods: usize,
    pub agent: Memory,
    pub containerd: Memory,
    pub shims: Memory,
    pub shim_count: usize,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct CpuResult {
    pub window_seconds: f64,
    pub agent_seconds: f64,
    pub containerd_seconds: f64,
    pub shims_seconds: f64,
}

impl SetupResults {
    /// The mean time per P1 pod of the phases of a pod start (s), in order; the last,
    /// "status seen (rest)", is the mean create→Running minus the others.
    pub fn phases(&self, gantry: bool) -> Vec<(String, f64)> {
        let n = self.phase_pods.max(1) as f64;
        let op = |k: &str| self.phase_sums.get(k).copied().unwrap_or(0.0) / n;
        let mut parts = Vec::new();
        if gantry {
            parts.push(("sandbox".to_string(), op("run_podsandbox") - op("cni_add")));
            parts.push(("CNI ADD".to_string(), op("cni_add")));
        } else {
            parts.push(("sandbox (incl. CNI)".to_string(), op("run_podsandbox")));
        }
        parts.push(("image check".to_string(), op("image_status")));
        parts.push(("create".to_string(), op("create_container")));
        parts.push(("start".to_string(), op("start_container")));
        let mean = if self.p1_running.is_empty() {
            0.0
        } else {
            self.p1_running.iter().sum::<f64>() / self.p1_running.len() as f64
        };
        let known: f64 = parts.iter().map(|p| p.1).sum();
        parts.push(("status seen (rest)".to_string(), mean - known));
        parts
    }
}
