//! End-to-end tests of the DNS server on 127.0.0.1: real sockets, hand-built DNS messages.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_server::proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::timeout;

use super::*;

/// Long enough for a slow CI machine, short enough that a hang fails the test.
const WAIT: Duration = Duration::from_secs(10);

/// What the fake upstream answers for every A query.
pub(super) const UPSTREAM_ANSWER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);

pub(super) struct Running {
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
    pub stop: watch::Sender<bool>,
    pub task: JoinHandle<Result<(), DnsError>>,
}

/// node01 and the bridge names have IPv6 addresses, node02 has none.
pub(crate) fn zone() -> ClusterZone {
    ClusterZone {
        cluster: "kvci".into(),
        hosts: vec![
            ("node01".into(), Ipv4Addr::new(192, 168, 66, 101)),
            ("node02".into(), Ipv4Addr::new(192, 168, 66, 102)),
            ("registry".into(), Ipv4Addr::new(192, 168, 66, 2)),
            ("nfs".into(), Ipv4Addr::new(192, 168, 66, 2)),
        ],
        hosts6: vec![
            ("node01".into(), "fd00::101".parse().unwrap()),
            ("registry".into(), "fd00::1".parse().unwrap()),
            ("nfs".into(), "fd00::1".parse().unwrap()),
        ],
    }
}

/// The server as kvci runs it (fast path on).
async fn start(upstreams: Vec<SocketAddr>) -> Running {
    start_with(upstreams, true).await
}

pub(super) async fn start_with(upstreams: Vec<SocketAddr>, fast_path: bool) -> Running {
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (udp_addr, tcp_addr) = (udp.local_addr().unwrap(), tcp.local_addr().unwrap());
    let (stop, stop_rx) = watch::channel(false);
    let config = DnsConfig {
        zone: zone(),
        upstreams,
        fast_path,
    };
    let task = tokio::spawn(serve(udp, tcp, config, stop_rx));
    Running {
        udp: udp_addr,
        tcp: tcp_addr,
        stop,
        task,
    }
}

pub(super) fn query(id: u16, name: &str, rtype: RecordType) -> Message {
    let mut msg = Message::new();
    msg.set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    msg
}

/// Asks over UDP from a fresh socket and returns the reply with the same id.
pub(super) async fn ask_udp(server: SocketAddr, name: &str, rtype: RecordType) -> Message {
    let bytes = query(0x4b56, name, rtype).to_vec().unwrap();
    Message::from_vec(&send_udp(server, &bytes).await).unwrap()
}

/// Sends `query` over UDP from a fresh socket and returns the reply with the same id, raw.
pub(super) async fn send_udp(server: SocketAddr, query: &[u8]) -> Vec<u8> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(query, server).await.unwrap();
    let mut buf = vec![0; 4096];
    loop {
        let (n, _) = timeout(WAIT, socket.recv_from(&mut buf))
            .await
            .expect("no DNS reply over UDP")
            .unwrap();
        if n >= 2 && buf[..2] == query[..2] {
            return buf[..n].to_vec();
        }
    }
}

pub(super) async fn ask_tcp(server: SocketAddr, name: &str, rtype: RecordType) -> Message {
    let mut stream = TcpStream::connect(server).await.unwrap();
    let bytes = query(7, name, rtype).to_vec().unwrap();
    let len = u16::try_from(bytes.len()).unwrap();
    stream.write_all(&len.to_be_bytes()).await.unwrap();
    stream.write_all(&bytes).await.unwrap();
    let reply = async {
        let mut len = [0; 2];
        stream.read_exact(&mut len).await.unwrap();
        let mut body = vec![0; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut body).await.unwrap();
        body
    };
    let body = timeout(WAIT, reply).await.expect("no DNS reply over TCP");
    Message::from_vec(&body).unwrap()
}

pub(super) fn addresses(reply: &Message) -> Vec<Ipv4Addr> {
    reply
        .answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(A(ip)) => Some(*ip),
            _ => None,
        })
        .collect()
}

pub(super) fn addresses6(reply: &Message) -> Vec<Ipv6Addr> {
    reply
        .answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::AAAA(AAAA(ip)) => Some(*ip),
            _ => None,
        })
        .collect()
}

/// A stand-in for the host's resolver: answers every A query with [`UPSTREAM_ANSWER`].
pub(super) async fn fake_upstream() -> (SocketAddr, JoinHandle<()>) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut buf = vec![0; 4096];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let Ok(request) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut reply = Message::new();
            reply
                .set_id(request.id())
                .set_message_type(MessageType::Response)
                .set_op_code(OpCode::Query)
                .set_recursion_desired(request.recursion_desired())
                .set_recursion_available(true)
                .add_queries(request.queries().to_vec());
            for q in request.queries() {
                if q.query_type() == RecordType::A {
                    let a = RData::A(A(UPSTREAM_ANSWER));
                    reply.add_answer(Record::from_rdata(q.name().clone(), 300, a));
                }
            }
            if let Ok(bytes) = reply.to_vec() {
                let _ = socket.send_to(&bytes, from).await;
            }
        }
    });
    (addr, task)
}

#[tokio::test]
async fn bare_node_name_is_answered() {
    let dns = start(vec![]).await;
    let reply = ask_udp(dns.udp, "node01.", RecordType::A).await;
    assert_eq!(reply.response_code(), ResponseCode::NoError);
    assert!(reply.authoritative());
    assert_eq!(addresses(&reply), [Ipv4Addr::new(192, 168, 66, 101)]);
}

#[tokio::test]
async fn node_name_under_cluster_domain_is_answered() {
    let dns = start(vec![]).await;
    let reply = ask_udp(dns.udp, "node02.kvci.", RecordType::A).await;
    assert_eq!(addresses(&reply), [Ipv4Addr::new(192, 168, 66, 102)]);
}

#[tokio::test]
async fn registry_resolves_to_the_bridge_address() {
    let dns = start(vec![]).await;
    let reply = ask_udp(dns.udp, "registry.", RecordType::A).await;
    assert_eq!(addresses(&reply), [Ipv4Addr::new(192, 168, 66, 2)]);
}

#[tokio::test]
async fn names_are_case_insensitive() {
    let dns = start(vec![]).await;
    let reply = ask_udp(dns.udp, "NODE01.KVCI.", RecordType::A).await;
    assert_eq!(addresses(&reply), [Ipv4Addr::new(192, 168, 66, 101)]);
}

#[tokio::test]
async fn node_address_resolves_back_to_its_name() {
    let dns = start(vec![]).await;
    let reply = ask_udp(dns.udp, "101.66.168.192.in-addr.arpa.", RecordType::PTR).await;
    let names: Vec<String> = reply
        .answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::PTR(ptr) => Some(ptr.0.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(names, ["node01.kvci."]);
}

#[tokio::test]
async fn unknown_name_in_cluster_is_nxdomain_not_forwarded() {
    let (upstream, upstream_task) = fake_upstream().await;
    let dns = start(vec![upstream]).await;
    let reply = ask_udp(dns.udp, "node99.kvci.", RecordType::A).await;
    assert_eq!(reply.response_code(), ResponseCode::NXDomain);
    assert!(reply.authoritative());
    // A known name without an AAAA record exists: NOERROR with no answers.
    let reply = ask_udp(dns.udp, "node02.", RecordType::AAAA).await;
    assert_eq!(reply.response_code(), ResponseCode::NoError);
    assert!(reply.answers().is_empty());
    upstream_task.abort();
}

#[tokio::test]
async fn name_outside_cluster_is_forwarded() {
    let (upstream, upstream_task) = fake_upstream().await;
    let dns = start(vec![upstream]).await;
    let reply = ask_udp(dns.udp, "example.test.", RecordType::A).await;
    assert_eq!(reply.response_code(), ResponseCode::NoError);
    assert!(!reply.authoritative());
    assert_eq!(addresses(&reply), [UPSTREAM_ANSWER]);
    upstream_task.abort();
}

#[tokio::test]
async fn without_upstreams_outside_names_are_refused() {
    let dns = start(vec![]).await;
    let reply = ask_udp(dns.udp, "example.test.", RecordType::A).await;
    assert_eq!(reply.response_code(), ResponseCode::Refused);
}

#[tokio::test]
async fn tcp_queries_are_answered() {
    let dns = start(vec![]).await;
    let reply = ask_tcp(dns.tcp, "node01.kvci.", RecordType::A).await;
    assert_eq!(addresses(&reply), [Ipv4Addr::new(192, 168, 66, 101)]);
}

/// Bounded fuzzing of the request path: random datagrams and mutated valid queries must not
/// stop the server from answering. Deterministic (fixed seed) so a failure reproduces.
#[tokio::test]
async fn malformed_datagrams_do_not_stop_the_server() {
    let dns = start(vec![]).await;
    let fuzzer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let valid = query(1, "node01.kvci.", RecordType::A).to_vec().unwrap();
    let mut rng = fastrand::Rng::with_seed(0x9e37_79b9_7f4a_7c15);
    let mut next = move || rng.u64(..);
    for round in 0..2000 {
        let datagram = if round % 2 == 0 {
            let len = (next() % 600) as usize;
            (0..len).map(|_| next() as u8).collect::<Vec<u8>>()
        } else {
            // Valid header and question with a few bytes flipped and maybe cut short: reaches
            // deeper into the parser than pure noise.
            let mut d = valid.clone();
            for _ in 0..1 + next() % 6 {
                let at = (next() % d.len() as u64) as usize;
                d[at] ^= next() as u8;
            }
            d.truncate(1 + (next() % d.len() as u64) as usize);
            d
        };
        // A full socket buffer may drop datagrams; that is fine, most get through.
        let _ = fuzzer.send_to(&datagram, dns.udp).await;
        // Let the server task run so it parses these rather than the kernel dropping them.
        tokio::task::yield_now().await;
    }
    let reply = ask_udp(dns.udp, "node01.", RecordType::A).await;
    assert_eq!(addresses(&reply), [Ipv4Addr::new(192, 168, 66, 101)]);
    assert!(!dns.task.is_finished());
}

#[tokio::test]
async fn stop_makes_serve_return() {
    let dns = start(vec![]).await;
    // Served once, so the stop below hits a running server.
    ask_udp(dns.udp, "node01.", RecordType::A).await;
    dns.stop.send(true).unwrap();
    let result = timeout(WAIT, dns.task).await.expect("serve did not return");
    assert!(matches!(result, Ok(Ok(()))), "{result:?}");
}

#[tokio::test]
async fn serve_returns_when_its_owner_goes_away() {
    let dns = start(vec![]).await;
    drop(dns.stop);
    let result = timeout(WAIT, dns.task).await.expect("serve did not return");
    assert!(matches!(result, Ok(Ok(()))), "{result:?}");
}

#[test]
fn nameservers_are_read_in_order_on_port_53() {
    let text = "# generated\nsearch example.org\nnameserver 10.0.0.1\n  nameserver\t2001:db8::1\n\
                options edns0\nnameserver 10.0.0.1\nnameserver 10.0.0.2 # trailing\n";
    let expected: Vec<SocketAddr> = vec![
        "10.0.0.1:53".parse().unwrap(),
        "[2001:db8::1]:53".parse().unwrap(),
        "10.0.0.2:53".parse().unwrap(),
    ];
    assert_eq!(upstreams_from_resolv_conf(text), expected);
}

#[test]
fn loopback_stub_resolvers_are_kept() {
    let upstreams = upstreams_from_resolv_conf("nameserver 127.0.0.53\noptions trust-ad\n");
    assert_eq!(upstreams, ["127.0.0.53:53".parse::<SocketAddr>().unwrap()]);
}

#[test]
fn comments_and_unparsable_nameservers_are_skipped() {
    let text = "#nameserver 10.9.9.9\n; nameserver 10.8.8.8\nnameserver fe80::1%eth0\n\
                nameserver not-an-ip\nnameserver\nnameservers 10.7.7.7\n";
    assert!(upstreams_from_resolv_conf(text).is_empty());
    assert!(upstreams_from_resolv_conf("").is_empty());
}
