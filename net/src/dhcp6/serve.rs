//! The DHCPv6 server's socket side: UDP port 547 on the cluster bridge, member of
//! All_DHCP_Relay_Agents_and_Servers (`ff02::1:2`) there, and the loop that feeds received
//! messages to [`Dhcp6Server::handle`] and sends replies to the clients' port 546.

use std::io;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::{Arc, Mutex, PoisonError};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::watch;

use super::server::Dhcp6Server;

/// The port DHCPv6 clients listen on.
pub const CLIENT_PORT: u16 = dhcproto::v6::CLIENT_PORT;
/// The port DHCPv6 servers listen on.
pub const SERVER_PORT: u16 = dhcproto::v6::SERVER_PORT;
/// All_DHCP_Relay_Agents_and_Servers (RFC 8415 §7.1): where clients send every message.
pub const ALL_SERVERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2);

/// Creates the server's socket on `device` (the bridge; call inside its namespace): UDP
/// `[::]:547`, IPv6 only, `SO_REUSEADDR` (a restarted supervisor rebinds at once),
/// `SO_BINDTODEVICE` (only the bridge's DHCPv6 traffic reaches it), joined to `ff02::1:2` on
/// the device. Non-blocking, ready for `tokio::net::UdpSocket::from_std`.
pub fn bind_socket(device: &str) -> io::Result<std::net::UdpSocket> {
    bind(Some(device), SERVER_PORT)
}

pub(super) fn bind(device: Option<&str>, port: u16) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_only_v6(true)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    if let Some(device) = device {
        let on = |what: &str, e: io::Error| io::Error::new(e.kind(), format!("cannot {what} device {device}: {e}"));
        socket.bind_device(Some(device.as_bytes())).map_err(|e| on("bind the DHCPv6 socket to", e))?;
        let index = nix::net::if_::if_nametoindex(device).map_err(|e| on("find", e.into()))?;
        socket.join_multicast_v6(&ALL_SERVERS, index).map_err(|e| on("join ff02::1:2 on", e))?;
    }
    socket.bind(&SockAddr::from(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0)))?;
    Ok(socket.into())
}

/// Serves DHCPv6 on `socket` (already bound, see [`bind_socket`]) until `stop` becomes true or
/// its sender is dropped. Replies go to the sender's address (its link-local one, with the
/// scope of the interface it came in on) at port 546. A failed send is logged and skipped; a
/// failed receive ends the loop with the error.
pub async fn serve(socket: UdpSocket, server: Arc<Mutex<Dhcp6Server>>, stop: watch::Receiver<bool>) -> io::Result<()> {
    serve_to(socket, server, stop, CLIENT_PORT).await
}

/// [`serve`] replying to `client_port`: tests use loopback and a port they can bind.
pub(super) async fn serve_to(
    socket: UdpSocket,
    server: Arc<Mutex<Dhcp6Server>>,
    mut stop: watch::Receiver<bool>,
    client_port: u16,
) -> io::Result<()> {
    // Room for any UDP datagram: a truncated message could parse as a different, valid one.
    let mut buf = vec![0u8; 65_536];
    while let Some(received) = crate::datagram::next(&socket, &mut buf, &mut stop).await {
        let (len, peer) = received?;
        // An IPv6-only socket: anything else would be a kernel surprise, not a client.
        let SocketAddr::V6(peer) = peer else { continue };
        let packet = buf.get(..len).unwrap_or_default();
        let reply = {
            // The state is only counters: a panic elsewhere while holding the lock must not
            // stop DHCPv6. The guard is dropped before any await.
            let mut server = server.lock().unwrap_or_else(PoisonError::into_inner);
            server.handle(packet, peer)
        };
        let Some(bytes) = reply else { continue };
        let dest = SocketAddrV6::new(*peer.ip(), client_port, 0, peer.scope_id());
        match socket.send_to(&bytes, dest).await {
            Ok(_) => tracing::trace!(%dest, "DHCPv6 reply sent"),
            Err(e) => tracing::warn!(%dest, error = %e, "cannot send DHCPv6 reply"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use dhcproto::v6::MessageType;

    use super::*;
    use crate::dhcp6::test_support::{client, config, decode, encode};

    const WAIT: Duration = Duration::from_secs(10);

    #[test]
    fn binding_to_a_missing_device_fails() {
        // ENODEV as root, EPERM without CAP_NET_RAW: an error naming the device either way,
        // never a socket that silently listens on every interface.
        let err = bind_socket("kvci-no-such0").unwrap_err();
        assert!(err.to_string().contains("kvci-no-such0"), "{err}");
    }

    #[tokio::test]
    async fn solicit_round_trips_over_loopback() {
        let server_sock = UdpSocket::from_std(bind(None, 0).unwrap()).unwrap();
        let to_server = SocketAddrV6::new(Ipv6Addr::LOCALHOST, server_sock.local_addr().unwrap().port(), 0, 0);
        let client_sock = UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).await.unwrap();
        let client_port = client_sock.local_addr().unwrap().port();

        let server = Arc::new(Mutex::new(Dhcp6Server::new(config())));
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(serve_to(server_sock, server.clone(), stop_rx, client_port));

        // Noise first: dropped without stopping the loop.
        client_sock.send_to(b"not dhcpv6", to_server).await.unwrap();
        // From ::1 the MAC can only come from the DUID (DUID-LLT of node01's MAC).
        let solicit = client(MessageType::Solicit, 1);
        client_sock.send_to(&encode(&solicit), to_server).await.unwrap();
        let mut buf = [0u8; 1500];
        let (len, _) = tokio::time::timeout(WAIT, client_sock.recv_from(&mut buf)).await.unwrap().unwrap();
        let advertise = decode(&buf[..len]);
        assert_eq!(advertise.msg_type(), MessageType::Advertise);
        assert_eq!(advertise.xid(), solicit.xid());

        stop.send(true).unwrap();
        tokio::time::timeout(WAIT, task).await.unwrap().unwrap().unwrap();
        let stats = *server.lock().unwrap().stats();
        assert_eq!((stats.malformed, stats.solicits), (1, 1));
    }

    #[tokio::test]
    async fn serving_ends_when_the_stop_sender_is_dropped() {
        let sock = UdpSocket::from_std(bind(None, 0).unwrap()).unwrap();
        let server = Arc::new(Mutex::new(Dhcp6Server::new(config())));
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(serve(sock, server, stop_rx));
        drop(stop);
        tokio::time::timeout(WAIT, task).await.unwrap().unwrap().unwrap();
    }
}
