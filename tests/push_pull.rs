//! `kvci image push/pull` through a real cluster registry: what skopeo and kvci push is what the
//! nodes read as `registry:5000` and what `pull` brings back (same digests, same layers); a blob
//! damaged in the registry is caught by the pull and nothing reaches the store.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{data_dir, host_port, run, stderr, TestCluster};

fn ok(out: Output) -> Output {
    assert!(out.status.success(), "failed:\n{}", stderr(&out));
    out
}

fn stdout_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout).lines().map(String::from).collect()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn skopeo(args: &[&str]) -> Output {
    Command::new("skopeo").args(args).output().expect("skopeo (Debian package skopeo; scripts/install-deps.sh installs it)")
}

fn kvci_at(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kvci")).arg("--data-dir").arg(data).args(args).output().unwrap()
}

fn on_node(cluster: &str, script: &str) -> String {
    let out = ok(run(&["vm", "ssh", "--name", cluster, "node01", "--", script]));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn pushed_images_reach_the_nodes_and_pull_back_with_the_same_digests() {
    const NAME: &str = "it-pp";
    ok(run(&["image", "build", "tiny"]));
    let tiny = json(&ok(run(&["image", "inspect", "tiny"])));
    let _ = std::fs::remove_dir_all(data_dir().join("registries").join(NAME));
    let c = TestCluster::up(NAME, &[]);
    let port = host_port(&c.status(), "registry");
    let registry = format!("127.0.0.1:{port}");

    // skopeo pushes kvci's export; a node reads the tag list and a blob as registry:5000.
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("oci");
    ok(run(&["image", "export", "tiny", "--oci", layout.to_str().unwrap()]));
    let src = format!("oci:{}:latest", layout.display());
    ok(skopeo(&["copy", "--dest-tls-verify=false", &src, &format!("docker://{registry}/kvci/tiny:skopeo")]));
    let raw = json(&ok(skopeo(&["inspect", "--raw", &src])));
    let kernel = raw["layers"].as_array().unwrap().iter().find(|l| l["mediaType"] == "application/vnd.kvci.kernel.v1").unwrap();
    let kernel_digest = kernel["digest"].as_str().unwrap();
    assert!(on_node(NAME, "wget -q -O - http://registry:5000/v2/kvci/tiny/tags/list").contains("\"skopeo\""));
    let sum = on_node(NAME, &format!("wget -q -O /tmp/k http://registry:5000/v2/kvci/tiny/blobs/{kernel_digest} && sha256sum /tmp/k"));
    assert_eq!(format!("sha256:{}", sum.split_whitespace().next().unwrap()), kernel_digest);

    // kvci pushes the same image: every blob is already there, the manifest is the same.
    let pushed = ok(run(&["image", "push", "tiny", &format!("{registry}/kvci/tiny:kvci")]));
    let digest = stdout_lines(&pushed)[0].clone();
    assert!(stderr(&pushed).matches("already in the registry").count() >= 3, "{}", stderr(&pushed));
    let seen = json(&ok(skopeo(&["inspect", "--tls-verify=false", &format!("docker://{registry}/kvci/tiny:kvci")])));
    assert_eq!(seen["Digest"], digest.as_str());
    assert_eq!(seen["Digest"], json(&ok(skopeo(&["inspect", &src])))["Digest"], "push uploads the export's manifest");

    // Pulled back into this store: the same layer; into an empty store: rebuilt, same disk.
    let pulled = ok(run(&["image", "pull", &format!("{registry}/kvci/tiny:kvci"), "--name", "it-pp-pulled"]));
    assert_eq!(stdout_lines(&pulled)[0], digest);
    assert_eq!(json(&ok(run(&["image", "inspect", "it-pp-pulled"])))["id"], tiny["id"]);
    let other = tmp.path().join("other-store");
    let out = ok(kvci_at(&other, &["image", "pull", &format!("{registry}/kvci/tiny:kvci")]));
    assert_eq!(stdout_lines(&out)[0], digest);
    let id = tiny["id"].as_str().unwrap();
    let theirs = std::fs::read(other.join("images/layers").join(id).join("disk.qcow2")).unwrap();
    let ours = std::fs::read(data_dir().join("images/layers").join(id).join("disk.qcow2")).unwrap();
    assert!(theirs == ours, "the pulled disk differs from the pushed one");

    // A blob damaged inside the registry: the pull notices and stores nothing.
    let blob = data_dir().join("registries").join(NAME).join("blobs/sha256").join(kernel_digest.trim_start_matches("sha256:"));
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[1000] ^= 0xff;
    std::fs::write(&blob, &bytes).unwrap();
    let third = tmp.path().join("third-store");
    let out = kvci_at(&third, &["image", "pull", &format!("{registry}/kvci/tiny:kvci")]);
    assert!(!out.status.success());
    assert!(stderr(&out).to_lowercase().contains("digest"), "{}", stderr(&out));
    let manifests = std::fs::read_dir(third.join("images/manifests")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(manifests, 0, "a failed pull left an image behind");

    // Unknown tags are a clear error.
    let out = run(&["image", "pull", &format!("{registry}/kvci/tiny:nope")]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("kvci/tiny:nope"), "{}", stderr(&out));
    drop(c);
}
