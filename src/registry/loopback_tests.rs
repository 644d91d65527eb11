//! The whole server on loopback, driven by a raw HTTP/1.1 client: the push and pull sequences
//! skopeo, containerd and docker use, and the refusals the spec asks for.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sha2::Digest as _;
use tokio::sync::watch;

use super::manifest::{tests::image, OCI_MANIFEST};
use super::reference::Digest;
use super::server::{Registry, Settings, UPLOAD_IDLE};
use super::storage::Storage;

struct Server {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    /// The registry served, to drive its idle-upload expiry with a chosen clock.
    registry: Arc<Registry>,
    /// The server's runtime, to run that expiry on.
    rt: tokio::runtime::Handle,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start() -> Server {
        Server::on(tempfile::tempdir().unwrap())
    }

    /// A server on the registry directory `dir`.
    fn on(dir: tempfile::TempDir) -> Server {
        let storage = Storage::open(dir.path()).unwrap();
        let registry = Registry::new(storage, Settings::default());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, rx) = watch::channel(false);
        // A single-threaded runtime, like the supervisor's.
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let handle = rt.handle().clone();
        let served = registry.clone();
        let thread = std::thread::spawn(move || {
            rt.block_on(async move { served.serve(tokio::net::TcpListener::from_std(listener).unwrap(), rx).await });
        });
        Server { addr, dir, registry, rt: handle, stop, thread: Some(thread) }
    }

    /// Stops this server, as `vm down` stops the supervisor, and starts another on the same
    /// directory, as the next `vm up` of the name does.
    fn restart(mut self) -> Server {
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        drop(self);
        Server::on(dir)
    }

    /// Runs the idle-upload expiry as if the clock read `now`.
    fn expire_idle_uploads(&self, now: tokio::time::Instant) -> usize {
        self.rt.block_on(self.registry.expire_idle_uploads(now))
    }
}

/// Files under the registry's `uploads/` (at any depth) and their total size.
pub(crate) fn uploads_on_disk(root: &Path) -> (usize, u64) {
    let mut found = (0, 0);
    let mut stack = vec![root.join("uploads")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                found = (found.0 + 1, found.1 + meta.len());
            }
        }
    }
    found
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

/// One request on its own connection, the whole body sent before the answer is read (as
/// simple clients do). `chunk: Some(n)` sends the body with chunked transfer encoding, `n`
/// bytes a chunk; `None` with a Content-Length.
fn send(addr: SocketAddr, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8], chunk: Option<usize>) -> Reply {
    let mut s = connect(addr);
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: registry\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    let sent = match chunk {
        Some(n) => {
            head.push_str("Transfer-Encoding: chunked\r\n\r\n");
            let mut framed = head.into_bytes();
            for c in body.chunks(n) {
                framed.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                framed.extend_from_slice(c);
                framed.extend_from_slice(b"\r\n");
            }
            framed.extend_from_slice(b"0\r\n\r\n");
            s.write_all(&framed)
        }
        None => {
            head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
            s.write_all(head.as_bytes()).and_then(|_| s.write_all(body))
        }
    };
    sent.unwrap_or_else(|e| panic!("{method} {target}: the server stopped reading the request: {e}"));
    read_reply(s)
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    // A hang fails the test instead of blocking it.
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
    s
}

fn read_reply(mut s: TcpStream) -> Reply {
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap_or_else(|e| panic!("reading the answer: {e} (after {} bytes)", raw.len()));
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head") + 4;
    let text = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = text.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
    Reply { status, headers, body: raw[end..].to_vec() }
}

fn req(addr: SocketAddr, method: &str, target: &str, body: &[u8]) -> Reply {
    send(addr, method, target, &[], body, None)
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

    let r = send(s.addr, "PATCH", &location, &[("Content-Range", "0-59999")], &data[..60_000], None);
    assert_eq!(r.status, 202);
    assert_eq!(r.header("Range"), Some("0-59999"));
    // A chunk that does not continue the upload is refused and changes nothing.
    let r = send(s.addr, "PATCH", &location, &[("Content-Range", "10-19")], b"0123456789", None);
    assert_eq!(r.status, 416);
    assert_eq!(r.header("Range"), Some("0-59999"));
    // Streamed without a length (chunked), like docker and containerd.
    let r = send(s.addr, "PATCH", &location, &[], &data[60_000..90_000], Some(7));
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
    let r = send(s.addr, "GET", &format!("/v2/a/b/blobs/{digest}"), &[("Range", "bytes=99990-")], b"", None);
    assert_eq!(r.status, 206);
    assert_eq!(r.header("Content-Range"), Some("bytes 99990-99999/100000"));
    assert_eq!(r.body, &data[99_990..]);
    let r = send(s.addr, "GET", &format!("/v2/a/b/blobs/{digest}"), &[("Range", "bytes=100000-")], b"", None);
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
    assert_eq!(uploads_on_disk(s.dir.path()), (0, 0));
    assert_eq!(std::fs::read_dir(s.dir.path().join("blobs/sha256")).map_or(0, |rd| rd.count()), 0);
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
    let r = send(s.addr, "PUT", "/v2/app/manifests/v1", &ct, &image(&config, 2, &[(&missing, 13)]), None);
    assert_eq!((r.status, r.code()), (400, "MANIFEST_BLOB_UNKNOWN".to_string()));
    let r = send(s.addr, "PUT", "/v2/app/manifests/v1", &ct, b"{not json", None);
    assert_eq!((r.status, r.code()), (400, "MANIFEST_INVALID".to_string()));
    let r = send(s.addr, "PUT", "/v2/App/manifests/v1", &ct, b"{}", None);
    assert_eq!((r.status, r.code()), (400, "NAME_INVALID".to_string()));

    let m = image(&config, 2, &[(&layer, 11)]);
    let digest = Digest::of(&m);
    for tag in ["v1", "latest", "v0"] {
        let r = send(s.addr, "PUT", &format!("/v2/team/app/manifests/{tag}"), &ct, &m, None);
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
    assert_eq!(send(s.addr, "PATCH", &location, &[], &data, None).status, 202);
    let r = req(s.addr, "PUT", &format!("{location}?digest={digest}"), b"");
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let r = req(s.addr, "GET", &format!("/v2/big/blobs/{digest}"), b"");
    assert_eq!(r.body.len(), data.len());
    assert!(r.body == data);
}

/// `len` bytes of a pattern that no shift of itself repeats within 251 bytes.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn start_upload(addr: SocketAddr, repo: &str) -> String {
    let r = req(addr, "POST", &format!("/v2/{repo}/blobs/uploads/"), b"");
    assert_eq!(r.status, 202);
    r.header("Location").unwrap().to_string()
}

/// The issue's case, scaled down: a 20 MiB PATCH cut after 15 MiB.
#[test]
fn a_patch_cut_half_way_leaves_the_upload_where_it_was() {
    let s = Server::start();
    let data = pattern(21 << 20);
    let location = start_upload(s.addr, "cut");
    let r = send(s.addr, "PATCH", &location, &[("Content-Range", "0-1048575")], &data[..1 << 20], None);
    assert_eq!(r.status, 202);

    let mut c = connect(s.addr);
    let head = format!("PATCH {location} HTTP/1.1\r\nHost: registry\r\nContent-Range: 1048576-22020095\r\nContent-Length: {}\r\n\r\n", 20 << 20);
    c.write_all(head.as_bytes()).unwrap();
    c.write_all(&data[1 << 20..16 << 20]).unwrap();
    // The client goes away half-way; it still reads, so the server's end of the request shows:
    // the connection closes once the server is done with it.
    c.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);

    let r = req(s.addr, "GET", &location, b"");
    assert_eq!((r.status, r.header("Range")), (204, Some("0-1048575")), "the upload is back where the cut chunk started");
    assert_eq!(uploads_on_disk(s.dir.path()), (1, 1 << 20), "the 15 MiB of the cut chunk are off the disk");
    // And it carries on from there.
    let r = send(s.addr, "PATCH", &location, &[("Content-Range", "1048576-22020095")], &data[1 << 20..], None);
    assert_eq!(r.status, 202);
    let digest = Digest::of(&data);
    assert_eq!(req(s.addr, "PUT", &format!("{location}?digest={digest}"), b"").status, 201);
    assert_eq!(uploads_on_disk(s.dir.path()), (0, 0));
}

#[test]
fn uploads_in_progress_are_gone_after_a_restart() {
    let s = Server::start();
    let location = start_upload(s.addr, "r");
    assert_eq!(req(s.addr, "PATCH", &location, &pattern(15 << 20)).status, 202);
    assert_eq!(uploads_on_disk(s.dir.path()), (1, 15 << 20));

    let s = s.restart();
    let r = req(s.addr, "GET", &location, b"");
    assert_eq!((r.status, r.code()), (404, "BLOB_UPLOAD_UNKNOWN".to_string()));
    assert_eq!(uploads_on_disk(s.dir.path()), (0, 0), "the session is gone, so is its file");
}

#[test]
fn an_upload_idle_past_the_timeout_is_dropped_with_its_file() {
    let s = Server::start();
    let location = start_upload(s.addr, "r");
    assert_eq!(req(s.addr, "PATCH", &location, &pattern(1 << 20)).status, 202);
    let last_request = tokio::time::Instant::now();

    assert_eq!(s.expire_idle_uploads(last_request + UPLOAD_IDLE - Duration::from_secs(1)), 0);
    assert_eq!(uploads_on_disk(s.dir.path()), (1, 1 << 20));
    assert_eq!(s.expire_idle_uploads(last_request + UPLOAD_IDLE), 1);
    assert_eq!(uploads_on_disk(s.dir.path()), (0, 0));
    let r = req(s.addr, "PATCH", &location, b"more");
    assert_eq!((r.status, r.code()), (404, "BLOB_UPLOAD_UNKNOWN".to_string()));
}

#[test]
fn a_chunk_whose_range_disagrees_with_its_body_is_refused_and_changes_nothing() {
    let s = Server::start();
    let data = pattern(150);
    let location = start_upload(s.addr, "r");
    let refused = |r: &Reply, range: &str| {
        assert_eq!(r.status, 416, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.code(), "BLOB_UPLOAD_INVALID");
        assert_eq!(r.header("Range"), Some(range));
        assert_eq!(r.header("Location"), Some(location.as_str()));
    };
    // Shorter than announced, with a Content-Length (refused before reading) and streamed.
    refused(&send(s.addr, "PATCH", &location, &[("Content-Range", "0-99")], &data[..50], None), "0-0");
    refused(&send(s.addr, "PATCH", &location, &[("Content-Range", "0-99")], &data[..50], Some(7)), "0-0");
    assert_eq!(uploads_on_disk(s.dir.path()), (1, 0));
    assert_eq!(send(s.addr, "PATCH", &location, &[("Content-Range", "0-49")], &data[..50], None).status, 202);
    // Longer than announced, streamed: the chunk is written, then taken back.
    refused(&send(s.addr, "PATCH", &location, &[("Content-Range", "50-59")], &data[50..], Some(7)), "0-49");
    assert_eq!(uploads_on_disk(s.dir.path()), (1, 50));
    assert_eq!(req(s.addr, "GET", &location, b"").header("Range"), Some("0-49"));

    assert_eq!(send(s.addr, "PATCH", &location, &[("Content-Range", "50-149")], &data[50..], None).status, 202);
    let r = req(s.addr, "PUT", &format!("{location}?digest={}", Digest::of(&data)), b"");
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
}

#[test]
fn an_oversized_manifest_is_answered_413_after_it_was_sent() {
    let s = Server::start();
    let huge = vec![b' '; 20 << 20];
    for chunk in [None, Some(64 << 10)] {
        let r = send(s.addr, "PUT", "/v2/app/manifests/big", &[("Content-Type", OCI_MANIFEST)], &huge, chunk);
        assert_eq!((r.status, r.code()), (413, "MANIFEST_INVALID".to_string()), "chunk {chunk:?}");
        assert_eq!(r.header("Content-Type"), Some("application/json"));
    }
    assert_eq!(req(s.addr, "GET", "/v2/app/manifests/big", b"").status, 404);
}

#[test]
fn an_unsatisfiable_blob_range_is_416_with_the_blob_size() {
    let s = Server::start();
    let d = push_blob(s.addr, "r", &pattern(1000));
    for range in ["bytes=1000-", "bytes=2000-3000"] {
        let r = send(s.addr, "GET", &format!("/v2/r/blobs/{d}"), &[("Range", range)], b"", None);
        assert_eq!(r.status, 416, "{range}");
        assert_eq!(r.header("Content-Range"), Some("bytes */1000"), "{range}");
        let body = String::from_utf8_lossy(&r.body);
        assert!(!body.contains("BLOB_UPLOAD"), "not an upload error: {body}");
        assert!(body.contains("1000 bytes"), "{body}");
    }
}
