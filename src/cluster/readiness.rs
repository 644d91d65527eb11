//! What "ready" means beyond the beacon: the node took its DHCP lease and its sshd answers.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use kvci_net::leases::Taken;
use tokio::sync::watch;

use crate::ssh::SshError;
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
    #[error("{node} did not take its {what} lease: it reports address {got:?}, expected {want} (see `kvci vm logs {node}`)")]
    Lease {
        /// Node.
        node: String,
        /// DHCP or DHCPv6.
        what: &'static str,
        /// What the guest reported.
        got: String,
        /// Its static lease.
        want: IpAddr,
    },
    /// No lease was taken in time (guests without a beacon).
    #[error("{node} took no {what} lease (see `kvci vm logs {node}`: is its DHCP client running?)")]
    NoLease {
        /// Node.
        node: String,
        /// DHCP or DHCPv6.
        what: &'static str,
    },
    /// The image's key does not log in.
    #[error("{node}: sshd refused the image's key {} for user {users} (kubevirtci images log in as cloud-user, older ones as vagrant, with /vagrant.key)", key.display())]
    LoginRefused {
        /// Node.
        node: String,
        /// The users tried.
        users: String,
        /// The key file.
        key: std::path::PathBuf,
    },
    /// The root-key step failed.
    #[error("{node}: adding the cluster key to root's authorized_keys as {user} (sudo) failed: {why}")]
    RootKey {
        /// Node.
        node: String,
        /// The user.
        user: String,
        /// What went wrong.
        why: String,
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

/// The static leases a node must have taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Leases {
    /// Its DHCPv4 lease, unless the cluster is IPv6 only.
    pub v4: Option<Ipv4Addr>,
    /// Its DHCPv6 lease, unless the cluster is IPv4 only.
    pub v6: Option<Ipv6Addr>,
}

/// Checks the addresses the guest reported against its leases.
pub fn check_lease(node: &str, msg: &beacon::Message, want: Leases) -> Result<(), NotReady> {
    if let Some(v4) = want.v4 {
        if msg.address.parse::<Ipv4Addr>().ok() != Some(v4) {
            return Err(NotReady::Lease { node: node.into(), what: "DHCP", got: msg.address.clone(), want: v4.into() });
        }
    }
    if let Some(v6) = want.v6 {
        if msg.address6.parse::<Ipv6Addr>().ok() != Some(v6) {
            return Err(NotReady::Lease { node: node.into(), what: "DHCPv6", got: msg.address6.clone(), want: v6.into() });
        }
    }
    Ok(())
}

/// Waits (until `deadline`) for an SSH banner from `ip:22` inside the namespace. There is no
/// event for "a port started listening", so refused connections are retried with backoff.
pub async fn wait_sshd(node: &str, ns: &Arc<NetNs>, ip: IpAddr, deadline: Instant) -> Result<(), NotReady> {
    let addr = SocketAddr::new(ip, 22);
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

/// Waits until `mac` took the leases its cluster serves, as kvci's DHCP servers saw it.
pub async fn wait_leases(node: &str, mac: [u8; 6], mut taken: watch::Receiver<Taken>, want: Leases, deadline: Instant) -> Result<(), NotReady> {
    loop {
        let missing = {
            let t = taken.borrow_and_update();
            if want.v4.is_some() && !t.v4.contains(&mac) {
                Some("DHCP")
            } else if want.v6.is_some() && !t.v6.contains(&mac) {
                Some("DHCPv6")
            } else {
                None
            }
        };
        let Some(what) = missing else { return Ok(()) };
        match tokio::time::timeout_at(deadline, taken.changed()).await {
            Ok(Ok(())) => {}
            _ => return Err(NotReady::NoLease { node: node.into(), what }),
        }
    }
}

/// Logs in to `ip:22` as the first of `users` that `key` opens (retrying until `deadline`
/// while sshd is not up yet: there is no event for a port starting to listen), then appends
/// `root_key` (the cluster's public key) to root's authorized_keys with sudo, so kvci's ssh,
/// hooks and fix-ups work as root from then on. Returns the user that logged in.
pub async fn login(node: &str, ns: &Arc<NetNs>, ip: IpAddr, users: &[String], key: &Path, root_key: &Path, deadline: Instant) -> Result<String, NotReady> {
    let addr = SocketAddr::new(ip, 22);
    let private = crate::ssh::keys::load_login_key(key).map_err(|e| NotReady::Sshd { node: node.into(), addr, why: e.to_string() })?;
    let public = std::fs::read(root_key).map_err(|e| NotReady::RootKey { node: node.into(), user: "-".into(), why: format!("{}: {e}", root_key.display()) })?;
    let mut backoff = Duration::from_millis(50);
    loop {
        let mut refused = 0;
        let mut why = String::new();
        for user in users {
            match kvci_net::forward::connect_inside(ns.clone(), addr).await {
                Ok(stream) => match crate::ssh::client::connect_with(stream, user, private.clone()).await {
                    Ok(mut session) => {
                        root_key_step(node, user, &mut session, public).await?;
                        let _ = session.close().await;
                        return Ok(user.clone());
                    }
                    Err(SshError::AuthRejected { .. }) => refused += 1,
                    Err(e) => why = e.to_string(),
                },
                Err(e) => why = e.to_string(),
            }
        }
        if refused == users.len() {
            return Err(NotReady::LoginRefused { node: node.into(), users: users.join(" or "), key: key.to_path_buf() });
        }
        if Instant::now() + backoff >= deadline {
            return Err(NotReady::Sshd { node: node.into(), addr, why });
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(500));
    }
}

/// gocli's root-key step, with kvci's cluster key instead of the image's.
async fn root_key_step(node: &str, user: &str, session: &mut crate::ssh::Session, public: Vec<u8>) -> Result<(), NotReady> {
    let command = "sudo -n sh -c 'umask 077; mkdir -p /root/.ssh; cat >> /root/.ssh/authorized_keys'";
    let failed = |why: String| NotReady::RootKey { node: node.into(), user: user.into(), why };
    let out = session.exec(command, Some(public)).await.map_err(|e| failed(e.to_string()))?;
    if out.exit_code != 0 {
        return Err(failed(format!("exit code {}: {}", out.exit_code, String::from_utf8_lossy(&out.stderr).trim())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(address: &str, address6: &str) -> beacon::Message {
        beacon::Message { event: "ready".into(), hostname: "node01".into(), address: address.into(), address6: address6.into(), uptime: 1.0 }
    }

    #[test]
    fn leases_must_match() {
        let v4 = Leases { v4: Some(Ipv4Addr::new(192, 168, 66, 101)), v6: None };
        assert!(check_lease("node01", &msg("192.168.66.101", ""), v4).is_ok());
        let err = check_lease("node01", &msg("", ""), v4).unwrap_err().to_string();
        assert!(err.contains("did not take its DHCP lease"), "{err}");
        let dual = Leases { v6: Some("fd00::101".parse().unwrap()), ..v4 };
        assert!(check_lease("node01", &msg("192.168.66.101", "fd00::101"), dual).is_ok());
        let err = check_lease("node01", &msg("192.168.66.101", ""), dual).unwrap_err().to_string();
        assert!(err.contains("did not take its DHCPv6 lease"), "{err}");
        let v6 = Leases { v4: None, v6: dual.v6 };
        assert!(check_lease("node01", &msg("", "fd00::101"), v6).is_ok());
    }
}
