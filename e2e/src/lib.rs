//! Gantry's test bed and end-to-end suites.
//!
//! The harness starts real components on this machine: etcd, kube-apiserver,
//! kube-controller-manager and kube-scheduler (built from the pinned Kubernetes module,
//! see `e2e/tools/`), containerd with its own root, state and socket, a distribution
//! registry on 127.0.0.1 that mirrors registry.k8s.io, gcr.io, k8s.gcr.io, public.ecr.aws
//! and docker.io with locally built images, and nodes (today the upstream kubelet on
//! containerd's CRI plugin, the reference node). Everything a bed creates on the host is
//! recorded in its directory under [`BED_ROOT`] and removed by [`teardown`], which is
//! also run over every leftover bed by `testbed down --all`, so an interrupted run is
//! cleaned by the next one.
//!
//! It must not ship in the `gantry` binary.

pub mod bed;
pub mod bench;
pub mod checks;
pub mod containerd;
pub mod control_plane;
pub mod forward;
pub mod gantry_cri;
pub mod gantry_node;
pub mod host;
pub mod http;
pub mod kubeconfig;
pub mod kubectl;
pub mod multinode;
pub mod network;
pub mod paths;
pub mod pki;
pub mod process;
pub mod prom;
pub mod quantity;
pub mod reference_node;
pub mod registry;
pub mod state;
pub mod teardown;
pub mod volumes;
pub mod wait;
pub mod workloads;

pub use bed::{Bed, BedOptions};
pub use paths::BED_ROOT;
