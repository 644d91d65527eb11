//! The whole server on loopback, driven by a raw HTTP/1.1 client: the push and pull sequences
//! skopeo, containerd and docker use, and the refusals the spec asks for.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use sha2::Digest as _;
use tokio::sync::watch;

use super::manifest::{tests::image, OCI_MANIFEST};
use super::reference::Digest;
use super::storage::Storage;

struct Server {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, rx) = watch::channel(false);
        // A single-threaded runtime, like the supervisor's.
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move { super::serve(tokio::net::TcpListener::from_std(listener).unwrap(), storage, rx).await });
        });
        Server { addr, dir, stop, thread: Some(thread) }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    fn code(&self) -> String {
        self.json()["errors"][0]["code"].as_str().unwrap_or_default().to_string()
    }
}

/// One request on its own connection; `None` body means no Content-Length, `chunked` sends
/// the body with chunked transfer encoding.
fn send(addr: SocketAddr, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8], chunked: bool) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: registry\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if chunked {
        head.push_str("Transfer-Encoding: chunked\r\n\r\n");
        s.write_all(head.as_bytes()).unwrap();
        for c in body.chunks(7) {
            s.write_all(format!("{:x}\r\n", c.len()).as_bytes()).unwrap();
            s.write_all(c).unwrap();
            s.write_all(b"\r\n").unwrap();
        }
        s.write_all(b"0\r\n\r\n").unwrap();
    } else {
        head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body).unwrap();
    }
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head") + 4;
    let text = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = text.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
    Reply { status, headers, body: raw[end..].to_vec() }
}

fn req(addr: SocketAddr, method: &str, target: &str, body: &[u8]) -> Reply {
    send(addr, method, target, &[], body, false)
}

/// Monolithic upload; returns the digest.
fn push_blob(addr: SocketAddr, repo: &str, data: &[u8]) -> Digest {
    let d = Digest::of(data);
    let r = req(addr, "POST", &format!("/v2/{repo}/blobs/uploads/?digest={d}"), data);
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    d
}

#[test]
fn api_version_check() {
    let s = Server::start();
    let r = req(s.addr, "GET", "/v2/", b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Docker-Distribution-API-Version"), Some("registry/2.0"));
}

#[test]
fn chunked_upload_status_finish_and_pull_with_ranges() {
    let s = Server::start();
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let digest = Digest::of(&data);

    let r = req(s.addr, "POST", "/v2/a/b/blobs/uploads/", b"");
    assert_eq!(r.status, 202);
    let location = r.header("Location").unwrap().to_string();
    assert!(location.starts_with("/v2/a/b/blobs/uploads/"), "{location}");
    assert_eq!(r.header("Docker-Upload-UUID"), location.rsplit('/').next());
    assert_eq!(r.header("Range"), Some("0-0"));

    let r = send(s.addr, "PATCH", &location, &[("Content-Range", "0-59999")], &data[..60_000], false);
    assert_eq!(r.status, 202);
    assert_eq!(r.header("Range"), Some("0-59999"));
    // A chunk that does not continue the upload is refused and changes nothing.
    let r = send(s.addr, "PATCH", &location, &[("Content-Range", "10-19")], b"0123456789", false);
    assert_eq!(r.status, 416);
    assert_eq!(r.header("Range"), Some("0-59999"));
    // Streamed without a length (chunked), like docker and containerd.
    let r = send(s.addr, "PATCH", &location, &[], &data[60_000..90_000], true);
    assert_eq!(r.status, 202);
    let r = req(s.addr, "GET", &location, b"");
    assert_eq!(r.status, 204);
    assert_eq!(r.header("Range"), Some("0-89999"));
    // The last chunk comes with the PUT.
    let r = req(s.addr, "PUT", &format!("{location}?digest={}", digest.to_string().replace(':', "%3A")), &data[90_000..]);
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("Docker-Content-Digest"), Some(digest.to_string().as_str()));
    assert_eq!(r.header("Location"), Some(format!("/v2/a/b/blobs/{digest}").as_str()));
    // The session is gone.
    assert_eq!(req(s.addr, "GET", &location, b"").status, 404);

    let r = req(s.addr, "HEAD", &format!("/v2/a/b/blobs/{digest}"), b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Length"), Some("100000"));
    assert!(r.body.is_empty());
    let r = req(s.addr, "GET", &format!("/v2/a/b/blobs/{digest}"), b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Docker-Content-Digest"), Some(digest.to_string().as_str()));
    assert_eq!(r.body, data);
    let r = send(s.addr, "GET", &format!("/v2/a/b/blobs/{digest}"), &[("Range", "bytes=99990-")], b"", false);
    assert_eq!(r.status, 206);
    assert_eq!(r.header("Content-Range"), Some("bytes 99990-99999/100000"));
    assert_eq!(r.body, &data[99_990..]);
    let r = send(s.addr, "GET", &format!("/v2/a/b/blobs/{digest}"), &[("Range", "bytes=100000-")], b"", false);
    assert_eq!(r.status, 416);
}

#[test]
fn a_wrong_digest_is_refused_and_nothing_is_stored() {
    let s = Server::start();
    let claimed = Digest::of(b"what the client claims");
    let r = req(s.addr, "POST", "/v2/r/blobs/uploads/", b"");
    let location = r.header("Location").unwrap().to_string();
    assert_eq!(req(s.addr, "PATCH", &location, b"what was sent").status, 202);
    let r = req(s.addr, "PUT", &format!("{location}?digest={claimed}"), b"");
    assert_eq!(r.status, 400);
    assert_eq!(r.code(), "DIGEST_INVALID");
    assert_eq!(req(s.addr, "GET", &location, b"").status, 404, "the upload is discarded");
    for d in [claimed, Digest::of(b"what was sent")] {
        let r = req(s.addr, "GET", &format!("/v2/r/blobs/{d}"), b"");
        assert_eq!((r.status, r.code()), (404, "BLOB_UNKNOWN".to_string()));
    }
    // Monolithic too.
    let r = req(s.addr, "POST", &format!("/v2/r/blobs/uploads/?digest={}", Digest::of(b"x")), b"y");
    assert_eq!((r.status, r.code()), (400, "DIGEST_INVALID".to_string()));
    let count = |d: &str| std::fs::read_dir(s.dir.path().join(d)).map_or(0, |rd| rd.count());
    assert_eq!(count("uploads"), 0);
    assert_eq!(count("blobs/sha256"), 0);
    // Other algorithms are refused by name.
    let r = req(s.addr, "GET", &format!("/v2/r/blobs/sha512:{}", "a".repeat(128)), b"");
    assert_eq!(r.status, 400);
    assert!(r.json()["errors"][0]["message"].as_str().unwrap().contains("sha256"));
}

#[test]
fn cross_repository_mounts() {
    let s = Server::start();
    let d = push_blob(s.addr, "src/repo", b"shared layer");
    let r = req(s.addr, "POST", &format!("/v2/dst/blobs/uploads/?mount={d}&from=src/repo"), b"");
    assert_eq!(r.status, 201);
    assert_eq!(r.header("Location"), Some(format!("/v2/dst/blobs/{d}").as_str()));
    let missing = Digest::of(b"not here");
    let r = req(s.addr, "POST", &format!("/v2/dst/blobs/uploads/?mount={missing}&from=src/repo"), b"");
    assert_eq!(r.status, 202, "an unknown blob gets an ordinary upload session");
    assert!(r.header("Location").unwrap().contains("/blobs/uploads/"));
}

#[test]
fn manifests_tags_and_catalog() {
    let s = Server::start();
    let config = push_blob(s.addr, "app", b"{}");
    let layer = push_blob(s.addr, "app", b"layer bytes");
    let ct = [("Content-Type", OCI_MANIFEST)];

    let missing = Digest::of(b"missing layer");
    let r = send(s.addr, "PUT", "/v2/app/manifests/v1", &ct, &image(&config, 2, &[(&missing, 13)]), false);
    assert_eq!((r.status, r.code()), (400, "MANIFEST_BLOB_UNKNOWN".to_string()));
    let r = send(s.addr, "PUT", "/v2/app/manifests/v1", &ct, b"{not json", false);
    assert_eq!((r.status, r.code()), (400, "MANIFEST_INVALID".to_string()));
    let r = send(s.addr, "PUT", "/v2/App/manifests/v1", &ct, b"{}", false);
    assert_eq!((r.status, r.code()), (400, "NAME_INVALID".to_string()));

    let m = image(&config, 2, &[(&layer, 11)]);
    let digest = Digest::of(&m);
    for tag in ["v1", "latest", "v0"] {
        let r = send(s.addr, "PUT", &format!("/v2/team/app/manifests/{tag}"), &ct, &m, false);
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.header("Docker-Content-Digest"), Some(digest.to_string().as_str()));
        assert_eq!(r.header("Location"), Some(format!("/v2/team/app/manifests/{digest}").as_str()));
    }
    for reference in ["v1".to_string(), digest.to_string()] {
        let r = req(s.addr, "GET", &format!("/v2/team/app/manifests/{reference}"), b"");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("Content-Type"), Some(OCI_MANIFEST));
        assert_eq!(r.header("Docker-Content-Digest"), Some(digest.to_string().as_str()));
        assert_eq!(r.body, m);
        let r = req(s.addr, "HEAD", &format!("/v2/team/app/manifests/{reference}"), b"");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("Content-Length"), Some(m.len().to_string().as_str()));
    }
    let r = req(s.addr, "GET", "/v2/team/app/manifests/nope", b"");
    assert_eq!((r.status, r.code()), (404, "MANIFEST_UNKNOWN".to_string()));

    let r = req(s.addr, "GET", "/v2/team/app/tags/list", b"");
    assert_eq!(r.json(), serde_json::json!({ "name": "team/app", "tags": ["latest", "v0", "v1"] }));
    let r = req(s.addr, "GET", "/v2/team/app/tags/list?n=2", b"");
    assert_eq!(r.json()["tags"], serde_json::json!(["latest", "v0"]));
    assert!(r.header("Link").unwrap().contains("last=v0"), "{:?}", r.header("Link"));
    let r = req(s.addr, "GET", "/v2/nothing/tags/list", b"");
    assert_eq!((r.status, r.code()), (404, "NAME_UNKNOWN".to_string()));

    let r = req(s.addr, "GET", "/v2/_catalog", b"");
    assert_eq!(r.json(), serde_json::json!({ "repositories": ["team/app"] }));
}

#[test]
fn a_cancelled_upload_is_gone() {
    let s = Server::start();
    let r = req(s.addr, "POST", "/v2/r/blobs/uploads/", b"");
    let location = r.header("Location").unwrap().to_string();
    assert_eq!(req(s.addr, "PATCH", &location, b"partial").status, 202);
    assert_eq!(req(s.addr, "DELETE", &location, b"").status, 204);
    assert_eq!(req(s.addr, "PATCH", &location, b"more").status, 404);
    // An upload id of another repository is unknown there.
    let r = req(s.addr, "POST", "/v2/r/blobs/uploads/", b"");
    let id = r.header("Docker-Upload-UUID").unwrap().to_string();
    let r = req(s.addr, "PATCH", &format!("/v2/other/blobs/uploads/{id}"), b"x");
    assert_eq!((r.status, r.code()), (404, "BLOB_UPLOAD_UNKNOWN".to_string()));
}

/// 64 MiB streamed in one PATCH: it arrives whole and hashes right (memory is measured by the
/// integration test on the real supervisor).
#[test]
fn a_large_streamed_blob_round_trips() {
    let s = Server::start();
    let mut data = vec![0u8; 64 << 20];
    for (i, b) in data.iter_mut().enumerate() {
        *b = (i as u64).wrapping_mul(0x9e37_79b9) as u8 ^ (i >> 16) as u8;
    }
    let digest = Digest::from_sha256(&sha2::Sha256::digest(&data));
    let r = req(s.addr, "POST", "/v2/big/blobs/uploads/", b"");
    let location = r.header("Location").unwrap().to_string();
    assert_eq!(send(s.addr, "PATCH", &location, &[], &data, false).status, 202);
    let r = req(s.addr, "PUT", &format!("{location}?digest={digest}"), b"");
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let r = req(s.addr, "GET", &format!("/v2/big/blobs/{digest}"), b"");
    assert_eq!(r.body.len(), data.len());
    assert!(r.body == data);
}
