//! Benchmark: TCP throughput of `tiny` guests (TCG), figures side by side in one run.
//!
//! `cargo bench --bench net_throughput`. Settings: `KVCI_BENCH_MIB` (per transfer, default 256),
//! `KVCI_BENCH_ROUNDS` (default 3), `KVCI_BENCH_SENDER` (`exec`, the default, or `pipe`, see
//! below); the image store is the tests' one (`KVCI_TEST_DATA_DIR`).
//!
//! The guest sends N MiB of zeros with busybox, one of two ways:
//! - `exec`: `nc IP PORT -e dd if=/dev/zero bs=1M`: dd writes 1 MiB blocks straight into the
//!   socket, so the network path is what limits (~10x faster than `pipe` here);
//! - `pipe`: `dd … | nc IP PORT`: nc copies the pipe to the socket 1 KiB per syscall, which
//!   costs the TCG guest's kernel so much that it limits every path to a few MiB/s.
//!
//! What each figure includes:
//! - **egress, kvci**: a 1-node `vm up --ipv4-only` cluster; node01 sends to a sink in a
//!   namespace the bench makes ("the outside", 198.18.200.2 behind a veth). Path: virtio-net →
//!   tap → bridge → forwarding and nftables masquerade in the cluster's namespace → slirp4netns
//!   → a host socket → veth → sink.
//! - **egress, qemu-user**: the same guest on kvci's own QEMU command line, but with
//!   `-netdev user` (libslirp inside QEMU) behind the same virtio-net device instead of the
//!   tap; the same command typed on its serial console. Path: virtio-net → QEMU's slirp → a
//!   host socket → veth → sink.
//!   Both are timed by the sink from the first byte it reads to the last: no boot, ssh, console
//!   or TCP handshake; the guest's own sending is included.
//! - **node↔node**: a 2-node cluster; node01 sends to node02 over the cluster bridge, where
//!   `nc -l -e` hands the socket to dd (1 MiB reads). Timed in node02 from its first byte to
//!   EOF with /proc/uptime (10 ms steps; busybox `date` has no `%N`), so like the sink. Also
//!   timed on the host around the `vm ssh` that sends, which adds one ssh session (handshake
//!   included) and, with `exec`, ends when dd has handed its last block to node01's kernel.
//!
//! While one side of the egress comparison sends, the other side's guest idles (both are up
//! for all rounds, which are interleaved, each side going first in turn, so that drift in
//! machine load hits both alike).
//!
//! Cleanup, also when a step panics: clusters go down in `Drop`, the bare QEMU is killed and
//! reaped, the sink stops, the namespace and its veth are deleted. Traffic stays on this machine.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/outside.rs"]
mod outside;

use std::io::{BufRead, BufReader};
use std::net::SocketAddrV4;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Console, TestCluster};
use outside::{OutsideNet, Sink};
use kvci::accel::{Accel, AccelChoice, Decision};
use kvci::cluster::layout::ClusterDir;
use kvci::cluster::plan::{plan, Launch, NodePlan};
use kvci::config::{ClusterSpec, IpStack};
use kvci::image::name::ImageName;
use kvci::image::store::Store;
use kvci::paths::Dirs;
use kvci::qemu::cmdline::{nic_args, node_args, Endpoint};

/// The outside network's number: 198.18.200.0/24 (tests use small numbers).
const OUTSIDE_NET: u8 = 200;
const EGRESS_CLUSTER: &str = "bench-egress";
const PAIR_CLUSTER: &str = "bench-n2n";
/// node02's listening port for the node↔node transfer.
const PAIR_PORT: u16 = 5001;
/// How long a TCG boot may take on a busy machine.
const BOOT_LIMIT: Duration = Duration::from_secs(300);

struct Settings {
    mib: u64,
    rounds: usize,
    sender: Sender,
}

impl Settings {
    fn from_env() -> Settings {
        let num = |var: &str, default: u64| std::env::var(var).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
        let sender = match std::env::var("KVCI_BENCH_SENDER").as_deref() {
            Err(_) | Ok("exec") => Sender::Exec,
            Ok("pipe") => Sender::Pipe,
            Ok(other) => panic!("KVCI_BENCH_SENDER={other}: exec or pipe"),
        };
        Settings { mib: num("KVCI_BENCH_MIB", 256).max(1), rounds: num("KVCI_BENCH_ROUNDS", 3).max(1) as usize, sender }
    }

    fn bytes(&self) -> u64 {
        self.mib << 20
    }

    /// How long one transfer may take, at no less than 1 MiB/s.
    fn send_limit(&self) -> Duration {
        Duration::from_secs(120 + self.mib)
    }

    /// The guest's command sending N MiB to `to`.
    fn send(&self, to: SocketAddrV4) -> String {
        self.sender.command(to, self.mib)
    }
}

/// How the guest sends (busybox nc and dd either way).
#[derive(Debug, Clone, Copy)]
enum Sender {
    /// dd writes 1 MiB blocks into the socket nc connected (nc execs it).
    Exec,
    /// nc copies dd's pipe to the socket (1 KiB per read and write); it half-closes at EOF and
    /// exits when the receiver closes.
    Pipe,
}

impl Sender {
    fn command(self, to: SocketAddrV4, mib: u64) -> String {
        let (ip, port) = (to.ip(), to.port());
        let dd = format!("dd if=/dev/zero bs=1M count={mib}");
        match self {
            Sender::Exec => format!("nc {ip} {port} -e {dd} 2>/dev/null"),
            Sender::Pipe => format!("{dd} 2>/dev/null | nc {ip} {port}"),
        }
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return; // only under `cargo bench`; `cargo test --benches` runs nothing here
    }
    let s = Settings::from_env();
    let qemu = kvci::tools::QEMU.locate().expect("qemu-system-x86_64");
    print_machine_facts(&qemu, &s);
    let built = common::run(&["image", "build", "tiny"]);
    assert!(built.status.success(), "image build tiny: {}", common::stderr(&built));

    // Declared before the sink, so the sink stops (dropped first) while the veth still exists.
    let outside = OutsideNet::new(OUTSIDE_NET);
    let sink = Sink::start(&outside);
    let (qemu_user, kvci_egress) = egress_rounds(&s, &qemu, &sink);
    let pair = pair_rounds(&s);

    let (mq, mk) = (median(qemu_user), median(kvci_egress));
    let (pg, ph) = (median(pair.iter().map(|p| p.0).collect()), median(pair.iter().map(|p| p.1).collect()));
    println!("\nmedians over {} rounds of {} MiB (MiB/s):", s.rounds, s.mib);
    println!("  guest → outside  qemu-user {mq:8.1}   kvci egress {mk:8.1}   ratio kvci/qemu-user {:.2}", mk / mq);
    println!("  node01 → node02  receiver-timed {pg:8.1}   host-timed incl. one ssh session {ph:8.1}");
    println!("load average at the end: {}", load_average());
}

/// What the figures ran on: core count, accelerator, QEMU, kernel.
fn print_machine_facts(qemu: &Path, s: &Settings) {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let version = Command::new(qemu).arg("--version").output().map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").to_string());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string()))
        .unwrap_or_default();
    println!("machine: {cores} cores ({cpu}), host kernel {}, {}", kernel.trim(), version.unwrap_or_default());
    println!("load average at start: {} (other work on this machine skews every figure)", load_average());
    println!("guests: tiny under TCG (--accel tcg: no usable KVM here), {} MiB per transfer, {} rounds, sender {:?}", s.mib, s.rounds, s.sender);
}

/// The 1, 5 and 15 minute load averages.
fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

// ---------------------------------------------------------------------------------------------
// guest → outside

/// Interleaved rounds of qemu-user and kvci egress; MiB/s of each, in round order.
fn egress_rounds(s: &Settings, qemu: &Path, sink: &Sink) -> (Vec<f64>, Vec<f64>) {
    let mut bare = BareQemu::boot(qemu);
    let _ = common::run(&["vm", "down", "--name", EGRESS_CLUSTER]); // a leftover from an aborted run
    let cluster = TestCluster::up(EGRESS_CLUSTER, &["--ipv4-only"]);
    let send = s.send(sink.addr);
    let mut on_qemu_user = || {
        bare.run_on_console(&send, s.send_limit());
        sink.transfer(s.bytes()).mib_per_s()
    };
    let on_kvci = || {
        kvci_ssh(&cluster, "node01", &send, s.send_limit());
        sink.transfer(s.bytes()).mib_per_s()
    };
    let (mut q, mut k) = (Vec::new(), Vec::new());
    for round in 1..=s.rounds {
        // Who goes first alternates, so neither side always runs in the other's wake.
        let (qr, kr) = if round % 2 == 1 {
            let qr = on_qemu_user();
            (qr, on_kvci())
        } else {
            let kr = on_kvci();
            (on_qemu_user(), kr)
        };
        println!("egress round {round}: qemu-user {qr:8.1} MiB/s   kvci {kr:8.1} MiB/s   (load {})", load_average());
        q.push(qr);
        k.push(kr);
    }
    (q, k)
}

/// `kvci vm ssh CLUSTER NODE -- COMMAND`, which must succeed within `limit`; its stdout.
fn kvci_ssh(cluster: &TestCluster, node: &str, command: &str, limit: Duration) -> String {
    let mut cmd = common::kvci();
    cmd.args(["vm", "ssh", "--name", &cluster.name, "-n", node, "--", command]);
    let out = run_within(cmd, limit);
    assert!(out.status.success(), "on {node}: {command}: {}{}", String::from_utf8_lossy(&out.stdout), common::stderr(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `cmd` to its end; after `limit` it is killed (and still reaped) and this panics.
fn run_within(mut cmd: Command, limit: Duration) -> Output {
    let child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawning kvci");
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (tx, rx) = mpsc::channel();
    // The waiter owns the child (and drains its pipes); this thread only watches the clock.
    let waiter = std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = rx.recv_timeout(limit);
    if out.is_err() {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    }
    let _ = waiter.join();
    match out {
        Ok(result) => result.expect("waiting for kvci"),
        Err(_) => panic!("{cmd:?} took longer than {limit:?}; killed"),
    }
}

// ---------------------------------------------------------------------------------------------
// The same guest on bare QEMU with user-mode networking

/// A process killed and reaped when dropped.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `tiny` on bare QEMU with kvci's arguments, `-netdev user` in place of the tap, and a root
/// shell on its serial console.
struct BareQemu {
    console: Console,
    serial_log: PathBuf,
    _qemu: Reaped,
    _work: tempfile::TempDir,
}

impl BareQemu {
    /// Boots it and waits for the guest's ready beacon (sent after its DHCP lease).
    fn boot(qemu: &Path) -> BareQemu {
        let work = tempfile::tempdir().unwrap();
        let node = bare_node(work.path());
        let qemu_log = std::fs::File::create(node.dir.qemu_log()).unwrap();
        let child = Command::new(qemu).args(bare_args(&node)).stdin(Stdio::null()).stdout(Stdio::null()).stderr(qemu_log).spawn().expect("spawning QEMU");
        let mut qemu = Reaped(child);
        wait_ready(&node, &mut qemu.0);
        let console = Console::attach(node.dir.root().parent().unwrap(), &node.name);
        BareQemu { console, serial_log: node.dir.serial_log(), _qemu: qemu, _work: work }
    }

    /// Types `command` on the console and waits for it to end with status 0.
    fn run_on_console(&mut self, command: &str, limit: Duration) {
        // Quotes split the end marker so that the echoed command line cannot match it.
        let text = self.console.run(&format!("{command}; echo \"status=$? bench-\"\"done\""), "bench-done", limit);
        let status = text.rsplit("status=").next().and_then(|t| t.split_whitespace().next());
        assert_eq!(status, Some("0"), "on the bare guest: {command}:\n{text}\n(serial log: {})", self.serial_log.display());
    }
}

/// kvci's plan of a 1-node IPv4-only `tiny` cluster, laid out under `work`.
fn bare_node(work: &Path) -> NodePlan {
    let store = Store::open(&Dirs::at(common::data_dir()).images()).unwrap();
    let image = store.get(&ImageName::parse("tiny").unwrap()).unwrap().expect("tiny is built");
    let spec = ClusterSpec {
        name: "bare".into(),
        nodes: 1,
        image: "tiny".into(),
        memory_mib: image.manifest.memory_mib,
        cpus: image.manifest.cpus,
        accel: AccelChoice::Tcg,
        boot_timeout_secs: BOOT_LIMIT.as_secs(),
        subnet: kvci_net::topology::DEFAULT_SUBNET.into(),
        ports: Default::default(),
        dns_upstreams: vec![],
        registry_dir: None,
        stack: IpStack::Ipv4,
        allow_host_loopback: false,
        shape: Default::default(),
    };
    let launch = Launch { spec, accel: Decision { accel: Accel::Tcg, reason: "bench".into() }, image_id: None };
    let mut node = plan(&launch, &image, &ClusterDir::new(&Dirs::at(work), "bare")).unwrap().nodes.remove(0);
    std::fs::create_dir_all(node.dir.root()).unwrap();
    kvci::disk::create_overlay(&node.base_disk, &node.dir.disk()).unwrap();
    // Sockets by path (bare QEMU binds them), no ssh key: the console is the way in.
    node.machine.qmp = Endpoint::Path(node.dir.qmp_socket());
    node.machine.console = Endpoint::Path(node.dir.console_socket());
    node.machine.beacon = Endpoint::Path(node.dir.beacon_socket());
    node.machine.agent = Endpoint::Path(node.dir.agent_socket());
    node.machine.authorized_keys = None;
    node
}

/// The node's command line with its NIC moved from kvci's tap to QEMU's user-mode network:
/// the same virtio-net device and MAC, a different backend.
fn bare_args(node: &NodePlan) -> Vec<String> {
    let mut machine = node.machine.clone();
    let nic = machine.nic.take().expect("the plan has a NIC");
    let mut args = node_args(&machine);
    let mut nic = nic_args(&nic);
    assert_eq!(nic[0], "-netdev");
    nic[1] = "user,id=net0".into();
    args.extend(nic);
    args
}

/// Waits for the beacon's `ready` line. Bare QEMU binds the socket itself, at a moment nothing
/// signals: connecting is retried every 20 ms, checking QEMU is still alive.
fn wait_ready(node: &NodePlan, qemu: &mut Child) {
    let deadline = Instant::now() + BOOT_LIMIT;
    let dead = |qemu: &mut Child| {
        let log = std::fs::read_to_string(node.dir.qemu_log()).unwrap_or_default();
        qemu.try_wait().unwrap().map(|status| format!("bare QEMU exited ({status}): {log}"))
    };
    let stream = loop {
        if let Ok(s) = UnixStream::connect(node.dir.beacon_socket()) {
            break s;
        }
        assert!(Instant::now() < deadline, "bare QEMU's beacon socket never appeared");
        if let Some(why) = dead(qemu) {
            panic!("{why}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    stream.set_read_timeout(Some(BOOT_LIMIT)).unwrap();
    for line in BufReader::new(stream).lines() {
        let line = line.unwrap_or_else(|e| panic!("bare guest never said ready: {e}; {:?}", dead(qemu)));
        if kvci::beacon::parse_line(line.as_bytes()).is_ok_and(|m| m.event == "ready") {
            return;
        }
    }
    panic!("bare guest's beacon closed before ready; {:?}", dead(qemu));
}

// ---------------------------------------------------------------------------------------------
// node ↔ node over the cluster bridge

/// Rounds of node01 → node02; (receiver-timed, host-timed) MiB/s of each.
fn pair_rounds(s: &Settings) -> Vec<(f64, f64)> {
    let _ = common::run(&["vm", "down", "--name", PAIR_CLUSTER]); // a leftover from an aborted run
    let cluster = TestCluster::up(PAIR_CLUSTER, &["--nodes", "2", "--ipv4-only"]);
    let status = cluster.status();
    let node02 = status["nodes"].as_array().unwrap().iter().find(|n| n["name"] == "node02").expect("node02")["ip"].as_str().unwrap().to_string();
    let to = SocketAddrV4::new(node02.parse().unwrap(), PAIR_PORT);
    let mut figures = Vec::new();
    for round in 1..=s.rounds {
        start_receiver(&cluster);
        let t = Instant::now();
        kvci_ssh(&cluster, "node01", &s.send(to), s.send_limit());
        let host_secs = t.elapsed().as_secs_f64();
        let rx_secs = receiver_secs(&cluster);
        let (r, h) = (s.mib as f64 / rx_secs, s.mib as f64 / host_secs);
        println!("node↔node round {round}: {r:8.1} MiB/s receiver-timed ({rx_secs:.2} s)   {h:8.1} MiB/s host-timed ({host_secs:.2} s)   (load {})", load_average());
        figures.push((r, h));
    }
    figures
}

/// Where node02's receiver leaves its two /proc/uptime readings.
const RX_TIMES: &str = "/run/bench-rx-times";

/// Starts a one-shot receiver on node02, left running after the ssh session, and returns once
/// it listens. `nc -l -e` hands the connection to a shell that reads the first byte, then the
/// rest with dd (1 MiB reads) to EOF, and notes the uptime after the first byte and at EOF.
fn start_receiver(cluster: &TestCluster) {
    let drain = format!("dd bs=1 count=1 of=/dev/null 2>/dev/null; read a _ </proc/uptime; dd bs=1M of=/dev/null 2>/dev/null; read b _ </proc/uptime; echo $a $b >{RX_TIMES}");
    let listen = format!(
        "rm -f {RX_TIMES}; nc -l -p {PAIR_PORT} -e sh -c '{drain}' </dev/null >/dev/null 2>&1 &\n\
         for i in $(seq 100); do netstat -ltn | grep -q ':{PAIR_PORT} ' && exit 0; sleep 0.1; done; exit 1"
    );
    kvci_ssh(cluster, "node02", &listen, Duration::from_secs(60));
}

/// The receiver's time from first byte to EOF. It writes it just after the sender is done, so
/// this asks again (every 100 ms, in the guest) for a few seconds.
fn receiver_secs(cluster: &TestCluster) -> f64 {
    let ask = format!("for i in $(seq 100); do [ -s {RX_TIMES} ] && exec cat {RX_TIMES}; sleep 0.1; done; exit 1");
    let out = kvci_ssh(cluster, "node02", &ask, Duration::from_secs(60));
    let v: Vec<f64> = out.split_whitespace().map(|w| w.parse().expect("an uptime reading")).collect();
    assert_eq!(v.len(), 2, "expected two uptime readings, got {out:?}");
    v[1] - v[0]
}
