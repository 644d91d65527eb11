//! The crate's only `unsafe`: the TUN/TAP ioctl, a helper's set-up between fork and exec, and
//! handing a raw socket to tokio's reactor. Everything else goes through `nix`, `socket2` and
//! netlink.

use std::os::fd::{AsRawFd, OwnedFd};

use tokio::io::unix::AsyncFd;

/// `struct ifreq` as TUNSETIFF reads it: a name and the flags, padded to the kernel's size.
#[repr(C)]
pub struct IfReq {
    name: [u8; 16],
    flags: libc_short,
    _pad: [u8; 22],
}

#[allow(non_camel_case_types)]
type libc_short = i16;

/// A tap device, not a tun.
pub const IFF_TAP: i16 = 0x0002;
/// No extra packet-information header.
pub const IFF_NO_PI: i16 = 0x1000;
/// Frames carry a virtio-net header (offloads for QEMU).
pub const IFF_VNET_HDR: i16 = 0x4000;

// TUNSETIFF = _IOW('T', 202, int)
nix::ioctl_write_ptr_bad!(tunsetiff, 0x4004_54ca, IfReq);

/// Attaches the open `/dev/net/tun` fd to a new tap called `name` (at most 15 bytes).
pub fn set_iff(tun: &OwnedFd, name: &str, flags: i16) -> nix::Result<()> {
    let mut req = IfReq { name: [0; 16], flags, _pad: [0; 22] };
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() > 15 {
        return Err(nix::errno::Errno::EINVAL);
    }
    req.name[..bytes.len()].copy_from_slice(bytes);
    // SAFETY: `tun` is an open /dev/net/tun descriptor and `req` is a properly sized,
    // NUL-terminated `struct ifreq` that lives across the call; the kernel only reads it
    // (and writes back the same struct), never keeping the pointer.
    unsafe { tunsetiff(tun.as_raw_fd(), &req) }.map(drop)
}

/// Makes a child process (spawned later by `cmd`) get `from` as fd `to` for each pair (and no
/// other inherited fds than those and stdio), and SIGKILL when the spawning thread ends.
pub fn inherit_and_die_with_parent<const N: usize>(cmd: &mut std::process::Command, fds: [(i32, i32); N]) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the child between fork and exec; it only calls the
    // async-signal-safe dup2 and prctl on plain integers and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            // Copies above every target first, so no source is overwritten before it is moved.
            let mut high = [0; N];
            for (slot, (from, _)) in high.iter_mut().zip(fds) {
                *slot = nix::libc::fcntl(from, nix::libc::F_DUPFD_CLOEXEC, 64);
                if *slot < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (copy, (_, to)) in high.into_iter().zip(fds) {
                // dup2 clears close-on-exec on the target: the helper keeps exactly these.
                if nix::libc::dup2(copy, to) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if nix::libc::prctl(nix::libc::PR_SET_PDEATHSIG, nix::libc::SIGKILL) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Registers a (non-blocking) raw socket with tokio's reactor, for sockets tokio has no type
/// for (the router advertisements' ICMPv6 one).
pub fn async_socket(socket: socket2::Socket) -> std::io::Result<AsyncFd<socket2::Socket>> {
    // SAFETY: `register` requires the fd to stay open and unreplaced while registered. The
    // `Socket` owns its fd and is moved into the `AsyncFd`, which deregisters it before dropping
    // (and so closing) the socket; nothing else holds the fd or can close it meanwhile.
    let registered = unsafe { AsyncFd::register(socket) };
    registered.map_err(|e| e.into_parts().1)
}
