//! IPv6 address configuration for real, without VMs. Two fresh network namespaces: the
//! cluster's, with `br0` (`fd00::1/64`), and a guest's, holding the other end of a veth with
//! node02's MAC. kvci's router advertisements and DHCPv6 server run on `br0`; Debian's own
//! clients run on the guest end: `rdisc6` (ndisc6) solicits and reads the advertisement, the
//! guest's kernel takes its default route and on-link prefix from it, and `dhclient -6`
//! (isc-dhcp-client) leases `fd00::102`.
//!
//! Needs root, iproute2, ndisc6 and isc-dhcp-client (`scripts/install-deps.sh` installs them):
//! without one of them the test fails and says which. Traffic stays inside the two namespaces.

use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use kvci_net::dhcp6::{self, Dhcp6Config, Dhcp6Server};
use kvci_net::netns::NetNs;
use kvci_net::ra::{self, RaConfig};
use kvci_net::topology::{Subnet, Topology, DEFAULT_SUBNET};
use tokio::sync::watch;

const GUEST_MAC: &str = "52:55:00:d1:55:02";
const MTU: u16 = 1400;
const WAIT: Duration = Duration::from_secs(20);

/// The full path of `tool`, or a failure naming the Debian package that has it.
fn need(tool: &str, package: &str) -> PathBuf {
    let path = std::env::var("PATH").unwrap_or_default();
    let mut candidates = path.split(':').chain(["/usr/sbin", "/sbin", "/usr/bin"]).map(|d| PathBuf::from(d).join(tool));
    let found = candidates.find(|p| p.is_file());
    found.unwrap_or_else(|| panic!("{tool} is missing: install Debian's {package} (scripts/install-deps.sh does)"))
}

/// Runs `cmd` on a thread inside `ns` (children inherit the thread's namespace) and fails the
/// test with its stderr unless it succeeds.
fn run_in(ns: &NetNs, cmd: &mut Command) -> String {
    let line = format!("{cmd:?}");
    let out: Output = ns.run(|| cmd.output()).expect("enter namespace").unwrap_or_else(|e| panic!("{line}: {e}"));
    assert!(out.status.success(), "{line} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ip(ns: &NetNs, args: &str) -> String {
    run_in(ns, Command::new("ip").args(args.split_whitespace()))
}

/// Sets an IPv6 sysctl of `ns` (`/proc/sys/net` shows the opening thread's namespace).
fn sysctl6(ns: &NetNs, key: &str, value: &str) {
    let path = format!("/proc/sys/net/ipv6/conf/{key}");
    ns.run(|| std::fs::write(&path, value)).unwrap().unwrap_or_else(|e| panic!("{path}: {e}"));
}

/// Polls `check` every 20 ms until it gives a value, failing after [`WAIT`]. Used only where
/// the kernel finishes work on its own (addresses leaving DAD, a route installed from an RA):
/// the only event for those is a netlink notification, and listening for it would need the
/// same check-then-wait with a deadline around `ip monitor`.
fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn link_local_ready(ns: &NetNs, dev: &str) {
    wait_for(&format!("a usable link-local address on {dev}"), || {
        let out = ip(ns, &format!("-6 -o addr show dev {dev} scope link"));
        (out.contains("fe80::") && !out.contains("tentative")).then_some(())
    });
}

/// dhclient's hook: add the leased address, report it on stdout.
const HOOK: &str = r#"#!/bin/sh
case "$reason" in BOUND6|REBOOT6)
    ip -6 addr add "$new_ip6_address/$new_ip6_prefixlen" dev "$interface" nodad
    echo "LEASE $new_ip6_address dns=$new_dhcp6_name_servers search=$new_dhcp6_domain_search"
esac
"#;

/// Reads `child`'s stdout and stderr until a line starts with `prefix`, and returns it with
/// everything said before. Fails at the deadline, or at once when the child closes both.
fn wait_line(child: &mut Child, prefix: &str) -> (String, String) {
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>);
    let err = child.stderr.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>);
    for stream in [out, err].into_iter().flatten() {
        let tx = tx.clone();
        std::thread::spawn(move || BufReader::new(stream).lines().map_while(Result::ok).for_each(|l| drop(tx.send(l))));
    }
    drop(tx);
    let deadline = Instant::now() + WAIT;
    let mut said = Vec::new();
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) if line.starts_with(prefix) => return (line, said.join("\n")),
            Ok(line) => said.push(line),
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("no {prefix:?} in {WAIT:?}; it said:\n{}", said.join("\n")),
            Err(mpsc::RecvTimeoutError::Disconnected) => panic!("it exited without {prefix:?}; it said:\n{}", said.join("\n")),
        }
    }
}

/// A child process killed and reaped whatever happens to the test.
struct Guarded(Child);

impl Drop for Guarded {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A scratch directory removed at the end.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The cluster namespace with `br0` and one port, the guest namespace with its peer `eth0`.
fn build_namespaces() -> (NetNs, NetNs) {
    let cluster = NetNs::new().expect("a network namespace (this test needs root)");
    let guest = NetNs::new().expect("a network namespace (this test needs root)");
    for ns in [&cluster, &guest] {
        // Nothing else is on these links: DAD would only delay the addresses by a second.
        sysctl6(ns, "default/accept_dad", "0");
        sysctl6(ns, "all/accept_dad", "0");
    }
    let guest_fd = format!("/proc/{}/fd/{}", std::process::id(), guest.fd().as_raw_fd());
    ip(&cluster, "link set lo up");
    ip(&cluster, "link add br0 type bridge");
    ip(&cluster, "-6 addr add fd00::1/64 dev br0 nodad");
    ip(&cluster, &format!("link add veth02 type veth peer name eth0 netns {guest_fd}"));
    ip(&cluster, "link set veth02 master br0");
    ip(&cluster, "link set br0 up");
    ip(&cluster, "link set veth02 up");
    ip(&guest, "link set lo up");
    ip(&guest, &format!("link set eth0 address {GUEST_MAC}"));
    // A guest takes router advertisements (2: even if it forwarded).
    sysctl6(&guest, "eth0/accept_ra", "2");
    ip(&guest, "link set eth0 up");
    link_local_ready(&cluster, "br0");
    link_local_ready(&guest, "eth0");
    (cluster, guest)
}

#[test]
fn real_clients_get_a_router_advertisement_and_fd00_102() {
    let (rdisc6, dhclient) = (need("rdisc6", "ndisc6"), need("dhclient", "isc-dhcp-client"));
    need("ip", "iproute2");
    let (cluster, guest) = build_namespaces();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();

    let topo = Topology::new("kvci-v6", Subnet::parse(DEFAULT_SUBNET).unwrap(), 3);
    let (dhcp_sock, ra_sock) = cluster.run(|| (dhcp6::bind_socket("br0"), ra::bind_socket("br0"))).unwrap();
    let server = Arc::new(Mutex::new(Dhcp6Server::new(Dhcp6Config::for_topology(&topo))));
    let (stop, stop_rx) = watch::channel(false);
    let (dhcp_task, ra_task) = {
        let _rt = rt.enter();
        let dhcp_sock = tokio::net::UdpSocket::from_std(dhcp_sock.expect("DHCPv6 socket on br0")).unwrap();
        let dhcp = rt.spawn(dhcp6::serve(dhcp_sock, server.clone(), stop_rx.clone()));
        let ra = rt.spawn(ra::serve(ra_sock.expect("ICMPv6 socket on br0"), RaConfig::for_topology(&topo, MTU), stop_rx));
        (dhcp, ra)
    };

    // rdisc6 solicits and prints the advertisement it gets (the first try may time out: the
    // answer waits until 3 s after the advertisement sent when serving began, RFC 4861 §10).
    let out = run_in(&guest, Command::new(&rdisc6).args(["-1", "-n", "-r", "5", "-w", "2000", "eth0"]));
    let fields: Vec<String> = out.lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect();
    for expected in [
        "Stateful address conf. : Yes",
        "Stateful other conf. : Yes",
        "Router lifetime : 1800 (0x00000708) seconds",
        "Prefix : fd00::/64",
        "On-link : Yes",
        "Autonomous address conf.: No",
        "Valid time : infinite (0xffffffff)",
        "MTU : 1400 bytes (valid)",
        "Recursive DNS server : fd00::1",
        "DNS search list : kvci-v6",
    ] {
        assert!(fields.iter().any(|f| f == expected), "rdisc6 output lacks {expected:?}:\n{out}");
    }
    assert!(out.contains("from fe80::"), "the advertisement must come from a link-local address:\n{out}");

    // The guest's kernel took the bridge as default router and fd00::/64 as on-link, and made
    // no SLAAC address (A=0).
    wait_for("the guest's default route via the bridge", || {
        let routes = ip(&guest, "-6 route show dev eth0");
        (routes.contains("default via fe80::") && routes.contains("fd00::/64")).then_some(())
    });
    assert_eq!(ip(&guest, "-6 -o addr show dev eth0 scope global"), "", "no SLAAC address expected");

    // dhclient leases the node's address; the hook applies it and reports, touching nothing
    // of the host (Debian's own dhclient-script would rewrite /etc/resolv.conf).
    let dir = Scratch(std::env::temp_dir().join(format!("kvci-dhcp6-test-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let (hook, conf) = (dir.0.join("hook"), dir.0.join("dhclient.conf"));
    std::fs::write(&hook, HOOK).unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(&conf, "request dhcp6.name-servers, dhcp6.domain-search;\n").unwrap();
    let mut cmd = Command::new(&dhclient);
    cmd.args(["-6", "-d", "-v", "-1"]).arg("-cf").arg(&conf).arg("-sf").arg(&hook);
    cmd.arg("-lf").arg(dir.0.join("leases")).arg("-pf").arg(dir.0.join("pid")).arg("eth0");
    let mut child = Guarded(guest.run(|| cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()).unwrap().expect("dhclient starts"));
    let (lease, said) = wait_line(&mut child.0, "LEASE ");
    assert_eq!(lease, "LEASE fd00::102 dns=fd00::1 search=kvci-v6.", "dhclient said:\n{said}");
    assert!(ip(&guest, "-6 -o addr show dev eth0 scope global").contains("fd00::102"));
    drop(child);

    let _ = stop.send(true);
    rt.block_on(async {
        dhcp_task.await.unwrap().unwrap();
        ra_task.await.unwrap().unwrap();
    });
    let stats = *server.lock().unwrap().stats();
    assert!(stats.solicits >= 1 && stats.requests >= 1, "{stats:?}");
    assert_eq!((stats.malformed, stats.unknown_clients), (0, 0), "{stats:?}");
}
