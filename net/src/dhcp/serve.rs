//! The DHCP server's socket side: the UDP socket on port 67 (bound to the cluster bridge) and
//! the loop that feeds received packets to [`DhcpServer::handle`] and sends the replies to the
//! clients' port 68.

use std::ffi::OsString;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, PoisonError};

use nix::sys::socket::{bind, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn};
use tokio::net::UdpSocket;
use tokio::sync::watch;

use super::server::{DhcpServer, Outcome, ReplyTo};

/// The port DHCP clients listen on.
pub const CLIENT_PORT: u16 = dhcproto::v4::CLIENT_PORT;
/// The port DHCP servers listen on.
pub const SERVER_PORT: u16 = dhcproto::v4::SERVER_PORT;

/// Where replies are sent. Always port 68 and 255.255.255.255 outside tests; the tests point
/// it at loopback and a port they can bind without privileges.
#[derive(Debug, Clone, Copy)]
struct Clients {
    port: u16,
    broadcast: Ipv4Addr,
}

impl Clients {
    const REAL: Clients = Clients { port: CLIENT_PORT, broadcast: Ipv4Addr::BROADCAST };

    fn addr(&self, to: ReplyTo) -> SocketAddr {
        let ip = match to {
            ReplyTo::Broadcast => self.broadcast,
            ReplyTo::Unicast(ip) => ip,
        };
        SocketAddr::V4(SocketAddrV4::new(ip, self.port))
    }
}

/// Creates the server's UDP socket: `SO_REUSEADDR` (a restarted supervisor rebinds at once),
/// `SO_BROADCAST` (replies to clients without an address go to 255.255.255.255), and with
/// `device` `SO_BINDTODEVICE`, so only the bridge's DHCP traffic reaches it and broadcasts
/// leave through it. Bound to `0.0.0.0:port`, since clients without an address send from
/// 0.0.0.0 to 255.255.255.255; non-blocking, ready for `tokio::net::UdpSocket::from_std`.
pub fn bind_socket(device: Option<&str>, port: u16) -> io::Result<std::net::UdpSocket> {
    let fd = socket(AddressFamily::Inet, SockType::Datagram, SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC, None)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    setsockopt(&fd, sockopt::Broadcast, &true)?;
    if let Some(device) = device {
        setsockopt(&fd, sockopt::BindToDevice, &OsString::from(device)).map_err(|e| {
            let e = io::Error::from(e);
            io::Error::new(e.kind(), format!("cannot bind the DHCP socket to device {device}: {e}"))
        })?;
    }
    bind(fd.as_raw_fd(), &SockaddrIn::new(0, 0, 0, 0, port))?;
    Ok(std::net::UdpSocket::from(fd))
}

/// Serves DHCP on `socket` (already bound, see [`bind_socket`]) until `stop` becomes true or
/// its sender is dropped. Replies go to port 68, broadcast or unicast as [`DhcpServer::handle`]
/// decides. A failed send is logged and skipped (one unreachable client must not stop the
/// others); a failed receive ends the loop with the error.
pub async fn serve(socket: UdpSocket, server: Arc<Mutex<DhcpServer>>, stop: watch::Receiver<bool>) -> io::Result<()> {
    serve_to(socket, server, stop, Clients::REAL).await
}

async fn serve_to(
    socket: UdpSocket,
    server: Arc<Mutex<DhcpServer>>,
    mut stop: watch::Receiver<bool>,
    clients: Clients,
) -> io::Result<()> {
    // Room for any UDP datagram: a truncated packet could decode as a different, valid one.
    let mut buf = vec![0u8; 65_536];
    while let Some(received) = crate::datagram::next(&socket, &mut buf, &mut stop).await {
        let (len, peer) = received?;
        let packet = buf.get(..len).unwrap_or_default();
        let outcome = {
            // The state is only counters, so a panic elsewhere while holding the lock must not
            // take DHCP down with it. The guard is dropped before any await.
            let mut server = server.lock().unwrap_or_else(PoisonError::into_inner);
            server.handle(packet)
        };
        match outcome {
            Outcome::Reply { bytes, to } => {
                let dest = clients.addr(to);
                match socket.send_to(&bytes, dest).await {
                    Ok(_) => tracing::trace!(%peer, %dest, "DHCP reply sent"),
                    Err(e) => tracing::warn!(%dest, error = %e, "cannot send DHCP reply"),
                }
            }
            Outcome::Ignore(why) => tracing::trace!(%peer, why, "no DHCP reply"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use dhcproto::v4::MessageType;
    use nix::sys::socket::getsockopt;

    use super::*;
    use crate::dhcp::lease::node_mac;
    use crate::dhcp::test_support::{client, config, decode, encode};

    const WAIT: Duration = Duration::from_secs(10);

    #[test]
    fn bound_socket_has_reuseaddr_and_broadcast() {
        let sock = bind_socket(None, 0).unwrap();
        assert!(getsockopt(&sock, sockopt::Broadcast).unwrap());
        assert!(getsockopt(&sock, sockopt::ReuseAddr).unwrap());
        let addr = sock.local_addr().unwrap();
        assert!(addr.ip().is_unspecified());
        assert_ne!(addr.port(), 0);
    }

    #[test]
    fn binding_to_a_missing_device_fails() {
        // ENODEV as root, EPERM without CAP_NET_RAW: either way an error, never a socket that
        // silently listens on every interface.
        let err = bind_socket(Some("kvci-no-such0"), 0).unwrap_err();
        assert!(err.to_string().contains("kvci-no-such0"), "{err}");
    }

    async fn recv(sock: &UdpSocket) -> dhcproto::v4::Message {
        let mut buf = [0u8; 1500];
        let (len, _) = tokio::time::timeout(WAIT, sock.recv_from(&mut buf)).await.unwrap().unwrap();
        decode(&buf[..len])
    }

    #[tokio::test]
    async fn discover_and_inform_round_trip_over_loopback() {
        let server_sock = UdpSocket::from_std(bind_socket(None, 0).unwrap()).unwrap();
        let server_port = server_sock.local_addr().unwrap().port();
        let to_server = SocketAddr::from((Ipv4Addr::LOCALHOST, server_port));
        let client_sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let clients = Clients { port: client_sock.local_addr().unwrap().port(), broadcast: Ipv4Addr::LOCALHOST };

        let server = Arc::new(Mutex::new(DhcpServer::new(config())));
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(serve_to(server_sock, server.clone(), stop_rx, clients));

        // Noise first: it must be dropped without stopping the loop.
        client_sock.send_to(b"not dhcp", to_server).await.unwrap();

        let discover = client(MessageType::Discover, node_mac(1));
        client_sock.send_to(&encode(&discover), to_server).await.unwrap();
        let offer = recv(&client_sock).await;
        assert_eq!(offer.opts().msg_type(), Some(MessageType::Offer));
        assert_eq!(offer.yiaddr(), Ipv4Addr::new(192, 168, 66, 101));
        assert_eq!(offer.xid(), discover.xid());

        // Unicast path: an INFORM from a configured client goes back to its ciaddr.
        let mut inform = client(MessageType::Inform, node_mac(1));
        inform.set_ciaddr(Ipv4Addr::LOCALHOST);
        client_sock.send_to(&encode(&inform), to_server).await.unwrap();
        let ack = recv(&client_sock).await;
        assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));

        stop.send(true).unwrap();
        tokio::time::timeout(WAIT, task).await.unwrap().unwrap().unwrap();
        let stats = *server.lock().unwrap().stats();
        assert_eq!((stats.malformed, stats.offers, stats.informs), (1, 1, 1));
    }

    #[tokio::test]
    async fn serving_ends_when_the_stop_sender_is_dropped() {
        let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let server = Arc::new(Mutex::new(DhcpServer::new(config())));
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(serve(sock, server, stop_rx));
        drop(stop);
        tokio::time::timeout(WAIT, task).await.unwrap().unwrap().unwrap();
    }
}
