//! kvci's own network with real guests: DHCP leases, DNS (cluster names and forwarding), port
//! forwards, two clusters side by side, and nothing left behind. Egress: `tests/egress.rs`.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::{held_netns, host_links, host_port, netns_in_use, process_alive, ssh_banner, Console, TestCluster};
use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::{rdata::A, RData, Record};

/// A DNS server on loopback that answers every A query with 10.11.12.13 (the "outside world").
fn fake_upstream() -> (std::net::SocketAddr, std::thread::JoinHandle<()>) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(240))).unwrap();
    let addr = sock.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, peer)) = sock.recv_from(&mut buf) {
            let Ok(q) = Message::from_vec(&buf[..n]) else { continue };
            let mut r = Message::new();
            r.set_id(q.id()).set_message_type(MessageType::Response).set_op_code(q.op_code());
            r.set_recursion_desired(q.recursion_desired()).set_recursion_available(true);
            r.set_response_code(ResponseCode::NoError);
            for query in q.queries() {
                r.add_query(query.clone());
                if query.query_type() == hickory_proto::rr::RecordType::A {
                    r.add_answer(Record::from_rdata(query.name().clone(), 60, RData::A(A::new(10, 11, 12, 13))));
                }
            }
            let _ = sock.send_to(&r.to_vec().unwrap(), peer);
        }
    });
    (addr, t)
}

#[test]
fn guests_lease_resolve_ping_and_answer_ssh_through_the_forward() {
    let links_before = host_links();
    let (upstream, _t) = fake_upstream();
    let upstream = upstream.to_string();
    let c = TestCluster::up("it-net", &["--nodes", "2", "--dns-upstream", &upstream]);
    let status = c.status();
    assert_eq!(status["nodes"][0]["ip"], "192.168.66.101");
    assert_eq!(status["nodes"][1]["ip"], "192.168.66.102");
    let supervisor = status["supervisor_pid"].as_u64().unwrap();
    let ns = held_netns(supervisor).expect("the supervisor holds the cluster namespace");

    // The guest's own DHCP client took the static lease, with hostname and DNS.
    let mut con = Console::attach(&c.dir(), "node01");
    let out = con.run("ip -4 -o addr show dev eth0; cat /etc/resolv.conf; echo END-$((6*7))", "END-42", Duration::from_secs(30));
    assert!(out.contains("inet 192.168.66.101/24"), "{out}");
    assert!(out.contains("nameserver 192.168.66.2"), "{out}");
    assert!(out.contains("search it-net"), "{out}");

    // node01 resolves and pings node02 by name.
    let out = con.run("ping -4 -c 1 -W 5 node02 && echo PING-$((1+1))", "PING-2", Duration::from_secs(60));
    assert!(out.contains("192.168.66.102"), "{out}");
    let out = con.run("nslookup node02.it-net 192.168.66.2; echo NS-$((2+2))", "NS-4", Duration::from_secs(30));
    assert!(out.contains("192.168.66.102"), "{out}");
    let out = con.run("nslookup registry 192.168.66.2; echo REG-$((3+3))", "REG-6", Duration::from_secs(30));
    assert!(out.contains("192.168.66.2"), "{out}");

    // A name outside the cluster goes to the upstream (the test's fake server on loopback).
    let out = con.run("nslookup outside.example.test 192.168.66.2; echo FWD-$((4+4))", "FWD-8", Duration::from_secs(30));
    assert!(out.contains("10.11.12.13"), "not forwarded:\n{out}");

    drop(con);

    // The forwarded ssh ports answer from the host.
    assert!(ssh_banner(host_port(&status, "ssh")).starts_with("SSH-"));
    assert!(ssh_banner(host_port(&status, "ssh-node02")).starts_with("SSH-"));

    // kvci's own ssh client: output and exit code of the remote command, on both nodes.
    let out = common::run(&["vm", "ssh", "--name", "it-net", "node02", "--", "hostname; echo oops >&2; exit 7"]);
    assert_eq!(out.status.code(), Some(7), "{}", common::stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "node02\n");
    assert!(common::stderr(&out).contains("oops"));

    // scp there and back.
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("up.txt");
    std::fs::write(&local, "scp payload 1234\n").unwrap();
    let out = common::run(&["vm", "scp", "--name", "it-net", local.to_str().unwrap(), "node01:/root/up.txt"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let back = tmp.path().join("back.txt");
    let out = common::run(&["vm", "scp", "--name", "it-net", "node01:/root/up.txt", back.to_str().unwrap()]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "scp payload 1234\n");

    // The printed OpenSSH config works with plain `ssh`, and the key file is private.
    let key = c.dir().join("ssh/id_ed25519");
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&key.metadata().unwrap().permissions()) & 0o777, 0o600);
    let cfg = common::run(&["vm", "ssh-config", "--name", "it-net"]);
    assert!(cfg.status.success());
    let cfg_path = tmp.path().join("ssh_config");
    std::fs::write(&cfg_path, &cfg.stdout).unwrap();
    let out = std::process::Command::new("ssh")
        .args(["-F", cfg_path.to_str().unwrap(), "-o", "BatchMode=yes", "node02", "cat /etc/hostname"])
        .output()
        .expect("OpenSSH client (Debian openssh-client)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "node02");

    let out = c.down();
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert!(!netns_in_use(&ns), "namespace {ns} survived down");
    assert_eq!(host_links(), links_before, "the host's links changed");
}

#[test]
fn two_clusters_share_a_subnet_and_a_killed_one_leaves_nothing() {
    let a = TestCluster::up("it-two-a", &[]);
    let b = TestCluster::up("it-two-b", &[]);
    let (sa, sb) = (a.status(), b.status());
    assert_eq!(sa["nodes"][0]["ip"], sb["nodes"][0]["ip"]);
    assert!(ssh_banner(host_port(&sa, "ssh")).starts_with("SSH-"));
    assert!(ssh_banner(host_port(&sb, "ssh")).starts_with("SSH-"));

    let sup = sb["supervisor_pid"].as_u64().unwrap();
    let qemu = sb["nodes"][0]["pid"].as_u64().unwrap();
    let ns = held_netns(sup).unwrap();
    let mut con = Console::attach(&b.dir(), "node01");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(sup as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    assert!(con.wait_closed(Duration::from_secs(20)));
    let gone = (0..200).any(|_| {
        let gone = !process_alive(qemu) && !netns_in_use(&ns);
        if !gone {
            std::thread::sleep(Duration::from_millis(50));
        }
        gone
    });
    assert!(gone, "QEMU or the namespace outlived the killed supervisor");
    // The other cluster is untouched.
    assert_eq!(a.status()["nodes"][0]["state"], "running");
    assert!(ssh_banner(host_port(&sa, "ssh")).starts_with("SSH-"));
}

#[test]
fn taken_port_is_reported_with_its_owner() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = common::run(&["vm", "up", "--name", "it-port", "--accel", "tcg", "--ssh-port", &port]);
    let err = common::stderr(&out);
    assert!(!out.status.success());
    assert!(err.contains(&format!("port {port}")) && err.contains("--random-ports"), "{err}");
    assert!(!common::data_dir().join("clusters/it-port").exists());
}
