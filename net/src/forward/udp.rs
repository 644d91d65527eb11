//! UDP forwards: datagrams to a socket on the host's 127.0.0.1 are relayed to an address inside
//! the cluster's namespace, and the replies back to whoever sent them.
//!
//! Every client address gets a session: its own socket, created inside the namespace and
//! connected to the target, so replies are told apart by the socket they arrive on. Guests are
//! untrusted and nothing they send grows memory: sessions are capped (the least recently used
//! is dropped for a new one), live only while their client keeps sending (a guest cannot keep
//! one alive), and a reply the host socket cannot take at once is dropped, never queued.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use socket2::{SockAddr, SockRef};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::netns::NetNs;

/// The largest datagram relayed (UDP's own limit).
pub const MAX_DATAGRAM: usize = 65_536;

/// How many sessions and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpLimits {
    /// A session whose client sent nothing for this long is closed.
    pub idle: Duration,
    /// At most this many sessions (clients) at once.
    pub max_sessions: usize,
}

impl Default for UdpLimits {
    fn default() -> Self {
        UdpLimits { idle: Duration::from_secs(60), max_sessions: 256 }
    }
}

/// One client's session: its socket inside the namespace and the task relaying its replies.
struct Session {
    upstream: Arc<UdpSocket>,
    replies: JoinHandle<()>,
    last_sent: Instant,
    _live: LiveGuard,
}

impl Drop for Session {
    fn drop(&mut self) {
        // The task holds the other reference to the socket: the socket closes with it.
        self.replies.abort();
    }
}

/// Counts live sessions (for tests and the debug log).
struct LiveGuard(Arc<AtomicUsize>);

impl LiveGuard {
    fn new(count: &Arc<AtomicUsize>) -> LiveGuard {
        count.fetch_add(1, Ordering::Relaxed);
        LiveGuard(count.clone())
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Relays datagrams arriving on `host` to `target` inside `ns`, and replies back, until `stop`
/// turns true.
pub async fn serve(host: UdpSocket, ns: Arc<NetNs>, target: SocketAddr, limits: UdpLimits, stop: watch::Receiver<bool>) {
    relay(host, ns, target, limits, Arc::new(AtomicUsize::new(0)), stop).await
}

async fn relay(
    host: UdpSocket,
    ns: Arc<NetNs>,
    target: SocketAddr,
    limits: UdpLimits,
    live: Arc<AtomicUsize>,
    mut stop: watch::Receiver<bool>,
) {
    let host = Arc::new(host);
    let mut sessions: HashMap<SocketAddr, Session> = HashMap::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut sweep = tokio::time::interval((limits.idle / 4).max(Duration::from_millis(10)));
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            received = host.recv_from(&mut buf) => {
                let Ok((n, client)) = received else { continue };
                if !sessions.contains_key(&client) {
                    if sessions.len() >= limits.max_sessions.max(1) {
                        let oldest = sessions.iter().min_by_key(|(_, s)| s.last_sent).map(|(a, _)| *a);
                        if let Some(a) = oldest {
                            tracing::debug!(client = %a, %target, "udp forward: session dropped for a new one");
                            sessions.remove(&a);
                        }
                    }
                    let upstream = match socket_inside(ns.clone(), target).await {
                        Ok(s) => Arc::new(s),
                        Err(e) => {
                            tracing::info!(%client, %target, error = %e, "udp forward: no socket toward the guest");
                            continue;
                        }
                    };
                    let replies = tokio::spawn(relay_replies(upstream.clone(), host.clone(), client));
                    let session = Session { upstream, replies, last_sent: Instant::now(), _live: LiveGuard::new(&live) };
                    sessions.insert(client, session);
                }
                if let Some(s) = sessions.get_mut(&client) {
                    s.last_sent = Instant::now();
                    // Non-blocking: a datagram the socket cannot take now is dropped, as UDP may.
                    let _ = SockRef::from(&*s.upstream).send(&buf[..n]);
                }
            }
            _ = sweep.tick() => sessions.retain(|_, s| s.last_sent.elapsed() < limits.idle),
            _ = stop.changed() => return,
        }
    }
}

/// Sends every datagram arriving on `upstream` (from the target only: it is connected) to
/// `client` through `host`, dropping what `host` cannot take at once.
async fn relay_replies(upstream: Arc<UdpSocket>, host: Arc<UdpSocket>, client: SocketAddr) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let to = SockAddr::from(client);
    loop {
        match upstream.recv(&mut buf).await {
            // Never waits for the host socket: what it cannot take now is gone.
            Ok(n) => drop(SockRef::from(&*host).send_to(&buf[..n], &to)),
            // An ICMP "port unreachable" for an earlier datagram: nobody listens yet.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
            Err(e) => {
                tracing::debug!(%client, error = %e, "udp forward: session socket failed");
                return;
            }
        }
    }
}

/// A UDP socket created inside the namespace, connected to `target`.
pub async fn socket_inside(ns: Arc<NetNs>, target: SocketAddr) -> std::io::Result<UdpSocket> {
    let std_socket = tokio::task::spawn_blocking(move || {
        ns.run(|| -> std::io::Result<std::net::UdpSocket> {
            let any: SocketAddr = match target {
                SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
                SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
            };
            let s = std::net::UdpSocket::bind(any)?;
            s.connect(target)?;
            s.set_nonblocking(true)?;
            Ok(s)
        })
        .map_err(std::io::Error::other)?
    })
    .await
    .map_err(std::io::Error::other)??;
    UdpSocket::from_std(std_socket)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::bind_host_udp_port;

    /// A UDP server on 127.0.0.1 answering every datagram with `<payload>@<sender>`; it stands
    /// in for the guest (the test's own namespace stands in for the cluster's).
    async fn echo_server() -> SocketAddr {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            while let Ok((n, peer)) = sock.recv_from(&mut buf).await {
                let mut reply = buf[..n].to_vec();
                reply.extend_from_slice(format!("@{peer}").as_bytes());
                let _ = sock.send_to(&reply, peer).await;
            }
        });
        addr
    }

    struct Relay {
        port: u16,
        live: Arc<AtomicUsize>,
        stop: watch::Sender<bool>,
        task: JoinHandle<()>,
    }

    fn start(target: SocketAddr, limits: UdpLimits) -> Relay {
        let host = UdpSocket::from_std(bind_host_udp_port(0).unwrap()).unwrap();
        let port = host.local_addr().unwrap().port();
        let (stop, stop_rx) = watch::channel(false);
        let live = Arc::new(AtomicUsize::new(0));
        let ns = Arc::new(NetNs::current().unwrap());
        let task = tokio::spawn(relay(host, ns, target, limits, live.clone(), stop_rx));
        Relay { port, live, stop, task }
    }

    async fn client() -> UdpSocket {
        UdpSocket::bind("127.0.0.1:0").await.unwrap()
    }

    /// Sends `msg` to the relay and returns the reply as text.
    async fn ask(c: &UdpSocket, port: u16, msg: &[u8]) -> String {
        c.send_to(msg, ("127.0.0.1", port)).await.unwrap();
        let mut buf = vec![0u8; MAX_DATAGRAM + 64];
        let (n, from) = tokio::time::timeout(Duration::from_secs(5), c.recv_from(&mut buf)).await.expect("a reply").unwrap();
        assert_eq!(from.port(), port, "the reply comes from the forwarded port");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// The address the server saw the datagram come from (the session's socket).
    fn seen_from(reply: &str) -> String {
        reply.rsplit('@').next().unwrap().to_string()
    }

    #[tokio::test]
    async fn a_datagram_and_its_reply_are_relayed() {
        let r = start(echo_server().await, UdpLimits::default());
        let c = client().await;
        let reply = ask(&c, r.port, b"ping").await;
        assert!(reply.starts_with("ping@127.0.0.1:"), "{reply}");
        // A full-size datagram goes through whole.
        let big = vec![b'x'; 60_000];
        let reply = ask(&c, r.port, &big).await;
        assert_eq!(reply.len(), 60_000 + 1 + seen_from(&reply).len());
        r.stop.send(true).unwrap();
        r.task.await.unwrap();
    }

    #[tokio::test]
    async fn two_clients_get_their_own_replies() {
        let r = start(echo_server().await, UdpLimits::default());
        let (a, b) = (client().await, client().await);
        // Interleaved: both sessions are open while each is answered.
        a.send_to(b"from-a", ("127.0.0.1", r.port)).await.unwrap();
        let rb = ask(&b, r.port, b"from-b").await;
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(5), a.recv(&mut buf)).await.unwrap().unwrap();
        let ra = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(ra.starts_with("from-a@"), "{ra}");
        assert!(rb.starts_with("from-b@"), "{rb}");
        assert_ne!(seen_from(&ra), seen_from(&rb), "each client has its own session socket");
        assert_eq!(r.live.load(Ordering::Relaxed), 2);
        // Nothing else arrived at either client.
        assert!(tokio::time::timeout(Duration::from_millis(200), a.recv(&mut buf)).await.is_err());
        assert!(tokio::time::timeout(Duration::from_millis(200), b.recv(&mut buf)).await.is_err());
    }

    #[tokio::test]
    async fn idle_sessions_expire() {
        let r = start(echo_server().await, UdpLimits { idle: Duration::from_millis(300), max_sessions: 8 });
        let c = client().await;
        let first = seen_from(&ask(&c, r.port, b"one").await);
        assert_eq!(seen_from(&ask(&c, r.port, b"two").await), first, "same client, same session");
        assert_eq!(r.live.load(Ordering::Relaxed), 1);
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(r.live.load(Ordering::Relaxed), 0, "the idle session was closed");
        // The client is served again, by a new session.
        assert!(ask(&c, r.port, b"three").await.starts_with("three@"));
        assert_eq!(r.live.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn the_session_cap_holds_and_drops_the_least_recent() {
        let r = start(echo_server().await, UdpLimits { idle: Duration::from_secs(60), max_sessions: 3 });
        let mut clients = Vec::new();
        for i in 0..10 {
            let c = client().await;
            let msg = format!("c{i}");
            assert!(ask(&c, r.port, msg.as_bytes()).await.starts_with(&format!("{msg}@")));
            assert!(r.live.load(Ordering::Relaxed) <= 3);
            clients.push(c);
        }
        assert_eq!(r.live.load(Ordering::Relaxed), 3);
        // The most recent clients kept their sessions; the first one gets a new one.
        let before = seen_from(&ask(&clients[9], r.port, b"again").await);
        assert_eq!(seen_from(&ask(&clients[9], r.port, b"again").await), before);
        assert!(ask(&clients[0], r.port, b"back").await.starts_with("back@"));
        assert_eq!(r.live.load(Ordering::Relaxed), 3);
    }

    #[tokio::test]
    async fn a_flooding_guest_does_not_block_other_clients() {
        // The "guest" answers each datagram with 5000 datagrams of 8 KiB.
        let guest = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let target = guest.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            while let Ok((n, peer)) = guest.recv_from(&mut buf).await {
                let count = if &buf[..n] == b"flood" { 5000 } else { 1 };
                for _ in 0..count {
                    let _ = guest.send_to(&[b'f'; 8192][..if count == 1 { n } else { 8192 }], peer).await;
                }
            }
        });
        let r = start(target, UdpLimits::default());
        // The flooded client never reads.
        let flooded = client().await;
        flooded.send_to(b"flood", ("127.0.0.1", r.port)).await.unwrap();
        let other = client().await;
        for _ in 0..3 {
            let reply = ask(&other, r.port, b"hello").await;
            assert_eq!(reply.len(), 5);
        }
    }
}
