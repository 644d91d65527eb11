//! The cluster registry: an OCI distribution server (plain HTTP) that the supervisor serves on
//! `<bridge>:5000` inside the cluster's namespace, so nodes pull from `registry:5000/…` and the
//! host pushes through the `registry` forwarded port. Blobs live in a directory outside the
//! cluster's own (see [`crate::paths::Dirs::registry`]), so they survive `down` and `up`.
//!
//! [`routes`] parses requests, [`reference`] validates names and digests, [`manifest`] checks
//! manifests, [`ranges`] reads `Range` headers, [`storage`] keeps everything on disk (uploads in
//! a [`scratch`] directory per live registry), [`intake`] reads request bodies, [`uploads`] keeps
//! sessions and streams bodies into them and [`server`] is the hyper service tying them together.

pub mod body;
pub mod errors;
pub mod intake;
pub mod manifest;
pub mod ranges;
pub mod reference;
pub mod routes;
pub mod scratch;
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

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use anyhow::Context;
use kvci_net::netns::NetNs;
use tokio::sync::watch;

/// Binds `<bridge>:5000` inside the cluster's namespace and serves the registry in `dir` from
/// the calling runtime until `stop` turns true or its sender is dropped.
pub fn start(ns: &NetNs, addrs: &[IpAddr], dir: &Path, stop: watch::Receiver<bool>) -> anyhow::Result<()> {
    let storage = Storage::open(dir).with_context(|| format!("opening the registry in {}", dir.display()))?;
    let mut listeners = Vec::new();
    for &ip in addrs {
        let addr = SocketAddr::new(ip, PORT);
        let listener = ns
            .run(|| {
                let l = std::net::TcpListener::bind(addr)?;
                l.set_nonblocking(true)?;
                Ok::<_, std::io::Error>(l)
            })
            .context("entering the cluster namespace")?
            .with_context(|| format!("binding the registry on {addr}"))?;
        listeners.push(tokio::net::TcpListener::from_std(listener).context("registering the registry listener")?);
    }
    tokio::spawn(server::serve_all(listeners, storage, stop));
    tracing::info!(?addrs, dir = %dir.display(), "cluster registry up");
    Ok(())
}
