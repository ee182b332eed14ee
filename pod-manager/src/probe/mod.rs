//! Container probes (startup, liveness, readiness), as upstream's prober manager.
pub mod run;
