//! The kubevirtci stand-in (`common::kubevirtci`) is faithful without any kvci feature made for
//! kubevirtci images: its layout is shaped as the published images are (Docker media types,
//! gzip layers, box.qcow2 ← disk01.qcow2 ← /disk01.qcow2 at the root, kernel.args, vagrant.key,
//! absolute links in the runtime), `kvci image import --skip-unsafe-links` takes it as it takes
//! theirs, and its imported chain boots under bare QEMU to a console login and to ssh as
//! cloud-user, with the hostname from DHCP, crio and kubelet active, and kubeadm and kubectl
//! stand-ins that record their calls. A variant's user and key sit in its own disk01.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use common::kubevirtci::{self, Standin, StandinOptions, User, KERNEL_ARGS};
use common::{data_dir, host_port, run, stderr, TestCluster};

fn ok(out: Output) -> Output {
    assert!(out.status.success(), "failed:\n{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    out
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(bytes)))
}

fn inspect(name: &str) -> serde_json::Value {
    json(&ok(run(&["image", "inspect", name])).stdout)
}

fn layer_dir(id: &serde_json::Value) -> PathBuf {
    data_dir().join("images/layers").join(id.as_str().unwrap())
}

/// A work directory beside the test store, so the fixture can hard-link the cached base blobs.
fn workdir() -> tempfile::TempDir {
    std::fs::create_dir_all(data_dir()).unwrap();
    tempfile::tempdir_in(data_dir()).unwrap()
}

/// One entry of the image's root filesystem after all layers: a file's bytes (small ones) or a
/// link's target.
#[derive(Debug, PartialEq)]
enum Node {
    File { mode: u32, data: Option<Vec<u8>> },
    Link(String),
}

fn blob(layout: &Path, digest: &serde_json::Value) -> PathBuf {
    layout.join("blobs/sha256").join(digest.as_str().unwrap().strip_prefix("sha256:").unwrap())
}

/// The manifest, its config, and the root filesystem the layers make (files under 1 MiB
/// read; the qcow2 overlays copied into `out`).
fn read_image(layout: &Path, out: &Path) -> (serde_json::Value, serde_json::Value, BTreeMap<String, Node>) {
    let index = json(&std::fs::read(layout.join("index.json")).unwrap());
    let desc = &index["manifests"][0];
    assert_eq!(desc["annotations"]["org.opencontainers.image.ref.name"], kubevirtci::TAG);
    let manifest = json(&std::fs::read(blob(layout, &desc["digest"])).unwrap());
    let config = json(&std::fs::read(blob(layout, &manifest["config"]["digest"])).unwrap());
    let mut root = BTreeMap::new();
    for l in manifest["layers"].as_array().unwrap() {
        let gz = flate2::read::GzDecoder::new(std::fs::File::open(blob(layout, &l["digest"])).unwrap());
        let mut tar = tar::Archive::new(gz);
        for e in tar.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let node = if let Some(target) = e.link_name().unwrap() {
                Node::Link(target.to_string_lossy().into_owned())
            } else if path.starts_with("disk0") {
                let mut f = std::fs::File::create(out.join(&path)).unwrap();
                std::io::copy(&mut e, &mut f).unwrap();
                Node::File { mode: e.header().mode().unwrap(), data: None }
            } else {
                let small = e.header().size().unwrap() < 1 << 20;
                let mut data = Vec::new();
                if small {
                    e.read_to_end(&mut data).unwrap();
                }
                Node::File { mode: e.header().mode().unwrap(), data: small.then_some(data) }
            };
            root.insert(path, node);
        }
    }
    (manifest, config, root)
}

fn file<'a>(root: &'a BTreeMap<String, Node>, path: &str) -> &'a [u8] {
    match root.get(path) {
        Some(Node::File { data: Some(d), .. }) => d,
        other => panic!("/{path} is not a small file in the image: {other:?}"),
    }
}

fn backing(qcow2: &Path) -> String {
    let info = json(&ok(Command::new("qemu-img").args(["info", "--output=json"]).arg(qcow2).output().unwrap()).stdout);
    info["backing-filename"].as_str().unwrap_or("").to_string()
}

fn skopeo(args: &[&str]) -> Output {
    Command::new("skopeo").args(args).output().expect("skopeo (Debian package skopeo; scripts/install-deps.sh installs it)")
}

/// The image is laid out as kubevirtci's published ones: in the OCI layout as skopeo writes it
/// from theirs, and with Docker media types as their registry serves them (same layers).
fn check_layout(standin: &Standin, out: &Path) {
    let (manifest, config, root) = read_image(&standin.layout, out);
    assert_eq!(manifest["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    let layers = manifest["layers"].as_array().unwrap();
    assert!(layers.len() >= 4, "several layers: {manifest}");
    assert!(layers.iter().all(|l| l["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"), "{manifest}");
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), layers.len());

    for name in ["box.qcow2", "vmlinuz", "initrd.img", "vm.sh", "dnsmasq.sh", "scripts/version"] {
        assert!(matches!(root.get(name), Some(Node::File { .. })), "/{name} missing: {:?}", root.keys().collect::<Vec<_>>());
    }
    assert_eq!(file(&root, "kernel.args"), KERNEL_ARGS.as_bytes());
    assert_eq!(file(&root, "additional.kernel.args"), b"");
    assert_eq!(file(&root, "vagrant.key"), std::fs::read(&standin.key).unwrap().as_slice());
    assert!(root.values().any(|n| matches!(n, Node::Link(t) if t.starts_with('/'))), "the runtime has absolute links");
    assert_eq!(backing(&out.join("disk01.qcow2")), "box.qcow2");
    assert_eq!(backing(&out.join("disk02.qcow2")), "/disk01.qcow2");

    // skopeo reads both; the Docker-typed one has the same layers.
    let oci = json(&ok(skopeo(&["inspect", "--raw", &standin.oci_ref()])).stdout);
    let docker = json(&ok(skopeo(&["inspect", "--raw", &standin.docker_ref()])).stdout);
    assert_eq!(docker["mediaType"], "application/vnd.docker.distribution.manifest.v2+json");
    assert_eq!(docker["config"]["mediaType"], "application/vnd.docker.container.image.v1+json");
    let digests = |m: &serde_json::Value| m["layers"].as_array().unwrap().iter().map(|l| l["digest"].clone()).collect::<Vec<_>>();
    assert_eq!(digests(&docker), digests(&oci));
    assert!(docker["layers"].as_array().unwrap().iter().all(|l| l["mediaType"] == kubevirtci::layout::DOCKER_GZIP_LAYER), "{docker}");
}

/// `kvci image import DIR --skip-unsafe-links --name NAME`, after checking that the absolute
/// links are refused without the flag, as with a real image.
fn import(standin: &Standin, name: &str) -> serde_json::Value {
    let layout = standin.layout.to_str().unwrap();
    let refused = run(&["image", "import", layout, "--name", name]);
    assert!(!refused.status.success() && stderr(&refused).contains("absolute"), "{}", stderr(&refused));
    ok(run(&["image", "import", layout, "--skip-unsafe-links", "--name", name]));
    let img = inspect(name);
    assert_eq!(img["append"], KERNEL_ARGS, "kernel.args, and nothing from the empty additional.kernel.args");
    img
}

/// The store's chain under `img`, flattened to a raw disk at `raw`.
fn flatten(img: &serde_json::Value, raw: &Path) {
    let top = layer_dir(&img["id"]).join("disk.qcow2");
    let info = json(&ok(Command::new("qemu-img").args(["info", "-U", "--backing-chain", "--output=json"]).arg(&top).output().unwrap()).stdout);
    assert_eq!(info.as_array().unwrap().len(), 3, "box ← disk01 ← disk02 in the store: {info}");
    ok(Command::new("qemu-img").args(["convert", "-U", "-O", "raw"]).arg(&top).arg(raw).output().unwrap());
}

/// A file of the filesystem on the first partition of `raw`.
fn guest_file(raw: &Path, path: &str) -> String {
    let out = ok(Command::new("debugfs").args(["-R", &format!("cat {path}")]).arg(format!("{}?offset=1048576", raw.display())).output().unwrap());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// QEMU, killed and reaped when dropped; its serial port (stdio) is copied to a log file by a
/// thread that wakes waiters as text arrives.
struct Qemu {
    child: Child,
    serial: Arc<(Mutex<(String, bool)>, Condvar)>,
    stderr_log: PathBuf,
}

impl Qemu {
    fn start(args: &[String], serial_log: &Path, stderr_log: &Path) -> Qemu {
        let mut child = Command::new("qemu-system-x86_64")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(stderr_log).unwrap())
            .spawn()
            .expect("qemu-system-x86_64");
        let mut out = child.stdout.take().unwrap();
        let serial = Arc::new((Mutex::new((String::new(), false)), Condvar::new()));
        let (shared, mut log) = (serial.clone(), std::fs::File::create(serial_log).unwrap());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                let n = out.read(&mut buf).unwrap_or(0);
                let _ = log.write_all(&buf[..n]);
                let mut s = shared.0.lock().unwrap();
                s.0.push_str(&String::from_utf8_lossy(&buf[..n]));
                s.1 = n == 0;
                shared.1.notify_all();
                if n == 0 {
                    break;
                }
            }
        });
        Qemu { child, serial, stderr_log: stderr_log.to_path_buf() }
    }

    /// Waits until the serial output contains `text`; panics if QEMU exits or time runs out.
    fn wait_serial(&self, text: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut s = self.serial.0.lock().unwrap();
        loop {
            if s.0.contains(text) {
                return s.0.clone();
            }
            let tail: String = s.0.chars().rev().take(3000).collect::<String>().chars().rev().collect();
            let qemu_err = std::fs::read_to_string(&self.stderr_log).unwrap_or_default();
            assert!(!s.1, "QEMU exited before {text:?}: {qemu_err}\nserial:\n{tail}");
            let left = deadline.checked_duration_since(Instant::now()).unwrap_or_else(|| panic!("no {text:?} on the serial port after {timeout:?}:\n{tail}"));
            s = self.serial.1.wait_timeout(s, left).unwrap().0;
        }
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Bare QEMU as kubevirtci's vm.sh would run the node (q35, direct kernel boot with the image's
/// kernel line, virtio disk and NIC with node01's MAC), on user networking whose DHCP server
/// names the guest node01, with ssh forwarded to 127.0.0.1:`port`.
fn boot(img: &serde_json::Value, dir: &Path, port: u16) -> Qemu {
    let layer = layer_dir(&img["id"]);
    let overlay = dir.join("node01.qcow2");
    ok(Command::new("qemu-img").args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"]).arg(layer.join("disk.qcow2")).arg(&overlay).output().unwrap());
    let args: Vec<String> = [
        "-machine", "q35", "-accel", "tcg", "-m", "1024", "-smp", "2", "-display", "none", "-monitor", "none", "-serial", "stdio",
        "-no-reboot",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        "-kernel".into(),
        layer.join(img["kernel"].as_str().unwrap()).display().to_string(),
        "-initrd".into(),
        layer.join(img["initrd"].as_str().unwrap()).display().to_string(),
        "-append".into(),
        format!("{KERNEL_ARGS} console=ttyS0"),
        "-drive".into(),
        format!("file={},if=none,id=vda,format=qcow2,cache=unsafe", overlay.display()),
        "-device".into(),
        "virtio-blk-pci,drive=vda".into(),
        "-netdev".into(),
        format!("user,id=net0,hostname=node01,hostfwd=tcp:127.0.0.1:{port}-:22"),
        "-device".into(),
        "virtio-net-pci,netdev=net0,mac=52:55:00:d1:55:01".into(),
    ])
    .collect();
    Qemu::start(&args, &dir.join("serial.log"), &dir.join("qemu.stderr"))
}

fn ssh(port: u16, key: &Path, user: &str, script: &str) -> Output {
    Command::new("ssh")
        .args(["-p", &port.to_string(), "-i"])
        .arg(key)
        .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"])
        .args(["-o", "LogLevel=ERROR", "-o", "ConnectTimeout=30", &format!("{user}@127.0.0.1"), script])
        .output()
        .expect("ssh (Debian package openssh-client)")
}

/// Waits until sshd lets `user` in. sshd's readiness cannot be observed from the host (the
/// forwarded port accepts before the guest does), so this retries, a few times at most: it
/// starts only once the console shows its login prompt, which comes up with sshd.
fn wait_ssh(port: u16, key: &Path, user: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let out = ssh(port, key, user, "true");
        if out.status.success() {
            return;
        }
        assert!(Instant::now() < deadline, "ssh as {user} never worked: {}", stderr(&out));
        std::thread::sleep(Duration::from_secs(2));
    }
}

#[test]
fn standin_is_laid_out_as_kubevirtci_imports_and_boots_under_bare_qemu() {
    let work = workdir();
    let standin = kubevirtci::build(&work.path().join("standin"), &StandinOptions::default());
    assert_eq!(standin.user, "cloud-user");
    let extracted = work.path().join("extracted");
    std::fs::create_dir_all(&extracted).unwrap();
    check_layout(&standin, &extracted);
    let img = import(&standin, "it-standin");

    let port = free_port();
    let started = Instant::now();
    let qemu = boot(&img, work.path(), port);
    let console = qemu.wait_serial("login:", Duration::from_secs(600));
    assert!(console.contains("node01 login:"), "the DHCP server's host name is the hostname:\n{console}");
    let prompt = started.elapsed();
    wait_ssh(port, &standin.key, "cloud-user", Duration::from_secs(120));
    eprintln!("stand-in booted: login prompt after {:.0}s, ssh after {:.0}s", prompt.as_secs_f64(), started.elapsed().as_secs_f64());

    let script = "sudo -n true && hostname && hostnamectl | grep Transient && systemctl is-active crio kubelet \
        && pgrep -f 'dhclient -6' >/dev/null && echo dhcpv6-client \
        && sudo kubeadm init --config /etc/kubernetes/kubeadm_flannel.conf -v5 >/dev/null \
        && sudo kubectl --kubeconfig=/etc/kubernetes/admin.conf get nodes --no-headers \
        && cat /var/log/standin-calls.log && sudo cat /etc/kubernetes/admin.conf";
    let out = ok(ssh(port, &standin.key, "cloud-user", script));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "node01", "{text}");
    assert!(lines[1].contains("Transient hostname: node01"), "{text}");
    assert_eq!(&lines[2..5], ["active", "active", "dhcpv6-client"], "{text}");
    assert!(lines[5].starts_with("node01 ") && lines[5].contains("Ready"), "{text}");
    assert!(text.contains(" root kubeadm init --config /etc/kubernetes/kubeadm_flannel.conf -v5\n"), "{text}");
    assert!(text.contains(" root kubelet --runtime-cgroups=/systemd/system.slice"), "the kubelet unit ran with /etc/sysconfig/kubelet: {text}");
    assert!(text.contains("server: https://10.0.2.15:6443") && text.contains("name: kubernetes-admin@kubernetes"), "{text}");

    // Root has no key until gocli's rootkey step writes one and restarts sshd by its alias.
    let denied = ssh(port, &standin.key, "root", "true");
    assert!(!denied.status.success() && stderr(&denied).contains("Permission denied"), "{}", stderr(&denied));
    let public = std::fs::read_to_string(standin.key.with_extension("key.pub")).unwrap();
    let rootkey = format!("echo '{}' | sudo tee /root/.ssh/authorized_keys >/dev/null && sudo service sshd restart", public.trim());
    ok(ssh(port, &standin.key, "cloud-user", &rootkey));
    wait_ssh(port, &standin.key, "root", Duration::from_secs(60));
    let out = ok(ssh(port, &standin.key, "root", "swapoff -a && mkdir -p /var/lib/rook && chcon -t container_file_t /var/lib/rook && tail -n 1 /var/log/standin-calls.log"));
    assert!(String::from_utf8_lossy(&out.stdout).contains(" root chcon -t container_file_t /var/lib/rook"));
    drop(qemu);
    ok(run(&["image", "rm", "it-standin"]));
}

#[test]
fn vagrant_variant_without_the_images_key_has_vagrant_and_another_key() {
    let work = workdir();
    let opts = StandinOptions { user: User::Vagrant, authorized: false };
    let standin = kubevirtci::build(&work.path().join("standin"), &opts);
    assert_eq!(standin.user, "vagrant");
    let img = import(&standin, "it-standin-vagrant");
    let raw = work.path().join("flat.raw");
    flatten(&img, &raw);

    assert!(guest_file(&raw, "/etc/passwd").contains("\nvagrant:x:1000:1000::/home/vagrant:/bin/bash\n"));
    assert!(!guest_file(&raw, "/etc/passwd").contains("cloud-user"));
    assert_eq!(guest_file(&raw, "/etc/sudoers.d/90-cloud-init-users").lines().last(), Some("vagrant ALL=(ALL) NOPASSWD:ALL"));
    let authorized = guest_file(&raw, "/home/vagrant/.ssh/authorized_keys");
    let own = std::fs::read_to_string(standin.key.with_extension("key.pub")).unwrap();
    assert!(authorized.starts_with("ssh-ed25519 ") && authorized != own, "another key than vagrant.key: {authorized}");
    assert!(guest_file(&raw, "/usr/bin/kubeadm").starts_with("#!/bin/sh"), "disk02's Kubernetes phase is there too");
    assert_eq!(guest_file(&raw, "/root/.ssh/authorized_keys"), "", "root has no key");
    ok(run(&["image", "rm", "it-standin-vagrant"]));
}

#[test]
fn pushed_standin_keeps_docker_types_and_pulls_as_it_imports() {
    const CLUSTER: &str = "it-standin-reg";
    let work = workdir();
    let standin = kubevirtci::build(&work.path().join("standin"), &StandinOptions::default());
    let imported = import(&standin, "it-standin-imported");
    ok(run(&["image", "build", "tiny"]));
    let _ = std::fs::remove_dir_all(data_dir().join("registries").join(CLUSTER));
    let c = TestCluster::up(CLUSTER, &[]);
    let reference = format!("127.0.0.1:{}/kubevirtci/k8s-1.34:standin", host_port(&c.status(), "registry"));

    ok(standin.push(&reference));
    let served = json(&ok(skopeo(&["inspect", "--raw", "--tls-verify=false", &format!("docker://{reference}")])).stdout);
    assert_eq!(served["mediaType"], "application/vnd.docker.distribution.manifest.v2+json");
    let refused = run(&["image", "pull", &reference, "--name", "it-standin-pulled"]);
    assert!(!refused.status.success() && stderr(&refused).contains("absolute"), "{}", stderr(&refused));
    ok(run(&["image", "pull", &reference, "--skip-unsafe-links", "--name", "it-standin-pulled"]));
    let pulled = inspect("it-standin-pulled");
    assert_eq!(pulled["append"], KERNEL_ARGS);
    assert_eq!(pulled["id"], imported["id"], "the same disks, kernel and arguments as the imported layout");
    drop(c);
    ok(run(&["image", "rm", "it-standin-pulled", "it-standin-imported"]));
}
