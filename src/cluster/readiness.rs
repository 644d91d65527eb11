//! What "ready" means beyond the beacon: the node took its DHCP lease and its sshd answers.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use kvci_net::netns::NetNs;
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

use crate::beacon;

/// A node that booted but is not usable.
#[derive(Debug, thiserror::Error)]
pub enum NotReady {
    /// The beacon's address is not the node's static lease.
    #[error("{node} did not take its DHCP lease: it reports address {got:?}, expected {want} (see `kvci vm logs {node}`)")]
    Lease {
        /// Node.
        node: String,
        /// What the guest reported.
        got: String,
        /// Its static lease.
        want: Ipv4Addr,
    },
    /// sshd did not answer in time.
    #[error("{node}: sshd on {addr} did not answer: {why}")]
    Sshd {
        /// Node.
        node: String,
        /// Where.
        addr: SocketAddr,
        /// Last failure.
        why: String,
    },
}

/// Checks the address the guest reported against its lease.
pub fn check_lease(node: &str, msg: &beacon::Message, want: Ipv4Addr) -> Result<(), NotReady> {
    if msg.address.parse::<Ipv4Addr>().ok() == Some(want) {
        Ok(())
    } else {
        Err(NotReady::Lease { node: node.into(), got: msg.address.clone(), want })
    }
}

/// Waits (until `deadline`) for an SSH banner from `ip:22` inside the namespace. There is no
/// event for "a port started listening", so refused connections are retried with backoff.
pub async fn wait_sshd(node: &str, ns: &Arc<NetNs>, ip: Ipv4Addr, deadline: Instant) -> Result<(), NotReady> {
    let addr = SocketAddr::V4(SocketAddrV4::new(ip, 22));
    let mut backoff = Duration::from_millis(20);
    loop {
        let why = match kvci_net::forward::connect_inside(ns.clone(), addr).await {
            Ok(mut s) => {
                let mut banner = [0u8; 4];
                match tokio::time::timeout_at(deadline, s.read_exact(&mut banner)).await {
                    Ok(Ok(_)) if &banner == b"SSH-" => return Ok(()),
                    Ok(Ok(_)) => format!("not an SSH banner: {:?}", String::from_utf8_lossy(&banner)),
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => "no banner".into(),
                }
            }
            Err(e) => e.to_string(),
        };
        if Instant::now() + backoff >= deadline {
            return Err(NotReady::Sshd { node: node.into(), addr, why });
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(address: &str) -> beacon::Message {
        beacon::Message { event: "ready".into(), hostname: "node01".into(), address: address.into(), uptime: 1.0 }
    }

    #[test]
    fn lease_must_match() {
        let want = Ipv4Addr::new(192, 168, 66, 101);
        assert!(check_lease("node01", &msg("192.168.66.101"), want).is_ok());
        let err = check_lease("node01", &msg(""), want).unwrap_err().to_string();
        assert!(err.contains("did not take its DHCP lease"), "{err}");
    }
}
