//! Egress for guests: an HTTP proxy on the bridge (`<bridge>:3128`) that the supervisor serves
//! from the host's namespace. `CONNECT host:port` tunnels any TCP (HTTPS, git, registries);
//! plain `GET http://…` requests are relayed. Provisioning (apt, curl, container pulls) works
//! through it, root or rootless alike.
//!
//! Why a proxy and not veth + masquerade: it needs nothing in the host namespace — no veth, no
//! NAT rule, no `ip_forward` change — so a killed supervisor leaks nothing and the rootless path
//! is the same code. The cost: only TCP leaves the cluster (DNS is forwarded separately).
//!
//! Requests for the cluster itself (`registry:5000`, `node02:80`, an address in the subnet)
//! are connected from inside the namespace: guest tools that send everything to the proxy
//! (busybox wget ignores `no_proxy`) still reach the cluster's own services.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::netns::NetNs;
use crate::topology::Subnet;

/// The proxy's port on the bridge address.
pub const PROXY_PORT: u16 = 3128;
/// Largest request head accepted from a guest.
const MAX_HEAD: usize = 16 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// What a guest asked the proxy for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `CONNECT host:port`: a raw tunnel.
    Connect {
        /// `host:port`.
        authority: String,
    },
    /// A plain-HTTP request in absolute form, rewritten for the origin server.
    Forward {
        /// `host:port` to connect to.
        authority: String,
        /// The request head to send upstream (origin-form target, proxy headers removed).
        head: Vec<u8>,
    },
}

/// A request the proxy refuses.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProxyError {
    /// Not HTTP, or truncated.
    #[error("malformed request")]
    Malformed,
    /// Head over [`MAX_HEAD`].
    #[error("request head too large")]
    TooLarge,
    /// Not `http://` or CONNECT.
    #[error("only CONNECT and http:// requests are proxied")]
    Unsupported,
}

/// What is inside the cluster: connections there are made from inside its namespace.
#[derive(Clone)]
pub struct Inside {
    /// The cluster's namespace.
    pub ns: Arc<NetNs>,
    /// The cluster's subnet: every address in it is inside.
    pub subnet: Subnet,
    /// The cluster's DNS domain (`node02.<domain>` names node02 too).
    pub domain: String,
    /// Names the cluster's DNS answers itself (`nodeNN`, `registry`, …).
    pub hosts: Vec<(String, Ipv4Addr)>,
}

impl Inside {
    /// The address inside the cluster that `authority` (`host:port`) names, if it names one.
    pub fn resolve(&self, authority: &str) -> Option<SocketAddr> {
        let (host, port) = authority.rsplit_once(':')?;
        let port: u16 = port.parse().ok()?;
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let ip = match host.parse::<Ipv4Addr>() {
            Ok(ip) => {
                let mask = u32::MAX << (32 - self.subnet.prefix);
                (u32::from(ip) & mask == u32::from(self.subnet.network)).then_some(ip)?
            }
            Err(_) => {
                let suffix = format!(".{}", self.domain.to_ascii_lowercase());
                let short = host.strip_suffix(&suffix).unwrap_or(&host);
                self.hosts.iter().find(|(n, _)| n.eq_ignore_ascii_case(short)).map(|(_, ip)| *ip)?
            }
        };
        Some(SocketAddr::V4(SocketAddrV4::new(ip, port)))
    }
}

/// Parses a complete request head (through the blank line).
pub fn parse_head(head: &[u8]) -> Result<Request, ProxyError> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) | Err(_) => return Err(ProxyError::Malformed),
    }
    let (method, target) = (req.method.ok_or(ProxyError::Malformed)?, req.path.ok_or(ProxyError::Malformed)?);
    if method.eq_ignore_ascii_case("CONNECT") {
        if !target.contains(':') || target.contains('/') {
            return Err(ProxyError::Malformed);
        }
        return Ok(Request::Connect { authority: target.to_string() });
    }
    let rest = target.strip_prefix("http://").ok_or(ProxyError::Unsupported)?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if host.is_empty() || host.contains('@') {
        return Err(ProxyError::Malformed);
    }
    let authority = if host.contains(':') { host.to_string() } else { format!("{host}:80") };
    let mut out = format!("{method} {path} HTTP/1.{}\r\n", req.version.unwrap_or(1)).into_bytes();
    for h in req.headers.iter() {
        let name = h.name.to_ascii_lowercase();
        if name == "proxy-connection" || name == "proxy-authorization" {
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(Request::Forward { authority, head: out })
}

/// Serves the proxy on `listener` (bound inside the cluster's namespace) until `stop`.
/// Upstream connections are made from the thread's (host) namespace, except to what `inside`
/// names.
pub async fn serve(listener: TcpListener, inside: Option<Inside>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((client, _)) = accepted {
                    tokio::spawn(handle(client, inside.clone()));
                }
            }
            _ = stop.changed() => return,
        }
    }
}

async fn handle(mut client: TcpStream, inside: Option<Inside>) {
    let mut buf = Vec::with_capacity(4096);
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD {
            let _ = client.write_all(b"HTTP/1.1 431 Request Header Fields Too Large\r\n\r\n").await;
            return;
        }
        let mut chunk = [0u8; 4096];
        match client.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let request = match parse_head(&buf[..end]) {
        Ok(r) => r,
        Err(e) => {
            let _ = client.write_all(format!("HTTP/1.1 400 Bad Request\r\n\r\n{e}\n").as_bytes()).await;
            return;
        }
    };
    let authority = match &request {
        Request::Connect { authority } | Request::Forward { authority, .. } => authority.clone(),
    };
    let upstream = match inside.as_ref().and_then(|i| Some((i.ns.clone(), i.resolve(&authority)?))) {
        Some((ns, target)) => tokio::time::timeout(CONNECT_TIMEOUT, crate::forward::connect_inside(ns, target)).await,
        None => tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&authority)).await,
    };
    let mut upstream = match upstream {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let _ = client.write_all(format!("HTTP/1.1 502 Bad Gateway\r\n\r\n{authority}: {e}\n").as_bytes()).await;
            return;
        }
        Err(_) => {
            let _ = client.write_all(b"HTTP/1.1 504 Gateway Timeout\r\n\r\n").await;
            return;
        }
    };
    let sent = match request {
        Request::Connect { .. } => client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await,
        Request::Forward { head, .. } => upstream.write_all(&head).await,
    };
    // Bytes the client sent after the head (a body, or early TLS data) go upstream first.
    if sent.is_ok() && upstream.write_all(&buf[end..]).await.is_ok() {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_is_a_tunnel() {
        assert_eq!(
            parse_head(b"CONNECT deb.example:443 HTTP/1.1\r\nHost: deb.example:443\r\n\r\n"),
            Ok(Request::Connect { authority: "deb.example:443".into() })
        );
    }

    #[test]
    fn absolute_get_is_rewritten_to_origin_form() {
        let r = parse_head(b"GET http://h.example/a/b?c HTTP/1.1\r\nHost: h.example\r\nProxy-Connection: keep-alive\r\n\r\n").unwrap();
        let Request::Forward { authority, head } = r else { panic!() };
        assert_eq!(authority, "h.example:80");
        assert_eq!(head, b"GET /a/b?c HTTP/1.1\r\nHost: h.example\r\n\r\n");
    }

    #[test]
    fn other_schemes_and_garbage_are_refused() {
        assert_eq!(parse_head(b"GET https://h/ HTTP/1.1\r\n\r\n"), Err(ProxyError::Unsupported));
        assert_eq!(parse_head(b"GET /local HTTP/1.1\r\n\r\n"), Err(ProxyError::Unsupported));
        assert_eq!(parse_head(b"\x00\x01garbage\r\n\r\n"), Err(ProxyError::Malformed));
        assert_eq!(parse_head(b"CONNECT nohost HTTP/1.1\r\n\r\n"), Err(ProxyError::Malformed));
    }

    /// Bounded fuzzing of what guests send: never a panic.
    #[test]
    fn random_heads_never_panic() {
        let mut seed = 0x2545f4914f6cdd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let base = b"GET http://a.example:8080/x HTTP/1.1\r\nHost: a\r\n\r\n".to_vec();
        for _ in 0..20_000 {
            let mut v = base.clone();
            for _ in 0..(next() % 6) {
                let i = (next() as usize) % v.len();
                v[i] = next() as u8;
            }
            let _ = parse_head(&v);
            let junk: Vec<u8> = (0..(next() % 200)).map(|_| next() as u8).collect();
            let _ = parse_head(&junk);
        }
    }

    fn inside() -> Inside {
        Inside {
            ns: Arc::new(NetNs::current().unwrap()),
            subnet: Subnet::parse("192.168.66.0/24").unwrap(),
            domain: "c1".into(),
            hosts: vec![("registry".into(), Ipv4Addr::new(192, 168, 66, 2)), ("node02".into(), Ipv4Addr::new(192, 168, 66, 102))],
        }
    }

    #[test]
    fn cluster_names_and_addresses_are_inside() {
        let i = inside();
        let at = |s: &str| Some(s.parse::<SocketAddr>().unwrap());
        assert_eq!(i.resolve("registry:5000"), at("192.168.66.2:5000"));
        assert_eq!(i.resolve("REGISTRY.c1.:5000"), at("192.168.66.2:5000"));
        assert_eq!(i.resolve("node02.c1:22"), at("192.168.66.102:22"));
        assert_eq!(i.resolve("192.168.66.77:80"), at("192.168.66.77:80"));
        assert_eq!(i.resolve("192.168.67.1:80"), None);
        assert_eq!(i.resolve("deb.debian.org:80"), None);
        assert_eq!(i.resolve("registry.other:5000"), None);
        assert_eq!(i.resolve("registry"), None);
    }

    /// A request for a cluster name reaches the address inside (here the test's own namespace
    /// stands in for the cluster's, and the "registry" listens on loopback).
    #[tokio::test]
    async fn cluster_names_are_connected_inside() {
        let origin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = origin.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = origin.accept().await.unwrap();
            let mut buf = vec![0u8; 1024];
            let _ = s.read(&mut buf).await.unwrap();
            s.write_all(b"HTTP/1.0 200 OK\r\n\r\nfrom inside").await.unwrap();
        });
        let mut i = inside();
        i.hosts.push(("myreg".into(), Ipv4Addr::LOCALHOST));
        let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy_addr = proxy.local_addr().unwrap();
        let (_stop_tx, stop) = watch::channel(false);
        tokio::spawn(serve(proxy, Some(i), stop));
        let mut c = TcpStream::connect(proxy_addr).await.unwrap();
        c.write_all(format!("GET http://myreg:{port}/v2/ HTTP/1.1\r\nHost: myreg\r\n\r\n").as_bytes()).await.unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).await.unwrap();
        assert!(out.ends_with("from inside"), "{out}");
    }

    #[tokio::test]
    async fn proxy_relays_get_and_connect_on_loopback() {
        let origin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin_addr = origin.local_addr().unwrap();
        tokio::spawn(async move {
            for _ in 0..2 {
                let (mut s, _) = origin.accept().await.unwrap();
                let mut buf = vec![0u8; 1024];
                let n = s.read(&mut buf).await.unwrap();
                let got = String::from_utf8_lossy(&buf[..n]).into_owned();
                let body = if got.starts_with("GET /hello") { "hello from origin" } else { "tunnel ok" };
                s.write_all(format!("HTTP/1.0 200 OK\r\n\r\n{body}").as_bytes()).await.unwrap();
            }
        });
        let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy_addr = proxy.local_addr().unwrap();
        let (_stop_tx, stop) = watch::channel(false);
        tokio::spawn(serve(proxy, None, stop));

        let mut c = TcpStream::connect(proxy_addr).await.unwrap();
        c.write_all(format!("GET http://{origin_addr}/hello HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).await.unwrap();
        assert!(out.ends_with("hello from origin"), "{out}");

        let mut c = TcpStream::connect(proxy_addr).await.unwrap();
        c.write_all(format!("CONNECT {origin_addr} HTTP/1.1\r\n\r\n").as_bytes()).await.unwrap();
        let mut head = [0u8; 39];
        c.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"HTTP/1.1 200 Connection established\r\n\r\n");
        c.write_all(b"PING / HTTP/1.0\r\n\r\n").await.unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).await.unwrap();
        assert!(out.ends_with("tunnel ok"), "{out}");
    }
}
