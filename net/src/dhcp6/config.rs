//! What the DHCPv6 server hands out and who gets it: its own DUID, resolvers, search domain,
//! lifetimes and the static MAC → `fd00::1NN` table, plus the checks that catch a table that
//! could not work.

use std::collections::HashSet;
use std::net::Ipv6Addr;

use crate::topology::{mac_string, node_ip6, node_mac, Topology, BRIDGE_IP6};

/// `lifetime` value meaning "never expires" (RFC 8415 §7.7), as kubevirtci's leases: guests
/// then never renew, so a paused or restored cluster keeps its addresses.
pub const INFINITE: u32 = u32::MAX;

/// A fixed MAC for the server's DUID: kubevirtci's node numbering with node number 00, which
/// no node has. Fixed rather than the bridge's own MAC, which Linux changes as ports come and
/// go unless it is set: a DUID that changes makes guests' RENEWs look meant for another server.
pub const DEFAULT_SERVER_MAC: [u8; 6] = crate::topology::BRIDGE_MAC;

/// DUID-LL (RFC 8415 §11.4) of an Ethernet MAC: type 3, hardware type 1, the MAC.
pub fn duid_ll(mac: [u8; 6]) -> Vec<u8> {
    let mut duid = vec![0, 3, 0, 1];
    duid.extend_from_slice(&mac);
    duid
}

/// One fixed binding: the node with this MAC always gets this address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticLease6 {
    /// The guest NIC's MAC, as found in its DUID or its link-local address.
    pub mac: [u8; 6],
    /// The address it always gets (`fd00::1NN`).
    pub ip6: Ipv6Addr,
    /// The node's name, for logs (`node02`).
    pub hostname: String,
}

impl StaticLease6 {
    /// kubevirtci's lease for node `index`: MAC `52:55:00:d1:55:NN`, `fd00::1NN`, `nodeNN`.
    pub fn node(index: u32) -> StaticLease6 {
        StaticLease6 { mac: node_mac(index), ip6: node_ip6(index), hostname: format!("node{index:02}") }
    }
}

/// The DHCPv6 server's whole configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dhcp6Config {
    /// The server's DUID (Server Identifier option); usually [`duid_ll`] of
    /// [`DEFAULT_SERVER_MAC`].
    pub server_duid: Vec<u8>,
    /// Recursive DNS servers (option 23); empty leaves the option out.
    pub dns: Vec<Ipv6Addr>,
    /// The nodes' DNS domain, sent as the one-entry search list (option 24); empty leaves it out.
    pub domain: String,
    /// Preferred and valid lifetime of every address, seconds; [`INFINITE`] for never.
    pub lifetime: u32,
    /// The MAC → address table.
    pub leases: Vec<StaticLease6>,
}

impl Dhcp6Config {
    /// The configuration for `topology`'s nodes: fixed server DUID, `fd00::1` as resolver, the
    /// cluster name as search domain, infinite lifetimes. Empty when the stack is IPv4 only.
    pub fn for_topology(topology: &Topology) -> Dhcp6Config {
        let nodes = topology.nodes.iter().filter(|_| topology.stack.v6());
        let leases = nodes.map(|n| StaticLease6 { mac: n.mac, ip6: n.ip6, hostname: n.hostname.clone() }).collect();
        Dhcp6Config {
            server_duid: duid_ll(DEFAULT_SERVER_MAC),
            dns: vec![BRIDGE_IP6],
            domain: topology.cluster.clone(),
            lifetime: INFINITE,
            leases,
        }
    }

    /// Checks what would make guests fail: a DUID of the wrong size, duplicate MACs or
    /// addresses, addresses a guest cannot use, a domain that is not a DNS name.
    pub fn validate(&self) -> Result<(), ConfigError> {
        // RFC 8415 §11.1: a type code and 1 to 128 octets.
        if !(3..=130).contains(&self.server_duid.len()) {
            return Err(ConfigError::BadDuid(self.server_duid.len()));
        }
        if !self.domain.is_empty() && dhcproto::Name::from_ascii(&self.domain).is_err() {
            return Err(ConfigError::BadDomain(self.domain.clone()));
        }
        let (mut macs, mut ips) = (HashSet::new(), HashSet::new());
        for lease in &self.leases {
            if !macs.insert(lease.mac) {
                return Err(ConfigError::DuplicateMac(mac_string(&lease.mac)));
            }
            if !ips.insert(lease.ip6) {
                return Err(ConfigError::DuplicateIp(lease.ip6));
            }
            let ip = lease.ip6;
            if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() || is_link_local(ip) {
                return Err(ConfigError::Unusable(ip));
            }
        }
        Ok(())
    }
}

/// `fe80::/10` (`Ipv6Addr::is_unicast_link_local` is newer than the crate's minimum Rust).
pub(crate) fn is_link_local(ip: Ipv6Addr) -> bool {
    ip.segments()[0] & 0xffc0 == 0xfe80
}

/// A configuration the server could not serve correctly.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The server DUID's length is outside 3–130 bytes.
    #[error("a {0}-byte server DUID is not a DUID: use duid_ll(mac), 10 bytes")]
    BadDuid(usize),
    /// The search domain is not a DNS name.
    #[error("search domain {0:?} is not a DNS name")]
    BadDomain(String),
    /// Two leases for one MAC.
    #[error("MAC {0} has two IPv6 leases: give every node its own MAC")]
    DuplicateMac(String),
    /// Two MACs sharing an address.
    #[error("address {0} is leased twice: give every node its own address")]
    DuplicateIp(Ipv6Addr),
    /// Unspecified, loopback, multicast or link-local: no guest can hold it from DHCPv6.
    #[error("address {0} cannot be leased: use a unicast address in the cluster's prefix (fd00::/64)")]
    Unusable(Ipv6Addr),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::{Stack, Subnet, DEFAULT_SUBNET};

    #[test]
    fn the_topology_config_matches_kubevirtci() {
        let topo = Topology::new("kvci", Subnet::parse(DEFAULT_SUBNET).unwrap(), 2);
        let c = Dhcp6Config::for_topology(&topo);
        assert_eq!(c.server_duid, [0, 3, 0, 1, 0x52, 0x55, 0, 0xd1, 0x55, 0]);
        assert_eq!(c.dns, [BRIDGE_IP6]);
        assert_eq!(c.domain, "kvci");
        assert_eq!(c.lifetime, INFINITE);
        assert_eq!(c.leases, [StaticLease6::node(1), StaticLease6::node(2)]);
        assert_eq!(c.leases[1].ip6.to_string(), "fd00::102");
        assert_eq!(c.validate(), Ok(()));
        let v4 = Topology::with_stack("kvci", Subnet::parse(DEFAULT_SUBNET).unwrap(), 2, Stack::Ipv4);
        assert!(Dhcp6Config::for_topology(&v4).leases.is_empty());
    }

    #[test]
    fn unusable_configs_are_refused() {
        let topo = Topology::new("kvci", Subnet::parse(DEFAULT_SUBNET).unwrap(), 2);
        let good = Dhcp6Config::for_topology(&topo);
        let mut c = good.clone();
        c.server_duid = vec![0, 3];
        assert_eq!(c.validate(), Err(ConfigError::BadDuid(2)));
        let mut c = good.clone();
        c.domain = "a..b".into();
        assert_eq!(c.validate(), Err(ConfigError::BadDomain("a..b".into())));
        let mut c = good.clone();
        c.leases[1].mac = c.leases[0].mac;
        assert_eq!(c.validate(), Err(ConfigError::DuplicateMac("52:55:00:d1:55:01".into())));
        let mut c = good.clone();
        c.leases[1].ip6 = c.leases[0].ip6;
        assert_eq!(c.validate(), Err(ConfigError::DuplicateIp(c.leases[0].ip6)));
        let mut c = good;
        c.leases[0].ip6 = "fe80::1".parse().unwrap();
        assert!(matches!(c.validate(), Err(ConfigError::Unusable(_))));
    }
}
