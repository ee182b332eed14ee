//! The benchmark (issue 7): Gantry's node against the reference node on one bed, both
//! registered at once, measured in alternating rounds (A B A B) so drift of the shared
//! machine falls on both. `src/bin/bench.rs` is its command; `scripts/bench.sh` runs it
//! with a release build. It prints numbers and ratios; it asserts nothing.
//!
//! - [`run`]: the sequence of measurements (P1–P7 and the floor).
//! - [`pods`]: creating, watching and deleting benchmark pods through the API.
//! - [`procs`], [`audit`], [`critest`], [`floor`]: the individual measurements.
//! - [`results`], [`stats`], [`report`], [`svg`]: what was measured and how it is shown.

pub mod audit;
pub mod critest;
pub mod floor;
pub mod pods;
pub mod procs;
pub mod report;
pub mod results;
pub mod run;
pub mod stats;
pub mod svg;
