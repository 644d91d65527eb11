//! The receive step every UDP server loop here shares (DHCP, DHCPv6): the next datagram,
//! unless the owner asked to stop or is gone (a dropped sender could never stop us later).

use std::io;
use std::net::SocketAddr;

use tokio::net::UdpSocket;
use tokio::sync::watch;

/// The next datagram into `buf`, or `None` once `stop` is true or its sender dropped.
pub async fn next(socket: &UdpSocket, buf: &mut [u8], stop: &mut watch::Receiver<bool>) -> Option<io::Result<(usize, SocketAddr)>> {
    loop {
        if *stop.borrow_and_update() {
            return None;
        }
        tokio::select! {
            changed = stop.changed() => {
                if changed.is_err() {
                    return None;
                }
            }
            received = socket.recv_from(buf) => return Some(received),
        }
    }
}
