//! The cluster registry with real guests: an image pushed from the host with skopeo through the
//! `registry` forward is read by a node as `registry:5000`, wrong digests are refused, blobs
//! survive `down`/`up` of the same name, `--registry-dir` puts them where asked, and a large
//! streamed blob leaves the supervisor's memory flat.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{host_port, TestCluster};
use sha2::{Digest, Sha256};

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// One HTTP/1.1 exchange on its own connection: status, head and body.
struct Reply {
    status: u16,
    head: String,
    body: Vec<u8>,
}

fn http(port: u16, method: &str, target: &str, body: &[u8]) -> Reply {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("the registry forward answers");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(s, "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n", body.len()).unwrap();
    s.write_all(body).unwrap();
    read_reply(s)
}

fn read_reply(mut s: TcpStream) -> Reply {
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head") + 4;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).expect("a status code");
    Reply { status, head, body: raw[end..].to_vec() }
}

impl Reply {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
}

/// An OCI image layout made by hand: one tar layer (with `hello.txt`), a config, a manifest and
/// `index.json` naming it `v1`. Returns the layout directory and the layer's tar bytes.
fn oci_layout(dir: &Path) -> (PathBuf, Vec<u8>) {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("hello.txt"), "hello from kvci's registry\n").unwrap();
    let tar = dir.join("layer.tar");
    let ok = Command::new("tar").arg("-C").arg(&src).arg("-cf").arg(&tar).arg("hello.txt").status().expect("tar");
    assert!(ok.success());
    let layer = std::fs::read(&tar).unwrap();

    let layout = dir.join("oci");
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |data: &[u8]| {
        let hex = sha256_hex(data);
        std::fs::write(blobs.join(&hex), data).unwrap();
        (format!("sha256:{hex}"), data.len())
    };
    let (layer_digest, layer_size) = put(&layer);
    let config = serde_json::json!({ "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": { "type": "layers", "diff_ids": [layer_digest] } });
    let (config_digest, config_size) = put(config.to_string().as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer_size }],
    });
    let (manifest_digest, manifest_size) = put(manifest.to_string().as_bytes());
    let index = serde_json::json!({ "schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest, "size": manifest_size,
        "annotations": { "org.opencontainers.image.ref.name": "v1" } }] });
    std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
    std::fs::write(layout.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    (layout, layer)
}

/// `skopeo copy` from the layout to the cluster registry through the forwarded port.
fn skopeo_push(layout: &Path, port: u16, dest: &str) {
    let out = Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false", "--retry-times", "2"])
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(format!("docker://127.0.0.1:{port}/{dest}"))
        .output()
        .expect("skopeo (Debian package skopeo, see scripts/install-deps.sh)");
    assert!(out.status.success(), "skopeo copy failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

/// Runs a shell command on node01 over `kvci vm ssh`, returning its stdout.
fn on_node(cluster: &str, script: &str) -> String {
    let out = common::run(&["vm", "ssh", "--name", cluster, "node01", "--", script]);
    assert!(out.status.success(), "`{script}` failed on node01:\n{}", common::stderr(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The layer digests of `repo:tag`, read from the registry.
fn layers(port: u16, repo: &str, tag: &str) -> Vec<String> {
    let r = http(port, "GET", &format!("/v2/{repo}/manifests/{tag}"), b"");
    assert_eq!(r.status, 200, "{}", r.head);
    r.json()["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()).collect()
}

#[test]
fn nodes_pull_what_the_host_pushed_and_it_survives_down_and_up() {
    const NAME: &str = "it-reg";
    let default_dir = common::data_dir().join("registries").join(NAME);
    let _ = std::fs::remove_dir_all(&default_dir);
    let tmp = tempfile::tempdir().unwrap();
    let (layout, _) = oci_layout(tmp.path());

    let c = TestCluster::up(NAME, &[]);
    let status = c.status();
    assert_eq!(status["registry_dir"].as_str().map(PathBuf::from), Some(default_dir.clone()));
    let port = host_port(&status, "registry");
    let ports = common::run(&["vm", "ports", "--name", NAME, "registry"]);
    assert_eq!(String::from_utf8_lossy(&ports.stdout).trim(), port.to_string());
    let r = http(port, "GET", "/v2/", b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Docker-Distribution-API-Version").as_deref(), Some("registry/2.0"));

    skopeo_push(&layout, port, "kvci/hello:v1");

    // From the host, through the forward.
    let r = http(port, "GET", "/v2/kvci/hello/tags/list", b"");
    assert_eq!(r.json(), serde_json::json!({ "name": "kvci/hello", "tags": ["v1"] }));
    let layer = layers(port, "kvci/hello", "v1").remove(0);
    let blob = http(port, "GET", &format!("/v2/kvci/hello/blobs/{layer}"), b"");
    assert_eq!(blob.status, 200);
    assert_eq!(format!("sha256:{}", sha256_hex(&blob.body)), layer);

    // From the node, as registry:5000, over IPv4 and IPv6 (the name has both addresses).
    let tags = on_node(NAME, "wget -q -O - http://registry:5000/v2/kvci/hello/tags/list");
    assert_eq!(tags.trim(), r#"{"name":"kvci/hello","tags":["v1"]}"#);
    let sums = on_node(
        NAME,
        &format!(
            "wget -q -O /tmp/l http://registry:5000/v2/kvci/hello/blobs/{layer} && sha256sum /tmp/l; \
             wget -q -O /tmp/p 'http://[fd00::1]:5000/v2/kvci/hello/blobs/{layer}' && sha256sum /tmp/p"
        ),
    );
    let hex = layer.trim_start_matches("sha256:");
    assert!(sums.contains(&format!("{hex}  /tmp/l")), "{sums}");
    assert!(sums.contains(&format!("{hex}  /tmp/p")), "over IPv6: {sums}");

    // An upload whose content does not match its digest is refused and stores nothing.
    let start = http(port, "POST", "/v2/kvci/bad/blobs/uploads/", b"");
    assert_eq!(start.status, 202, "{}", start.head);
    let location = start.header("Location").unwrap();
    let claimed = format!("sha256:{}", sha256_hex(b"what the client claims"));
    let r = http(port, "PUT", &format!("{location}?digest={claimed}"), b"what was really sent");
    assert_eq!(r.status, 400, "{}", r.head);
    assert_eq!(r.json()["errors"][0]["code"], "DIGEST_INVALID");
    for d in [claimed, format!("sha256:{}", sha256_hex(b"what was really sent"))] {
        assert_eq!(http(port, "HEAD", &format!("/v2/kvci/bad/blobs/{d}"), b"").status, 404);
        assert!(!default_dir.join("blobs/sha256").join(d.trim_start_matches("sha256:")).exists());
    }

    // down keeps the registry; the next up of the name serves it again.
    let out = c.down();
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert!(!c.dir().exists());
    assert!(default_dir.join("blobs/sha256").join(hex).exists(), "down removed the registry");
    drop(c);
    let c = TestCluster::up(NAME, &[]);
    let port = host_port(&c.status(), "registry");
    let r = http(port, "GET", "/v2/kvci/hello/tags/list", b"");
    assert_eq!(r.json()["tags"], serde_json::json!(["v1"]));
    let tags = on_node(NAME, "wget -q -O - http://registry:5000/v2/_catalog");
    assert_eq!(tags.trim(), r#"{"repositories":["kvci/hello"]}"#);
    drop(c);
    let _ = std::fs::remove_dir_all(&default_dir);
}

/// Peak resident memory of a process, KiB.
fn vm_hwm_kib(pid: u64) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()).unwrap()
}

#[test]
fn registry_dir_is_honoured_and_a_large_blob_streams_in_bounded_memory() {
    const NAME: &str = "it-reg-dir";
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("my-registry");
    let c = TestCluster::up(NAME, &["--registry-dir", dir.to_str().unwrap()]);
    let status = c.status();
    assert_eq!(status["registry_dir"].as_str().map(PathBuf::from), Some(dir.clone()));
    let port = host_port(&status, "registry");
    let supervisor = status["supervisor_pid"].as_u64().unwrap();
    let before = vm_hwm_kib(supervisor);

    // One blob streamed in a single PATCH (KVCI_REGISTRY_BIG_MIB, 256 MiB by default), hashed
    // here as it is sent.
    let mib: usize = std::env::var("KVCI_REGISTRY_BIG_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(256);
    let start = http(port, "POST", "/v2/big/blobs/uploads/", b"");
    let location = start.header("Location").unwrap();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(300))).unwrap();
    write!(s, "PATCH {location} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n", mib << 20).unwrap();
    let mut hasher = Sha256::new();
    let mut chunk = vec![0u8; 1 << 20];
    let started = std::time::Instant::now();
    for i in 0..mib {
        for (j, b) in chunk.iter_mut().enumerate() {
            *b = (i * 31 + j * 7 + (j >> 9)) as u8;
        }
        hasher.update(&chunk);
        s.write_all(&chunk).unwrap();
    }
    let r = read_reply(s);
    assert_eq!(r.status, 202, "{}", r.head);
    let digest = format!("sha256:{}", hasher.finalize().iter().map(|b| format!("{b:02x}")).collect::<String>());
    let r = http(port, "PUT", &format!("{location}?digest={digest}"), b"");
    assert_eq!(r.status, 201, "{}", r.head);
    let took = started.elapsed().as_secs_f64();
    let after = vm_hwm_kib(supervisor);
    eprintln!("registry: {mib} MiB pushed in {took:.1}s ({:.0} MiB/s); supervisor peak RSS {before} → {after} KiB", mib as f64 / took);
    assert!(after < before + 64 * 1024, "supervisor peak memory grew from {before} to {after} KiB for a {mib} MiB blob");

    let hex = digest.trim_start_matches("sha256:");
    let stored = dir.join("blobs/sha256").join(hex);
    assert_eq!(std::fs::metadata(&stored).unwrap().len(), (mib as u64) << 20);
    let r = http(port, "HEAD", &format!("/v2/big/blobs/{digest}"), b"");
    assert_eq!(r.header("Content-Length"), Some(((mib as u64) << 20).to_string()));
    assert!(!common::data_dir().join("registries").join(NAME).exists(), "the default directory was used");

    let out = c.down();
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert!(stored.exists(), "down removed the registry");
}
