//! Test fixtures: kubevirtci's nodes as a DHCPv6 configuration, and client messages built with
//! dhcproto the way dhclient and systemd-networkd build them.

use std::net::{Ipv6Addr, SocketAddrV6};

use dhcproto::v6::{Decodable, Decoder, DhcpOption, DhcpOptions, Encodable, IAAddr, Message, MessageType, OptionCode, IANA, ORO};

use super::config::{duid_ll, Dhcp6Config, StaticLease6, DEFAULT_SERVER_MAC, INFINITE};
use crate::topology::{node_mac, BRIDGE_IP6};

/// The transaction id of every test message.
pub(crate) const XID: [u8; 3] = [0x12, 0x34, 0x56];
/// The IAID test clients use.
pub(crate) const IAID: u32 = 0x0e0f_1011;
/// The bridge's interface index in the source addresses.
pub(crate) const SCOPE: u32 = 7;

/// Three nodes, `fd00::1` as resolver, domain `kvci`, infinite lifetimes.
pub(crate) fn config() -> Dhcp6Config {
    Dhcp6Config {
        server_duid: server_duid(),
        dns: vec![BRIDGE_IP6],
        domain: "kvci".into(),
        lifetime: INFINITE,
        leases: (1..=3).map(StaticLease6::node).collect(),
    }
}

/// The DUID the test server uses.
pub(crate) fn server_duid() -> Vec<u8> {
    duid_ll(DEFAULT_SERVER_MAC)
}

/// Node `index`'s EUI-64 link-local address, port 546, on the bridge.
pub(crate) fn from_node(index: u32) -> SocketAddrV6 {
    SocketAddrV6::new(eui64(node_mac(index)), 546, 0, SCOPE)
}

/// A link-local address that tells nothing about the MAC (RFC 7217 style).
pub(crate) fn from_private() -> SocketAddrV6 {
    SocketAddrV6::new("fe80::1c2d:3e4f:5a6b:7c8d".parse().unwrap(), 546, 0, SCOPE)
}

/// The modified EUI-64 link-local address of `mac`.
pub(crate) fn eui64(mac: [u8; 6]) -> Ipv6Addr {
    let m = mac;
    Ipv6Addr::from([0xfe, 0x80, 0, 0, 0, 0, 0, 0, m[0] ^ 2, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]])
}

/// DUID-LLT of `mac`, as dhclient makes it.
pub(crate) fn duid_llt(mac: [u8; 6]) -> Vec<u8> {
    let mut duid = vec![0, 1, 0, 1, 0x2f, 0x1e, 0x2d, 0x3c];
    duid.extend_from_slice(&mac);
    duid
}

/// A client message of type `kind` from node `index`: DUID-LLT Client ID, Elapsed Time, ORO
/// for DNS servers and search list, and one empty IA_NA.
pub(crate) fn client(kind: MessageType, index: u32) -> Message {
    let mut msg = Message::new_with_id(kind, XID);
    let opts = msg.opts_mut();
    opts.insert(DhcpOption::ClientId(duid_llt(node_mac(index))));
    opts.insert(DhcpOption::ElapsedTime(0));
    opts.insert(DhcpOption::ORO(ORO { opts: vec![OptionCode::DomainNameServers, OptionCode::DomainSearchList] }));
    opts.insert(DhcpOption::IANA(IANA { id: IAID, t1: 0, t2: 0, opts: DhcpOptions::new() }));
    msg
}

/// `client(kind, index)` naming our server.
pub(crate) fn to_server(kind: MessageType, index: u32) -> Message {
    let mut msg = client(kind, index);
    msg.opts_mut().insert(DhcpOption::ServerId(server_duid()));
    msg
}

/// `msg` with its IA_NA naming `addrs`.
pub(crate) fn naming(mut msg: Message, addrs: &[&str]) -> Message {
    let mut inner = DhcpOptions::new();
    for a in addrs {
        let addr = a.parse().unwrap();
        inner.insert(DhcpOption::IAAddr(IAAddr { addr, preferred_life: 0, valid_life: 0, opts: DhcpOptions::new() }));
    }
    msg.opts_mut().remove(OptionCode::IANA);
    msg.opts_mut().insert(DhcpOption::IANA(IANA { id: IAID, t1: 0, t2: 0, opts: inner }));
    msg
}

/// Wire bytes of a test message.
pub(crate) fn encode(msg: &Message) -> Vec<u8> {
    msg.to_vec().expect("test messages encode")
}

/// Decodes a reply the server produced (our own replies are well-formed, so dhcproto's
/// decoder is safe on them).
pub(crate) fn decode(bytes: &[u8]) -> Message {
    Message::decode(&mut Decoder::new(bytes)).expect("replies decode")
}
