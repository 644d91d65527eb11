//! "The outside" for benches: a network namespace joined to the host's by a veth (198.18.N.0/24,
//! RFC 2544's benchmarking range), with a TCP sink in it that times each connection from its
//! first byte to its last and reports over a channel. Traffic stays on this machine; the sink
//! stops and the namespace and veth are deleted when dropped.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A stalled transfer ends the sink's read after this long.
const SINK_STALL: Duration = Duration::from_secs(30);

/// A network namespace joined to the host's by a veth: host 198.18.N.1, inside 198.18.N.2.
/// Deleted when dropped, even half made.
pub struct OutsideNet {
    ns: String,
    veth: String,
    ip: Ipv4Addr,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip (iproute2)");
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl OutsideNet {
    /// Makes outside network number `n`.
    pub fn new(n: u8) -> OutsideNet {
        let pid = std::process::id();
        let net = OutsideNet { ns: format!("kvci-bench-out{pid}"), veth: format!("kvb{}", pid % 100_000), ip: Ipv4Addr::new(198, 18, n, 2) };
        let (ns, veth, peer) = (net.ns.as_str(), net.veth.as_str(), format!("{}p", net.veth));
        let host = format!("198.18.{n}.1");
        ip(&["netns", "add", ns]);
        ip(&["link", "add", veth, "type", "veth", "peer", "name", &peer]);
        ip(&["link", "set", &peer, "netns", ns]);
        ip(&["addr", "add", &format!("{host}/24"), "dev", veth]);
        ip(&["link", "set", veth, "up"]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
        ip(&["-n", ns, "link", "set", &peer, "up"]);
        ip(&["-n", ns, "addr", "add", &format!("{}/24", net.ip), "dev", &peer]);
        ip(&["-n", ns, "route", "add", "default", "via", &host]);
        net
    }

    fn handle(&self) -> std::fs::File {
        std::fs::File::open(format!("/run/netns/{}", self.ns)).expect("the outside namespace")
    }
}

impl Drop for OutsideNet {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.veth]).output();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

/// One connection as the sink saw it.
pub struct Transfer {
    /// Everything received.
    total: u64,
    /// Bytes after the first read, and the time from that read to the last one.
    timed: u64,
    secs: f64,
}

impl Transfer {
    /// Throughput over the timed part.
    pub fn mib_per_s(&self) -> f64 {
        self.timed as f64 / (1 << 20) as f64 / self.secs
    }
}

/// A TCP server in the outside namespace that reads each connection to its end and reports
/// a [`Transfer`] over a channel. Stopped (and its thread joined) when dropped.
pub struct Sink {
    /// Where guests send to.
    pub addr: SocketAddrV4,
    results: mpsc::Receiver<Result<Transfer, String>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Sink {
    /// Starts it in `net`, listening on a free port.
    pub fn start(net: &OutsideNet) -> Sink {
        let ns = net.handle();
        let (port_tx, port_rx) = mpsc::channel();
        let (tx, results) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            // Only this thread enters the namespace; its listener stays bound there.
            nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("entering the outside namespace");
            let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("binding the sink");
            port_tx.send(listener.local_addr().unwrap().port()).unwrap();
            for conn in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let result = conn.map_err(|e| e.to_string()).and_then(drain);
                if tx.send(result).is_err() {
                    break;
                }
            }
        });
        let port = port_rx.recv_timeout(Duration::from_secs(10)).expect("the sink started");
        Sink { addr: SocketAddrV4::new(net.ip, port), results, stop, thread: Some(thread) }
    }

    /// The transfer that just ended, which must have carried `bytes`.
    pub fn transfer(&self, bytes: u64) -> Transfer {
        // The sender has exited, so the sink saw the end already; this only bounds a hiccup.
        let t = self.results.recv_timeout(Duration::from_secs(10)).expect("the sink reported no transfer").expect("the transfer broke");
        assert_eq!(t.total, bytes, "the sink received a short transfer");
        t
    }
}

/// Reads a connection to EOF, timing from its first read to its last, then closes it.
fn drain(mut conn: TcpStream) -> Result<Transfer, String> {
    conn.set_read_timeout(Some(SINK_STALL)).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 1 << 20];
    let (mut total, mut first, mut last) = (0u64, None, Instant::now());
    loop {
        let n = conn.read(&mut buf).map_err(|e| format!("after {total} bytes: {e}"))? as u64;
        if n == 0 {
            break;
        }
        last = Instant::now();
        first.get_or_insert((last, n));
        total += n;
    }
    let (start, head) = first.ok_or("the connection carried no data")?;
    Ok(Transfer { total, timed: total - head, secs: (last - start).as_secs_f64() })
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // One more connection wakes the accept, which then sees `stop`.
        let _ = TcpStream::connect_timeout(&self.addr.into(), Duration::from_secs(2));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
