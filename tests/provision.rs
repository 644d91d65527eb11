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
