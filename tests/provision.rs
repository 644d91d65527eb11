//! Providers with real guests: building images from recipes, up hooks, shared layers, failures.

mod common;

use std::path::Path;

use common::{data_dir, kvci, stderr, TestCluster};

/// Writes a provider folder `name` under `dir` with the given recipe and files.
fn provider(dir: &Path, name: &str, recipe: &str, files: &[(&str, &str)]) {
    let p = dir.join(name);
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(p.join("provider.toml"), recipe).unwrap();
    for (f, body) in files {
        let path = p.join(f);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }
}

fn build(images: &Path, name: &str) -> std::process::Output {
    kvci().env("KVCI_IMAGES_DIR", images).args(["image", "build", name, "--accel", "tcg"]).output().unwrap()
}

fn manifest(name: &str) -> serde_json::Value {
    let out = kvci().args(["image", "inspect", name]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn etcd_cluster_of_three_is_healthy_and_replicates() {
    let out = kvci().args(["image", "build", "etcd", "--accel", "tcg"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let c = TestCluster::up("it-etcd", &["--image", "etcd", "--nodes", "3"]);
    let ssh = |node: &str, cmd: &[&str]| {
        let mut args = vec!["vm", "ssh", "--name", "it-etcd", node, "--"];
        args.extend_from_slice(cmd);
        common::run(&args)
    };
    let health = ssh("node01", &["etcdctl", "--endpoints", "http://node01:2379", "endpoint", "health", "--cluster"]);
    let text = String::from_utf8_lossy(&health.stdout).into_owned() + &stderr(&health);
    assert!(health.status.success(), "{text}");
    assert_eq!(text.matches("is healthy").count(), 3, "{text}");
    for n in ["node01", "node02", "node03"] {
        assert!(text.contains(&format!("http://{n}:2379 is healthy")), "{text}");
    }
    let put = ssh("node01", &["etcdctl", "--endpoints", "http://node01:2379", "put", "kvci-key", "written-on-node01"]);
    assert!(put.status.success(), "{}", stderr(&put));
    let get = ssh("node03", &["etcdctl", "--endpoints", "http://node03:2379", "get", "--print-value-only", "kvci-key"]);
    assert_eq!(String::from_utf8_lossy(&get.stdout).trim(), "written-on-node01");
    // The provider's own `etcd` port is forwarded to node01:2379.
    let port = common::run(&["vm", "ports", "--name", "it-etcd", "etcd"]);
    let port: u16 = String::from_utf8_lossy(&port.stdout).trim().parse().expect("an etcd host port");
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    std::io::Write::write_all(&mut s, b"GET /health HTTP/1.0\r\n\r\n").unwrap();
    let mut health = String::new();
    std::io::Read::read_to_string(&mut s, &mut health).unwrap();
    assert!(health.contains("\"health\":\"true\""), "{health}");
    // debian-12 nodes power off on the ACPI button (systemd-logind): a graceful down.
    let down = c.down();
    assert!(down.status.success());
    assert_eq!(stderr(&down).matches(": graceful").count(), 3, "{}", stderr(&down));
}

#[test]
fn failing_phase_stops_the_build_with_its_output_and_leaves_nothing() {
    let images = tempfile::tempdir().unwrap();
    provider(
        images.path(),
        "it-broken",
        "base = { image = \"tiny\" }\n[[phase]]\nname = \"fails\"\nscript = \"fail.sh\"\n",
        &[("fail.sh", "echo about-to-fail-7\nexit 3\n")],
    );
    let out = build(images.path(), "it-broken");
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(err.contains("exit code 3") && err.contains("about-to-fail-7"), "{err}");
    assert!(err.contains("nothing was added to the store"), "{err}");
    assert!(!kvci().args(["image", "inspect", "it-broken"]).output().unwrap().status.success());
    let staging: Vec<_> = std::fs::read_dir(data_dir().join("images/staging")).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(staging.is_empty(), "left in staging: {staging:?}");
}

#[test]
fn images_sharing_a_base_share_its_layer() {
    let images = tempfile::tempdir().unwrap();
    for (name, marker) in [("it-share-a", "a"), ("it-share-b", "b")] {
        provider(
            images.path(),
            name,
            "base = { image = \"tiny\" }\n[defaults]\nnodes = 2\n[[phase]]\nname = \"mark\"\nscript = \"mark.sh\"\n",
            &[("mark.sh", &format!("echo {marker} > /etc/kvci-mark\n"))],
        );
        let out = build(images.path(), name);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let tiny = manifest("tiny");
    let (a, b) = (manifest("it-share-a"), manifest("it-share-b"));
    assert_eq!(a["parent"], tiny["id"]);
    assert_eq!(b["parent"], tiny["id"]);
    assert_ne!(a["id"], b["id"]);
    assert_eq!(a["nodes"], 2);
    // One copy of the base on disk: both layers' disks are overlays backed by it.
    let layers = data_dir().join("images/layers");
    let base_disk = layers.join(tiny["id"].as_str().unwrap()).join("disk.qcow2");
    for m in [&a, &b] {
        let disk = layers.join(m["id"].as_str().unwrap()).join("disk.qcow2");
        let info = std::process::Command::new("qemu-img").args(["info", "-U", "--output=json"]).arg(&disk).output().unwrap();
        let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
        assert_eq!(info["backing-filename"], base_disk.to_str().unwrap());
    }
    // --compact flattens the chain into a standalone layer.
    let out = kvci().env("KVCI_IMAGES_DIR", images.path()).args(["image", "build", "it-share-a", "--accel", "tcg", "--compact", "--tag", "flat"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let flat = manifest("it-share-a:flat");
    assert!(flat["parent"].is_null(), "{flat}");
    let disk = layers.join(flat["id"].as_str().unwrap()).join("disk.qcow2");
    let info = std::process::Command::new("qemu-img").args(["info", "-U", "--output=json"]).arg(&disk).output().unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert!(info["backing-filename"].is_null(), "{info}");

    // A second build of the same recipe is a no-op.
    let out = build(images.path(), "it-share-a");
    assert!(stderr(&out).contains("up to date"), "{}", stderr(&out));
}

#[test]
fn recipe_errors_name_the_file_and_field() {
    let images = tempfile::tempdir().unwrap();
    provider(images.path(), "it-typo", "base = { image = \"tiny\" }\n[[phase]]\nname = \"x\"\nscirpt = \"a.sh\"\n", &[]);
    let err = stderr(&build(images.path(), "it-typo"));
    assert!(err.contains("it-typo/provider.toml") && err.contains("scirpt"), "{err}");
    provider(images.path(), "it-nobase", "base = { image = \"no-such-base\" }\n", &[]);
    let err = stderr(&build(images.path(), "it-nobase"));
    assert!(err.contains("no-such-base"), "{err}");
    let err = stderr(&build(images.path(), "it-nothing"));
    assert!(err.contains("no provider \"it-nothing\""), "{err}");
}

/// Serves each of `files` once per request, by path, on loopback; returns the base URL.
fn serve_files(files: Vec<(String, Vec<u8>)>, requests: usize) -> String {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for _ in 0..requests {
            let Ok((mut s, _)) = l.accept() else { return };
            let mut buf = [0u8; 2048];
            let n = s.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]).into_owned();
            let path = req.split_whitespace().nth(1).unwrap_or("/").trim_start_matches('/').to_string();
            match files.iter().find(|(p, _)| *p == path) {
                Some((_, body)) => {
                    let _ = s.write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()).as_bytes());
                    let _ = s.write_all(body);
                }
                None => {
                    let _ = s.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                }
            }
        }
    });
    format!("http://{addr}")
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    format!("{:x}", Sha256::digest(bytes))
}

#[test]
fn local_and_downloaded_bases_are_imported_and_checked() {
    // tiny's own files stand in for a published image.
    let tiny = manifest("tiny");
    let layer = data_dir().join("images/layers").join(tiny["id"].as_str().unwrap());
    let (disk, kernel, initrd) = (layer.join("disk.qcow2"), layer.join("vmlinuz"), layer.join("initrd.img"));
    let append = tiny["append"].as_str().unwrap().to_string();
    let images = tempfile::tempdir().unwrap();

    provider(
        images.path(),
        "it-local",
        &format!("base = {{ qcow2 = {{ disk = {disk:?}, kernel = {kernel:?}, initrd = {initrd:?}, append = {append:?} }} }}\n"),
        &[],
    );
    let out = build(images.path(), "it-local");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(manifest("it-local")["parent"].is_null());
    let c = TestCluster::up("it-local", &["--image", "it-local"]);
    assert_eq!(c.status()["nodes"][0]["state"], "running");
    drop(c);

    // A truncated qcow2 is refused with the file named.
    let broken = images.path().join("broken.qcow2");
    std::fs::write(&broken, &std::fs::read(&disk).unwrap()[..4096]).unwrap();
    provider(
        images.path(),
        "it-corrupt",
        &format!("base = {{ qcow2 = {{ disk = {broken:?}, kernel = {kernel:?}, initrd = {initrd:?}, append = \"\" }} }}\n"),
        &[],
    );
    let err = stderr(&build(images.path(), "it-corrupt"));
    assert!(err.contains("broken.qcow2") && err.contains("not a usable disk image"), "{err}");

    // Downloads: checked against the recipe's sha256; a mismatch adds nothing to the store.
    let bodies: Vec<(String, Vec<u8>)> =
        [("disk", &disk), ("kernel", &kernel), ("initrd", &initrd)].iter().map(|(n, p)| (n.to_string(), std::fs::read(p).unwrap())).collect();
    let shas: Vec<String> = bodies.iter().map(|(_, b)| sha256_hex(b)).collect();
    let recipe = |base: &str, disk_sha: &str| {
        format!(
            "base = {{ url = {{ append = {append:?}, disk = {{ url = \"{base}/disk\", sha256 = \"{disk_sha}\" }}, kernel = {{ url = \"{base}/kernel\", sha256 = \"{}\" }}, initrd = {{ url = \"{base}/initrd\", sha256 = \"{}\" }} }} }}\n",
            shas[1], shas[2]
        )
    };
    let base = serve_files(bodies.clone(), 3);
    provider(images.path(), "it-url", &recipe(&base, &shas[0]), &[]);
    let out = build(images.path(), "it-url");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(manifest("it-url")["id"].is_string());

    let base = serve_files(bodies, 1);
    provider(images.path(), "it-badsha", &recipe(&base, &"ab".repeat(32)), &[]);
    let err = stderr(&build(images.path(), "it-badsha"));
    assert!(err.contains("sha256 mismatch"), "{err}");
    assert!(!kvci().args(["image", "inspect", "it-badsha"]).output().unwrap().status.success());
}
