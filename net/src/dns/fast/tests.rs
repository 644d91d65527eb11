use std::net::{Ipv4Addr, Ipv6Addr};

use hickory_server::proto::op::{Edns, Message, Query, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA, PTR};
use hickory_server::proto::rr::{DNSClass, Name, RData, RecordType};

use super::*;

/// The same zone the server's tests answer from, so both paths are compared on one zone.
pub(super) use crate::dns::server::tests::zone;

pub(super) fn table() -> FastAnswers {
    FastAnswers::new(&zone().zones().unwrap()).unwrap()
}

pub(super) fn query_message(id: u16, name: &str, kind: RecordType) -> Message {
    let mut msg = Message::new();
    msg.set_id(id)
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_ascii(name).unwrap(), kind));
    msg
}

fn wire(id: u16, name: &str, kind: RecordType) -> Vec<u8> {
    query_message(id, name, kind).to_vec().unwrap()
}

/// The fast answer to `query`, decoded; panics if the fast path passes it on.
fn fast(query: &[u8]) -> Message {
    let mut out = Vec::new();
    assert!(
        table().answer(query, &mut out),
        "not answered: {query:02x?}"
    );
    Message::from_vec(&out).unwrap()
}

fn passed_on(query: &[u8]) -> bool {
    !table().answer(query, &mut Vec::new())
}

fn rdata(reply: &Message) -> Vec<RData> {
    reply.answers().iter().map(|r| r.data().clone()).collect()
}

#[test]
fn a_records_are_answered_bare_and_under_the_cluster() {
    for name in ["node01.", "node01.kvci."] {
        let reply = fast(&wire(1, name, RecordType::A));
        assert_eq!(
            rdata(&reply),
            [RData::A(A(Ipv4Addr::new(192, 168, 66, 101)))],
            "{name}"
        );
        assert_eq!(reply.answers()[0].ttl(), super::super::records::RECORD_TTL);
        assert_eq!(reply.answers()[0].name(), &Name::from_ascii(name).unwrap());
    }
}

#[test]
fn aaaa_records_are_answered_bare_and_under_the_cluster() {
    for (name, ip) in [
        ("node01.", "fd00::101"),
        ("registry.kvci.", "fd00::1"),
        ("nfs.", "fd00::1"),
    ] {
        let reply = fast(&wire(1, name, RecordType::AAAA));
        let ip: Ipv6Addr = ip.parse().unwrap();
        assert_eq!(rdata(&reply), [RData::AAAA(AAAA(ip))], "{name}");
    }
}

#[test]
fn ptr_records_are_answered_for_both_address_families() {
    let v4 = fast(&wire(1, "101.66.168.192.in-addr.arpa.", RecordType::PTR));
    assert_eq!(
        rdata(&v4),
        [RData::PTR(PTR(Name::from_ascii("node01.kvci.").unwrap()))]
    );
    let nibbles = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.";
    let v6 = fast(&wire(1, nibbles, RecordType::PTR));
    assert_eq!(
        rdata(&v6),
        [RData::PTR(PTR(Name::from_ascii("registry.kvci.").unwrap()))]
    );
}

#[test]
fn reply_copies_id_rd_cd_and_is_authoritative() {
    let mut q = query_message(0xbeef, "node02.kvci.", RecordType::A);
    q.set_recursion_desired(false).set_checking_disabled(true);
    let reply = fast(&q.to_vec().unwrap());
    assert_eq!(reply.id(), 0xbeef);
    assert_eq!(reply.message_type(), MessageType::Response);
    assert_eq!(reply.op_code(), OpCode::Query);
    assert_eq!(reply.response_code(), ResponseCode::NoError);
    assert!(reply.authoritative() && !reply.truncated() && !reply.authentic_data());
    assert!(!reply.recursion_desired() && !reply.recursion_available());
    assert!(reply.checking_disabled());
    assert!(reply.name_servers().is_empty() && reply.additionals().is_empty());
    assert!(reply.extensions().is_none());
}

#[test]
fn question_is_echoed_in_the_case_it_was_asked() {
    let query = wire(9, "NoDe01.KVCI.", RecordType::A);
    let mut out = Vec::new();
    assert!(table().answer(&query, &mut out));
    assert_eq!(&out[12..query.len()], &query[12..]);
    let reply = Message::from_vec(&out).unwrap();
    assert_eq!(reply.queries()[0].name().to_ascii(), "NoDe01.KVCI.");
}

#[test]
fn edns_without_options_gets_an_opt_record_like_hickorys() {
    for (asked, offered) in [(1232, 1232), (4096, 4096), (100, 512)] {
        let mut q = query_message(3, "registry.", RecordType::A);
        let mut edns = Edns::new();
        edns.set_max_payload(asked).set_dnssec_ok(asked == 4096);
        q.set_edns(edns);
        let reply = fast(&q.to_vec().unwrap());
        let edns = reply.extensions().as_ref().expect("OPT in the reply");
        assert_eq!(edns.max_payload(), offered);
        assert_eq!(edns.version(), 0);
        assert!(edns.flags().dnssec_ok);
        assert!(edns.options().as_ref().is_empty());
        assert_eq!(reply.answers().len(), 1);
    }
}

#[test]
fn other_names_types_and_classes_are_passed_on() {
    assert!(passed_on(&wire(1, "node99.kvci.", RecordType::A)));
    assert!(passed_on(&wire(1, "example.com.", RecordType::A)));
    assert!(passed_on(&wire(1, "node02.", RecordType::AAAA)));
    assert!(passed_on(&wire(1, "node01.", RecordType::MX)));
    assert!(passed_on(&wire(1, "node01.", RecordType::ANY)));
    assert!(passed_on(&wire(1, "kvci.", RecordType::SOA)));
    assert!(passed_on(&wire(
        1,
        "99.66.168.192.in-addr.arpa.",
        RecordType::PTR
    )));
    let mut chaos = query_message(1, "node01.", RecordType::A);
    chaos.queries_mut()[0].set_query_class(DNSClass::CH);
    assert!(passed_on(&chaos.to_vec().unwrap()));
}

#[test]
fn unusual_messages_are_passed_on() {
    let base = wire(1, "node01.", RecordType::A);
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut q = base.clone();
        f(&mut q);
        q
    };
    assert!(!passed_on(&base));
    assert!(passed_on(&with(&|q| q[2] |= 0x80)), "a response");
    assert!(passed_on(&with(&|q| q[2] |= 0x02)), "truncated");
    assert!(passed_on(&with(&|q| q[2] |= 0x28)), "opcode UPDATE");
    assert!(passed_on(&with(&|q| q[5] = 2)), "two questions claimed");
    assert!(passed_on(&with(&|q| q[5] = 0)), "no question");
    assert!(passed_on(&with(&|q| q[7] = 1)), "an answer in a query");
    assert!(passed_on(&with(&|q| q[9] = 1)), "an authority record");
    assert!(passed_on(&with(&|q| q.push(0))), "trailing byte");
    assert!(passed_on(&with(&|q| q.truncate(q.len() - 1))), "cut short");
    assert!(passed_on(&base[..11]), "short header");

    let mut two = query_message(1, "node01.", RecordType::A);
    two.add_query(Query::query(
        Name::from_ascii("node02.").unwrap(),
        RecordType::A,
    ));
    assert!(passed_on(&two.to_vec().unwrap()));

    let edns = |version: u8, option: bool| {
        let mut q = query_message(1, "node01.", RecordType::A);
        let mut edns = Edns::new();
        edns.set_version(version);
        if option {
            let cookie = hickory_server::proto::rr::rdata::opt::EdnsOption::Unknown(10, vec![7; 8]);
            edns.options_mut().insert(cookie);
        }
        q.set_edns(edns);
        q.to_vec().unwrap()
    };
    assert!(!passed_on(&edns(0, false)));
    assert!(
        passed_on(&edns(1, false)),
        "EDNS version 1 gets BADVERS from hickory"
    );
    assert!(passed_on(&edns(0, true)), "EDNS options (a cookie)");
}

#[test]
fn compressed_question_names_are_passed_on() {
    // "node01." then a question whose name is a pointer to it: legal-looking, never fast.
    let mut q = wire(1, "node01.", RecordType::A);
    q.truncate(12);
    q.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    assert!(passed_on(&q));
}

#[test]
fn the_table_holds_every_address_and_ptr_record_of_the_zones() {
    // A: 4 hosts x 2 names; AAAA: 3 x 2; PTR: 3 IPv4 + 2 IPv6 addresses.
    assert_eq!(table().len(), 8 + 6 + 5);
    assert!(FastAnswers::new(&[]).unwrap().is_empty());
}

#[test]
fn a_name_listed_twice_is_answered_once_per_address() {
    let mut z = zone();
    z.hosts
        .push(("node01".into(), Ipv4Addr::new(192, 168, 66, 101)));
    z.hosts
        .push(("node01".into(), Ipv4Addr::new(192, 168, 66, 201)));
    let fast = FastAnswers::new(&z.zones().unwrap()).unwrap();
    let mut out = Vec::new();
    assert!(fast.answer(&wire(1, "node01.kvci.", RecordType::A), &mut out));
    let reply = Message::from_vec(&out).unwrap();
    assert_eq!(reply.answers().len(), 2);
}
