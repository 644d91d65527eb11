//! The advertisements' socket side: a raw ICMPv6 socket on the bridge, member of all-routers
//! (`ff02::2`), and the loop that multicasts the advertisement to all-nodes (`ff02::1`) on a
//! schedule and in answer to router solicitations.
//!
//! Schedule: every 10 s for the first minute, then every 200 s. A booting guest asks with a
//! solicitation and is answered at once, so the fast start is for guests that do not ask:
//! resumed from a snapshot, or started before the bridge had its link-local address. 200 s is
//! RFC 4861's default MinRtrAdvInterval, well inside the 1800 s router lifetime.

use std::io;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::time::Duration;

use nix::sys::socket::{recvfrom, SockaddrIn6};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;
use tokio::time::Instant;

use super::message::{advertisement, parse_solicitation};
use super::RaConfig;

/// All-nodes: where advertisements go.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
/// All-routers: where solicitations come to.
pub const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);
/// Gap between advertisements while the network is young.
const FAST_INTERVAL: Duration = Duration::from_secs(10);
/// How long the fast gap lasts.
const FAST_PERIOD: Duration = Duration::from_secs(60);
/// Gap between advertisements afterwards.
const STEADY_INTERVAL: Duration = Duration::from_secs(200);
/// RFC 4861 §10 MIN_DELAY_BETWEEN_RAS: multicast advertisements are at least this far apart.
const MIN_DELAY: Duration = Duration::from_secs(3);

/// A raw ICMPv6 socket bound to the bridge, from [`bind_socket`].
#[derive(Debug)]
pub struct RaSocket {
    socket: Socket,
    ifindex: u32,
}

/// Creates the advertisements' socket on `device` (call inside the bridge's namespace; needs
/// `CAP_NET_RAW`): raw ICMPv6, bound to the device, hop limit 255 (RFC 4861 §6.1.2: receivers
/// drop neighbour discovery that crossed a router), joined to `ff02::2` there so solicitations
/// arrive, multicast loop off so the bridge does not hear itself.
///
/// The kernel picks the source address: the bridge's link-local one (RFC 6724 prefers
/// link-local scope for `ff02::1`). While that is still tentative, sends fail and the next
/// scheduled one retries; disabling DAD on the bridge (`accept_dad=0`: nothing else can claim
/// its addresses) gets the first advertisement out at once.
pub fn bind_socket(device: &str) -> io::Result<RaSocket> {
    let on = |what: &str, e: io::Error| io::Error::new(e.kind(), format!("cannot {what} device {device}: {e}"));
    let socket = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))
        .map_err(|e| on("open a raw ICMPv6 socket (needs CAP_NET_RAW) for", e))?;
    socket.set_nonblocking(true)?;
    socket.bind_device(Some(device.as_bytes())).map_err(|e| on("bind the router advertisement socket to", e))?;
    let ifindex = nix::net::if_::if_nametoindex(device).map_err(|e| on("find", e.into()))?;
    socket.set_multicast_hops_v6(255)?;
    socket.set_unicast_hops_v6(255)?;
    socket.set_multicast_if_v6(ifindex)?;
    socket.set_multicast_loop_v6(false)?;
    socket.join_multicast_v6(&ALL_ROUTERS, ifindex).map_err(|e| on("join ff02::2 on", e))?;
    Ok(RaSocket { socket, ifindex })
}

/// The gap after an advertisement sent `since_start` after serving began.
pub(crate) fn interval(since_start: Duration) -> Duration {
    if since_start < FAST_PERIOD {
        FAST_INTERVAL
    } else {
        STEADY_INTERVAL
    }
}

/// When to answer a solicitation received at `now`: at once, unless an advertisement went out
/// less than [`MIN_DELAY`] ago; never later than the one already scheduled.
pub(crate) fn answer_at(now: Instant, last_sent: Option<Instant>, scheduled: Instant) -> Instant {
    let earliest = last_sent.map_or(now, |last| (last + MIN_DELAY).max(now));
    earliest.min(scheduled)
}

/// Advertises `config` on `socket` (see [`bind_socket`]) until `stop` becomes true or its
/// sender is dropped: the first advertisement at once, then on the schedule described in this
/// module, and after each valid router solicitation. Send failures are logged and retried on
/// the next occasion; a failed receive ends the loop with the error.
pub async fn serve(socket: RaSocket, config: RaConfig, mut stop: watch::Receiver<bool>) -> io::Result<()> {
    let ra = advertisement(&config);
    let dest = SockAddr::from(SocketAddrV6::new(ALL_NODES, 0, 0, socket.ifindex));
    let fd = crate::sys::async_socket(socket.socket)?;
    let start = Instant::now();
    let (mut next, mut last_sent) = (start, None);
    let mut buf = vec![0u8; 65_536];
    loop {
        if *stop.borrow_and_update() {
            return Ok(());
        }
        tokio::select! {
            changed = stop.changed() => {
                // A dropped sender means the owner is gone and nobody could stop us later.
                if changed.is_err() {
                    return Ok(());
                }
            }
            () = tokio::time::sleep_until(next) => {
                let now = Instant::now();
                match fd.get_ref().send_to(&ra, &dest) {
                    Ok(_) => {
                        tracing::trace!("router advertisement sent");
                        last_sent = Some(now);
                    }
                    // EADDRNOTAVAIL: the bridge's link-local address is still tentative.
                    Err(e) => tracing::debug!(error = %e, "cannot send router advertisement yet"),
                }
                next = now + interval(now - start);
            }
            readable = fd.readable() => {
                let mut guard = readable?;
                let received = guard.try_io(|inner| receive(inner, &mut buf));
                let Ok(received) = received else { continue };
                let (len, from) = received?;
                let source = from.map_or(Ipv6Addr::UNSPECIFIED, |a| a.ip());
                match parse_solicitation(buf.get(..len).unwrap_or_default(), &source) {
                    Ok(rs) => {
                        tracing::debug!(%source, mac = ?rs.source_mac, "router solicitation");
                        next = answer_at(Instant::now(), last_sent, next);
                    }
                    Err(why) => tracing::trace!(%source, why, "ICMPv6 message ignored"),
                }
            }
        }
    }
}

/// One ICMPv6 message and its sender, without blocking.
fn receive(socket: &AsyncFd<Socket>, buf: &mut [u8]) -> io::Result<(usize, Option<SockaddrIn6>)> {
    Ok(recvfrom::<SockaddrIn6>(socket.as_raw_fd(), buf)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertisements_are_fast_for_a_minute_then_steady() {
        assert_eq!(interval(Duration::ZERO), FAST_INTERVAL);
        assert_eq!(interval(Duration::from_secs(59)), FAST_INTERVAL);
        assert_eq!(interval(Duration::from_secs(60)), STEADY_INTERVAL);
        assert_eq!(interval(Duration::from_secs(100_000)), STEADY_INTERVAL);
    }

    #[test]
    fn solicitations_are_answered_at_once_but_not_too_often() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(200);
        assert_eq!(answer_at(t0, None, later), t0);
        let now = t0 + Duration::from_secs(10);
        assert_eq!(answer_at(now, Some(t0), later), now);
        assert_eq!(answer_at(now, Some(now - Duration::from_secs(1)), later), now + Duration::from_secs(2));
        // Never postpones what was already due sooner.
        assert_eq!(answer_at(now, Some(now), now + Duration::from_secs(1)), now + Duration::from_secs(1));
    }

    #[test]
    fn binding_to_a_missing_device_fails() {
        // ENODEV as root, EPERM without CAP_NET_RAW: an error naming the device either way.
        let err = bind_socket("kvci-no-such0").unwrap_err();
        assert!(err.to_string().contains("kvci-no-such0"), "{err}");
    }
}
