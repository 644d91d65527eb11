//! Test fixtures: kubevirtci's network as a DHCP configuration, and client packets built with
//! dhcproto the way a guest's DHCP client builds them.

use std::net::Ipv4Addr;

use dhcproto::v4::{Decodable, Decoder, DhcpOption, Encodable, Flags, Message, MessageType, OptionCode};

use super::config::{DhcpConfig, INFINITE};
use super::lease::StaticLease;
use super::server::{Outcome, ReplyTo};

/// The bridge: DHCP server, router and DNS.
pub(crate) const SERVER: Ipv4Addr = Ipv4Addr::new(192, 168, 66, 2);
const BASE: Ipv4Addr = Ipv4Addr::new(192, 168, 66, 0);

/// Three nodes on 192.168.66.0/24, infinite leases, as kvci's network sets it up.
pub(crate) fn config() -> DhcpConfig {
    DhcpConfig {
        server_ip: SERVER,
        prefix_len: 24,
        router: SERVER,
        dns: vec![SERVER],
        domain: "kvci".into(),
        mtu: 1500,
        lease_secs: INFINITE,
        leases: (1..=3).map(|i| StaticLease::node(BASE, i)).collect(),
    }
}

/// A client message of type `kind` from `mac`, broadcast flag set, asking for the usual
/// parameters and carrying a client identifier (type 1 + MAC), like udhcpc and systemd do.
pub(crate) fn client(kind: MessageType, mac: [u8; 6]) -> Message {
    let any = Ipv4Addr::UNSPECIFIED;
    let mut msg = Message::new_with_id(0x1234_5678, any, any, any, any, &mac);
    msg.set_flags(Flags::default().set_broadcast());
    let opts = msg.opts_mut();
    opts.insert(DhcpOption::MessageType(kind));
    opts.insert(DhcpOption::ParameterRequestList(vec![
        OptionCode::SubnetMask,
        OptionCode::Router,
        OptionCode::DomainNameServer,
        OptionCode::DomainName,
        OptionCode::Hostname,
        OptionCode::InterfaceMtu,
    ]));
    let mut id = vec![1];
    id.extend_from_slice(&mac);
    opts.insert(DhcpOption::ClientIdentifier(id));
    msg
}

/// `client(kind, mac)` with option 50 (requested IP) and 54 (server identifier).
pub(crate) fn selecting(kind: MessageType, mac: [u8; 6], ip: Ipv4Addr, server: Ipv4Addr) -> Message {
    let mut msg = client(kind, mac);
    msg.opts_mut().insert(DhcpOption::RequestedIpAddress(ip));
    msg.opts_mut().insert(DhcpOption::ServerIdentifier(server));
    msg
}

/// Wire bytes of a test message.
pub(crate) fn encode(msg: &Message) -> Vec<u8> {
    msg.to_vec().expect("test messages encode")
}

/// Decodes a reply the server produced.
pub(crate) fn decode(bytes: &[u8]) -> Message {
    Message::decode(&mut Decoder::new(bytes)).expect("replies decode")
}

/// The decoded reply and destination of `outcome`, panicking if it is not a reply.
pub(crate) fn reply(outcome: Outcome) -> (Message, ReplyTo) {
    match outcome {
        Outcome::Reply { bytes, to } => (decode(&bytes), to),
        Outcome::Ignore(why) => panic!("expected a reply, got Ignore({why:?})"),
    }
}
