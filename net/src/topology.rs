//! The cluster network's plan, pure: subnet, bridge address, and per node its tap, MAC and IP,
//! numbered the way kubevirtci numbers them (node NN: MAC `52:55:00:d1:55:NN`, IP `.1NN`,
//! IPv6 `fd00::1NN`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Default subnet, as kubevirtci's `br0`.
pub const DEFAULT_SUBNET: &str = "192.168.66.0/24";
/// Name of the bridge inside the namespace.
pub const BRIDGE: &str = "br0";
/// The bridge's MAC: fixed, and the one the DHCPv6 server's DUID names.
pub const BRIDGE_MAC: [u8; 6] = [0x52, 0x55, 0x00, 0xd1, 0x55, 0x00];
/// The bridge of kubevirtci's emulated SR-IOV NICs (`igb`).
pub const SRIOV_BRIDGE: &str = "br-sriov";
/// kubevirtci's IPv6 prefix on `br0` (a /64).
pub const PREFIX6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0);
/// The bridge's IPv6 address: router, DNS server and `registry` (kubevirtci's `fd00::1`).
pub const BRIDGE_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);

/// Which IP versions the cluster's nodes get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Stack {
    /// IPv4 and IPv6 (kubevirtci's default).
    #[default]
    Dual,
    /// IPv4 only (`--ipv4-only`).
    Ipv4,
    /// IPv6 only (`--single-stack`, kubevirtci's `KUBEVIRT_SINGLE_STACK`): no DHCPv4 leases.
    Ipv6,
}

impl Stack {
    /// Whether nodes get IPv4 leases.
    pub fn v4(self) -> bool {
        self != Stack::Ipv6
    }
    /// Whether nodes get IPv6 addresses.
    pub fn v6(self) -> bool {
        self != Stack::Ipv4
    }
}

/// An IPv4 subnet that has room for the bridge (.2) and nodes (.101–.199).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    /// Network address.
    pub network: Ipv4Addr,
    /// Prefix length (≤ 24).
    pub prefix: u8,
}

/// A subnet that cannot hold a cluster.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubnetError {
    /// Not `a.b.c.d/len`.
    #[error("cannot read subnet {0:?}: write it like 192.168.66.0/24")]
    Syntax(String),
    /// Loopback, "this network", multicast or reserved space.
    #[error("subnet {0} clashes with reserved address space (loopback, 0.0.0.0/8, multicast): use a private range like 192.168.66.0/24 or 10.66.0.0/24")]
    Reserved(String),
    /// Too small for `.1NN` node addresses.
    #[error("subnet {0} is too small: use a prefix of /24 or shorter (nodes get .101-.199)")]
    TooSmall(String),
}

impl Subnet {
    /// Parses `192.168.66.0/24` (host bits are cleared).
    pub fn parse(text: &str) -> Result<Subnet, SubnetError> {
        let syntax = || SubnetError::Syntax(text.to_string());
        let (addr, len) = text.trim().split_once('/').ok_or_else(syntax)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| syntax())?;
        let prefix: u8 = len.parse().map_err(|_| syntax())?;
        if prefix > 32 {
            return Err(syntax());
        }
        if !(8..=24).contains(&prefix) {
            return Err(SubnetError::TooSmall(text.to_string()));
        }
        let mask = u32::MAX << (32 - prefix);
        let first = Ipv4Addr::from(u32::from(addr) & mask).octets()[0];
        if first == 0 || first == 127 || first >= 224 {
            return Err(SubnetError::Reserved(text.to_string()));
        }
        Ok(Subnet { network: Ipv4Addr::from(u32::from(addr) & mask), prefix })
    }

    /// The address `offset` hosts into the subnet.
    pub fn host(&self, offset: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + offset)
    }

    /// The netmask.
    pub fn mask(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::MAX << (32 - self.prefix))
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// One node's place on the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeNet {
    /// 1-based node number.
    pub index: u32,
    /// `nodeNN`.
    pub hostname: String,
    /// Tap name inside the namespace.
    pub tap: String,
    /// The guest NIC's MAC.
    pub mac: [u8; 6],
    /// The address DHCP gives it.
    pub ip: Ipv4Addr,
    /// The address DHCPv6 gives it: `fd00::1NN` (NN in decimal digits, as kubevirtci writes it).
    pub ip6: Ipv6Addr,
    /// Its SR-IOV NIC's tap on [`SRIOV_BRIDGE`] and MAC `52:55:00:d1:57:NN`, when the cluster
    /// has kubevirtci's devices.
    pub sriov: Option<(String, [u8; 6])>,
    /// Its secondary NICs' taps and MACs, NIC i on bridge [`secondary_bridge`]`(i)`.
    pub secondary: Vec<(String, [u8; 6])>,
}

/// The whole cluster network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// Cluster name (the DNS domain of the nodes).
    pub cluster: String,
    /// Subnet.
    pub subnet: Subnet,
    /// The bridge's address: gateway, DNS server and `registry`.
    pub bridge_ip: Ipv4Addr,
    /// Nodes in order.
    pub nodes: Vec<NodeNet>,
    /// Which IP versions the nodes get. The bridge has both addresses whatever it is.
    pub stack: Stack,
    /// Secondary NICs per node, so bridges `br1`…`brN` (see [`Topology::with_secondary_nics`]).
    pub secondary_nics: u32,
}

/// kubevirtci's MAC of node `index`'s SR-IOV NIC: `52:55:00:d1:57:NN`.
pub fn sriov_mac(index: u32) -> [u8; 6] {
    let mut mac = node_mac(index);
    mac[4] = 0x57;
    mac
}

/// The bridge of every node's secondary NIC `i` (0-based): `br1`, `br2`, … (kubevirtci's
/// names). No addresses and no DHCP or DNS on them: only `br0` is served.
pub fn secondary_bridge(i: u32) -> String {
    format!("br{}", i + 1)
}

/// The tap of secondary NIC `i` of node `x` (both 0-based): `stap{x}-{i}`, as kubevirtci's.
pub fn secondary_tap(x: u32, i: u32) -> String {
    format!("stap{x}-{i}")
}

/// kubevirtci's secondary NIC MACs: `52:55:00:d1:56:XX`, XX one hex counter over all the
/// cluster's secondary NICs, node01's first.
pub fn secondary_mac(counter: u32) -> [u8; 6] {
    [0x52, 0x55, 0x00, 0xd1, 0x56, (counter & 0xff) as u8]
}

impl Topology {
    /// Gives every node `nics` secondary NICs, NIC i on bridge `br{i+1}` (at most 256 in all).
    pub fn with_secondary_nics(mut self, nics: u32) -> Topology {
        let per_node = nics;
        for (x, n) in self.nodes.iter_mut().enumerate() {
            let x = x as u32;
            n.secondary = (0..per_node).map(|i| (secondary_tap(x, i), secondary_mac(x * per_node + i))).collect();
        }
        self.secondary_nics = nics;
        self
    }

    /// Gives every node an SR-IOV NIC on [`SRIOV_BRIDGE`] (kubevirtci's images).
    pub fn with_sriov(mut self) -> Topology {
        for n in &mut self.nodes {
            n.sriov = Some((format!("tap-sriov{:02}", n.index), sriov_mac(n.index)));
        }
        self
    }

    /// Where kvci reaches node `n` (ssh, forwards, hooks): its IPv4 address unless the cluster
    /// is IPv6 only.
    pub fn node_addr(&self, n: &NodeNet) -> IpAddr {
        if self.stack.v4() {
            n.ip.into()
        } else {
            n.ip6.into()
        }
    }

    /// Where kvci reaches the bridge's services from inside (the registry), by the same rule.
    pub fn bridge_addr(&self) -> IpAddr {
        if self.stack.v4() {
            self.bridge_ip.into()
        } else {
            BRIDGE_IP6.into()
        }
    }
}

/// kubevirtci's IPv6 address for node `index`: `fd00::1NN`, the number's decimal digits read as
/// hex (node12 → `fd00::112`), like its MAC.
pub fn node_ip6(index: u32) -> Ipv6Addr {
    let group = u16::from_str_radix(&format!("1{:02}", index % 100), 16).unwrap_or(0);
    Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, group)
}

/// kubevirtci's MAC for node `index`: the last byte spells the node number in decimal
/// (node12 → `52:55:00:d1:55:12`).
pub fn node_mac(index: u32) -> [u8; 6] {
    let last = u8::from_str_radix(&format!("{:02}", index % 100), 16).unwrap_or(0);
    [0x52, 0x55, 0x00, 0xd1, 0x55, last]
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn mac_string(mac: &[u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

impl Topology {
    /// Plans `nodes` nodes (1–99) of cluster `cluster` on `subnet`, dual stack.
    pub fn new(cluster: &str, subnet: Subnet, nodes: u32) -> Topology {
        Topology::with_stack(cluster, subnet, nodes, Stack::Dual)
    }

    /// As [`Topology::new`] with the given IP versions.
    pub fn with_stack(cluster: &str, subnet: Subnet, nodes: u32, stack: Stack) -> Topology {
        let nodes = (1..=nodes)
            .map(|index| NodeNet {
                index,
                hostname: format!("node{index:02}"),
                tap: format!("tap{index:02}"),
                mac: node_mac(index),
                ip: subnet.host(100 + index),
                ip6: node_ip6(index),
                sriov: None,
                secondary: Vec::new(),
            })
            .collect();
        Topology { cluster: cluster.to_string(), subnet, bridge_ip: subnet.host(2), nodes, stack, secondary_nics: 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_are_numbered_like_kubevirtci() {
        let t = Topology::new("kvci", Subnet::parse(DEFAULT_SUBNET).unwrap(), 12);
        assert_eq!(t.bridge_ip, Ipv4Addr::new(192, 168, 66, 2));
        assert_eq!(t.nodes[0].ip, Ipv4Addr::new(192, 168, 66, 101));
        assert_eq!(mac_string(&t.nodes[0].mac), "52:55:00:d1:55:01");
        assert_eq!(mac_string(&t.nodes[11].mac), "52:55:00:d1:55:12");
        assert_eq!(t.nodes[11].tap, "tap12");
        assert_eq!(t.nodes[0].ip6.to_string(), "fd00::101");
        assert_eq!(t.nodes[11].ip6.to_string(), "fd00::112");
        assert_eq!(t.stack, Stack::Dual);
    }

    #[test]
    fn secondary_nics_count_macs_over_the_whole_cluster() {
        let t = Topology::new("kvci", Subnet::parse(DEFAULT_SUBNET).unwrap(), 2).with_secondary_nics(2);
        let macs: Vec<String> = t.nodes.iter().flat_map(|n| n.secondary.iter().map(|(_, m)| mac_string(m))).collect();
        assert_eq!(macs, ["52:55:00:d1:56:00", "52:55:00:d1:56:01", "52:55:00:d1:56:02", "52:55:00:d1:56:03"]);
        assert_eq!(t.nodes[1].secondary[0].0, "stap1-0");
        assert_eq!((secondary_bridge(0), secondary_bridge(1)), ("br1".to_string(), "br2".to_string()));
        assert_eq!(t.secondary_nics, 2);
        // Hex, not the decimal digits of the node number: the 12th NIC is 0b.
        let t = Topology::new("kvci", Subnet::parse(DEFAULT_SUBNET).unwrap(), 4).with_secondary_nics(3);
        assert_eq!(mac_string(&t.nodes[3].secondary[2].1), "52:55:00:d1:56:0b");
        assert!(t.nodes.iter().flat_map(|n| &n.secondary).all(|(tap, _)| tap.len() <= 15));
    }

    #[test]
    fn subnets_are_parsed_and_checked() {
        let s = Subnet::parse("10.1.2.3/16").unwrap();
        assert_eq!(s.network, Ipv4Addr::new(10, 1, 0, 0));
        assert_eq!(s.mask(), Ipv4Addr::new(255, 255, 0, 0));
        assert_eq!(s.to_string(), "10.1.0.0/16");
        assert!(matches!(Subnet::parse("10.0.0.0/25"), Err(SubnetError::TooSmall(_))));
        assert!(matches!(Subnet::parse("10.0.0.0"), Err(SubnetError::Syntax(_))));
        assert!(matches!(Subnet::parse("10.0.0.0/33"), Err(SubnetError::Syntax(_))));
        assert!(matches!(Subnet::parse("127.0.0.0/24"), Err(SubnetError::Reserved(_))));
        assert!(matches!(Subnet::parse("239.1.1.0/24"), Err(SubnetError::Reserved(_))));
    }
}
