//! Per-pod workers: compare each pod's desired spec with the state a CRI runtime
//! reports and act (sandbox, image pulls, init and sidecar containers, restarts with
//! backoff, probes, hooks, graceful termination), then compute the pod's status.
//!
//! It speaks only CRI `runtime.v1` messages, so it runs pods on Gantry's CRI and on
//! containerd's CRI plugin alike; it must not depend on `gantry-cri` internals.
//! Not written yet (issue: `gantry node`, part 3).
