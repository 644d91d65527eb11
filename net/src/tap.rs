//! Tap devices through `/dev/net/tun` (the kernel refuses to create them over rtnetlink).
//!
//! The fd is handed to QEMU (`-netdev tap,fd=N`): the tap lives exactly as long as the fds
//! that hold it, so a crashed QEMU or supervisor leaves no tap behind.

use std::os::fd::OwnedFd;

use crate::sys;

/// A tap could not be created.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// `/dev/net/tun` is not accessible to this user.
    #[error(
        "cannot open /dev/net/tun: permission denied. It must be readable and writable by this user: \
         as root run `chmod 0666 /dev/net/tun` (Debian's default mode)"
    )]
    Permission,
    /// `/dev/net/tun` does not exist.
    #[error("/dev/net/tun does not exist: load the `tun` module (`modprobe tun`)")]
    Missing,
    /// Opening failed otherwise.
    #[error("cannot open /dev/net/tun")]
    Open(#[source] std::io::Error),
    /// TUNSETIFF failed.
    #[error("cannot create tap {name}")]
    Create {
        /// Tap name.
        name: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Creates the tap `name` (in the calling thread's network namespace) and returns its fd.
pub fn create(name: &str) -> Result<OwnedFd, TapError> {
    let file = std::fs::OpenOptions::new().read(true).write(true).open("/dev/net/tun").map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied => TapError::Permission,
        std::io::ErrorKind::NotFound => TapError::Missing,
        _ => TapError::Open(e),
    })?;
    let fd: OwnedFd = file.into();
    sys::set_iff(&fd, name, sys::IFF_TAP | sys::IFF_NO_PI | sys::IFF_VNET_HDR)
        .map_err(|e| TapError::Create { name: name.to_string(), source: e.into() })?;
    Ok(fd)
}
