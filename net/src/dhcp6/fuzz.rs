//! Bounded fuzzing of [`Dhcp6Server::handle`], the one function that reads guest bytes: random
//! byte strings and mutated valid messages must never panic, every message must be counted
//! exactly once, and every reply must decode again. Seeded, so every run feeds the same bytes.

use std::net::SocketAddrV6;

use dhcproto::v6::{DhcpOption, Message, MessageType, Status, StatusCode, UserClass, VendorClass};

use super::server::{Dhcp6Server, Stats};
use super::test_support::{client, config, decode, encode, from_node, from_private, naming, to_server};

const RUNS: usize = 20_000;

fn total(s: &Stats) -> u64 {
    s.malformed
        + s.solicits
        + s.requests
        + s.renews
        + s.confirms
        + s.informs
        + s.releases
        + s.declines
        + s.unknown_clients
        + s.ignored
}

/// Feeds `packet` and checks the invariants.
fn feed(server: &mut Dhcp6Server, packet: &[u8], src: SocketAddrV6) {
    let before = total(server.stats());
    let reply = server.handle(packet, src);
    assert_eq!(total(server.stats()), before + 1, "each message is counted once: {packet:02x?}");
    if let Some(bytes) = reply {
        let reply = decode(&bytes);
        assert!(matches!(reply.msg_type(), MessageType::Advertise | MessageType::Reply), "{reply:?}");
        assert_eq!(&bytes[1..4], &packet[1..4], "the transaction id is echoed");
    }
}

/// Valid messages of every type, one carrying options the server never reads (including the
/// ones that panic dhcproto's decoder when short), so mutations reach all of them.
fn seeds() -> Vec<Vec<u8>> {
    let mut exotic = client(MessageType::Solicit, 2);
    let opts = exotic.opts_mut();
    opts.insert(DhcpOption::RapidCommit);
    opts.insert(DhcpOption::UserClass(UserClass { data: vec![b"kvci".to_vec()] }));
    opts.insert(DhcpOption::VendorClass(VendorClass { num: 311, data: vec![b"x".to_vec()] }));
    opts.insert(DhcpOption::StatusCode(StatusCode { status: Status::Success, msg: "hi".into() }));
    [
        client(MessageType::Solicit, 1),
        naming(to_server(MessageType::Request, 1), &["fd00::101"]),
        naming(to_server(MessageType::Renew, 2), &["fd00::102", "fd00::7"]),
        naming(client(MessageType::Rebind, 3), &["fd00::103"]),
        naming(client(MessageType::Confirm, 1), &["fd00::101"]),
        naming(to_server(MessageType::Release, 1), &["fd00::101"]),
        naming(to_server(MessageType::Decline, 2), &["fd00::102"]),
        Message::new_with_id(MessageType::InformationRequest, [1, 2, 3]),
        exotic,
    ]
    .iter()
    .map(encode)
    .collect()
}

/// Option codes worth aiming at: the ones the server reads, and the ones dhcproto chokes on.
const CODES: [u16; 9] = [1, 2, 3, 5, 14, 13, 16, 17, 9];

#[test]
fn random_bytes_never_panic() {
    let mut rng = fastrand::Rng::with_seed(0x9e37_79b9_7f4a_7c15);
    let mut server = Dhcp6Server::new(config());
    for run in 0..RUNS {
        let len = rng.usize(..600);
        let mut packet: Vec<u8> = std::iter::repeat_with(|| rng.u8(..)).take(len).collect();
        // Most runs get a plausible message type, so the option walk itself is exercised.
        if run % 4 != 0 && !packet.is_empty() {
            packet[0] = rng.u8(1..=12);
        }
        let src = if run % 2 == 0 { from_node(1 + rng.u32(0..4)) } else { from_private() };
        feed(&mut server, &packet, src);
    }
    assert!(server.stats().malformed > 0);
}

#[test]
fn mutated_messages_never_panic() {
    let mut rng = fastrand::Rng::with_seed(0x2545_f491_4f6c_dd1d);
    let mut server = Dhcp6Server::new(config());
    let seeds = seeds();
    for packet in &seeds {
        feed(&mut server, packet, from_node(1));
    }
    for run in 0..RUNS {
        let mut packet = seeds[rng.usize(..seeds.len())].clone();
        match run % 4 {
            // Flip a few bytes anywhere.
            0 => {
                for _ in 0..1 + rng.usize(..8) {
                    let at = rng.usize(..packet.len());
                    packet[at] ^= rng.u8(..) | 1;
                }
            }
            // Garble option lengths: the high byte stays, so most still nearly fit.
            1 => {
                for _ in 0..1 + rng.usize(..4) {
                    if let Some(at) = (4..packet.len()).nth(rng.usize(..packet.len())) {
                        packet[at] = rng.u8(..24);
                    }
                }
            }
            // Cut short anywhere.
            2 => packet.truncate(rng.usize(..packet.len())),
            // Keep the header, follow it with random options, some nested in an IA_NA.
            _ => {
                packet.truncate(4);
                for _ in 0..rng.usize(..8) {
                    let code = if rng.bool() { CODES[rng.usize(..CODES.len())] } else { rng.u16(..) };
                    let len = rng.usize(..40);
                    let data_len = if rng.u8(..8) == 0 { rng.usize(..len + 4) } else { len };
                    packet.extend_from_slice(&code.to_be_bytes());
                    packet.extend_from_slice(&(len as u16).to_be_bytes());
                    packet.extend(std::iter::repeat_with(|| rng.u8(..)).take(data_len));
                }
            }
        }
        let src = if run % 3 == 0 { from_private() } else { from_node(1 + rng.u32(0..3)) };
        feed(&mut server, &packet, src);
    }
    let s = server.stats();
    // Sanity: the mutations produced all kinds of outcomes, not just drops.
    assert!(s.malformed > 0 && s.solicits > 0 && s.requests > 0 && s.ignored > 0 && s.unknown_clients > 0, "{s:?}");
}
