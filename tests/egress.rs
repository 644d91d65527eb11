//! Egress with real guests (TCG): TCP, UDP and ping to servers in a namespace the test makes,
//! with no proxy settings in the guest, over IPv4 and IPv6; nothing reaches the host's loopback
//! unless `--allow-host-loopback`; single-stack clusters; nothing left in the host afterwards.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::outside::{Outside, TCP_REPLY, UDP_ANSWER};
use common::{held_netns, netns_in_use, process_alive, run, stderr, TestCluster};

/// The host's links, less the "outside" veths that tests and benchmarks make side by side.
fn host_links() -> Vec<String> {
    common::host_links().into_iter().filter(|l| !l.starts_with("kvo") && !l.starts_with("kvb")).collect()
}

fn on(name: &str, node: &str, cmd: &str) -> Output {
    run(&["vm", "ssh", "--name", name, node, "--", cmd])
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The host's netfilter tables and forwarding sysctls: egress must change neither.
fn host_netfilter_and_sysctls() -> (String, Vec<String>) {
    let tables = Command::new("nft").args(["list", "tables"]).output().expect("nft (Debian package nftables)");
    let sysctls = ["net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding", "net/ipv4/ping_group_range"]
        .iter()
        .map(|p| std::fs::read_to_string(format!("/proc/sys/{p}")).unwrap_or_default())
        .collect();
    (String::from_utf8_lossy(&tables.stdout).into_owned(), sysctls)
}

/// Waits until `done` holds. Process exit and namespace release have no event a test can wait
/// on across a killed parent, so this checks every 50 ms, up to `limit`.
fn eventually(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A listener on the host's 127.0.0.1 that must never see a guest.
struct Trap(TcpListener);

impl Trap {
    fn new() -> Trap {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        Trap(l)
    }
    fn port(&self) -> u16 {
        self.0.local_addr().unwrap().port()
    }
    fn touched(&self) -> bool {
        !matches!(self.0.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }
}

#[test]
fn guests_reach_the_outside_without_proxies_but_never_the_hosts_loopback() {
    let out = Outside::new(31);
    let links = host_links();
    let host = host_netfilter_and_sysctls();
    let trap = Trap::new();
    let c = TestCluster::up("it-egress", &["--nodes", "2"]);
    let name = c.name.as_str();
    let status = c.status();
    let supervisor = status["supervisor_pid"].as_u64().unwrap();
    let ns = held_netns(supervisor).unwrap();
    let helpers = common::helpers_of(supervisor);
    assert_eq!(helpers.len(), 1, "one egress helper per cluster");

    // No proxy anywhere in the guest's environment or files.
    let env = on(name, "node01", "env; cat /etc/profile 2>/dev/null");
    assert!(!stdout(&env).to_lowercase().contains("proxy"), "{}", stdout(&env));

    // TCP over IPv4 and IPv6, UDP (a DNS query answered by the outside server), ICMP echo.
    let r = on(name, "node01", &format!("wget -q -O - {}", out.tcp_url()));
    assert_eq!(stdout(&r), TCP_REPLY, "{}", stderr(&r));
    let r = on(name, "node02", &format!("wget -q -O - '{}'", out.tcp_url6()));
    assert_eq!(stdout(&r), TCP_REPLY, "IPv6 egress: {}", stderr(&r));
    let r = on(name, "node01", &format!("nslookup probe.example {}", out.ip));
    assert!(stdout(&r).contains(&UDP_ANSWER.to_string()), "UDP: {}{}", stdout(&r), stderr(&r));
    let r = on(name, "node02", &format!("ping -c 1 -W 5 {}", out.ip));
    assert!(stdout(&r).contains("1 packets received"), "ping: {}{}", stdout(&r), stderr(&r));

    // IPv6 inside the cluster: static addresses, AAAA names, the registry over IPv6.
    let r = on(name, "node02", "ip -6 addr show dev eth0");
    assert!(stdout(&r).contains("inet6 fd00::102/") && stdout(&r).contains("scope global"), "{}", stdout(&r));
    let r = on(name, "node01", "ping6 -c 1 -W 5 node02");
    assert!(stdout(&r).contains("fd00::102"), "{}{}", stdout(&r), stderr(&r));
    let r = on(name, "node01", "wget -q -O - 'http://[fd00::1]:5000/v2/'");
    assert_eq!(stdout(&r).trim(), "{}", "{}", stderr(&r));

    // Nothing reaches the host's 127.0.0.1, whatever the guest tries.
    let p = trap.port();
    let targets = ["192.168.66.2", "10.0.2.2", "10.0.2.3", "10.0.2.100", "127.0.0.1", "169.254.169.254", "[fd00::1]", "[fd00::2]", "[fd00::3]"];
    let tries: Vec<String> = targets.iter().map(|t| format!("wget -T 3 -q -O /dev/null http://{t}:{p}/ 2>/dev/null; echo \"{t} $?\"")).collect();
    let r = on(name, "node01", &tries.join("; "));
    assert_eq!(stdout(&r).lines().count(), targets.len(), "{}", stdout(&r));
    assert!(!trap.touched(), "a guest reached the host's loopback: {}", stdout(&r));

    // Down: no helper, table, link, sysctl change or namespace left.
    let down = c.down();
    assert!(down.status.success(), "{}", stderr(&down));
    assert!(helpers.iter().all(|&pid| !process_alive(pid)), "slirp4netns outlived down");
    assert!(!netns_in_use(&ns));
    assert_eq!(host_links(), links);
    assert_eq!(host_netfilter_and_sysctls(), host);
}

#[test]
fn a_killed_supervisor_takes_its_egress_helper_along() {
    let links = host_links();
    let host = host_netfilter_and_sysctls();
    let c = TestCluster::up("it-egress-kill", &[]);
    let status = c.status();
    let supervisor = status["supervisor_pid"].as_u64().unwrap();
    let ns = held_netns(supervisor).unwrap();
    let helpers = common::helpers_of(supervisor);
    assert_eq!(helpers.len(), 1);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(supervisor as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || helpers.iter().all(|&p| !process_alive(p)) && !netns_in_use(&ns)),
        "the egress helper or the namespace outlived the killed supervisor"
    );
    assert_eq!(host_links(), links);
    assert_eq!(host_netfilter_and_sysctls(), host);
}

#[test]
fn single_stack_nodes_live_on_ipv6_alone() {
    let out = Outside::new(32);
    let c = TestCluster::up("it-egress-v6", &["--nodes", "2", "--single-stack"]);
    let name = c.name.as_str();
    // ssh itself (through the forward) already runs over IPv6 here.
    let r = on(name, "node02", "ip -4 addr show dev eth0; ip -6 addr show dev eth0");
    assert!(!stdout(&r).contains("inet "), "an IPv4 lease in a single-stack cluster: {}", stdout(&r));
    assert!(stdout(&r).contains("inet6 fd00::102/"), "{}", stdout(&r));
    let r = on(name, "node01", "ping -c 1 -W 5 node02");
    assert!(stdout(&r).contains("fd00::102"), "{}{}", stdout(&r), stderr(&r));
    let r = on(name, "node01", "wget -q -O - http://registry:5000/v2/");
    assert_eq!(stdout(&r).trim(), "{}", "the registry by name over IPv6: {}", stderr(&r));
    let r = on(name, "node02", &format!("wget -q -O - '{}'", out.tcp_url6()));
    assert_eq!(stdout(&r), TCP_REPLY, "{}", stderr(&r));
}

#[test]
fn allow_host_loopback_opens_the_host_alias_and_says_so() {
    let web = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = web.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = web.accept().unwrap();
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf);
        s.write_all(b"HTTP/1.0 200 OK\r\n\r\nhost-loopback-ok").unwrap();
    });
    let mut args = vec!["vm", "up", "--name", "it-egress-lo", "--accel", "tcg", "--allow-host-loopback"];
    args.push("--ipv4-only");
    let up = run(&args);
    let c = TestCluster { name: "it-egress-lo".into() };
    assert!(up.status.success(), "{}", stderr(&up));
    assert!(stderr(&up).contains("--allow-host-loopback: guests reach every service on this host's 127.0.0.1 as 10.0.2.2"), "{}", stderr(&up));
    let r = on(&c.name, "node01", &format!("wget -q -O - http://10.0.2.2:{port}/"));
    assert_eq!(stdout(&r), "host-loopback-ok", "{}", stderr(&r));
    server.join().unwrap();
    // IPv4 only: no IPv6 address at all.
    let r = on(&c.name, "node01", "ip -6 addr show dev eth0 scope global");
    assert!(!stdout(&r).contains("inet6"), "{}", stdout(&r));
}
