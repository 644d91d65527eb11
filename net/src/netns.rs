//! A network namespace held by a file descriptor, not by a bind mount under `/run/netns`:
//! it disappears with the last fd, socket or process in it, so a crashed supervisor leaks nothing.
//!
//! Namespaces are per thread; work that must happen inside (creating taps, netlink and server
//! sockets) runs on a short-lived thread that enters it. Sockets keep the namespace they were
//! created in, so they can be used from any thread afterwards.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};

use nix::sched::{setns, unshare, CloneFlags};

/// A namespace could not be made or entered.
#[derive(Debug, thiserror::Error)]
pub enum NetNsError {
    /// `unshare(CLONE_NEWNET)` failed.
    #[error("cannot create a network namespace (needs root or a user namespace; check `sysctl user.max_net_namespaces`)")]
    Create(#[source] std::io::Error),
    /// `setns` failed.
    #[error("cannot enter the cluster's network namespace")]
    Enter(#[source] std::io::Error),
    /// The worker thread panicked.
    #[error("a thread working inside the network namespace panicked")]
    Panicked,
}

/// An open network namespace.
#[derive(Debug)]
pub struct NetNs {
    fd: OwnedFd,
}

impl NetNs {
    /// Creates a fresh, empty network namespace.
    pub fn new() -> Result<NetNs, NetNsError> {
        let fd = std::thread::spawn(|| -> Result<OwnedFd, NetNsError> {
            unshare(CloneFlags::CLONE_NEWNET).map_err(|e| NetNsError::Create(e.into()))?;
            let f = File::open("/proc/thread-self/ns/net").map_err(NetNsError::Create)?;
            Ok(f.into())
        })
        .join()
        .map_err(|_| NetNsError::Panicked)??;
        Ok(NetNs { fd })
    }

    /// Opens the namespace of the current thread (for tests and comparisons).
    pub fn current() -> std::io::Result<NetNs> {
        Ok(NetNs { fd: File::open("/proc/thread-self/ns/net")?.into() })
    }

    /// Runs `f` on a thread inside the namespace and returns its result.
    pub fn run<F, T>(&self, f: F) -> Result<T, NetNsError>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        std::thread::scope(|s| {
            s.spawn(|| {
                setns(self.fd.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| NetNsError::Enter(e.into()))?;
                Ok(f())
            })
            .join()
            .map_err(|_| NetNsError::Panicked)?
        })
    }

    /// The namespace's fd (e.g. to move a veth end into it).
    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }
}
