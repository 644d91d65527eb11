//! A cluster's whole network, brought up in order and torn down with it: the namespace, taps,
//! bridge, egress (slirp4netns and NAT inside the namespace), and the DHCP and DNS servers on
//! sockets bound inside. Dropping it (or the process dying) releases the namespace and
//! everything in it.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::dhcp::{self, DhcpConfig, DhcpServer, StaticLease};
use crate::dhcp6::{self, Dhcp6Config, Dhcp6Server};
use crate::dns::{self, ClusterZone, DnsConfig};
use crate::ra::{self, RaConfig};
use crate::egress::{self, Egress, EgressConfig, EgressError};
use crate::leases::LeaseBook;
use crate::link::{self, RtNetlink};
use crate::netns::{NetNs, NetNsError};
use crate::tap::{self, TapError};
use crate::topology::{Topology, BRIDGE, BRIDGE_IP6};

/// Bringing the network up failed.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The namespace.
    #[error(transparent)]
    Namespace(#[from] NetNsError),
    /// A tap.
    #[error(transparent)]
    Tap(#[from] TapError),
    /// Netlink.
    #[error(transparent)]
    Link(#[from] link::LinkError),
    /// Egress.
    #[error(transparent)]
    Egress(#[from] EgressError),
    /// Binding a server socket inside the namespace.
    #[error("cannot bind the cluster's {what} socket")]
    Bind {
        /// DHCP or DNS.
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// What the network needs besides the topology.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// Nodes, subnet, bridge.
    pub topology: Topology,
    /// Where names outside the cluster are resolved (the host's resolvers by default).
    pub dns_upstreams: Vec<SocketAddr>,
    /// Guest MTU.
    pub mtu: u16,
    /// Let guests reach the host's 127.0.0.1 (see [`egress`]).
    pub allow_host_loopback: bool,
}

/// One node's taps, held by fd: they vanish with the last holder.
#[derive(Debug, Default)]
pub struct NodeTaps {
    /// On the cluster bridge.
    pub nic: Option<OwnedFd>,
    /// On the SR-IOV bridge (kubevirtci's images).
    pub sriov: Option<OwnedFd>,
    /// Secondary NIC i on bridge `br{i+1}` (`--secondary-nics`).
    pub secondary: Vec<OwnedFd>,
}

/// The live network of one cluster.
pub struct ClusterNetwork {
    ns: Arc<NetNs>,
    taps: Vec<NodeTaps>,
    topology: Topology,
    dhcp: Arc<Mutex<DhcpServer>>,
    book: LeaseBook,
    egress: Egress,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl ClusterNetwork {
    /// Creates the namespace and everything in it, and starts DHCP and DNS.
    /// Must run inside a tokio runtime.
    pub async fn create(config: NetworkConfig) -> Result<ClusterNetwork, NetworkError> {
        let topo = config.topology.clone();
        let ns = Arc::new(NetNs::new()?);
        let rt = tokio::runtime::Handle::current();

        // Inside: taps and the netlink socket (both belong to the namespace they are made in).
        let (taps, (conn, handle, _)) = ns.run(|| -> Result<_, NetworkError> {
            let _rt = rt.enter();
            // Static addresses only here: duplicate address detection would only delay them, and
            // router advertisements (slirp4netns sends some on the egress link) must not add
            // routes or addresses beside kvci's own.
            for (name, value) in [("accept_dad", "0"), ("accept_ra", "0"), ("autoconf", "0")] {
                for scope in ["default", "all"] {
                    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{scope}/{name}"), value);
                }
            }
            let taps = topo
                .nodes
                .iter()
                .map(|n| {
                    let sriov = n.sriov.as_ref().map(|(t, _)| tap::create(t)).transpose()?;
                    let secondary = n.secondary.iter().map(|(t, _)| tap::create(t)).collect::<Result<Vec<_>, _>>()?;
                    Ok::<_, TapError>(NodeTaps { nic: Some(tap::create(&n.tap)?), sriov, secondary })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let conn = rtnetlink::new_connection().map_err(|source| NetworkError::Bind { what: "netlink", source })?;
            Ok((taps, conn))
        })??;
        let netlink_task = tokio::spawn(conn);
        let mut nl = RtNetlink::new(handle);
        let egress_config = EgressConfig { allow_host_loopback: config.allow_host_loopback, ipv6: topo.stack.v6() };
        let built = async {
            link::build(&mut nl, &topo).await?;
            let egress = Egress::start(&ns, egress_config).await?;
            link::egress_link(&mut nl, egress_config.ipv6).await?;
            Ok::<_, NetworkError>(egress)
        }
        .await;
        netlink_task.abort();
        let egress = built?;
        ns.run(|| egress::configure_inside(egress_config))??;

        // DNS on the bridge's IPv4 address, and on fd00::1 too unless the cluster is IPv4 only.
        let mut dns_addrs = vec![SocketAddr::new(topo.bridge_ip.into(), 53)];
        if topo.stack.v6() {
            dns_addrs.push(SocketAddr::new(BRIDGE_IP6.into(), 53));
        }
        let (dhcp_sock, v6_sockets, dns_sockets) = ns.run(|| -> Result<_, NetworkError> {
            let dhcp_sock = dhcp::bind_socket(Some(BRIDGE), 67).map_err(|source| NetworkError::Bind { what: "DHCP", source })?;
            let v6 = if topo.stack.v6() {
                let dhcp6 = dhcp6::bind_socket(BRIDGE).map_err(|source| NetworkError::Bind { what: "DHCPv6", source })?;
                let ra = ra::bind_socket(BRIDGE).map_err(|source| NetworkError::Bind { what: "router advertisement", source })?;
                Some((dhcp6, ra))
            } else {
                None
            };
            let bind = |source| NetworkError::Bind { what: "DNS", source };
            let mut dns = Vec::new();
            for addr in &dns_addrs {
                let udp = std::net::UdpSocket::bind(addr).map_err(bind)?;
                let tcp = std::net::TcpListener::bind(addr).map_err(bind)?;
                udp.set_nonblocking(true).map_err(bind)?;
                tcp.set_nonblocking(true).map_err(bind)?;
                dns.push((udp, tcp));
            }
            Ok((dhcp_sock, v6, dns))
        })??;
        let bind = |what| move |source| NetworkError::Bind { what, source };
        let dhcp_sock = tokio::net::UdpSocket::from_std(dhcp_sock).map_err(bind("DHCP"))?;

        let book = LeaseBook::new();
        let dhcp = Arc::new(Mutex::new(DhcpServer::new(dhcp_config(&topo, config.mtu)).with_book(book.clone())));
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        let (d, rx) = (dhcp.clone(), stop_rx.clone());
        // An IPv6-only cluster gets no IPv4 leases (the bridge keeps its address for the host).
        if topo.stack.v4() {
            tasks.push(tokio::spawn(async move {
                if let Err(e) = dhcp::serve(dhcp_sock, d, rx).await {
                    tracing::error!(error = %e, "DHCP server stopped");
                }
            }));
        }
        if let Some((dhcp6_sock, ra_sock)) = v6_sockets {
            let dhcp6_sock = tokio::net::UdpSocket::from_std(dhcp6_sock).map_err(bind("DHCPv6"))?;
            let server = Arc::new(Mutex::new(Dhcp6Server::new(Dhcp6Config::for_topology(&topo)).with_book(book.clone())));
            let rx = stop_rx.clone();
            tasks.push(tokio::spawn(async move {
                if let Err(e) = dhcp6::serve(dhcp6_sock, server, rx).await {
                    tracing::error!(error = %e, "DHCPv6 server stopped");
                }
            }));
            let (ra_config, rx) = (RaConfig::for_topology(&topo, config.mtu), stop_rx.clone());
            tasks.push(tokio::spawn(async move {
                if let Err(e) = ra::serve(ra_sock, ra_config, rx).await {
                    tracing::error!(error = %e, "router advertisements stopped");
                }
            }));
        }
        let dns_config = DnsConfig { zone: zone(&topo), upstreams: config.dns_upstreams.clone(), fast_path: true };
        for (udp, tcp) in dns_sockets {
            let udp = tokio::net::UdpSocket::from_std(udp).map_err(bind("DNS"))?;
            let tcp = tokio::net::TcpListener::from_std(tcp).map_err(bind("DNS"))?;
            let (config, rx) = (dns_config.clone(), stop_rx.clone());
            tasks.push(tokio::spawn(async move {
                if let Err(e) = dns::serve(udp, tcp, config, rx).await {
                    tracing::error!(error = %e, "DNS server stopped");
                }
            }));
        }
        tracing::info!(subnet = %topo.subnet, nodes = topo.nodes.len(), egress_pid = ?egress.pid(), "cluster network up");
        Ok(ClusterNetwork { ns, taps, topology: topo, dhcp, book, egress, stop, tasks })
    }

    /// The namespace (for port forwards and probes into it).
    pub fn ns(&self) -> &Arc<NetNs> {
        &self.ns
    }

    /// The topology it was built from.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Hands out node `index`'s tap fds (once), to be passed to its QEMU.
    pub fn take_taps(&mut self, index: u32) -> NodeTaps {
        index.checked_sub(1).and_then(|i| self.taps.get_mut(i as usize)).map(std::mem::take).unwrap_or_default()
    }

    /// DHCP counters (malformed packets, leases given…).
    pub fn dhcp_stats(&self) -> dhcp::Stats {
        self.dhcp.lock().map(|d| *d.stats()).unwrap_or_default()
    }

    /// Which nodes took their leases (wait on it with `changed()`).
    pub fn leases(&self) -> tokio::sync::watch::Receiver<crate::leases::Taken> {
        self.book.watch()
    }

    /// The egress helper's pid.
    pub fn egress_pid(&self) -> Option<u32> {
        self.egress.pid()
    }

    /// Stops the servers and the egress helper; the namespace goes when the last holder drops it.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        self.egress.stop().await;
    }
}

fn dhcp_config(topo: &Topology, mtu: u16) -> DhcpConfig {
    DhcpConfig {
        server_ip: topo.bridge_ip,
        prefix_len: topo.subnet.prefix,
        router: topo.bridge_ip,
        dns: vec![topo.bridge_ip],
        domain: topo.cluster.clone(),
        mtu,
        lease_secs: u32::MAX,
        leases: topo.nodes.iter().map(|n| StaticLease { mac: n.mac, ip: n.ip, hostname: n.hostname.clone() }).collect(),
    }
}

/// Nodes get the addresses of the cluster's stack. The bridge's names keep their A record in
/// every stack (the bridge always has its IPv4 address, and the egress proxy resolves them
/// through this list) and get AAAA `fd00::1` when nodes have IPv6.
fn zone(topo: &Topology) -> ClusterZone {
    let mut hosts: Vec<(String, Ipv4Addr)> = topo.nodes.iter().filter(|_| topo.stack.v4()).map(|n| (n.hostname.clone(), n.ip)).collect();
    let mut hosts6: Vec<(String, Ipv6Addr)> = topo.nodes.iter().filter(|_| topo.stack.v6()).map(|n| (n.hostname.clone(), n.ip6)).collect();
    // The bridge's names follow the stack too: an IPv6-only node must not try IPv4 first.
    for name in ["registry", "nfs", "ceph"] {
        if topo.stack.v4() {
            hosts.push((name.to_string(), topo.bridge_ip));
        }
        if topo.stack.v6() {
            hosts6.push((name.to_string(), BRIDGE_IP6));
        }
    }
    ClusterZone { cluster: topo.cluster.clone(), hosts, hosts6 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::{Stack, Subnet, DEFAULT_SUBNET};

    fn names(hosts: &[(String, impl std::fmt::Display)]) -> Vec<String> {
        hosts.iter().map(|(n, ip)| format!("{n} {ip}")).collect()
    }

    #[test]
    fn zone_follows_the_stack() {
        let subnet = Subnet::parse(DEFAULT_SUBNET).unwrap();
        let dual = zone(&Topology::with_stack("kvci", subnet, 2, Stack::Dual));
        assert_eq!(names(&dual.hosts), ["node01 192.168.66.101", "node02 192.168.66.102", "registry 192.168.66.2", "nfs 192.168.66.2", "ceph 192.168.66.2"]);
        assert_eq!(names(&dual.hosts6), ["node01 fd00::101", "node02 fd00::102", "registry fd00::1", "nfs fd00::1", "ceph fd00::1"]);
        let only4 = zone(&Topology::with_stack("kvci", subnet, 2, Stack::Ipv4));
        assert_eq!(only4.hosts, dual.hosts);
        assert!(only4.hosts6.is_empty());
        let only6 = zone(&Topology::with_stack("kvci", subnet, 2, Stack::Ipv6));
        assert!(only6.hosts.is_empty(), "no A record in an IPv6-only cluster");
        assert_eq!(only6.hosts6, dual.hosts6);
    }
}
