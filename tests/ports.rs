//! kubevirtci's port names with a real cluster: every name listed with its protocol and guest
//! port, a UDP datagram through `dns` to a server on node01:31111 and its reply back, TCP through
//! `prometheus` to node01:30007, and a taken `--dns-port` refused before anything boots.
//!
//! The tiny guest's busybox (Debian's, 1.35) has no UDP server: its `nc` is the small one
//! (no `-u`) and there is no `udpsvd`, `socat` or `python3`. The UDP echo on node01 is a few lines
//! of C, built static on the host with `cc` (the linker cargo already needs) and copied in with
//! `vm scp`; the TCP one is busybox `nc -l -e cat`.

mod common;

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use common::{host_port, TestCluster};

/// A UDP echo server: `udpecho PORT` answers every datagram to its sender.
const UDP_ECHO_C: &str = r#"
#include <arpa/inet.h>
#include <stdlib.h>
#include <sys/socket.h>
int main(int argc, char **argv) {
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
    if (argc < 2 || s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) < 0) return 1;
    static char buf[65536];
    for (;;) {
        struct sockaddr_in peer;
        socklen_t len = sizeof peer;
        ssize_t n = recvfrom(s, buf, sizeof buf, 0, (struct sockaddr *)&peer, &len);
        if (n >= 0) sendto(s, buf, n, 0, (struct sockaddr *)&peer, len);
    }
}
"#;

/// Builds the UDP echo server into `dir`, statically linked (the guest has no libc to spare).
fn build_udp_echo(dir: &std::path::Path) -> std::path::PathBuf {
    let (src, bin) = (dir.join("udpecho.c"), dir.join("udpecho"));
    std::fs::write(&src, UDP_ECHO_C).unwrap();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = std::process::Command::new(&cc).args(["-static", "-Os", "-o"]).arg(&bin).arg(&src).output().expect("a C compiler (cc)");
    assert!(out.status.success(), "{cc}: {}", String::from_utf8_lossy(&out.stderr));
    bin
}

/// Runs `command` on `node` of cluster `name` in the background, detached from the ssh session.
fn start_on(name: &str, node: &str, command: &str) {
    let line = format!("setsid {command} </dev/null >/dev/null 2>&1 &");
    let out = common::run(&["vm", "ssh", "--name", name, node, "--", &line]);
    assert!(out.status.success(), "{command}: {}", common::stderr(&out));
}

/// Sends `msg` to UDP 127.0.0.1:`port` until the same bytes come back (the guest's server may
/// not be listening yet), up to `timeout`.
fn udp_echo(port: u16, msg: &[u8], timeout: Duration) -> Vec<u8> {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 2048];
    loop {
        assert!(Instant::now() < deadline, "no UDP reply through 127.0.0.1:{port}");
        sock.send_to(msg, ("127.0.0.1", port)).unwrap();
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            assert_eq!(from.port(), port, "the reply comes from the forwarded port");
            return buf[..n].to_vec();
        }
    }
}

/// Connects to TCP 127.0.0.1:`port`, writes `msg` and reads as many bytes back, retrying until
/// the guest's server answers, up to `timeout`.
fn tcp_echo(port: u16, msg: &[u8], timeout: Duration) -> Vec<u8> {
    let deadline = Instant::now() + timeout;
    loop {
        assert!(Instant::now() < deadline, "no TCP echo through 127.0.0.1:{port}");
        let attempt = || -> std::io::Result<Vec<u8>> {
            let mut s = TcpStream::connect(("127.0.0.1", port))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(msg)?;
            let mut back = vec![0u8; msg.len()];
            s.read_exact(&mut back)?;
            Ok(back)
        };
        match attempt() {
            Ok(back) => return back,
            Err(_) => std::thread::sleep(Duration::from_millis(300)),
        }
    }
}

#[test]
fn kubevirtci_ports_are_listed_and_udp_dns_and_tcp_prometheus_reach_node01() {
    let c = TestCluster::up("it-ports", &["--nodes", "2"]);

    // Every name, with its protocol, node and guest port, in `vm ports --output json`.
    let out = common::run(&["vm", "ports", "--name", "it-ports", "--output", "json"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let ports: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ports = ports.as_array().unwrap();
    let names: Vec<&str> = ports.iter().map(|p| p["name"].as_str().unwrap()).collect();
    for (name, node, guest, proto) in [
        ("ssh", "node01", 22, "tcp"),
        ("https", "node01", 443, "tcp"),
        ("console", "node01", 443, "tcp"),
        ("prometheus", "node01", 30007, "tcp"),
        ("grafana", "node01", 30008, "tcp"),
        ("uploadproxy", "node01", 31001, "tcp"),
        ("uploadproxy-lowerband", "node01", 30085, "tcp"),
        ("dns", "node01", 31111, "udp"),
        ("ssh-worker", "node02", 22, "tcp"),
    ] {
        let p = ports.iter().find(|p| p["name"] == name).unwrap_or_else(|| panic!("no port {name} in {names:?}"));
        assert_eq!((p["node"].as_str().unwrap(), p["guest_port"].as_u64().unwrap(), p["proto"].as_str().unwrap()), (node, guest, proto), "{name}");
    }
    let host_ports: Vec<u64> = ports.iter().map(|p| p["host_port"].as_u64().unwrap()).collect();
    assert!(host_ports.iter().all(|&p| p > 0));
    let https = ports.iter().find(|p| p["name"] == "https").unwrap()["host_port"].clone();
    let console = ports.iter().find(|p| p["name"] == "console").unwrap()["host_port"].clone();
    assert_ne!(https, console, "console has a host port of its own");

    // `vm ports dns` prints the bare number, the table the protocol.
    let status = c.status();
    let dns = host_port(&status, "dns");
    let out = common::run(&["vm", "ports", "--name", "it-ports", "dns"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), dns.to_string());
    let table = String::from_utf8_lossy(&common::run(&["vm", "ports", "--name", "it-ports"]).stdout).into_owned();
    let dns_row = table.lines().find(|l| l.contains(&format!("127.0.0.1:{dns} "))).unwrap_or_else(|| panic!("{table}"));
    assert!(dns_row.contains("udp") && dns_row.contains("31111"), "{dns_row}");

    // Echo servers on node01: UDP 31111 and TCP 30007.
    let tmp = tempfile::tempdir().unwrap();
    let echo = build_udp_echo(tmp.path());
    let out = common::run(&["vm", "scp", "--name", "it-ports", echo.to_str().unwrap(), "node01:/root/udpecho"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    start_on("it-ports", "node01", "/root/udpecho 31111");
    start_on("it-ports", "node01", "nc -l -p 30007 -e cat");
    let back = udp_echo(dns, b"kvci-dns-datagram", Duration::from_secs(30));
    assert_eq!(back, b"kvci-dns-datagram");
    let back = tcp_echo(host_port(&status, "prometheus"), b"kvci-prometheus\n", Duration::from_secs(30));
    assert_eq!(back, b"kvci-prometheus\n");

    let out = c.down();
    assert!(out.status.success(), "{}", common::stderr(&out));
}

#[test]
fn a_taken_dns_port_fails_up_naming_dns() {
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = common::run(&["vm", "up", "--name", "it-ports-taken", "--accel", "tcg", "--dns-port", &port]);
    let _cleanup = TestCluster { name: "it-ports-taken".into() };
    let err = common::stderr(&out);
    assert!(!out.status.success());
    assert!(err.contains("cannot forward dns") && err.contains(&format!("port {port}/udp")), "{err}");
    assert!(err.contains(&format!("pid {}", std::process::id())), "names who holds it: {err}");
    assert!(!common::data_dir().join("clusters/it-ports-taken").exists());
}
