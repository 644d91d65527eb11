//! The DHCPv6 server's behaviour, message by message: client messages built with dhcproto, fed
//! through [`Dhcp6Server::handle`], replies decoded again.

use std::net::{Ipv6Addr, SocketAddrV6};

use dhcproto::v6::{DhcpOption, Message, MessageType, OptionCode, Status, IANA};

use super::config::INFINITE;
use super::server::{Dhcp6Server, Stats};
use super::test_support::*;
use crate::topology::{node_mac, BRIDGE_IP6};

fn ip(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn answer(s: &mut Dhcp6Server, msg: &Message, src: SocketAddrV6) -> Message {
    decode(&s.handle(&encode(msg), src).expect("a reply"))
}

fn opt(msg: &Message, code: OptionCode) -> Option<&DhcpOption> {
    msg.opts().get(code)
}

fn ia_na(msg: &Message) -> &IANA {
    match opt(msg, OptionCode::IANA) {
        Some(DhcpOption::IANA(ia)) => ia,
        other => panic!("no IA_NA: {other:?}"),
    }
}

/// (address, preferred, valid) of each IA Address in the first IA_NA.
fn addresses(msg: &Message) -> Vec<(Ipv6Addr, u32, u32)> {
    let mut all: Vec<_> = ia_na(msg)
        .opts
        .iter()
        .filter_map(|o| match o {
            DhcpOption::IAAddr(a) => Some((a.addr, a.preferred_life, a.valid_life)),
            _ => None,
        })
        .collect();
    all.sort();
    all
}

fn status(opts: &dhcproto::v6::DhcpOptions) -> Option<Status> {
    match opts.get(OptionCode::StatusCode) {
        Some(DhcpOption::StatusCode(s)) => Some(s.status),
        _ => None,
    }
}

#[test]
fn solicit_from_node02_gets_an_advertise_with_its_address() {
    let mut s = Dhcp6Server::new(config());
    let solicit = client(MessageType::Solicit, 2);
    let bytes = s.handle(&encode(&solicit), from_node(2)).unwrap();
    let adv = decode(&bytes);
    assert_eq!(adv.msg_type(), MessageType::Advertise);
    assert_eq!(adv.xid(), XID);
    assert_eq!(opt(&adv, OptionCode::ServerId), Some(&DhcpOption::ServerId(server_duid())));
    assert_eq!(opt(&adv, OptionCode::ClientId), opt(&solicit, OptionCode::ClientId));
    let ia = ia_na(&adv);
    assert_eq!((ia.id, ia.t1, ia.t2), (IAID, INFINITE, INFINITE));
    assert_eq!(addresses(&adv), [(ip("fd00::102"), INFINITE, INFINITE)]);
    assert_eq!(opt(&adv, OptionCode::Preference), Some(&DhcpOption::Preference(255)));
    assert_eq!(opt(&adv, OptionCode::DomainNameServers), Some(&DhcpOption::DomainNameServers(vec![BRIDGE_IP6])));
    assert_eq!(opt(&adv, OptionCode::RapidCommit), None);
    assert_eq!(status(adv.opts()), None);
    // The search list on the wire: option 24, "kvci" as DNS labels, uncompressed.
    assert!(bytes.windows(10).any(|w| w == [0, 24, 0, 6, 4, b'k', b'v', b'c', b'i', 0]), "{bytes:02x?}");
    assert_eq!(*s.stats(), Stats { solicits: 1, ..Stats::default() });
}

#[test]
fn solicit_with_rapid_commit_gets_a_committed_reply() {
    let mut s = Dhcp6Server::new(config());
    let mut solicit = client(MessageType::Solicit, 1);
    solicit.opts_mut().insert(DhcpOption::RapidCommit);
    let reply = answer(&mut s, &solicit, from_node(1));
    assert_eq!(reply.msg_type(), MessageType::Reply);
    assert_eq!(opt(&reply, OptionCode::RapidCommit), Some(&DhcpOption::RapidCommit));
    assert_eq!(addresses(&reply), [(ip("fd00::101"), INFINITE, INFINITE)]);
    assert_eq!(opt(&reply, OptionCode::Preference), None);
}

#[test]
fn request_gets_the_address() {
    let mut s = Dhcp6Server::new(config());
    let request = naming(to_server(MessageType::Request, 3), &["fd00::103"]);
    let reply = answer(&mut s, &request, from_node(3));
    assert_eq!(reply.msg_type(), MessageType::Reply);
    assert_eq!(reply.xid(), XID);
    assert_eq!(ia_na(&reply).id, IAID);
    assert_eq!(addresses(&reply), [(ip("fd00::103"), INFINITE, INFINITE)]);
    assert!(opt(&reply, OptionCode::DomainSearchList).is_some());
    assert_eq!(*s.stats(), Stats { requests: 1, ..Stats::default() });
}

#[test]
fn a_hint_for_another_address_still_gets_the_nodes() {
    let mut s = Dhcp6Server::new(config());
    let request = naming(to_server(MessageType::Request, 3), &["fd00::42"]);
    assert_eq!(addresses(&answer(&mut s, &request, from_node(3))), [(ip("fd00::103"), INFINITE, INFINITE)]);
}

#[test]
fn renew_and_rebind_keep_the_address_and_drop_others() {
    let mut s = Dhcp6Server::new(config());
    for msg in [to_server(MessageType::Renew, 2), client(MessageType::Rebind, 2)] {
        let reply = answer(&mut s, &naming(msg, &["fd00::102", "fd00::999"]), from_node(2));
        assert_eq!(reply.msg_type(), MessageType::Reply);
        assert_eq!(addresses(&reply), [(ip("fd00::102"), INFINITE, INFINITE), (ip("fd00::999"), 0, 0)]);
    }
    assert_eq!(*s.stats(), Stats { renews: 2, ..Stats::default() });
}

#[test]
fn finite_lifetimes_renew_at_half_and_rebind_at_four_fifths() {
    let mut c = config();
    c.lifetime = 3600;
    let mut s = Dhcp6Server::new(c);
    let reply = answer(&mut s, &client(MessageType::Solicit, 1), from_node(1));
    let ia = ia_na(&reply);
    assert_eq!((ia.t1, ia.t2), (1800, 2880));
    assert_eq!(addresses(&reply), [(ip("fd00::101"), 3600, 3600)]);
}

#[test]
fn confirm_says_whether_the_address_is_the_nodes() {
    let mut s = Dhcp6Server::new(config());
    let ok = answer(&mut s, &naming(client(MessageType::Confirm, 1), &["fd00::101"]), from_node(1));
    assert_eq!(ok.msg_type(), MessageType::Reply);
    assert_eq!(status(ok.opts()), Some(Status::Success));
    assert_eq!(opt(&ok, OptionCode::IANA), None);
    let moved = answer(&mut s, &naming(client(MessageType::Confirm, 1), &["fd00::102"]), from_node(1));
    assert_eq!(status(moved.opts()), Some(Status::NotOnLink));
    // RFC 8415 §18.3.3: nothing to confirm, no reply.
    assert_eq!(s.handle(&encode(&client(MessageType::Confirm, 1)), from_node(1)), None);
    assert_eq!(*s.stats(), Stats { confirms: 2, ignored: 1, ..Stats::default() });
}

#[test]
fn information_request_gets_resolvers_and_domain_only() {
    let mut s = Dhcp6Server::new(config());
    let mut info = Message::new_with_id(MessageType::InformationRequest, XID);
    info.opts_mut().insert(DhcpOption::ElapsedTime(0));
    // No Client ID: the link-local source tells the node.
    let reply = answer(&mut s, &info, from_node(2));
    assert_eq!(reply.msg_type(), MessageType::Reply);
    assert_eq!(opt(&reply, OptionCode::DomainNameServers), Some(&DhcpOption::DomainNameServers(vec![BRIDGE_IP6])));
    assert!(opt(&reply, OptionCode::DomainSearchList).is_some());
    for code in [OptionCode::IANA, OptionCode::Preference, OptionCode::ClientId, OptionCode::StatusCode] {
        assert_eq!(opt(&reply, code), None, "{code:?}");
    }
    info.opts_mut().insert(DhcpOption::ServerId(vec![0, 3, 0, 1, 2, 0, 0, 0, 0, 9]));
    assert_eq!(s.handle(&encode(&info), from_node(2)), None);
    assert_eq!(*s.stats(), Stats { informs: 1, ignored: 1, ..Stats::default() });
}

#[test]
fn release_and_decline_get_success() {
    let mut s = Dhcp6Server::new(config());
    for kind in [MessageType::Release, MessageType::Decline] {
        let reply = answer(&mut s, &naming(to_server(kind, 1), &["fd00::101"]), from_node(1));
        assert_eq!(reply.msg_type(), MessageType::Reply);
        assert_eq!(status(reply.opts()), Some(Status::Success));
    }
    // The lease is static: the node gets the same address straight after.
    let adv = answer(&mut s, &client(MessageType::Solicit, 1), from_node(1));
    assert_eq!(addresses(&adv)[0].0, ip("fd00::101"));
    assert_eq!(*s.stats(), Stats { releases: 1, declines: 1, solicits: 1, ..Stats::default() });
}

#[test]
fn unknown_clients_get_nothing() {
    let mut s = Dhcp6Server::new(config());
    let stranger = [0x02, 0, 0, 0, 0, 0x42];
    let src = SocketAddrV6::new(eui64(stranger), 546, 0, SCOPE);
    let mut solicit = client(MessageType::Solicit, 1);
    solicit.opts_mut().remove(OptionCode::ClientId);
    solicit.opts_mut().insert(DhcpOption::ClientId(duid_llt(stranger)));
    assert_eq!(s.handle(&encode(&solicit), src), None);
    assert_eq!(s.handle(&encode(&solicit), from_private()), None);
    let info = Message::new_with_id(MessageType::InformationRequest, XID);
    assert_eq!(s.handle(&encode(&info), src), None);
    assert_eq!(*s.stats(), Stats { unknown_clients: 3, ..Stats::default() });
}

#[test]
fn the_duid_names_the_node_when_the_link_local_address_hides_the_mac() {
    let mut s = Dhcp6Server::new(config());
    let adv = answer(&mut s, &client(MessageType::Solicit, 3), from_private());
    assert_eq!(addresses(&adv)[0].0, ip("fd00::103"));
}

#[test]
fn the_sending_nic_wins_over_a_duid_copied_from_another_node() {
    let mut s = Dhcp6Server::new(config());
    // node01's DUID (a cloned image) sent by node02's NIC: node02's address.
    let adv = answer(&mut s, &client(MessageType::Solicit, 1), from_node(2));
    assert_eq!(addresses(&adv)[0].0, ip("fd00::102"));
}

#[test]
fn further_ia_nas_get_no_addrs_avail() {
    let mut s = Dhcp6Server::new(config());
    let mut solicit = client(MessageType::Solicit, 1);
    solicit.opts_mut().insert(DhcpOption::IANA(IANA { id: 99, t1: 0, t2: 0, opts: Default::default() }));
    let adv = answer(&mut s, &solicit, from_node(1));
    let ias = adv.opts().get_all(OptionCode::IANA).unwrap();
    assert_eq!(ias.len(), 2);
    let statuses: Vec<_> = ias
        .iter()
        .map(|o| match o {
            DhcpOption::IANA(ia) => status(&ia.opts),
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(statuses.iter().filter(|s| **s == Some(Status::NoAddrsAvail)).count(), 1, "{statuses:?}");

    let mut bare = client(MessageType::Solicit, 1);
    bare.opts_mut().remove(OptionCode::IANA);
    let adv = answer(&mut s, &bare, from_node(1));
    assert_eq!(status(adv.opts()), Some(Status::NoAddrsAvail));
    assert_eq!(opt(&adv, OptionCode::IANA), None);
}

#[test]
fn messages_for_others_are_ignored() {
    let mut s = Dhcp6Server::new(config());
    let mut foreign = client(MessageType::Request, 1);
    foreign.opts_mut().insert(DhcpOption::ServerId(vec![0, 3, 0, 1, 2, 0, 0, 0, 0, 9]));
    use MessageType::{Advertise, Reconfigure, RelayForw, Reply, Unknown};
    let mut kinds: Vec<Message> =
        [Advertise, Reply, Reconfigure, RelayForw, Unknown(99)].into_iter().map(|k| to_server(k, 1)).collect();
    kinds.push(foreign);
    for msg in &kinds {
        assert_eq!(s.handle(&encode(msg), from_node(1)), None, "{:?}", msg.msg_type());
    }
    let mut no_ia = to_server(MessageType::Renew, 1);
    no_ia.opts_mut().remove(OptionCode::IANA);
    assert_eq!(s.handle(&encode(&no_ia), from_node(1)), None);
    assert_eq!(*s.stats(), Stats { ignored: 7, ..Stats::default() });
}

#[test]
fn broken_messages_are_dropped_and_counted() {
    let mut no_client = client(MessageType::Solicit, 1);
    no_client.opts_mut().remove(OptionCode::ClientId);
    let good = encode(&client(MessageType::Solicit, 1));
    let bad: Vec<Vec<u8>> = vec![
        vec![],
        vec![1, 2, 3],
        good[..good.len() - 1].to_vec(),
        encode(&no_client),
        encode(&to_server(MessageType::Solicit, 1)),
        encode(&to_server(MessageType::Rebind, 1)),
        encode(&client(MessageType::Request, 1)),
        encode(&client(MessageType::Release, 1)),
    ];
    let mut s = Dhcp6Server::new(config());
    for (i, packet) in bad.iter().enumerate() {
        assert_eq!(s.handle(packet, from_node(1)), None, "packet {i}");
        assert_eq!(s.stats().malformed, i as u64 + 1, "packet {i}");
    }
    assert_eq!(*s.stats(), Stats { malformed: bad.len() as u64, ..Stats::default() });
}

#[test]
fn empty_parameters_are_left_out() {
    let mut c = config();
    c.dns.clear();
    c.domain.clear();
    let mut s = Dhcp6Server::new(c);
    let adv = answer(&mut s, &client(MessageType::Solicit, 1), from_node(1));
    assert_eq!(opt(&adv, OptionCode::DomainNameServers), None);
    assert_eq!(opt(&adv, OptionCode::DomainSearchList), None);
    assert_eq!(addresses(&adv)[0].0, ip("fd00::101"));
}

#[test]
fn a_broken_config_still_serves_without_panicking() {
    let mut c = config();
    c.domain = "no..such".into();
    c.leases[0].mac = node_mac(2);
    let mut s = Dhcp6Server::new(c);
    let adv = answer(&mut s, &client(MessageType::Solicit, 2), from_node(2));
    assert_eq!(opt(&adv, OptionCode::DomainSearchList), None);
    assert_eq!(s.stats().solicits, 1);
}
