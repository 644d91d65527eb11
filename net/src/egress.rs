//! Egress for guests: transparent NAT to the outside, root and rootless alike.
//!
//! `slirp4netns` (the user-mode network helper of rootless Podman and Docker) is attached to the
//! cluster's namespace and gives it one more link, [`TAP`], into a user-mode TCP/IP stack that
//! opens ordinary sockets in the host's namespace for whatever leaves through it. Inside the
//! cluster's namespace the kernel forwards the guests' traffic from the bridge to that link and
//! nftables masquerades it there. So TCP, UDP and ICMP echo leave the cluster from every guest
//! process with no proxy setting anywhere.
//!
//! Nothing lives in the host's namespaces: the forwarding sysctls and the nftables table belong
//! to the cluster's namespace and die with it, and slirp4netns exits when the supervisor does
//! (its `--exit-fd` is a pipe only the supervisor holds open; it is also killed when the
//! supervisor's thread that spawned it ends).
//!
//! The host's loopback and link-local addresses are out of reach by default: slirp4netns runs
//! with `--disable-host-loopback` (its alias [`HOST_ALIAS`] for the host's 127.0.0.1 refuses
//! connections) and the namespace drops forwarded packets to loopback, link-local (cloud
//! metadata at 169.254.169.254) and slirp's own host and DNS aliases.
//! [`EgressConfig::allow_host_loopback`] opens [`HOST_ALIAS`] (and only that).

use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::netns::{NetNs, NetNsError};

/// The egress link inside the cluster's namespace.
pub const TAP: &str = "egress0";
/// Its address in slirp's network (slirp4netns's default 10.0.2.0/24).
pub const TAP_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 100);
/// slirp's router: every packet for the outside goes there.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
/// slirp's alias for the host's 127.0.0.1 (the router's address, as in QEMU's user network).
pub const HOST_ALIAS: Ipv4Addr = GATEWAY;
/// slirp's DNS alias (forwards to the host's resolvers; guests use the cluster's DNS instead).
pub const SLIRP_DNS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 3);
/// slirp's IPv6 router. It lies inside the cluster's fd00::/64, so it gets a host route via
/// [`TAP`], which wins over the bridge's /64.
pub const GATEWAY6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
/// The egress link's IPv6 address, a /128 for the same reason (no node uses `::100`).
pub const TAP_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x100);
/// slirp's IPv6 DNS alias.
pub const SLIRP_DNS6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 3);
/// The egress link's MTU: slirp's largest, for throughput (guests keep theirs).
pub const TAP_MTU: u32 = 65520;
/// How long slirp4netns may take to attach.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// How the cluster reaches the outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EgressConfig {
    /// Let guests reach the host's 127.0.0.1 as [`HOST_ALIAS`] (`vm up --allow-host-loopback`).
    pub allow_host_loopback: bool,
    /// IPv6 egress too.
    pub ipv6: bool,
}

/// Setting up egress failed.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    /// slirp4netns could not be started.
    #[error("cannot start slirp4netns (the egress helper; Debian package slirp4netns, `scripts/install-deps.sh` installs it)")]
    Spawn(#[source] std::io::Error),
    /// It exited or never said it was ready.
    #[error("slirp4netns did not attach to the cluster's namespace: {0}")]
    NotReady(String),
    /// A sysctl or nft inside the namespace.
    #[error("cannot set up egress inside the cluster's namespace: {what}")]
    Inside {
        /// What failed.
        what: String,
    },
    /// Entering the namespace.
    #[error(transparent)]
    Namespace(#[from] NetNsError),
}

/// A running egress: slirp4netns attached to the namespace. Dropping it kills the helper.
pub struct Egress {
    child: Child,
    /// Its `--exit-fd` pipe: slirp4netns exits when this end closes.
    _exit: OwnedFd,
}

impl Egress {
    /// Attaches slirp4netns to `ns` and waits until [`TAP`] exists there. Call from a thread that
    /// lives as long as the cluster (the helper gets SIGKILL when it ends), then [`configure`].
    pub async fn start(ns: &NetNs, config: EgressConfig) -> Result<Egress, EgressError> {
        let (exit_read, exit_write) = nix::unistd::pipe().map_err(|e| EgressError::Spawn(e.into()))?;
        let (ready_read, ready_write) = nix::unistd::pipe().map_err(|e| EgressError::Spawn(e.into()))?;
        let mut cmd = Command::new(program("slirp4netns"));
        cmd.args(slirp_args(config, NS_FD, EXIT_FD, READY_FD));
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).kill_on_drop(true);
        let fds = [(ns.fd().as_raw_fd(), NS_FD), (exit_read.as_raw_fd(), EXIT_FD), (ready_write.as_raw_fd(), READY_FD)];
        crate::sys::inherit_and_die_with_parent(cmd.as_std_mut(), fds);
        let mut child = cmd.spawn().map_err(EgressError::Spawn)?;
        drop(exit_read);
        drop(ready_write);
        let stderr = child.stderr.take();
        let mut ready = tokio::fs::File::from(std::fs::File::from(ready_read));
        let mut byte = [0u8; 1];
        let ready = tokio::time::timeout(READY_TIMEOUT, ready.read(&mut byte)).await;
        match ready {
            Ok(Ok(1)) => {}
            other => {
                let _ = child.start_kill();
                let why = match other {
                    Err(_) => format!("no answer in {}s", READY_TIMEOUT.as_secs()),
                    _ => format!("it exited: {}", read_all(stderr).await),
                };
                return Err(EgressError::NotReady(why));
            }
        }
        if let Some(stderr) = stderr {
            // Drained for good: a full pipe would block the helper.
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::debug!(target: "slirp4netns", "{line}");
                }
            });
        }
        Ok(Egress { child, _exit: exit_write })
    }

    /// The helper's pid (for tests and `status`).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Stops the helper and reaps it.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// fds as the helper sees them.
const NS_FD: i32 = 3;
const EXIT_FD: i32 = 4;
const READY_FD: i32 = 5;

/// slirp4netns's command line: attached by namespace path (an fd it inherits), no `--configure`
/// (kvci sets the link up itself, with a /128 for IPv6, see [`GATEWAY6`]).
pub fn slirp_args(config: EgressConfig, ns_fd: i32, exit_fd: i32, ready_fd: i32) -> Vec<String> {
    let mut args = vec![
        "--netns-type=path".to_string(),
        format!("--exit-fd={exit_fd}"),
        format!("--ready-fd={ready_fd}"),
        format!("--mtu={TAP_MTU}"),
    ];
    if !config.allow_host_loopback {
        args.push("--disable-host-loopback".into());
    }
    if config.ipv6 {
        args.push("--enable-ipv6".into());
    }
    args.push(format!("/proc/self/fd/{ns_fd}"));
    args.push(TAP.into());
    args
}

/// The namespace's nftables ruleset: masquerade what leaves through [`TAP`], and drop forwarded
/// packets for the host's loopback and link-local addresses and slirp's aliases.
pub fn ruleset(config: EgressConfig) -> String {
    let mut v4 = vec!["127.0.0.0/8".to_string(), "169.254.0.0/16".into(), SLIRP_DNS.to_string()];
    let mut v6 = vec!["::1".to_string(), "fe80::/10".into(), SLIRP_DNS6.to_string(), "::ffff:0:0/96".into()];
    if !config.allow_host_loopback {
        v4.push(HOST_ALIAS.to_string());
        v6.push(GATEWAY6.to_string());
    }
    format!(
        "table inet kvci {{\n\
         \tchain forward {{\n\
         \t\ttype filter hook forward priority filter; policy accept;\n\
         \t\tip daddr {{ {v4} }} drop\n\
         \t\tip6 daddr {{ {v6} }} drop\n\
         \t}}\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\toifname \"{TAP}\" masquerade\n\
         \t}}\n\
         }}\n",
        v4 = v4.join(", "),
        v6 = v6.join(", "),
    )
}

/// Inside the namespace (on a thread that entered it): forwarding on, the ruleset loaded.
/// Both belong to the namespace and vanish with it.
pub fn configure_inside(config: EgressConfig) -> Result<(), EgressError> {
    let sysctl = |path: &str| {
        std::fs::write(path, "1").map_err(|e| EgressError::Inside { what: format!("{path}: {e}") })
    };
    sysctl("/proc/sys/net/ipv4/ip_forward")?;
    if config.ipv6 {
        sysctl("/proc/sys/net/ipv6/conf/all/forwarding")?;
    }
    let mut nft = std::process::Command::new(program("nft"))
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| EgressError::Inside { what: format!("running nft (Debian package nftables): {e}") })?;
    if let Some(mut stdin) = nft.stdin.take() {
        let _ = stdin.write_all(ruleset(config).as_bytes());
    }
    let out = nft.wait_with_output().map_err(|e| EgressError::Inside { what: format!("nft: {e}") })?;
    if !out.status.success() {
        return Err(EgressError::Inside { what: format!("nft refused the ruleset: {}", String::from_utf8_lossy(&out.stderr).trim()) });
    }
    Ok(())
}

/// `name` from PATH, else from the sbin directories an unprivileged user's PATH often lacks
/// (Debian's nft is /usr/sbin/nft).
fn program(name: &str) -> std::path::PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(std::path::PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| name.into())
}

async fn read_all(stderr: Option<tokio::process::ChildStderr>) -> String {
    let mut text = String::new();
    if let Some(mut s) = stderr {
        let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_string(&mut text)).await;
    }
    text.trim().chars().take(2000).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slirp_is_attached_by_path_without_host_loopback_by_default() {
        let args = slirp_args(EgressConfig { allow_host_loopback: false, ipv6: true }, 3, 4, 5);
        assert_eq!(
            args,
            [
                "--netns-type=path",
                "--exit-fd=4",
                "--ready-fd=5",
                "--mtu=65520",
                "--disable-host-loopback",
                "--enable-ipv6",
                "/proc/self/fd/3",
                "egress0"
            ]
        );
        let open = slirp_args(EgressConfig { allow_host_loopback: true, ipv6: false }, 3, 4, 5);
        assert!(!open.iter().any(|a| a == "--disable-host-loopback" || a == "--enable-ipv6"));
    }

    #[test]
    fn ruleset_masquerades_and_keeps_guests_off_the_host() {
        let closed = ruleset(EgressConfig::default());
        assert!(closed.contains("oifname \"egress0\" masquerade"));
        assert!(closed.contains("ip daddr { 127.0.0.0/8, 169.254.0.0/16, 10.0.2.3, 10.0.2.2 } drop"), "{closed}");
        assert!(closed.contains("ip6 daddr { ::1, fe80::/10, fd00::3, ::ffff:0:0/96, fd00::2 } drop"), "{closed}");
        let open = ruleset(EgressConfig { allow_host_loopback: true, ipv6: true });
        assert!(open.contains("ip daddr { 127.0.0.0/8, 169.254.0.0/16, 10.0.2.3 } drop"), "{open}");
    }
}
