//! kvci: pre-provisioned VM clusters (Kubernetes nodes first of all) straight on QEMU, no Docker.
//!
//! The path of `kvci vm up` reads top to bottom: [`config`] (spec) → [`cluster::plan`] (plan) →
//! network (the `kvci-net` crate) → [`disk`] (overlays) → [`qemu`] (processes, QMP) →
//! [`cluster::node`] (readiness), all owned by the [`supervisor`].

pub mod accel;
pub mod agent;
pub mod beacon;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod disk;
pub mod fault;
#[cfg(test)]
pub(crate) mod fuzzing;
pub mod image;
pub mod interrupt;
pub mod oci;
pub mod paths;
pub mod procfs;
pub mod ports;
pub mod provision;
pub mod registry;
pub mod qemu;
pub mod rootless;
pub mod shape;
pub mod ssh;
pub mod supervisor;
pub mod tools;
