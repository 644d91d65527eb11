//! Which node sent a packet. DHCPv6 carries no hardware address, so the MAC comes from one of
//! two places: the EUI-64 interface id of the link-local source address, or a DUID built from
//! a MAC (DUID-LL or DUID-LLT with hardware type Ethernet).
//!
//! The source address is asked first: the kernel derives it from the NIC actually sending,
//! while a DUID is made once and stored, so a disk image provisioned on one node carries that
//! node's DUID to every node booted from it (Debian's dhclient keeps it in its lease file).
//! Trusting the DUID first would then give every node the same address. The DUID still serves
//! guests whose link-local address hides the MAC (RFC 7217 stable-privacy addresses).

use std::net::Ipv6Addr;

use super::config::{is_link_local, StaticLease6};

/// DUID types that embed a link-layer address (RFC 8415 §11.2, §11.4).
const DUID_LLT: u16 = 1;
const DUID_LL: u16 = 3;
/// IANA hardware type of Ethernet.
const HTYPE_ETHERNET: u16 = 1;

/// The lease of the node that sent a packet from `source` with client DUID `duid`, if any.
pub(super) fn lookup<'a>(
    leases: &'a [StaticLease6],
    source: &Ipv6Addr,
    duid: Option<&[u8]>,
) -> Option<&'a StaticLease6> {
    let find = |mac: [u8; 6]| leases.iter().find(|lease| lease.mac == mac);
    mac_from_link_local(source).and_then(find).or_else(|| duid.and_then(mac_from_duid).and_then(find))
}

/// The MAC inside a modified EUI-64 link-local address (RFC 4291 app. A):
/// `fe80::5055:ff:fed1:5502` ↔ `52:55:00:d1:55:02` (the universal/local bit flipped back).
pub(super) fn mac_from_link_local(ip: &Ipv6Addr) -> Option<[u8; 6]> {
    let o = ip.octets();
    if !is_link_local(*ip) || o[11] != 0xff || o[12] != 0xfe {
        return None;
    }
    Some([o[8] ^ 0x02, o[9], o[10], o[13], o[14], o[15]])
}

/// The Ethernet MAC of a DUID-LL or DUID-LLT; `None` for other types and hardware.
pub(super) fn mac_from_duid(duid: &[u8]) -> Option<[u8; 6]> {
    let u16_at = |at: usize| Some(u16::from_be_bytes([*duid.get(at)?, *duid.get(at + 1)?]));
    let address = match u16_at(0)? {
        DUID_LLT => duid.get(8..)?,
        DUID_LL => duid.get(4..)?,
        _ => return None,
    };
    if u16_at(2)? != HTYPE_ETHERNET {
        return None;
    }
    address.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp6::config::duid_ll;
    use crate::topology::node_mac;

    fn ip(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn link_local_eui64_gives_the_mac() {
        assert_eq!(mac_from_link_local(&ip("fe80::5055:ff:fed1:5502")), Some(node_mac(2)));
        assert_eq!(mac_from_link_local(&ip("fe80::200:ff:fe00:1")), Some([0, 0, 0, 0, 0, 1]));
        // Stable-privacy, global, or not EUI-64: no MAC.
        assert_eq!(mac_from_link_local(&ip("fe80::1c2d:3e4f:5a6b:7c8d")), None);
        assert_eq!(mac_from_link_local(&ip("fd00::5055:ff:fed1:5502")), None);
        assert_eq!(mac_from_link_local(&ip("::")), None);
    }

    #[test]
    fn duid_ll_and_llt_give_the_mac() {
        assert_eq!(mac_from_duid(&duid_ll(node_mac(3))), Some(node_mac(3)));
        let mut llt = vec![0, 1, 0, 1, 0x2f, 0x1e, 0x2d, 0x3c];
        llt.extend_from_slice(&node_mac(4));
        assert_eq!(mac_from_duid(&llt), Some(node_mac(4)));
        // DUID-EN, DUID-UUID, non-Ethernet hardware, wrong lengths.
        assert_eq!(mac_from_duid(&[0, 2, 0, 0, 0, 9, 1, 2, 3]), None);
        assert_eq!(mac_from_duid(&[0, 4, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]), None);
        assert_eq!(mac_from_duid(&[0, 3, 0, 6, 0x52, 0x55, 0, 0xd1, 0x55, 3]), None);
        assert_eq!(mac_from_duid(&[0, 3, 0, 1, 0x52, 0x55, 0, 0xd1, 0x55]), None);
        assert_eq!(mac_from_duid(&[0, 3, 0, 1, 0x52, 0x55, 0, 0xd1, 0x55, 3, 0]), None);
        assert_eq!(mac_from_duid(&[0, 1, 0, 1, 0, 0]), None);
        assert_eq!(mac_from_duid(&[0]), None);
        assert_eq!(mac_from_duid(&[]), None);
    }

    #[test]
    fn the_sending_nic_wins_over_a_copied_duid() {
        let leases: Vec<_> = (1..=3).map(StaticLease6::node).collect();
        let node2_ll = ip("fe80::5055:ff:fed1:5502");
        let node1_duid = duid_ll(node_mac(1));
        let found = |src: &Ipv6Addr, duid: Option<&[u8]>| lookup(&leases, src, duid).map(|l| l.hostname.as_str());
        assert_eq!(found(&node2_ll, Some(&node1_duid)), Some("node02"));
        // A link-local address that hides the MAC: the DUID decides.
        let private = ip("fe80::1c2d:3e4f:5a6b:7c8d");
        assert_eq!(found(&private, Some(&node1_duid)), Some("node01"));
        // An EUI-64 address of a MAC without a lease does not hide a DUID that has one.
        assert_eq!(found(&ip("fe80::200:ff:fe00:1"), Some(&node1_duid)), Some("node01"));
        assert_eq!(found(&private, None), None);
        assert_eq!(found(&private, Some(&duid_ll([2, 0, 0, 0, 0, 9]))), None);
    }
}
