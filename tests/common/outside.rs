//! "The outside world" for egress tests: a network namespace the test makes, joined to the
//! host's by a veth pair with test-only addresses (198.18.0.0/15, RFC 2544's benchmarking range,
//! and fd98::/64), serving TCP, UDP (a DNS answer) and ICMP echo (the kernel's). Traffic stays on
//! this machine. Removed (namespace, veth, server threads' sockets) when dropped.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::os::fd::AsFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What the outside servers answer over TCP.
pub const TCP_REPLY: &str = "hello-from-outside";
/// The A record the outside DNS server gives every name (proof the UDP reply came back).
pub const UDP_ANSWER: Ipv4Addr = Ipv4Addr::new(10, 77, 88, 99);

/// The outside network and its servers.
pub struct Outside {
    ns: String,
    veth: String,
    /// The server's IPv4 address.
    pub ip: Ipv4Addr,
    /// The server's IPv6 address.
    pub ip6: Ipv6Addr,
    /// The TCP server's port (IPv4 and IPv6).
    pub tcp_port: u16,
    /// The UDP (DNS) server's port (53).
    pub udp_port: u16,
    stop: Arc<AtomicBool>,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip (iproute2)");
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl Outside {
    /// Makes outside network number `n` (1-250; each test its own).
    pub fn new(n: u8) -> Outside {
        let ns = format!("kvci-out{n}-{}", std::process::id());
        let veth = format!("kvo{n}-{}", std::process::id() % 100000);
        let (host4, ip4) = (format!("198.18.{n}.1"), Ipv4Addr::new(198, 18, n, 2));
        let (host6, ip6) = (format!("fd98:{n:x}::1"), format!("fd98:{n:x}::2").parse::<Ipv6Addr>().unwrap());
        ip(&["netns", "add", &ns]);
        let peer = format!("{veth}p");
        ip(&["link", "add", &veth, "type", "veth", "peer", "name", &peer]);
        ip(&["link", "set", &peer, "netns", &ns]);
        ip(&["addr", "add", &format!("{host4}/24"), "dev", &veth]);
        ip(&["-6", "addr", "add", &format!("{host6}/64"), "dev", &veth, "nodad"]);
        ip(&["link", "set", &veth, "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        ip(&["-n", &ns, "link", "set", &peer, "up"]);
        ip(&["-n", &ns, "addr", "add", &format!("{ip4}/24"), "dev", &peer]);
        ip(&["-n", &ns, "-6", "addr", "add", &format!("{ip6}/64"), "dev", &peer, "nodad"]);
        ip(&["-n", &ns, "route", "add", "default", "via", &host4]);
        ip(&["-n", &ns, "-6", "route", "add", "default", "via", &host6]);

        // Servers bound inside the namespace by a thread that entered it.
        let stop = Arc::new(AtomicBool::new(false));
        let nsfile = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let stop2 = stop.clone();
        std::thread::spawn(move || {
            nix::sched::setns(nsfile.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let tcp = TcpListener::bind("[::]:0").unwrap();
            // Port 53: busybox nslookup asks nowhere else (the namespace is the test's own).
            let udp = UdpSocket::bind("[::]:53").unwrap();
            tx.send((tcp.local_addr().unwrap().port(), udp.local_addr().unwrap().port())).unwrap();
            let s = stop2.clone();
            std::thread::spawn(move || serve_udp(udp, s));
            tcp.set_nonblocking(false).unwrap();
            for conn in tcp.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut c) = conn else { continue };
                let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = [0u8; 2048];
                let _ = c.read(&mut buf);
                let _ = c.write_all(format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{TCP_REPLY}", TCP_REPLY.len()).as_bytes());
            }
        });
        let (tcp_port, udp_port) = rx.recv_timeout(Duration::from_secs(10)).expect("outside servers started");
        Outside { ns, veth, ip: ip4, ip6, tcp_port, udp_port, stop }
    }

    /// The TCP server as an http URL (the host reaches it directly, as slirp4netns does).
    pub fn tcp_url(&self) -> String {
        format!("http://{}:{}/", self.ip, self.tcp_port)
    }

    /// The same over IPv6.
    pub fn tcp_url6(&self) -> String {
        format!("http://[{}]:{}/", self.ip6, self.tcp_port)
    }

    /// The UDP server as `ADDR:PORT` for the guest.
    pub fn udp_addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip.into(), self.udp_port)
    }
}

/// Answers every DNS query with one A record, [`UDP_ANSWER`].
fn serve_udp(udp: UdpSocket, stop: Arc<AtomicBool>) {
    let _ = udp.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 1500];
    while !stop.load(Ordering::SeqCst) {
        let Ok((n, peer)) = udp.recv_from(&mut buf) else { continue };
        if n < 12 {
            continue;
        }
        // Header: same id, QR + RD + RA, one question, one answer.
        let mut r = buf[..n].to_vec();
        r[2] = 0x81;
        r[3] = 0x80;
        r[6..8].copy_from_slice(&1u16.to_be_bytes());
        r[8..12].copy_from_slice(&[0, 0, 0, 0]);
        // Answer: a pointer to the question's name (offset 12), A, IN, TTL 60, 4 bytes.
        r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        r.extend_from_slice(&UDP_ANSWER.octets());
        let _ = udp.send_to(&r, peer);
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // The server threads stay blocked until the test process ends; their sockets keep the
        // (unnamed) namespace until then, nothing else does.
        let _ = Command::new("ip").args(["link", "del", &self.veth]).status();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}
