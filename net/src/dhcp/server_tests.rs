//! The protocol as guests see it: real client packets built with dhcproto, through
//! [`DhcpServer::handle`], replies decoded again.

use std::net::Ipv4Addr;

use dhcproto::v4::{DhcpOption, Flags, HType, Message, MessageType, Opcode, OptionCode, MIN_PACKET_SIZE};

use super::config::INFINITE;
use super::lease::node_mac;
use super::server::{DhcpServer, Outcome, ReplyTo, Stats};
use super::test_support::{client, config, encode, reply, selecting, SERVER};

const NODE01: Ipv4Addr = Ipv4Addr::new(192, 168, 66, 101);
const UNKNOWN_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x42];

fn server() -> DhcpServer {
    DhcpServer::new(config())
}

fn opt(msg: &Message, code: OptionCode) -> Option<&DhcpOption> {
    msg.opts().get(code)
}

fn ignored(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Ignore(why) => why,
        Outcome::Reply { to, .. } => panic!("expected no reply, got one to {to:?}"),
    }
}

#[test]
fn discover_from_node01_gets_an_offer_with_every_option() {
    let mut s = server();
    let discover = client(MessageType::Discover, node_mac(1));
    let (offer, to) = reply(s.handle(&encode(&discover)));

    assert_eq!(to, ReplyTo::Broadcast);
    assert_eq!(offer.opcode(), Opcode::BootReply);
    assert_eq!(offer.htype(), HType::Eth);
    assert_eq!(offer.xid(), discover.xid());
    assert_eq!(offer.chaddr(), &node_mac(1)[..]);
    assert_eq!(offer.yiaddr(), NODE01);
    assert_eq!(offer.ciaddr(), Ipv4Addr::UNSPECIFIED);
    assert!(offer.flags().broadcast());

    assert_eq!(offer.opts().msg_type(), Some(MessageType::Offer));
    assert_eq!(opt(&offer, OptionCode::SubnetMask), Some(&DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0))));
    assert_eq!(opt(&offer, OptionCode::Router), Some(&DhcpOption::Router(vec![SERVER])));
    assert_eq!(opt(&offer, OptionCode::DomainNameServer), Some(&DhcpOption::DomainNameServer(vec![SERVER])));
    assert_eq!(opt(&offer, OptionCode::DomainName), Some(&DhcpOption::DomainName("kvci".into())));
    assert_eq!(opt(&offer, OptionCode::Hostname), Some(&DhcpOption::Hostname("node01".into())));
    assert_eq!(opt(&offer, OptionCode::InterfaceMtu), Some(&DhcpOption::InterfaceMtu(1500)));
    assert_eq!(opt(&offer, OptionCode::AddressLeaseTime), Some(&DhcpOption::AddressLeaseTime(INFINITE)));
    assert_eq!(opt(&offer, OptionCode::ServerIdentifier), Some(&DhcpOption::ServerIdentifier(SERVER)));
    assert_eq!(opt(&offer, OptionCode::ClientIdentifier), opt(&discover, OptionCode::ClientIdentifier));
    // An infinite lease is never renewed, so T1/T2 would only mislead.
    assert_eq!(opt(&offer, OptionCode::Renewal), None);
    assert_eq!(opt(&offer, OptionCode::Rebinding), None);

    assert_eq!(*s.stats(), Stats { offers: 1, ..Stats::default() });
}

#[test]
fn finite_leases_carry_renewal_and_rebinding_times() {
    let mut c = config();
    c.lease_secs = 3600;
    let mut s = DhcpServer::new(c);
    let (offer, _) = reply(s.handle(&encode(&client(MessageType::Discover, node_mac(2)))));
    assert_eq!(offer.yiaddr(), Ipv4Addr::new(192, 168, 66, 102));
    assert_eq!(opt(&offer, OptionCode::AddressLeaseTime), Some(&DhcpOption::AddressLeaseTime(3600)));
    assert_eq!(opt(&offer, OptionCode::Renewal), Some(&DhcpOption::Renewal(1800)));
    assert_eq!(opt(&offer, OptionCode::Rebinding), Some(&DhcpOption::Rebinding(3150)));
}

#[test]
fn empty_parameters_are_left_out() {
    let mut c = config();
    c.router = Ipv4Addr::UNSPECIFIED;
    c.dns.clear();
    c.domain.clear();
    c.mtu = 0;
    c.leases[0].hostname.clear();
    let mut s = DhcpServer::new(c);
    let (offer, _) = reply(s.handle(&encode(&client(MessageType::Discover, node_mac(1)))));
    for code in [
        OptionCode::Router,
        OptionCode::DomainNameServer,
        OptionCode::DomainName,
        OptionCode::Hostname,
        OptionCode::InterfaceMtu,
    ] {
        assert_eq!(opt(&offer, code), None, "{code:?}");
    }
    assert!(opt(&offer, OptionCode::SubnetMask).is_some());
}

#[test]
fn request_for_the_offered_address_is_acked() {
    let mut s = server();
    let request = selecting(MessageType::Request, node_mac(1), NODE01, SERVER);
    let (ack, to) = reply(s.handle(&encode(&request)));
    assert_eq!(to, ReplyTo::Broadcast);
    assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(ack.yiaddr(), NODE01);
    assert_eq!(ack.xid(), request.xid());
    assert_eq!(opt(&ack, OptionCode::Hostname), Some(&DhcpOption::Hostname("node01".into())));
    assert_eq!(opt(&ack, OptionCode::AddressLeaseTime), Some(&DhcpOption::AddressLeaseTime(INFINITE)));
    assert_eq!(opt(&ack, OptionCode::ServerIdentifier), Some(&DhcpOption::ServerIdentifier(SERVER)));
    assert_eq!(*s.stats(), Stats { acks: 1, ..Stats::default() });
}

#[test]
fn reboot_request_without_server_id_is_acked() {
    let mut s = server();
    let mut request = client(MessageType::Request, node_mac(1));
    request.opts_mut().insert(DhcpOption::RequestedIpAddress(NODE01));
    let (ack, _) = reply(s.handle(&encode(&request)));
    assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
}

#[test]
fn renewal_from_ciaddr_is_acked_by_unicast() {
    let mut s = server();
    let mut request = client(MessageType::Request, node_mac(1));
    request.set_ciaddr(NODE01).set_flags(Flags::default());
    let (ack, to) = reply(s.handle(&encode(&request)));
    assert_eq!(to, ReplyTo::Unicast(NODE01));
    assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(ack.ciaddr(), NODE01);
    assert_eq!(ack.yiaddr(), NODE01);
}

#[test]
fn request_for_a_wrong_address_is_naked() {
    let mut s = server();
    let request = selecting(MessageType::Request, node_mac(1), Ipv4Addr::new(192, 168, 66, 150), SERVER);
    let (nak, to) = reply(s.handle(&encode(&request)));
    assert_eq!(to, ReplyTo::Broadcast);
    assert_eq!(nak.opts().msg_type(), Some(MessageType::Nak));
    assert_eq!(nak.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(opt(&nak, OptionCode::ServerIdentifier), Some(&DhcpOption::ServerIdentifier(SERVER)));
    assert!(
        matches!(opt(&nak, OptionCode::Message), Some(DhcpOption::Message(m)) if m.contains("not this MAC's lease"))
    );
    // Table 3: a NAK carries no configuration.
    for code in [OptionCode::AddressLeaseTime, OptionCode::SubnetMask, OptionCode::Hostname, OptionCode::Router] {
        assert_eq!(opt(&nak, code), None, "{code:?}");
    }
    assert_eq!(*s.stats(), Stats { naks: 1, ..Stats::default() });
}

#[test]
fn renewal_of_a_wrong_address_is_naked_by_broadcast() {
    let mut s = server();
    let mut request = client(MessageType::Request, node_mac(2));
    request.set_ciaddr(NODE01);
    let (nak, to) = reply(s.handle(&encode(&request)));
    assert_eq!(nak.opts().msg_type(), Some(MessageType::Nak));
    assert_eq!(to, ReplyTo::Broadcast);
}

#[test]
fn request_naming_no_address_is_naked() {
    let mut s = server();
    let (nak, _) = reply(s.handle(&encode(&client(MessageType::Request, node_mac(1)))));
    assert_eq!(nak.opts().msg_type(), Some(MessageType::Nak));
}

#[test]
fn request_for_another_server_is_ignored() {
    let mut s = server();
    let request = selecting(MessageType::Request, node_mac(1), NODE01, Ipv4Addr::new(192, 168, 66, 1));
    assert_eq!(ignored(s.handle(&encode(&request))), "REQUEST for another server's offer");
    assert_eq!(*s.stats(), Stats { ignored: 1, ..Stats::default() });
}

#[test]
fn lease_for_unknown_mac_is_refused() {
    let mut s = server();
    ignored(s.handle(&encode(&client(MessageType::Discover, UNKNOWN_MAC))));
    let request = selecting(MessageType::Request, UNKNOWN_MAC, NODE01, SERVER);
    let (nak, to) = reply(s.handle(&encode(&request)));
    assert_eq!(nak.opts().msg_type(), Some(MessageType::Nak));
    assert_eq!(to, ReplyTo::Broadcast);
    ignored(s.handle(&encode(&client(MessageType::Inform, UNKNOWN_MAC))));
    assert_eq!(*s.stats(), Stats { ignored: 2, naks: 1, ..Stats::default() });
}

#[test]
fn release_is_counted_and_not_answered() {
    let mut s = server();
    let mut release = selecting(MessageType::Release, node_mac(1), NODE01, SERVER);
    release.set_ciaddr(NODE01);
    ignored(s.handle(&encode(&release)));
    // The lease is static: the same node gets the same address straight after.
    let (offer, _) = reply(s.handle(&encode(&client(MessageType::Discover, node_mac(1)))));
    assert_eq!(offer.yiaddr(), NODE01);
    assert_eq!(*s.stats(), Stats { releases: 1, offers: 1, ..Stats::default() });
}

#[test]
fn decline_is_counted() {
    let mut s = server();
    let decline = selecting(MessageType::Decline, node_mac(1), NODE01, SERVER);
    ignored(s.handle(&encode(&decline)));
    let foreign = selecting(MessageType::Decline, node_mac(1), NODE01, Ipv4Addr::new(10, 0, 0, 1));
    ignored(s.handle(&encode(&foreign)));
    ignored(s.handle(&encode(&selecting(MessageType::Decline, UNKNOWN_MAC, NODE01, SERVER))));
    assert_eq!(*s.stats(), Stats { declines: 1, ignored: 2, ..Stats::default() });
}

#[test]
fn inform_is_acked_without_lease_time() {
    let mut s = server();
    let mut inform = client(MessageType::Inform, node_mac(1));
    inform.set_ciaddr(NODE01).set_flags(Flags::default());
    let (ack, to) = reply(s.handle(&encode(&inform)));
    assert_eq!(to, ReplyTo::Unicast(NODE01));
    assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(ack.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(ack.ciaddr(), NODE01);
    for code in [OptionCode::AddressLeaseTime, OptionCode::Renewal, OptionCode::Rebinding] {
        assert_eq!(opt(&ack, code), None, "{code:?}");
    }
    assert_eq!(opt(&ack, OptionCode::Hostname), Some(&DhcpOption::Hostname("node01".into())));
    assert_eq!(opt(&ack, OptionCode::DomainNameServer), Some(&DhcpOption::DomainNameServer(vec![SERVER])));
    assert_eq!(*s.stats(), Stats { informs: 1, ..Stats::default() });
}

#[test]
fn malformed_packets_are_dropped_and_counted() {
    let good = encode(&client(MessageType::Discover, node_mac(1)));
    let mut bad: Vec<Vec<u8>> = vec![Vec::new(), vec![1], good[..239].to_vec()];
    let mut patch = |at: usize, byte: u8| {
        let mut p = good.clone();
        p[at] = byte;
        bad.push(p);
    };
    patch(0, 2); // BOOTREPLY
    patch(0, 7); // unknown op
    patch(1, 6); // IEEE 802, not Ethernet
    patch(2, 17); // hlen past chaddr's 16 bytes: dhcproto would panic on chaddr()
    patch(2, 255);
    patch(2, 0);
    patch(236, 0); // no magic cookie
    let mut no_type = client(MessageType::Discover, node_mac(1));
    no_type.opts_mut().remove(OptionCode::MessageType);
    bad.push(encode(&no_type));

    let mut s = server();
    for (i, packet) in bad.iter().enumerate() {
        ignored(s.handle(packet));
        assert_eq!(s.stats().malformed, i as u64 + 1, "packet {i}");
    }
    assert_eq!(*s.stats(), Stats { malformed: bad.len() as u64, ..Stats::default() });
}

#[test]
fn server_messages_and_relayed_packets_are_ignored() {
    let mut s = server();
    for kind in [MessageType::Offer, MessageType::Ack, MessageType::Nak, MessageType::Unknown(99)] {
        ignored(s.handle(&encode(&client(kind, node_mac(1)))));
    }
    let mut relayed = client(MessageType::Discover, node_mac(1));
    relayed.set_giaddr(Ipv4Addr::new(10, 0, 0, 1));
    ignored(s.handle(&encode(&relayed)));
    assert_eq!(*s.stats(), Stats { ignored: 5, ..Stats::default() });
}

#[test]
fn replies_are_padded_to_the_bootp_minimum() {
    let mut s = server();
    let request = selecting(MessageType::Request, node_mac(1), Ipv4Addr::new(192, 168, 66, 150), SERVER);
    match s.handle(&encode(&request)) {
        Outcome::Reply { bytes, .. } => assert!(bytes.len() >= MIN_PACKET_SIZE, "{}", bytes.len()),
        Outcome::Ignore(why) => panic!("{why}"),
    }
}

#[test]
fn a_broken_config_still_serves_without_panicking() {
    let mut c = config();
    c.prefix_len = 99;
    c.leases[0].hostname = "x".repeat(2000);
    let mut s = DhcpServer::new(c);
    // Either answered or refused to encode, never a panic.
    let _ = s.handle(&encode(&client(MessageType::Discover, node_mac(1))));
    assert_eq!(s.stats().offers + s.stats().ignored, 1);
}
