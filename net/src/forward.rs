//! Port forwards: listeners on the host's 127.0.0.1 relaying each connection to an address
//! inside the cluster's namespace (kvci's replacement for kubevirtci's published ports).
//! TCP here; UDP datagrams in [`udp`].

pub mod udp;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::netns::NetNs;

/// How long connecting to a guest port may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A host port could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// Someone else listens there.
    #[error("port {port}/{proto} on 127.0.0.1 is already in use{by}: choose another port or use --random-ports")]
    InUse {
        /// The port.
        port: u16,
        /// `tcp` or `udp`.
        proto: &'static str,
        /// `" by <process> (pid N)"` when it could be found.
        by: String,
    },
    /// Binding failed otherwise.
    #[error("cannot bind {proto} port 127.0.0.1:{port}")]
    Bind {
        /// The port.
        port: u16,
        /// `tcp` or `udp`.
        proto: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Listens on TCP `127.0.0.1:port` (0 picks a free port) in the calling thread's namespace.
pub fn bind_host_port(port: u16) -> Result<std::net::TcpListener, ForwardError> {
    let proto = "tcp";
    match std::net::TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)) {
        Ok(l) => {
            l.set_nonblocking(true).map_err(|source| ForwardError::Bind { port, proto, source })?;
            Ok(l)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(ForwardError::InUse { port, proto, by: who_holds(port, proto) }),
        Err(source) => Err(ForwardError::Bind { port, proto, source }),
    }
}

/// Binds UDP `127.0.0.1:port` (0 picks a free port) in the calling thread's namespace.
pub fn bind_host_udp_port(port: u16) -> Result<std::net::UdpSocket, ForwardError> {
    let proto = "udp";
    match std::net::UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)) {
        Ok(s) => {
            s.set_nonblocking(true).map_err(|source| ForwardError::Bind { port, proto, source })?;
            Ok(s)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(ForwardError::InUse { port, proto, by: who_holds(port, proto) }),
        Err(source) => Err(ForwardError::Bind { port, proto, source }),
    }
}

/// Best effort: `" by sshd (pid 812)"` for the process listening on TCP `port` (`proto` "tcp")
/// or holding UDP `port` (`proto` "udp").
fn who_holds(port: u16, proto: &str) -> String {
    let inodes: Vec<String> = [format!("/proc/net/{proto}"), format!("/proc/net/{proto}6")]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .flat_map(|t| t.lines().skip(1).map(str::to_string).collect::<Vec<_>>())
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let local_port = f.get(1)?.rsplit(':').next().and_then(|h| u16::from_str_radix(h, 16).ok())?;
            // TCP: state 0A is LISTEN. UDP: any socket bound to the port holds it.
            let holds = proto == "udp" || f.get(3) == Some(&"0A");
            (local_port == port && holds).then(|| f.get(9).map(|s| s.to_string()))?
        })
        .collect();
    if inodes.is_empty() {
        return String::new();
    }
    let Ok(procs) = std::fs::read_dir("/proc") else { return String::new() };
    // Numeric entries only: /proc/self and /proc/thread-self would name us twice.
    for p in procs.filter_map(Result::ok).filter(|p| p.file_name().to_string_lossy().parse::<u32>().is_ok()) {
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else { continue };
        for fd in fds.filter_map(Result::ok) {
            let Ok(target) = std::fs::read_link(fd.path()) else { continue };
            let t = target.to_string_lossy();
            if inodes.iter().any(|i| t == format!("socket:[{i}]")) {
                let comm = std::fs::read_to_string(p.path().join("comm")).unwrap_or_default();
                return format!(" by {} (pid {})", comm.trim(), p.file_name().to_string_lossy());
            }
        }
    }
    String::new()
}

/// Relays every connection on `listener` to `target` inside `ns` until `stop` turns true.
pub async fn serve(listener: TcpListener, ns: Arc<NetNs>, target: SocketAddr, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, peer)) = accepted else { continue };
                let ns = ns.clone();
                tokio::spawn(async move {
                    match connect_inside(ns, target).await {
                        Ok(mut upstream) => {
                            let mut client = client;
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                        }
                        Err(e) => tracing::info!(%peer, %target, error = %e, "forward: guest port not reachable"),
                    }
                });
            }
            _ = stop.changed() => return,
        }
    }
}

/// Relays every connection on `listener` to the unix socket `path` (e.g. QEMU's VNC display).
pub async fn serve_unix(listener: TcpListener, path: std::path::PathBuf, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((mut client, _)) = accepted else { continue };
                let path = path.clone();
                tokio::spawn(async move {
                    if let Ok(mut upstream) = tokio::net::UnixStream::connect(&path).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                });
            }
            _ = stop.changed() => return,
        }
    }
}

/// Opens a TCP connection from inside the namespace.
pub async fn connect_inside(ns: Arc<NetNs>, target: SocketAddr) -> std::io::Result<TcpStream> {
    let std_stream = tokio::task::spawn_blocking(move || {
        ns.run(|| std::net::TcpStream::connect_timeout(&target, CONNECT_TIMEOUT)).map_err(std::io::Error::other)?
    })
    .await
    .map_err(std::io::Error::other)??;
    std_stream.set_nonblocking(true)?;
    TcpStream::from_std(std_stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_in_use_names_the_listener() {
        let taken = bind_host_port(0).unwrap();
        let port = taken.local_addr().unwrap().port();
        let err = bind_host_port(port).unwrap_err().to_string();
        assert!(err.contains(&format!("port {port}")), "{err}");
        assert!(err.contains("--random-ports"), "{err}");
        // This very test process holds it.
        assert!(err.contains(&format!("pid {}", std::process::id())), "{err}");
    }

    #[test]
    fn udp_port_in_use_names_the_holder_and_tcp_does_not_clash() {
        let taken = bind_host_udp_port(0).unwrap();
        let port = taken.local_addr().unwrap().port();
        let err = bind_host_udp_port(port).unwrap_err().to_string();
        assert!(err.contains(&format!("port {port}/udp")), "{err}");
        assert!(err.contains(&format!("pid {}", std::process::id())), "{err}");
        // The same number over TCP is another port.
        bind_host_port(port).unwrap();
    }

    #[tokio::test]
    async fn connections_are_relayed_to_the_target() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = echo.accept().await.unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(&buf).await.unwrap();
        });
        let listener = TcpListener::from_std(bind_host_port(0).unwrap()).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop_tx, stop) = watch::channel(false);
        // The test's own namespace stands in for the cluster's.
        let ns = Arc::new(NetNs::current().unwrap());
        let server = tokio::spawn(serve(listener, ns, target, stop));
        let mut c = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        c.write_all(b"hello").await.unwrap();
        let mut back = [0u8; 5];
        c.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"hello");
        stop_tx.send(true).unwrap();
        server.await.unwrap();
    }
}
