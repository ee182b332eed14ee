//! Container probes (startup, liveness, readiness), as upstream's prober manager: one
//! task per running container and probe kind, which probes every periodSeconds after
//! initialDelaySeconds, counts successThreshold and failureThreshold in a row, records
//! the result and wakes the pod's worker when it changes. Liveness and readiness wait
//! for a startup probe to pass. A failed probe attempt gives an Unhealthy event.
//!
//! Results start as upstream's: readiness fails until the first success, liveness
//! passes until failureThreshold failures, startup is unknown until it passes or fails.
//! The worker reads them: readiness makes a container ready, a failed liveness or
//! startup probe gets the container killed (and restarted per the restart policy).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod, Probe};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::cluster::Cluster;
use crate::Cri;

pub mod run;
mod tls;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Startup,
    Liveness,
    Readiness,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Startup, Kind::Liveness, Kind::Readiness];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Startup => "Startup",
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
        }
    }

    pub fn of(self, c: &Container) -> Option<&Probe> {
        match self {
            Kind::Startup => c.startup_probe.as_ref(),
            Kind::Liveness => c.liveness_probe.as_ref(),
            Kind::Readiness => c.readiness_probe.as_ref(),
        }
    }
}

type Key = (String, Kind);
type Results = Arc<Mutex<HashMap<Key, bool>>>;

/// A running container to probe.
pub struct Running<'a> {
    pub container: &'a Container,
    pub id: &'a str,
    /// When it started (ns since the epoch), from which initialDelaySeconds counts.
    pub started_at: i64,
    /// `spec.containers{name}` or `spec.initContainers{name}`, for events.
    pub field_path: String,
}

/// The probe tasks of one pod and their results by container ID.
pub struct Probes {
    tasks: HashMap<Key, JoinHandle<()>>,
    results: Results,
    wake: Arc<Notify>,
}

impl Probes {
    /// Probes whose changes wake the pod's worker through `wake`.
    pub fn new(wake: Arc<Notify>) -> Probes {
        Probes {
            tasks: HashMap::new(),
            results: Arc::default(),
            wake,
        }
    }

    /// The last result of probe `kind` of container `id` (None: no result yet).
    pub fn result(&self, id: &str, kind: Kind) -> Option<bool> {
        lock(&self.results).get(&(id.to_string(), kind)).copied()
    }

    /// Keeps one task per probe of each running container; stops the tasks (and
    /// drops the results) of containers that are not running any more.
    pub fn sync<C: Cluster>(
        &mut self,
        cri: &Cri,
        cluster: &Arc<C>,
        pod: &Pod,
        pod_ip: &str,
        running: &[Running<'_>],
    ) {
        let mut wanted: HashMap<Key, &Running<'_>> = HashMap::new();
        for r in running {
            for kind in Kind::ALL {
                if kind.of(r.container).is_some() {
                    wanted.insert((r.id.to_string(), kind), r);
                }
            }
        }
        self.tasks.retain(|key, task| {
            let keep = wanted.contains_key(key);
            if !keep {
                task.abort();
            }
            keep
        });
        lock(&self.results).retain(|key, _| wanted.contains_key(key));
        for (key, r) in wanted {
            if self.tasks.contains_key(&key) {
                continue;
            }
            let task = ProbeTask {
                cri: cri.clone(),
                cluster: cluster.clone(),
                pod: pod.clone(),
                container: r.container.clone(),
                id: key.0.clone(),
                kind: key.1,
                started_at: r.started_at,
                field_path: r.field_path.clone(),
                pod_ip: pod_ip.to_string(),
                results: self.results.clone(),
                wake: self.wake.clone(),
            };
            self.tasks.insert(key, tokio::spawn(task.run()));
        }
    }

    /// Stops probing container `id` (it is being killed).
    pub fn forget(&mut self, id: &str) {
        self.tasks.retain(|(cid, _), task| {
            let keep = cid != id;
            if !keep {
                task.abort();
            }
            keep
        });
        lock(&self.results).retain(|(cid, _), _| cid != id);
    }
}

impl Drop for Probes {
    fn drop(&mut self) {
        for task in self.tasks.values() {
            task.abort();
        }
    }
}

struct ProbeTask<C> {
    cri: Cri,
    cluster: Arc<C>,
    pod: Pod,
    container: Container,
    id: String,
    kind: Kind,
    started_at: i64,
    field_path: String,
    pod_ip: String,
    results: Results,
    wake: Arc<Notify>,
}

/// What a run of probe results decides, given the last result and how many times in
/// a row it came (upstream's worker.doProbe thresholds).
pub fn decide(ok: bool, run: u32, success_threshold: u32, failure_threshold: u32) -> Option<bool> {
    let needed = if ok {
        success_threshold
    } else {
        failure_threshold
    };
    (run >= needed.max(1)).then_some(ok)
}

impl<C: Cluster> ProbeTask<C> {
    async fn run(self) {
        let Some(probe) = self.kind.of(&self.container).cloned() else {
            return;
        };
        let period = Duration::from_secs(probe.period_seconds.unwrap_or(10).max(1) as u64);
        let success_threshold = probe.success_threshold.unwrap_or(1).max(1) as u32;
        let failure_threshold = probe.failure_threshold.unwrap_or(3).max(1) as u32;
        let initial_delay =
            Duration::from_secs(probe.initial_delay_seconds.unwrap_or(0).max(0) as u64);
        let key = (self.id.clone(), self.kind);
        match self.kind {
            Kind::Readiness => self.set(&key, false),
            Kind::Liveness => self.set(&key, true),
            Kind::Startup => {}
        }
        let started = crate::worker::instant_of(self.started_at);
        let target = run::Target {
            container_id: self.id.clone(),
            pod_ip: self.pod_ip.clone(),
        };
        let mut last: Option<bool> = None;
        let mut in_a_row = 0u32;
        loop {
            let gated = self.kind != Kind::Startup
                && self.container.startup_probe.is_some()
                && lock(&self.results).get(&(self.id.clone(), Kind::Startup)) != Some(&true);
            let waiting = started.elapsed() < initial_delay;
            if gated || waiting {
                let nap = if waiting && !gated {
                    (initial_delay - started.elapsed()).min(period)
                } else {
                    period
                };
                tokio::time::sleep(nap).await;
                continue;
            }
            let outcome = run::run(&self.cri, &probe, &self.container, &target).await;
            let ok = outcome == run::Outcome::Success;
            match &outcome {
                run::Outcome::Success => {}
                run::Outcome::Failure(msg) => {
                    self.unhealthy(&format!("{} probe failed: {msg}", self.kind.name()))
                }
                run::Outcome::Error(msg) => {
                    self.unhealthy(&format!("{} probe errored: {msg}", self.kind.name()))
                }
            }
            if last == Some(ok) {
                in_a_row = in_a_row.saturating_add(1);
            } else {
                last = Some(ok);
                in_a_row = 1;
            }
            if let Some(result) = decide(ok, in_a_row, success_threshold, failure_threshold) {
                self.set(&key, result);
                // A failed liveness or startup probe ends with the container (the
                // worker kills it); a passed startup probe is not run again.
                if (!result && self.kind != Kind::Readiness)
                    || (result && self.kind == Kind::Startup)
                {
                    return;
                }
            }
            tokio::time::sleep(period).await;
        }
    }

    fn set(&self, key: &Key, value: bool) {
        let changed = lock(&self.results).insert(key.clone(), value) != Some(value);
        if changed {
            self.wake.notify_one();
        }
    }

    fn unhealthy(&self, message: &str) {
        tracing::info!(container = %self.container.name, "{message}");
        self.cluster.event(
            &self.pod,
            Some(self.field_path.clone()),
            "Warning",
            "Unhealthy",
            message,
        );
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_need_that_many_results_in_a_row() {
        // (ok, in a row, success threshold, failure threshold) → decision
        let cases = [
            (true, 1, 1, 3, Some(true)),
            (true, 1, 2, 3, None),
            (true, 2, 2, 3, Some(true)),
            (false, 2, 1, 3, None),
            (false, 3, 1, 3, Some(false)),
            (false, 1, 1, 0, Some(false)),
        ];
        for (ok, run, st, ft, want) in cases {
            assert_eq!(decide(ok, run, st, ft), want, "{ok} {run} {st} {ft}");
        }
    }
}
