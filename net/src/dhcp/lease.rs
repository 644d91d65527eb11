//! Where DHCP leases are decided: a fixed MAC → address table, pure data, no I/O. Nothing is
//! allocated from a pool, so node NN gets the same address on every boot and after a snapshot is
//! restored, exactly as with kubevirtci's dnsmasq (MAC `52:55:00:d1:55:NN` → `.1NN`, `nodeNN`).

use std::net::Ipv4Addr;

/// kubevirtci's MAC for node `index` (`52:55:00:d1:55:NN`, the last byte spelling the node
/// number in decimal: node12 → `0x12`). One definition, shared with the topology.
pub use crate::topology::node_mac;

/// One fixed binding. Static leases never expire or move, so the server keeps no lease state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticLease {
    /// The guest NIC's hardware address (DHCP `chaddr`).
    pub mac: [u8; 6],
    /// The address it always gets.
    pub ip: Ipv4Addr,
    /// Sent as option 12 so the guest names itself (`node01`); empty leaves the option out.
    pub hostname: String,
}

impl StaticLease {
    /// kubevirtci's lease for node `index` (1-based) on the subnet starting at `subnet_base`:
    /// MAC `52:55:00:d1:55:NN`, address `.1NN`, hostname `nodeNN`.
    pub fn node(subnet_base: Ipv4Addr, index: u32) -> StaticLease {
        StaticLease { mac: node_mac(index), ip: node_ip(subnet_base, index), hostname: format!("node{index:02}") }
    }
}

/// kubevirtci's address for node `index`: `.1NN`, i.e. `subnet_base + 100 + index`
/// (node01 on 192.168.66.0 → 192.168.66.101).
pub fn node_ip(subnet_base: Ipv4Addr, index: u32) -> Ipv4Addr {
    // Wrapping: a nonsense index must give a nonsense address, not a panic in a debug build.
    Ipv4Addr::from(u32::from(subnet_base).wrapping_add(100).wrapping_add(index))
}

/// The lease for `mac`, if the table has one. Unknown MACs get nothing: only kvci's own nodes
/// sit on the cluster bridge, so anything else is a misconfiguration to refuse, not to serve.
pub fn lookup<'a>(leases: &'a [StaticLease], mac: &[u8; 6]) -> Option<&'a StaticLease> {
    leases.iter().find(|lease| lease.mac == *mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Ipv4Addr = Ipv4Addr::new(192, 168, 66, 0);

    #[test]
    fn node_numbers_are_spelled_in_the_last_mac_byte() {
        assert_eq!(node_mac(1), [0x52, 0x55, 0x00, 0xd1, 0x55, 0x01]);
        assert_eq!(node_mac(9), [0x52, 0x55, 0x00, 0xd1, 0x55, 0x09]);
        assert_eq!(node_mac(12), [0x52, 0x55, 0x00, 0xd1, 0x55, 0x12]);
        assert_eq!(node_mac(99), [0x52, 0x55, 0x00, 0xd1, 0x55, 0x99]);
    }

    #[test]
    fn nodes_get_dot_1nn() {
        assert_eq!(node_ip(BASE, 1), Ipv4Addr::new(192, 168, 66, 101));
        assert_eq!(node_ip(BASE, 12), Ipv4Addr::new(192, 168, 66, 112));
        assert_eq!(node_ip(Ipv4Addr::new(255, 255, 255, 255), 1), Ipv4Addr::new(0, 0, 0, 100));
    }

    #[test]
    fn node_lease_matches_kubevirtci() {
        let lease = StaticLease::node(BASE, 3);
        assert_eq!(lease.hostname, "node03");
        assert_eq!(lease.ip, Ipv4Addr::new(192, 168, 66, 103));
        assert_eq!(lease.mac, node_mac(3));
    }

    #[test]
    fn lookup_finds_only_known_macs() {
        let leases: Vec<_> = (1..=3).map(|i| StaticLease::node(BASE, i)).collect();
        assert_eq!(lookup(&leases, &node_mac(2)).map(|l| l.ip), Some(node_ip(BASE, 2)));
        assert_eq!(lookup(&leases, &node_mac(4)), None);
        assert_eq!(lookup(&[], &node_mac(1)), None);
    }
}
