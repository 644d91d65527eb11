//! Rootless: an unprivileged kvci enters a user namespace of its own (mapping the user to root
//! there) before it does anything else, and then runs exactly the root code path: the cluster's
//! network namespace, bridge, taps, DHCP and DNS are made inside, nothing in the host's
//! namespaces. Like `unshare -Ur`, without the helper.

use std::fs::OpenOptions;
use std::io::Write;

use nix::sched::{unshare, CloneFlags};
use nix::unistd::{getegid, geteuid};

/// The user namespace could not be entered.
#[derive(Debug, thiserror::Error)]
pub enum RootlessError {
    /// The kernel refuses unprivileged user namespaces.
    #[error(
        "cannot create a user namespace as an unprivileged user ({0}): user namespaces are disabled here. \
         Enable them with `sysctl -w kernel.unprivileged_userns_clone=1` (Debian) and make sure \
         `sysctl user.max_user_namespaces` is above 0, or run kvci as root"
    )]
    Disabled(nix::errno::Errno),
    /// Writing the id maps failed.
    #[error("cannot set up the user namespace's id maps ({0})")]
    Maps(#[source] std::io::Error),
}

/// Whether kvci needs a user namespace (it is not root).
pub fn needed() -> bool {
    !geteuid().is_root()
}

/// Enters a new user namespace with the current user as root. Must run while the process has a
/// single thread (the kernel refuses `CLONE_NEWUSER` otherwise): first thing in `main`.
pub fn enter() -> Result<(), RootlessError> {
    let (uid, gid) = (geteuid(), getegid());
    unshare(CloneFlags::CLONE_NEWUSER).map_err(RootlessError::Disabled)?;
    let write = |path: &str, text: String| -> std::io::Result<()> { OpenOptions::new().write(true).open(path)?.write_all(text.as_bytes()) };
    // setgroups must be denied before an unprivileged process may write its gid_map.
    write("/proc/self/setgroups", "deny".into()).map_err(RootlessError::Maps)?;
    write("/proc/self/uid_map", format!("0 {uid} 1")).map_err(RootlessError::Maps)?;
    write("/proc/self/gid_map", format!("0 {gid} 1")).map_err(RootlessError::Maps)?;
    Ok(())
}
