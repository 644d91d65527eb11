//! Loopback tests of IPv6 names and of the fast path against hickory alone: the same queries
//! sent to a server with the fast path and one without must get the same replies.

use std::net::{Ipv4Addr, Ipv6Addr};

use hickory_server::proto::op::{Edns, Message, Query, ResponseCode};
use hickory_server::proto::rr::rdata::opt::EdnsOption;
use hickory_server::proto::rr::{Name, RData, RecordType};

use super::tests::{
    addresses, addresses6, ask_tcp, ask_udp, fake_upstream, query, send_udp, start_with, zone,
};
use crate::dns::fast::FastAnswers;

const NODE01_PTR6: &str =
    "1.0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.";

fn names(reply: &Message) -> Vec<String> {
    reply
        .answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::PTR(ptr) => Some(ptr.0.to_string()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn aaaa_records_are_answered_over_udp_and_tcp() {
    let dns = start_with(vec![], true).await;
    let node01: Ipv6Addr = "fd00::101".parse().unwrap();
    for name in ["node01.", "node01.kvci.", "NODE01.Kvci."] {
        let reply = ask_udp(dns.udp, name, RecordType::AAAA).await;
        assert_eq!(addresses6(&reply), [node01], "{name}");
        assert!(reply.authoritative());
    }
    let reply = ask_tcp(dns.tcp, "node01.kvci.", RecordType::AAAA).await;
    assert_eq!(addresses6(&reply), [node01]);
    let reply = ask_udp(dns.udp, "registry.", RecordType::AAAA).await;
    assert_eq!(addresses6(&reply), ["fd00::1".parse::<Ipv6Addr>().unwrap()]);
}

#[tokio::test]
async fn ipv6_address_resolves_back_to_its_name() {
    let dns = start_with(vec![], true).await;
    assert_eq!(
        names(&ask_udp(dns.udp, NODE01_PTR6, RecordType::PTR).await),
        ["node01.kvci."]
    );
    assert_eq!(
        names(&ask_tcp(dns.tcp, NODE01_PTR6, RecordType::PTR).await),
        ["node01.kvci."]
    );
}

#[tokio::test]
async fn unassigned_ipv6_address_in_the_prefix_is_nxdomain_not_forwarded() {
    let (upstream, upstream_task) = fake_upstream().await;
    let dns = start_with(vec![upstream], true).await;
    let fd00_99 = "9.9.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.";
    let reply = ask_udp(dns.udp, fd00_99, RecordType::PTR).await;
    assert_eq!(reply.response_code(), ResponseCode::NXDomain);
    assert!(reply.authoritative());
    upstream_task.abort();
}

/// Queries the fast path answers: every table entry, in odd case, with and without EDNS.
fn fast_queries() -> Vec<Vec<u8>> {
    let mut queries = Vec::new();
    for (i, record) in zone()
        .zones()
        .unwrap()
        .iter()
        .flat_map(|z| z.records.clone())
        .enumerate()
    {
        let mut name = record.name().to_ascii();
        if i % 3 == 0 {
            name = name.to_uppercase();
        }
        let mut q = query(i as u16, &name, record.record_type());
        q.set_checking_disabled(i % 4 == 1);
        queries.push(q.to_vec().unwrap());
        let mut edns = Edns::new();
        edns.set_max_payload(if i % 2 == 0 { 1232 } else { 256 })
            .set_dnssec_ok(i % 2 == 0);
        q.set_edns(edns);
        queries.push(q.to_vec().unwrap());
    }
    queries
}

/// Queries the fast path passes on to hickory.
fn other_queries() -> Vec<Vec<u8>> {
    let mut queries: Vec<Vec<u8>> = [
        ("node02.", RecordType::AAAA),
        ("node99.kvci.", RecordType::A),
        ("node01.", RecordType::MX),
        ("kvci.", RecordType::SOA),
        ("kvci.", RecordType::A),
        ("99.66.168.192.in-addr.arpa.", RecordType::PTR),
        ("example.test.", RecordType::A),
    ]
    .iter()
    .map(|(name, kind)| query(0x77, name, *kind).to_vec().unwrap())
    .collect();
    let mut cookie = query(0x78, "node01.", RecordType::A);
    let mut edns = Edns::new();
    edns.options_mut()
        .insert(EdnsOption::Unknown(10, vec![1; 8]));
    cookie.set_edns(edns);
    queries.push(cookie.to_vec().unwrap());
    let mut two = query(0x79, "node01.", RecordType::A);
    two.add_query(Query::query(
        Name::from_ascii("registry.").unwrap(),
        RecordType::A,
    ));
    queries.push(two.to_vec().unwrap());
    // A header with a question count the message does not hold: FORMERR.
    let mut short = query(0x7a, "node01.", RecordType::A).to_vec().unwrap();
    short[5] = 2;
    queries.push(short);
    queries
}

#[tokio::test]
async fn fast_answers_are_hickorys_answers() {
    let hickory = start_with(vec![], false).await;
    let fast_server = start_with(vec![], true).await;
    let fast = FastAnswers::new(&zone().zones().unwrap()).unwrap();
    for q in fast_queries() {
        let mut out = Vec::new();
        assert!(fast.answer(&q, &mut out), "not fast: {q:02x?}");
        let theirs = Message::from_vec(&send_udp(hickory.udp, &q).await).unwrap();
        let ours = Message::from_vec(&out).unwrap();
        assert_eq!(ours, theirs, "query {q:02x?}");
        assert_eq!(
            send_udp(fast_server.udp, &q).await,
            out,
            "the server sends the fast answer"
        );
    }
}

#[tokio::test]
async fn queries_passed_on_get_hickorys_answers() {
    let hickory = start_with(vec![], false).await;
    let fast_server = start_with(vec![], true).await;
    let fast = FastAnswers::new(&zone().zones().unwrap()).unwrap();
    for q in other_queries() {
        assert!(!fast.answer(&q, &mut Vec::new()), "fast: {q:02x?}");
        let theirs = send_udp(hickory.udp, &q).await;
        let ours = send_udp(fast_server.udp, &q).await;
        assert_eq!(ours, theirs, "query {q:02x?}");
    }
    // Still answering after all that.
    let reply = ask_udp(fast_server.udp, "node01.", RecordType::A).await;
    assert_eq!(addresses(&reply), [Ipv4Addr::new(192, 168, 66, 101)]);
}
