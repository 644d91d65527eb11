//! Egress for guests: an HTTP proxy on the bridge (`<bridge>:3128`) that the supervisor serves
//! from the host's namespace. `CONNECT host:port` tunnels any TCP (HTTPS, git, registries);
//! plain `GET http://…` requests are relayed. Provisioning (apt, curl, container pulls) works
//! through it, root or rootless alike.
//!
//! Why a proxy and not veth + masquerade: it needs nothing in the host namespace — no veth, no
//! NAT rule, no `ip_forward` change — so a killed supervisor leaks nothing and the rootless path
//! is the same code. The cost: only TCP leaves the cluster (DNS is forwarded separately).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

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
/// Upstream connections are made from the thread's (host) namespace.
pub async fn serve(listener: TcpListener, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((client, _)) = accepted {
                    tokio::spawn(handle(client));
                }
            }
            _ = stop.changed() => return,
        }
    }
}

async fn handle(mut client: TcpStream) {
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
    let upstream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&authority)).await;
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
        tokio::spawn(serve(proxy, stop));

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
