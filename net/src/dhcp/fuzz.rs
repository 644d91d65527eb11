//! Bounded fuzzing of [`DhcpServer::handle`], the one function that reads guest bytes: random
//! byte strings and mutated valid packets must never panic, every packet must be counted
//! exactly once, and every reply must decode again. A fixed-seed generator (`fastrand`) keeps
//! runs reproducible.

use std::net::Ipv4Addr;

use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode, OptionCode, MAGIC};

use super::lease::node_mac;
use super::server::{DhcpServer, Outcome, Stats};
use super::test_support::{client, config, decode, encode, selecting, SERVER};

const RUNS: usize = 20_000;

/// A seeded generator (`fastrand`), so every run feeds the same packets.
struct Rng(fastrand::Rng);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0.usize(..n.max(1))
    }

    fn byte(&mut self) -> u8 {
        self.0.u8(..)
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        std::iter::repeat_with(|| self.byte()).take(len).collect()
    }
}

fn total(s: &Stats) -> u64 {
    s.malformed + s.offers + s.acks + s.naks + s.releases + s.declines + s.informs + s.ignored
}

/// Feeds `packet` and checks the invariants.
fn feed(server: &mut DhcpServer, packet: &[u8]) {
    let before = *server.stats();
    let outcome = server.handle(packet);
    let after = *server.stats();
    assert!(after.malformed >= before.malformed);
    assert_eq!(total(&after), total(&before) + 1, "each packet is counted once: {packet:02x?}");
    if let Outcome::Reply { bytes, .. } = outcome {
        let reply = decode(&bytes);
        assert_eq!(reply.opcode(), Opcode::BootReply);
        assert!(matches!(reply.opts().msg_type(), Some(MessageType::Offer | MessageType::Ack | MessageType::Nak)));
    }
}

/// Valid packets of every type, one with options the server never looks at, so mutations
/// reach dhcproto's decoders for them too.
fn seeds() -> Vec<Vec<u8>> {
    let node01 = Ipv4Addr::new(192, 168, 66, 101);
    let mut inform = client(MessageType::Inform, node_mac(1));
    inform.set_ciaddr(node01);
    let mut exotic: Message = client(MessageType::Discover, node_mac(2));
    let opts = exotic.opts_mut();
    opts.insert(DhcpOption::Hostname("guest".into()));
    opts.insert(DhcpOption::MaxMessageSize(1500));
    opts.insert(DhcpOption::ClassIdentifier(b"udhcp 1.36.1".to_vec()));
    opts.insert(DhcpOption::ClasslessStaticRoute(Vec::new()));
    opts.insert(DhcpOption::RapidCommit);
    [
        client(MessageType::Discover, node_mac(1)),
        selecting(MessageType::Request, node_mac(1), node01, SERVER),
        selecting(MessageType::Release, node_mac(1), node01, SERVER),
        selecting(MessageType::Decline, node_mac(3), node01, SERVER),
        inform,
        exotic,
    ]
    .iter()
    .map(encode)
    .collect()
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(fastrand::Rng::with_seed(0x9e37_79b9_7f4a_7c15));
    let mut server = DhcpServer::new(config());
    for run in 0..RUNS {
        let len = rng.below(700);
        let mut packet = rng.bytes(len);
        // Most runs get past the cheap checks, so the decoder itself is exercised.
        if run % 4 != 0 && packet.len() >= 240 {
            packet[236..240].copy_from_slice(&MAGIC);
            if run % 2 == 0 {
                packet[..3].copy_from_slice(&[1, 1, 6]);
            }
        }
        feed(&mut server, &packet);
    }
    assert!(server.stats().malformed > 0);
}

#[test]
fn mutated_packets_never_panic() {
    let mut rng = Rng(fastrand::Rng::with_seed(0x2545_f491_4f6c_dd1d));
    let mut server = DhcpServer::new(config());
    let seeds = seeds();
    for packet in &seeds {
        feed(&mut server, packet);
    }
    for run in 0..RUNS {
        let mut packet = seeds[rng.below(seeds.len())].clone();
        match run % 4 {
            // Flip a few bytes anywhere.
            0 => {
                for _ in 0..1 + rng.below(8) {
                    let at = rng.below(packet.len());
                    packet[at] ^= rng.byte() | 1;
                }
            }
            // Flip bytes among the options only: header intact, options garbled.
            1 => {
                for _ in 0..1 + rng.below(16) {
                    let at = 240 + rng.below(packet.len() - 240);
                    packet[at] = rng.byte();
                }
            }
            // Cut short anywhere.
            2 => packet.truncate(rng.below(packet.len())),
            // Keep the header, follow it with random option-like bytes.
            _ => {
                packet.truncate(240);
                for _ in 0..rng.below(12) {
                    // Half the time one of the options the server reads, so their decoders are hit.
                    let code = match rng.below(8) {
                        0 => u8::from(OptionCode::MessageType),
                        1 => u8::from(OptionCode::ServerIdentifier),
                        2 => u8::from(OptionCode::RequestedIpAddress),
                        3 => u8::from(OptionCode::ClientIdentifier),
                        _ => rng.byte(),
                    };
                    let len = rng.below(12);
                    packet.extend_from_slice(&[code, len as u8]);
                    let data_len = if rng.below(8) == 0 { rng.below(len + 4) } else { len };
                    packet.extend(rng.bytes(data_len));
                }
                if rng.below(2) == 0 {
                    packet.push(255);
                }
            }
        }
        feed(&mut server, &packet);
    }
    let stats = server.stats();
    // Sanity: the mutations produced all kinds of outcomes, not just drops.
    assert!(stats.malformed > 0 && stats.offers > 0 && stats.ignored > 0, "{stats:?}");
}
