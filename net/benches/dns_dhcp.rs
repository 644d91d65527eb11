//! Benchmark: kvci's embedded DNS server against dnsmasq (answers per second), and the DHCP
//! server's DISCOVER→OFFER and REQUEST→ACK latency, in one run, on 127.0.0.1 only.
//!
//! `cargo bench -p kvci-net --bench dns_dhcp`. Without `--bench` (e.g. `cargo test --benches`)
//! it returns at once. dnsmasq comes from Debian's `dnsmasq-base`; without it the DNS comparison
//! is skipped with a hint, kvci's own figures are still printed.
//!
//! DNS: the same cluster names (`node01.kvci` … `registry`, A and AAAA) are served by kvci's
//! `dns::serve` (on a tokio runtime of its own: current-thread as kvci's supervisor runs it,
//! once with the fast path and once with hickory alone, as before the fast path; and
//! multi-thread) and by a dnsmasq child with `--address=/name/ip`. The load is [`DNS_CLIENTS`]
//! UDP sockets on OS threads, each keeping [`DNS_WINDOW`] queries (RD set) outstanding; only
//! answers carrying the expected address count. The fast path's in-process cost per answer is
//! printed first.
//!
//! DHCP: `DhcpServer::handle` timed call by call in process; then over UDP on loopback a plain
//! echo (the floor) and the bench's own recv → handle → send loop. `dhcp::serve` itself cannot
//! be used: it replies to port 68, broadcast to 255.255.255.255 for DISCOVER/REQUEST, which
//! would leave loopback (and port 68 belongs to the host's DHCP client).

use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use dhcproto::v4::{DhcpOption, Encodable, Flags, Message, MessageType, OptionCode};
use kvci_net::dhcp::{DhcpConfig, DhcpServer, Outcome, StaticLease, INFINITE};
use kvci_net::dns::fast::FastAnswers;
use kvci_net::dns::{serve, ClusterZone, DnsConfig};
use kvci_net::topology::{node_ip6, BRIDGE_IP6};
use tokio::sync::watch;

/// Concurrent UDP client sockets, one OS thread each.
const DNS_CLIENTS: usize = 8;
/// Queries each client keeps in flight.
const DNS_WINDOW: usize = 8;
/// Load before each measurement, not counted.
const DNS_WARMUP: Duration = Duration::from_millis(300);
/// Measured load per server, in total over the rounds.
const DNS_MEASURE: Duration = Duration::from_secs(3);
/// Measured load for the extra multi-thread kvci server, in total over the rounds.
const DNS_MEASURE_SHORT: Duration = Duration::from_secs(2);
/// The servers are measured in turn, this many times each.
const DNS_ROUNDS: u32 = 3;
/// A client with nothing back for this long refills its window (lost datagrams).
const DNS_RECV_TIMEOUT: Duration = Duration::from_millis(100);
/// Timed DHCP exchanges per kind.
const DHCP_N: usize = 10_000;

const CLUSTER: &str = "kvci";
const SUBNET: Ipv4Addr = Ipv4Addr::new(192, 168, 66, 0);
const REGISTRY: Ipv4Addr = Ipv4Addr::new(192, 168, 66, 2);

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "dns_dhcp: not run without --bench (use `cargo bench -p kvci-net --bench dns_dhcp`)"
        );
        return;
    }
    let started = Instant::now();
    dns();
    dhcp();
    println!("total: {:.1} s", started.elapsed().as_secs_f64());
}

// ---------------------------------------------------------------------------------------------
// DNS

/// The cluster's hosts, as kvci's network names them, with both addresses (dual stack).
fn hosts() -> Vec<(String, Ipv4Addr, Ipv6Addr)> {
    let mut hosts: Vec<_> = (1..=3)
        .map(|i| {
            (
                format!("node{i:02}"),
                kvci_net::dhcp::node_ip(SUBNET, i),
                node_ip6(i),
            )
        })
        .collect();
    hosts.push(("registry".into(), REGISTRY, BRIDGE_IP6));
    hosts
}

fn zone() -> ClusterZone {
    ClusterZone {
        cluster: CLUSTER.into(),
        hosts: hosts().into_iter().map(|(h, ip, _)| (h, ip)).collect(),
        hosts6: hosts().into_iter().map(|(h, _, ip6)| (h, ip6)).collect(),
    }
}

/// The names asked for, A and AAAA each, with the address each answer must carry: every host
/// under the cluster domain, plus two bare names (what clients without a search list send).
fn questions() -> Vec<(String, IpAddr)> {
    let full = hosts()
        .into_iter()
        .map(|(h, ip, ip6)| (format!("{h}.{CLUSTER}"), ip, ip6));
    let bare = hosts()
        .into_iter()
        .filter(|(h, ..)| h == "node01" || h == "registry");
    full.chain(bare)
        .flat_map(|(name, ip, ip6)| [(name.clone(), IpAddr::V4(ip)), (name, IpAddr::V6(ip6))])
        .collect()
}

/// One server under load: label, address, measured time in total.
struct Target {
    label: String,
    addr: SocketAddr,
    total: Duration,
}

fn dns() {
    let questions = Arc::new(Queries::new(&questions()));
    fast_path_in_process(&questions);

    // Every server is started first and idles while another is measured; the measurements
    // then alternate over DNS_ROUNDS rounds, so drift in the machine's load (other processes,
    // CPU frequency) falls on all of them alike. One thread each is the per-core comparison
    // with dnsmasq, and how kvci's supervisor runs the server; hickory alone is kvci before the
    // fast path, measured in the same run.
    let fast = KvciDns::start(Workers::One, true);
    let hickory = KvciDns::start(Workers::One, false);
    let multi = KvciDns::start(Workers::Multi, true);
    let dnsmasq = start_dnsmasq(&questions);

    let mut targets = vec![
        Target {
            label: "kvci fast path (current-thread runtime)".into(),
            addr: fast.addr,
            total: DNS_MEASURE,
        },
        Target {
            label: "kvci hickory only, before (current-thread)".into(),
            addr: hickory.addr,
            total: DNS_MEASURE,
        },
    ];
    if let Some(d) = &dnsmasq {
        targets.push(Target {
            label: format!("dnsmasq ({}, single-threaded)", d.version),
            addr: d.addr,
            total: DNS_MEASURE,
        });
    }
    targets.push(Target {
        label: format!(
            "kvci fast path (multi-thread runtime, {} workers)",
            multi.workers
        ),
        addr: multi.addr,
        total: DNS_MEASURE_SHORT,
    });

    let mut runs = vec![Vec::new(); targets.len()];
    for _ in 0..DNS_ROUNDS {
        for (target, runs) in targets.iter().zip(&mut runs) {
            runs.push(measure(target.addr, &questions, target.total / DNS_ROUNDS));
        }
    }
    drop((fast, hickory, multi, dnsmasq));

    let totals: Vec<Run> = runs
        .iter()
        .map(|rounds| {
            let mut total = Run::default();
            for r in rounds {
                total.add(*r);
            }
            total
        })
        .collect();
    for (target, (total, rounds)) in targets.iter().zip(totals.iter().zip(&runs)) {
        let per_round: Vec<String> = rounds.iter().map(|r| format!("{:.0}", r.qps())).collect();
        println!(
            "dns: {}: {total}; rounds {} q/s",
            target.label,
            per_round.join(" / ")
        );
    }

    let (after, before, multi) = (
        totals[0].qps(),
        totals[1].qps(),
        totals[totals.len() - 1].qps(),
    );
    println!(
        "dns: one thread, A+AAAA: kvci before (hickory only) {before:.0} q/s | kvci after (fast path) \
         {after:.0} q/s (x{:.2})",
        after / before
    );
    if totals.len() == 4 {
        let d = totals[2].qps();
        println!(
            "dns: one thread: dnsmasq {d:.0} q/s; kvci/dnsmasq before {:.2}, after {:.2}",
            before / d,
            after / d
        );
        println!(
            "dns: kvci multi-thread {multi:.0} q/s, ratio to dnsmasq {:.2}",
            multi / d
        );
    } else {
        println!("dns: kvci multi-thread {multi:.0} q/s; dnsmasq skipped");
    }
}

/// `FastAnswers::answer` alone, in process: what the fast path costs per query besides the
/// socket calls.
fn fast_path_in_process(questions: &Queries) {
    let fast = FastAnswers::new(&zone().zones().expect("zones")).expect("fast path table");
    let (mut query, mut out) = (Vec::new(), Vec::new());
    const N: u16 = 50_000;
    let started = Instant::now();
    for round in 0..20 {
        for id in 0..N {
            questions.write(id.wrapping_add(round), &mut query);
            assert!(fast.answer(std::hint::black_box(&query), &mut out));
            std::hint::black_box(&out);
        }
    }
    let per = started.elapsed().as_secs_f64() * 1e9 / (20.0 * f64::from(N));
    assert!(
        questions.is_correct(&out),
        "fast answer carries the expected address"
    );
    println!(
        "dns: fast path answer() in process: {per:.0} ns per query (N={})",
        20 * u32::from(N)
    );
}

fn start_dnsmasq(questions: &Queries) -> Option<Dnsmasq> {
    let Some(path) = find_dnsmasq() else {
        println!("dns: dnsmasq not found on PATH (nor in /usr/sbin, /sbin); comparison skipped.");
        println!("dns: install it with `apt-get install -y dnsmasq-base` (Debian/Ubuntu, as root)");
        return None;
    };
    match Dnsmasq::start(&path, questions) {
        Ok(d) => Some(d),
        Err(e) => {
            println!(
                "dns: dnsmasq at {} did not start, comparison skipped: {e}",
                path.display()
            );
            None
        }
    }
}

/// Pre-encoded queries and the address each answer must carry. The query ID picks the
/// question (`id % len`), so an answer is checked against the question it claims to answer.
struct Queries {
    /// Wire queries with ID 0, recursion desired.
    wire: Vec<Vec<u8>>,
    expected: Vec<IpAddr>,
}

impl Queries {
    fn new(names: &[(String, IpAddr)]) -> Queries {
        let wire = names
            .iter()
            .map(|(name, ip)| {
                // ID 0, flags: RD; one question, no other records.
                let mut q = vec![0, 0, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
                for label in name.split('.') {
                    q.push(u8::try_from(label.len()).expect("short label"));
                    q.extend_from_slice(label.as_bytes());
                }
                q.push(0);
                let kind = rtype(ip);
                q.extend_from_slice(&[0, kind, 0, 1]); // A or AAAA, IN
                q
            })
            .collect();
        Queries {
            wire,
            expected: names.iter().map(|(_, ip)| *ip).collect(),
        }
    }

    fn write(&self, id: u16, buf: &mut Vec<u8>) {
        buf.clear();
        buf.extend_from_slice(&self.wire[usize::from(id) % self.wire.len()]);
        buf[..2].copy_from_slice(&id.to_be_bytes());
    }

    /// Whether `resp` is a NOERROR response to its question with an A or AAAA record of the
    /// expected address in the answer section.
    fn is_correct(&self, resp: &[u8]) -> bool {
        let Some(header) = resp.get(..12) else {
            return false;
        };
        let id = u16::from_be_bytes([header[0], header[1]]);
        let i = usize::from(id) % self.wire.len();
        let question = &self.wire[i][12..];
        let qr = header[2] & 0x80 != 0;
        let rcode = header[3] & 0x0f;
        let qdcount = u16::from_be_bytes([header[4], header[5]]);
        let ancount = u16::from_be_bytes([header[6], header[7]]);
        if !qr || rcode != 0 || qdcount != 1 || ancount == 0 {
            return false;
        }
        if !resp
            .get(12..12 + question.len())
            .is_some_and(|q| q.eq_ignore_ascii_case(question))
        {
            return false;
        }
        let want_type = u16::from(rtype(&self.expected[i]));
        let want = match self.expected[i] {
            IpAddr::V4(ip) => ip.octets().to_vec(),
            IpAddr::V6(ip) => ip.octets().to_vec(),
        };
        let mut pos = 12 + question.len();
        for _ in 0..ancount {
            let Some(after_name) = skip_name(resp, pos) else {
                return false;
            };
            let Some(fixed) = resp.get(after_name..after_name + 10) else {
                return false;
            };
            let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
            let class = u16::from_be_bytes([fixed[2], fixed[3]]);
            let rdlen = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
            let rdata_at = after_name + 10;
            let Some(rdata) = resp.get(rdata_at..rdata_at + rdlen) else {
                return false;
            };
            if rtype == want_type && class == 1 && rdata == want {
                return true;
            }
            pos = rdata_at + rdlen;
        }
        false
    }
}

/// The query type asking for `ip`'s kind of address: A (1) or AAAA (28).
fn rtype(ip: &IpAddr) -> u8 {
    if ip.is_ipv4() {
        1
    } else {
        28
    }
}

/// The offset after the (possibly compressed) name at `pos`.
fn skip_name(msg: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        let len = *msg.get(pos)?;
        match len {
            0 => return Some(pos + 1),
            l if l & 0xc0 == 0xc0 => return Some(pos + 2),
            l if l & 0xc0 == 0 => pos += 1 + usize::from(l),
            _ => return None,
        }
    }
}

/// One load run against one server.
#[derive(Debug, Clone, Copy, Default)]
struct Run {
    secs: f64,
    correct: u64,
    wrong: u64,
    sent: u64,
    /// Window refills after [`DNS_RECV_TIMEOUT`] without an answer.
    stalls: u64,
    /// Socket errors (e.g. ECONNREFUSED: nobody on the port).
    errors: u64,
}

impl Run {
    fn qps(&self) -> f64 {
        self.correct as f64 / self.secs
    }

    fn add(&mut self, o: Run) {
        self.secs += o.secs;
        self.correct += o.correct;
        self.wrong += o.wrong;
        self.sent += o.sent;
        self.stalls += o.stalls;
        self.errors += o.errors;
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:>7.0} q/s ({} correct in {:.1} s, {} wrong, {} sent, {} stalls, {} errors)",
            self.qps(),
            self.correct,
            self.secs,
            self.wrong,
            self.sent,
            self.stalls,
            self.errors
        )
    }
}

/// Warm-up, then `duration` of load from [`DNS_CLIENTS`] sockets; correct answers counted.
fn measure(server: SocketAddr, queries: &Arc<Queries>, duration: Duration) -> Run {
    load(server, queries, DNS_WARMUP);
    load(server, queries, duration)
}

fn load(server: SocketAddr, queries: &Arc<Queries>, duration: Duration) -> Run {
    let deadline = Instant::now() + duration;
    let threads: Vec<JoinHandle<Run>> = (0..DNS_CLIENTS)
        .map(|c| {
            let queries = Arc::clone(queries);
            thread::spawn(move || client(server, &queries, deadline, c))
        })
        .collect();
    let mut total = Run::default();
    for t in threads {
        total.add(t.join().expect("DNS client thread"));
    }
    // Every client ran for the same span; count it once.
    total.secs = duration.as_secs_f64();
    total
}

/// One client: a closed loop keeping [`DNS_WINDOW`] queries outstanding until `deadline`.
fn client(server: SocketAddr, queries: &Queries, deadline: Instant, index: usize) -> Run {
    let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("client socket");
    sock.connect(server).expect("connect client socket");
    sock.set_read_timeout(Some(DNS_RECV_TIMEOUT))
        .expect("read timeout");
    let mut run = Run::default();
    // Spread the clients' IDs so they do not all start on the same question.
    let mut id = (index as u16).wrapping_mul(7919);
    let mut query = Vec::with_capacity(64);
    let mut buf = [0u8; 1500];
    let mut send = |run: &mut Run, n: usize| {
        for _ in 0..n {
            queries.write(id, &mut query);
            id = id.wrapping_add(1);
            match sock.send(&query) {
                Ok(_) => run.sent += 1,
                Err(_) => run.errors += 1,
            }
        }
    };
    send(&mut run, DNS_WINDOW);
    while Instant::now() < deadline {
        match sock.recv(&mut buf) {
            Ok(len) => {
                if queries.is_correct(&buf[..len]) {
                    run.correct += 1;
                } else {
                    run.wrong += 1;
                }
                send(&mut run, 1);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                run.stalls += 1;
                send(&mut run, DNS_WINDOW);
            }
            Err(_) => {
                run.errors += 1;
                thread::sleep(Duration::from_millis(10));
                send(&mut run, DNS_WINDOW);
            }
        }
    }
    run
}

#[derive(Clone, Copy)]
enum Workers {
    Multi,
    One,
}

/// kvci's DNS server on 127.0.0.1, on a runtime and thread of its own (so the load generator's
/// threads are the same for kvci and dnsmasq). Dropping it stops the server and joins.
struct KvciDns {
    addr: SocketAddr,
    workers: usize,
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl KvciDns {
    fn start(workers: Workers, fast_path: bool) -> KvciDns {
        let runtime = match workers {
            Workers::Multi => tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build(),
            Workers::One => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build(),
        }
        .expect("tokio runtime");
        let count = match workers {
            Workers::Multi => runtime.metrics().num_workers(),
            Workers::One => 1,
        };
        let (stop, stop_rx) = watch::channel(false);
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        // Named, so a profiler can tell the servers' threads apart.
        let name = match (workers, fast_path) {
            (Workers::Multi, _) => "kvci-dns-mt",
            (Workers::One, true) => "kvci-dns-fast",
            (Workers::One, false) => "kvci-dns-hickory",
        };
        let thread = thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                runtime.block_on(async move {
                    let udp = tokio::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
                        .await
                        .expect("DNS UDP socket");
                    let tcp = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                        .await
                        .expect("DNS TCP socket");
                    addr_tx
                        .send(udp.local_addr().expect("local addr"))
                        .expect("address to main");
                    let config = DnsConfig {
                        zone: zone(),
                        upstreams: vec![],
                        fast_path,
                    };
                    serve(udp, tcp, config, stop_rx)
                        .await
                        .expect("kvci DNS server");
                });
            })
            .expect("kvci DNS thread");
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("kvci DNS server started");
        KvciDns {
            addr,
            workers: count,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for KvciDns {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            if t.join().is_err() && !thread::panicking() {
                panic!("kvci DNS server thread panicked");
            }
        }
    }
}

/// `dnsmasq` on PATH, else where Debian installs it (/usr/sbin is not on every user's PATH).
fn find_dnsmasq() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join("dnsmasq"))
        .find(|p| p.is_file())
}

/// A dnsmasq child serving the same names on 127.0.0.1; killed and reaped on drop, and killed
/// by the kernel if the bench dies without unwinding (`PR_SET_PDEATHSIG`).
struct Dnsmasq {
    child: Child,
    addr: SocketAddr,
    version: String,
}

impl Dnsmasq {
    fn start(path: &Path, queries: &Queries) -> Result<Dnsmasq, String> {
        let version = Command::new(path)
            .arg("--version")
            .output()
            .ok()
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .map(str::to_owned)
            })
            .map(|l| l.split("  ").next().unwrap_or(&l).to_owned())
            .unwrap_or_else(|| "dnsmasq".into());
        let port = free_port().map_err(|e| format!("no free port: {e}"))?;
        let mut cmd = Command::new(path);
        cmd.args([
            "--no-daemon",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            "--pid-file=",
        ])
        .arg(format!("--port={port}"));
        for (host, ip, ip6) in hosts() {
            for ip in [IpAddr::V4(ip), IpAddr::V6(ip6)] {
                cmd.arg(format!("--address=/{host}.{CLUSTER}/{ip}"));
                cmd.arg(format!("--address=/{host}/{ip}"));
            }
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: the hook only calls prctl(2), which is async-signal-safe, and allocates nothing.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(io::Error::from)
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", path.display()))?;
        // dnsmasq logs a few lines at start (and only then, without --log-queries); collected
        // so a failure can say why.
        let log = Arc::new(Mutex::new(String::new()));
        if let Some(mut stderr) = child.stderr.take() {
            let log = Arc::clone(&log);
            thread::spawn(move || {
                let mut text = String::new();
                let _ = stderr.read_to_string(&mut text);
                log.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push_str(&text);
            });
        }
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut dnsmasq = Dnsmasq {
            child,
            addr,
            version,
        };
        dnsmasq.wait_ready(queries).map_err(|e| {
            let _ = dnsmasq.child.kill();
            let _ = dnsmasq.child.wait();
            thread::sleep(Duration::from_millis(50));
            let log = log.lock().unwrap_or_else(PoisonError::into_inner);
            format!("{e}; its output: {}", log.trim())
        })?;
        Ok(dnsmasq)
    }

    /// Asks until the first correct answer, for up to 5 s.
    fn wait_ready(&mut self, queries: &Queries) -> Result<(), String> {
        let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| e.to_string())?;
        sock.connect(self.addr).map_err(|e| e.to_string())?;
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(5);
        let (mut query, mut buf) = (Vec::new(), [0u8; 1500]);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                return Err(format!("dnsmasq exited ({status})"));
            }
            queries.write(1, &mut query);
            let _ = sock.send(&query);
            if let Ok(len) = sock.recv(&mut buf) {
                if queries.is_correct(&buf[..len]) {
                    return Ok(());
                }
                return Err("dnsmasq answered the readiness query wrongly".into());
            }
        }
        Err("dnsmasq did not answer within 5 s".into())
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free for both UDP and TCP on 127.0.0.1 (released again before dnsmasq binds it).
fn free_port() -> io::Result<u16> {
    for _ in 0..20 {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = udp.local_addr()?.port();
        if std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return Ok(port);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        "no port free for both UDP and TCP",
    ))
}

// ---------------------------------------------------------------------------------------------
// DHCP

/// kvci's network as a DHCP configuration: three nodes on 192.168.66.0/24, infinite leases.
fn dhcp_config() -> DhcpConfig {
    DhcpConfig {
        server_ip: REGISTRY,
        prefix_len: 24,
        router: REGISTRY,
        dns: vec![REGISTRY],
        domain: CLUSTER.into(),
        mtu: 1500,
        lease_secs: INFINITE,
        leases: (1..=3).map(|i| StaticLease::node(SUBNET, i)).collect(),
    }
}

/// A client message the way udhcpc/systemd-networkd build one: broadcast flag, parameter
/// request list, client identifier; REQUESTs in SELECTING state name the offer and server.
fn dhcp_packet(kind: MessageType, node: u32, xid: u32) -> Vec<u8> {
    let mac = kvci_net::dhcp::node_mac(node);
    let any = Ipv4Addr::UNSPECIFIED;
    let mut msg = Message::new_with_id(xid, any, any, any, any, &mac);
    msg.set_flags(Flags::default().set_broadcast());
    let opts = msg.opts_mut();
    opts.insert(DhcpOption::MessageType(kind));
    opts.insert(DhcpOption::ParameterRequestList(vec![
        OptionCode::SubnetMask,
        OptionCode::Router,
        OptionCode::DomainNameServer,
        OptionCode::DomainName,
        OptionCode::Hostname,
        OptionCode::InterfaceMtu,
    ]));
    let mut id = vec![1];
    id.extend_from_slice(&mac);
    opts.insert(DhcpOption::ClientIdentifier(id));
    if kind == MessageType::Request {
        opts.insert(DhcpOption::RequestedIpAddress(kvci_net::dhcp::node_ip(
            SUBNET, node,
        )));
        opts.insert(DhcpOption::ServerIdentifier(REGISTRY));
    }
    msg.to_vec().expect("client packet encodes")
}

/// The message type of an encoded reply.
fn reply_type(bytes: &[u8]) -> Option<MessageType> {
    use dhcproto::v4::{Decodable, Decoder};
    Message::decode(&mut Decoder::new(bytes))
        .ok()?
        .opts()
        .msg_type()
}

/// Median and 99th percentile, in microseconds.
fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort_unstable();
    let at =
        |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e6;
    (at(0.5), at(0.99))
}

fn fmt_lat((median, p99): (f64, f64)) -> String {
    format!("median {median:.2} us, p99 {p99:.2} us")
}

/// The two exchanges, as (label, request packets for nodes 1..=3, expected reply type).
fn exchanges() -> [(&'static str, Vec<Vec<u8>>, MessageType); 2] {
    let packets = |kind| {
        (1..=3)
            .map(|n| dhcp_packet(kind, n, 0x1000 + n))
            .collect::<Vec<_>>()
    };
    [
        (
            "DISCOVER->OFFER",
            packets(MessageType::Discover),
            MessageType::Offer,
        ),
        (
            "REQUEST->ACK",
            packets(MessageType::Request),
            MessageType::Ack,
        ),
    ]
}

fn dhcp() {
    // In process: DhcpServer::handle alone, each call timed.
    let mut server = DhcpServer::new(dhcp_config());
    for (label, packets, want) in exchanges() {
        for p in &packets {
            match server.handle(p) {
                Outcome::Reply { bytes, .. } => {
                    assert_eq!(reply_type(&bytes), Some(want), "{label}")
                }
                Outcome::Ignore(why) => panic!("{label}: no reply: {why}"),
            }
        }
        for i in 0..1000 {
            std::hint::black_box(server.handle(&packets[i % 3]));
        }
        let samples = (0..DHCP_N)
            .map(|i| {
                let packet = std::hint::black_box(&packets[i % packets.len()]);
                let t = Instant::now();
                let out = server.handle(packet);
                let took = t.elapsed();
                assert!(matches!(out, Outcome::Reply { .. }));
                std::hint::black_box(out);
                took
            })
            .collect();
        println!(
            "dhcp: kvci handle() {label:<16} {} (in process, N={DHCP_N})",
            fmt_lat(percentiles(samples))
        );
    }

    // Over UDP on loopback, on a tokio runtime like dhcp::serve's. The echo and the two DHCP
    // exchanges take turns round trip by round trip, so they see the same machine load.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let server = Arc::new(Mutex::new(DhcpServer::new(dhcp_config())));
    let [discover, request] = exchanges();
    let echo_packet = vec![0u8; 300];
    let kinds = [
        ("echo baseline", Responder::Echo, vec![echo_packet], None),
        (
            discover.0,
            Responder::Dhcp(Arc::clone(&server)),
            discover.1,
            Some(discover.2),
        ),
        (
            request.0,
            Responder::Dhcp(Arc::clone(&server)),
            request.1,
            Some(request.2),
        ),
    ];
    let lats = udp_latency(&runtime, kinds);
    let echo = lats[0].1;
    println!(
        "dhcp: udp loopback {:<16} {} (N={DHCP_N}, 300-byte datagrams)",
        lats[0].0,
        fmt_lat(echo)
    );
    for (label, lat) in &lats[1..] {
        println!(
            "dhcp: udp recv->handle->send {label:<16} {} (N={DHCP_N}; median minus echo's: {:.2} us)",
            fmt_lat(*lat),
            lat.0 - echo.0
        );
    }
    let stats = *server
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .stats();
    println!(
        "dhcp: the UDP figures come from this bench's own loop around DhcpServer::handle (same steps as \
         dhcp::serve); serve() itself replies to port 68, broadcast for DISCOVER/REQUEST, so it cannot be \
         kept on loopback (server counters: {} offers, {} acks, {} other)",
        stats.offers,
        stats.acks,
        stats.malformed + stats.naks + stats.ignored + stats.informs
    );
    println!(
        "dhcp: no dnsmasq DHCP comparison: dnsmasq serves DHCP only on a real interface (port 67 as root, \
         replies to port 68 / broadcast), which needs a network namespace with a veth pair; not done here"
    );
}

enum Responder {
    Echo,
    Dhcp(Arc<Mutex<DhcpServer>>),
}

/// One kind of UDP exchange: label, what answers, the packets sent in turn, the reply type
/// expected (`None`: any reply).
type Kind = (&'static str, Responder, Vec<Vec<u8>>, Option<MessageType>);

/// Closed-loop round trips from one blocking client socket to tokio tasks answering on
/// 127.0.0.1, one task and socket per kind, the kinds taking turns: warm-up, then [`DHCP_N`]
/// timed exchanges of each kind. Median and p99 per kind.
fn udp_latency(
    runtime: &tokio::runtime::Runtime,
    kinds: [Kind; 3],
) -> Vec<(&'static str, (f64, f64))> {
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let mut targets = Vec::new();
    for (label, responder, packets, want) in kinds {
        let sock = runtime
            .block_on(tokio::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)))
            .expect("server socket");
        targets.push((
            label,
            sock.local_addr().expect("server addr"),
            packets,
            want,
        ));
        let mut stop_rx = stop_rx.clone();
        tasks.push(runtime.spawn(async move {
            let mut buf = vec![0u8; 65_536];
            loop {
                let (len, peer) = tokio::select! {
                    _ = stop_rx.changed() => return,
                    r = sock.recv_from(&mut buf) => r.expect("recv"),
                };
                let packet = &buf[..len];
                let reply = match &responder {
                    Responder::Echo => Some(packet.to_vec()),
                    Responder::Dhcp(server) => {
                        // As dhcp::serve: lock, handle, unlock before the send.
                        let outcome = server
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .handle(packet);
                        match outcome {
                            Outcome::Reply { bytes, .. } => Some(bytes),
                            Outcome::Ignore(_) => None,
                        }
                    }
                };
                if let Some(reply) = reply {
                    sock.send_to(&reply, peer).await.expect("send");
                }
            }
        }));
    }

    let client = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("client socket");
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let mut buf = [0u8; 1500];
    let mut round_trip =
        |i: usize,
         (_, addr, packets, want): &(_, SocketAddr, Vec<Vec<u8>>, Option<MessageType>)| {
            let packet = &packets[i % packets.len()];
            let t = Instant::now();
            client.send_to(packet, addr).expect("send");
            let (len, from) = client.recv_from(&mut buf).expect("reply within 2 s");
            let took = t.elapsed();
            assert_eq!(from, *addr, "reply from the server asked");
            // Checked outside the timed span, on a sample (decoding is the client's cost).
            if let Some(want) = want {
                if i % 97 == 0 {
                    assert_eq!(reply_type(&buf[..len]), Some(*want));
                }
            }
            took
        };
    for i in 0..1000 {
        for target in &targets {
            round_trip(i, target);
        }
    }
    let mut samples = vec![Vec::with_capacity(DHCP_N); targets.len()];
    for i in 0..DHCP_N {
        for (target, samples) in targets.iter().zip(&mut samples) {
            samples.push(round_trip(i, target));
        }
    }
    let _ = stop.send(true);
    for task in tasks {
        runtime.block_on(task).expect("responder task");
    }
    targets
        .iter()
        .zip(samples)
        .map(|((label, ..), samples)| (*label, percentiles(samples)))
        .collect()
}
