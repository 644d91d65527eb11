//! The cluster registry: an OCI distribution server (plain HTTP) that the supervisor serves on
//! `<bridge>:5000` inside the cluster's namespace, so nodes pull from `registry:5000/…` and the
//! host pushes through the `registry` forwarded port. Blobs live in a directory outside the
//! cluster's own (see [`crate::paths::Dirs::registry`]), so they survive `down` and `up`.
//!
//! [`routes`] parses requests, [`reference`] validates names and digests, [`manifest`] checks
//! manifests, [`storage`] keeps everything on disk, [`uploads`] streams bodies into it and
//! [`server`] is the hyper service tying them together.

pub mod body;
pub mod errors;
pub mod manifest;
pub mod reference;
pub mod routes;
pub mod server;
pub mod storage;
pub mod uploads;

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod loopback_tests;

/// The registry's port on the bridge address (`registry:5000`, like kubevirtci).
pub const PORT: u16 = 5000;

pub use server::serve;
pub use storage::Storage;
