//! OCI export and import with real tools and guests: kvci's layout read by skopeo, imported and
//! booted; a containerDisk; a kubevirtci-style provider image built here layer by layer,
//! imported and booted to ready; unsafe or damaged layouts refused with nothing stored.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::kubevirtci::layout::{container_layout, gzip, tar_layer, Entry};
use common::{data_dir, run, stderr, TestCluster};

fn ok(out: Output) -> Output {
    assert!(out.status.success(), "failed:\n{}", stderr(&out));
    out
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn tiny() -> serde_json::Value {
    ok(run(&["image", "build", "tiny"]));
    json(&ok(run(&["image", "inspect", "tiny"])))
}

fn layer_dir(id: &serde_json::Value) -> PathBuf {
    data_dir().join("images/layers").join(id.as_str().unwrap())
}

fn skopeo(args: &[&str]) -> Output {
    Command::new("skopeo").args(args).output().expect("skopeo (Debian package skopeo; scripts/install-deps.sh installs it)")
}

/// kvci with another data directory (a second machine's store).
fn kvci_at(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kvci")).arg("--data-dir").arg(data).args(args).env_remove("KVCI_QEMU").output().unwrap()
}

/// A cluster in another data directory, taken down when dropped.
struct OtherCluster<'a>(&'a Path, &'a str);

impl Drop for OtherCluster<'_> {
    fn drop(&mut self) {
        let _ = kvci_at(self.0, &["vm", "down", "--name", self.1, "--timeout", "20"]);
    }
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir).map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()).unwrap_or_default();
    v.sort();
    v
}

#[test]
fn tiny_exports_as_a_layout_skopeo_reads_and_its_import_boots() {
    let tiny = tiny();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tiny-oci");
    let d = dir.to_str().unwrap();
    ok(run(&["image", "export", "tiny", "--oci", d]));

    for reference in [format!("oci:{d}"), format!("oci:{d}:latest")] {
        let info = json(&ok(skopeo(&["inspect", &reference])));
        assert_eq!(info["Architecture"], "amd64");
        assert_eq!(info["Layers"].as_array().unwrap().len(), 3, "disk, initrd, kernel: {info}");
    }
    let raw = json(&ok(skopeo(&["inspect", "--raw", &format!("oci:{d}:latest")])));
    let types: Vec<&str> = raw["layers"].as_array().unwrap().iter().map(|l| l["mediaType"].as_str().unwrap()).collect();
    assert_eq!(types, ["application/vnd.kvci.disk.layer.v1.qcow2", "application/vnd.kvci.initrd.v1", "application/vnd.kvci.kernel.v1"]);

    // The same image exported again is byte for byte the same manifest.
    let again = tmp.path().join("again");
    let first = ok(run(&["image", "export", "tiny", "--oci", d])).stdout;
    assert_eq!(first, ok(run(&["image", "export", "tiny", "--oci", again.to_str().unwrap()])).stdout);

    // Into the shared store under a new name: the layer is the one the store has.
    let out = ok(run(&["image", "import", d, "--name", "it-oci-tiny"]));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("it-oci-tiny:latest "), "{}", String::from_utf8_lossy(&out.stdout));
    let copy = json(&ok(run(&["image", "inspect", "it-oci-tiny"])));
    assert_eq!(copy["id"], tiny["id"]);
    assert_eq!(copy["append"], tiny["append"]);
    let c = TestCluster::up("it-oci-tiny", &["--image", "it-oci-tiny"]);
    assert_eq!(c.status()["nodes"][0]["state"], "running");
    drop(c);

    // Into an empty store: the layer is rebuilt from the blobs and boots there.
    let other = tmp.path().join("other-store");
    ok(kvci_at(&other, &["image", "import", d]));
    let img = json(&ok(kvci_at(&other, &["image", "inspect", "tiny"])));
    assert_eq!(img["id"], tiny["id"]);
    let _c = OtherCluster(&other, "it-oci-other");
    ok(kvci_at(&other, &["vm", "up", "--name", "it-oci-other", "--image", "tiny", "--accel", "tcg"]));
}

#[test]
fn frozen_cluster_exports_with_its_memory_and_resumes_in_another_store() {
    tiny();
    let c = TestCluster::up("it-oci-fz", &[]);
    ok(run(&["vm", "freeze", "--name", "it-oci-fz", "--to", "it-oci-frozen"]));
    drop(c);
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("frozen-oci");
    ok(run(&["image", "export", "it-oci-frozen", "--oci", d.to_str().unwrap()]));
    let raw = json(&ok(skopeo(&["inspect", "--raw", &format!("oci:{}", d.display())])));
    let types: Vec<&str> = raw["layers"].as_array().unwrap().iter().map(|l| l["mediaType"].as_str().unwrap()).collect();
    assert!(types.contains(&"application/vnd.kvci.memory.v1"), "{types:?}");
    assert!(types.contains(&"application/vnd.kvci.ssh-key.v1"), "{types:?}");
    assert_eq!(types.iter().filter(|t| **t == "application/vnd.kvci.disk.layer.v1.qcow2").count(), 2, "tiny's disk and node01's: {types:?}");

    let other = tmp.path().join("other-store");
    ok(kvci_at(&other, &["image", "import", d.to_str().unwrap()]));
    let _c = OtherCluster(&other, "it-oci-resumed");
    ok(kvci_at(&other, &["vm", "up", "--name", "it-oci-resumed", "--image", "it-oci-frozen", "--accel", "tcg"]));
    let out = ok(kvci_at(&other, &["vm", "ssh", "--name", "it-oci-resumed", "node01", "--", "hostname"]));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "node01");
    ok(run(&["image", "rm", "it-oci-frozen"]));
}

#[test]
fn containerdisk_export_holds_the_flattened_disk_owned_by_qemu() {
    let tiny = tiny();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("cd");
    ok(run(&["image", "export", "tiny", "--oci", d.to_str().unwrap(), "--containerdisk", "--tag", "v1"]));
    let info = json(&ok(skopeo(&["inspect", &format!("oci:{}:v1", d.display())])));
    assert_eq!((info["Architecture"].as_str(), info["Os"].as_str()), (Some("amd64"), Some("linux")));
    let raw = json(&ok(skopeo(&["inspect", "--raw", &format!("oci:{}:v1", d.display())])));
    assert_eq!(raw["config"]["mediaType"], "application/vnd.oci.image.config.v1+json");
    let layers = raw["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    assert_eq!(layers[0]["mediaType"], "application/vnd.oci.image.layer.v1.tar");

    let digest = layers[0]["digest"].as_str().unwrap().strip_prefix("sha256:").unwrap();
    let mut archive = tar::Archive::new(std::fs::File::open(d.join("blobs/sha256").join(digest)).unwrap());
    let mut seen = Vec::new();
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().to_string_lossy().into_owned();
        assert_eq!((e.header().uid().unwrap(), e.header().gid().unwrap()), (107, 107), "{path}");
        if path == "disk/disk.qcow2" {
            let out = tmp.path().join("disk.qcow2");
            e.unpack(&out).unwrap();
            let qi = ok(Command::new("qemu-img").args(["info", "--output=json"]).arg(&out).output().unwrap());
            let qi = json(&qi);
            assert_eq!(qi["format"], "qcow2");
            assert!(qi["backing-filename"].is_null(), "flattened: {qi}");
            let base = ok(Command::new("qemu-img").args(["info", "-U", "--output=json"]).arg(layer_dir(&tiny["id"]).join("disk.qcow2")).output().unwrap());
            assert_eq!(qi["virtual-size"], json(&base)["virtual-size"]);
        }
        seen.push(path);
    }
    assert_eq!(seen, ["disk/", "disk/disk.qcow2"]);
}

fn qemu_img(args: &[&str], cwd: &Path) {
    ok(Command::new("qemu-img").args(args).current_dir(cwd).output().unwrap());
}

#[test]
fn kubevirtci_provider_layout_imports_its_chain_key_and_scripts() {
    let tiny = tiny();
    let layer = layer_dir(&tiny["id"]);
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    // kubevirtci's chain: box.qcow2 ← disk01.qcow2 (backed by "/box.qcow2") ← disk02.qcow2
    // (backed by "disk01.qcow2"), made where the absolute backing does not exist (-u).
    qemu_img(&["convert", "-O", "qcow2", layer.join("disk.qcow2").to_str().unwrap(), "box.qcow2"], work);
    qemu_img(&["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", "/box.qcow2", "-u", "disk01.qcow2", "256M"], work);
    qemu_img(&["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", "disk01.qcow2", "-u", "disk02.qcow2", "256M"], work);
    let read = |p: PathBuf| std::fs::read(p).unwrap();
    let append = tiny["append"].as_str().unwrap();
    let (args, additional) = append.split_at(append.find(" panic").unwrap_or(append.len()));

    let layers = vec![
        // The Fedora runtime's stand-ins, the box, and a bogus newer disk layer 3 deletes.
        (
            "application/vnd.oci.image.layer.v1.tar+gzip",
            gzip(&tar_layer(&[
                Entry::File("usr/bin/qemu-system-x86_64", b"\x7fELF".to_vec()),
                Entry::Symlink("usr/lib64/libfoo.so", "libfoo.so.1"),
                Entry::File("box.qcow2", read(work.join("box.qcow2"))),
                Entry::File("disk09.qcow2", b"not a disk".to_vec()),
            ])),
        ),
        (
            "application/vnd.oci.image.layer.v1.tar",
            tar_layer(&[
                Entry::File("/disk01.qcow2", read(work.join("disk01.qcow2"))),
                Entry::File("vmlinuz", read(layer.join("vmlinuz"))),
                Entry::File("initrd.img", read(layer.join("initrd.img"))),
                Entry::File("kernel.args", format!("{args}\n").into_bytes()),
                Entry::File("vagrant.key", b"not really a key".to_vec()),
                Entry::File("scripts/version", b"k8s-1.34\n".to_vec()),
            ]),
        ),
        (
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            gzip(&tar_layer(&[
                Entry::File("./disk02.qcow2", read(work.join("disk02.qcow2"))),
                Entry::File("additional.kernel.args", format!("{}\n", additional.trim()).into_bytes()),
                Entry::File(".wh.disk09.qcow2", Vec::new()),
            ])),
        ),
    ];
    let dir = work.join("k8s-oci");
    container_layout(&dir, layers, "it-kubevirtci");
    // skopeo reads it too: it is an ordinary container image.
    ok(skopeo(&["inspect", &format!("oci:{}:it-kubevirtci", dir.display())]));

    // No --name: the layout's tag names it.
    ok(run(&["image", "import", dir.to_str().unwrap()]));
    let img = json(&ok(run(&["image", "inspect", "it-kubevirtci"])));
    assert_eq!(img["append"], append, "kernel.args and additional.kernel.args, joined");
    assert!(img["parent"].is_string(), "disk02 is an overlay: {img}");
    let top = layer_dir(&img["id"]).join("disk.qcow2");
    let qi = json(&ok(Command::new("qemu-img").args(["info", "-U", "--backing-chain", "--output=json"]).arg(&top).output().unwrap()));
    let chain: Vec<&str> = qi.as_array().unwrap().iter().map(|d| d["filename"].as_str().unwrap()).collect();
    assert_eq!(chain.len(), 3, "box ← disk01 ← disk02 in the store: {chain:?}");
    assert!(chain.iter().all(|f| f.starts_with(data_dir().join("images/layers").to_str().unwrap())), "{chain:?}");

    // What kvci needs to reach and set up kubevirtci's nodes (booting them: tests/kubevirtci.rs).
    assert_eq!(img["access"], serde_json::json!({ "kind": "kubevirtci", "user": "cloud-user", "key": "vagrant.key" }), "{img}");
    let top_dir = layer_dir(&img["id"]);
    assert_eq!(std::fs::read(top_dir.join("vagrant.key")).unwrap(), b"not really a key");
    assert_eq!(std::fs::read(top_dir.join("scripts/version")).unwrap(), b"k8s-1.34\n");
    assert!(top_dir.join("up-node01.sh").is_file() && img["up"]["last"] == "up-last.sh", "{img}");

    // A three-layer chain through kvci's own layout into an empty store, booted there.
    let exported = work.join("kvci-oci");
    ok(run(&["image", "export", "it-kubevirtci", "--oci", exported.to_str().unwrap()]));
    let info = json(&ok(skopeo(&["inspect", &format!("oci:{}", exported.display())])));
    assert_eq!(info["Layers"].as_array().unwrap().len(), 9, "three disks, kernel, initrd, key, three hooks: {info}");
    let other = work.join("other-store");
    ok(kvci_at(&other, &["image", "import", exported.to_str().unwrap(), "--name", "moved"]));
    let moved = json(&ok(kvci_at(&other, &["image", "inspect", "moved"])));
    assert_eq!(moved["id"], img["id"]);
    assert_eq!(moved["access"], img["access"]);
}

#[test]
fn unsafe_or_damaged_layouts_are_refused_and_store_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    // A store of its own, so other tests' imports running alongside cannot blur the check.
    let store = tmp.path().join("store");
    let import = |dir: &Path| kvci_at(&store, &["image", "import", dir.to_str().unwrap()]);
    let refused = |name: &str, layers: Vec<(&str, Vec<u8>)>, expect: &str| {
        let dir = tmp.path().join(name);
        container_layout(&dir, layers, name);
        let out = import(&dir);
        let err = stderr(&out);
        assert!(!out.status.success() && err.contains(expect), "{name}: {err}");
        err
    };
    let tar = "application/vnd.oci.image.layer.v1.tar";
    let good = || tar_layer(&[Entry::File("box.qcow2", b"QFI\xfb".to_vec())]);

    let err = refused("it-oci-dotdot", vec![(tar, good()), (tar, tar_layer(&[Entry::File("../../etc/cron.d/x", b"* * * * * root id".to_vec())]))], "`..`");
    assert!(err.contains("layer 2/2"), "the layer is named: {err}");
    refused("it-oci-abslink", vec![(tar, good()), (tar, tar_layer(&[Entry::Symlink("etc/evil", "/etc/shadow")]))], "absolute");
    refused("it-oci-uplink", vec![(tar, tar_layer(&[Entry::Symlink("a/b", "../../../root")]))], "leaves the image root");
    refused("it-oci-zstd", vec![("application/vnd.oci.image.layer.v1.tar+zstd", good())], "zstd");
    refused("it-oci-odd", vec![("application/x-whatever", good())], "unknown layer media type");
    refused("it-oci-nokernel", vec![(tar, good())], "no /vmlinuz");

    // A blob whose bytes do not match its digest, and one that is missing.
    let dir = tmp.path().join("it-oci-nokernel");
    let raw = json(&ok(skopeo(&["inspect", "--raw", &format!("oci:{}", dir.display())])));
    let layer = dir.join("blobs/sha256").join(raw["layers"][0]["digest"].as_str().unwrap().strip_prefix("sha256:").unwrap());
    let mut bytes = std::fs::read(&layer).unwrap();
    bytes[600] ^= 0xff; // padding after the file's data: the tar still reads, the digest does not match
    std::fs::write(&layer, &bytes).unwrap();
    let err = stderr(&import(&dir));
    assert!(err.contains("damaged") && err.contains("again"), "{err}");
    std::fs::remove_file(&layer).unwrap();
    let err = stderr(&import(&dir));
    assert!(err.contains("missing"), "{err}");
    let err = stderr(&import(tmp.path()));
    assert!(err.contains("not an OCI image layout"), "{err}");

    for sub in ["layers", "manifests", "staging"] {
        assert_eq!(entries(&store.join("images").join(sub)), Vec::<String>::new(), "refused imports left {sub}");
    }
}
