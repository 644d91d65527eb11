//! A stand-in for kubevirtci's published provider images (`quay.io/kubevirtci/k8s-1.3x:TAG`),
//! built offline from Debian packages and laid out as they are: an image whose root holds
//! `box.qcow2` ← `disk01.qcow2` (backed by `box.qcow2`) ← `disk02.qcow2` (backed by
//! `/disk01.qcow2`), `vmlinuz`, `initrd.img`, `kernel.args` (the published line),
//! an empty `additional.kernel.args`, `vagrant.key`, `vm.sh`, `dnsmasq.sh`, `scripts/`, and a
//! runtime stand-in with absolute symlinks; gzip layers. It comes twice, with the same blobs: with
//! Docker media types as a registry serves the published images (skopeo's `dir:` format, which
//! `push` copies to a registry as it is), and as the OCI layout `skopeo copy docker://… oci:DIR`
//! makes of them (skopeo converts the types: it sees only OCI-typed manifests in a layout).
//!
//! The guest has no kvci beacon or agent. It is Debian 12 with: the login user (`cloud-user`, or
//! `vagrant` as older images) with passwordless sudo and the image's key; sshd (root has no key
//! until gocli's rootkey step writes one); DHCPv4 and DHCPv6 clients on eth0, the hostname from
//! DHCP (transient; the static one is `localhost`); console logins USER/USER and root/root; a
//! `crio` unit and a `kubelet` unit that stay active; recording stand-ins `kubeadm`, `kubectl`,
//! `kubelet` and `chcon` that append `TIME USER COMMAND ARGS…` to /var/log/standin-calls.log,
//! where `kubeadm init` writes /etc/kubernetes/admin.conf (server `https://<eth0's IPv4>:6443`,
//! 192.168.66.101 on node01 of a cluster) and `kubeadm join` /etc/kubernetes/kubelet.conf; the
//! files gocli's node01 and nodes steps read (/etc/kubernetes/*.conf and manifests, /provision/,
//! /var/lib/kubevirtci/shared_vars.sh, /etc/sysconfig/kubelet).
//!
//! Where things are: `box.qcow2` is the debootstrapped base (cached, see `base`); `disk01.qcow2`
//! holds only the login user and key, `disk02.qcow2` only the Kubernetes phase (`k8s/`): both
//! are real overlays written with debugfs, so a chain read wrongly loses the user or kubeadm.

mod base;
mod disk;
pub mod layout;
mod phases;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use layout::{create_layout, put_layer, tar_layer, write_docker_dir, write_image, Entry, Flavour, Layer, DOCKER_GZIP_LAYER, OCI_GZIP_LAYER};
pub use phases::User;

/// `/kernel.args` of the published images.
pub const KERNEL_ARGS: &str =
    "root=/dev/vda1 ro no_timer_check console=tty0 console=ttyS0,115200n8 net.ifnames=0 biosdevname=0 spectre_v2=off nopti intel_iommu=on modprobe.blacklist=nouveau";
/// The stand-in's tag in its layout.
pub const TAG: &str = "standin";
/// The Kubernetes version the stand-ins claim (the k8s-1.34 provider's).
pub const K8S_VERSION: &str = "v1.34.10";

/// What differs between stand-ins.
#[derive(Debug, Clone, Copy)]
pub struct StandinOptions {
    /// The login user.
    pub user: User,
    /// Whether the image's user accepts `vagrant.key`; when false its authorized_keys holds
    /// another key, so logging in with the image's key fails.
    pub authorized: bool,
}

impl Default for StandinOptions {
    fn default() -> Self {
        StandinOptions { user: User::CloudUser, authorized: true }
    }
}

/// A built stand-in.
#[derive(Debug, Clone)]
pub struct Standin {
    /// The OCI image layout (for `kvci image import` and `skopeo copy oci:…`), OCI media types.
    pub layout: PathBuf,
    /// The same image with Docker media types, in skopeo's `dir:` format (for [`Standin::push`]).
    pub docker: PathBuf,
    /// Its tag in the layout.
    pub tag: String,
    /// The private key, the same bytes as the image's `/vagrant.key`.
    pub key: PathBuf,
    /// The login user's name.
    pub user: String,
    /// The image's `/kernel.args`.
    pub kernel_args: String,
}

impl Standin {
    /// `oci:LAYOUT:TAG`, for skopeo.
    pub fn oci_ref(&self) -> String {
        format!("oci:{}:{}", self.layout.display(), self.tag)
    }

    /// `dir:DOCKER`, for skopeo.
    pub fn docker_ref(&self) -> String {
        format!("dir:{}", self.docker.display())
    }

    /// Pushes the Docker-typed image with skopeo to `docker://DEST` (`host:port/repo:tag`,
    /// plain HTTP), its manifest unchanged.
    pub fn push(&self, dest: &str) -> Output {
        Command::new("skopeo")
            .args(["copy", "--dest-tls-verify=false", &self.docker_ref(), &format!("docker://{dest}")])
            .output()
            .expect("skopeo (Debian package skopeo; scripts/install-deps.sh installs it)")
    }
}

/// Builds a stand-in in `work` (which must not hold another one). The Debian base is cached in
/// the test data directory; only the variant's disks and small layers are made here.
pub fn build(work: &Path, opts: &StandinOptions) -> Standin {
    let started = Instant::now();
    std::fs::create_dir_all(work).unwrap();
    let base = base::get(&super::data_dir().join("standin-cache"));
    let base_ready = started.elapsed();
    let key = keygen(work, "vagrant.key");
    let authorized = if opts.authorized { key.with_extension("key.pub") } else { keygen(work, "other.key").with_extension("key.pub") };
    make_disks(&base, work, opts.user, &std::fs::read_to_string(authorized).unwrap());

    let layout = work.join("layout");
    create_layout(&layout);
    let blobs = layout.join("blobs/sha256");
    // Layers in the published images' order: runtime, key, box, kernel, initrd, scripts, and
    // what gocli's provisioning committed.
    let key_layer = tar_layer(&[Entry::FileMode("vagrant.key", std::fs::read(&key).unwrap(), 0o700)]);
    let mut layers = vec![runtime_layer(&layout), put_layer(&layout, DOCKER_GZIP_LAYER, &key_layer)];
    for l in base.layers() {
        link_or_copy(&base.blob(&l), &blobs.join(l.hex()));
        layers.push(l);
    }
    drop(base);
    layers.push(root_scripts_layer(&layout));
    layers.push(provision_layer(work, &blobs));
    let docker = work.join("docker");
    write_docker_dir(&docker, &layers, |l| blobs.join(l.hex()));
    let oci: Vec<Layer> = layers.into_iter().map(|l| Layer { media_type: OCI_GZIP_LAYER.into(), ..l }).collect();
    write_image(&layout, &oci, TAG, Flavour::Oci);
    let kib = |f: &str| work.join(f).metadata().unwrap().len() >> 10;
    eprintln!(
        "kubevirtci stand-in: {} built in {:.1}s (base ready after {:.1}s; disk01 {} KiB, disk02 {} KiB)",
        opts.user.name(),
        started.elapsed().as_secs_f64(),
        base_ready.as_secs_f64(),
        kib("disk01.qcow2"),
        kib("disk02.qcow2")
    );
    Standin { layout, docker, tag: TAG.into(), key, user: opts.user.name().into(), kernel_args: KERNEL_ARGS.into() }
}

/// A new ed25519 key pair at `work/name` (and `.pub`).
fn keygen(work: &Path, name: &str) -> PathBuf {
    let path = work.join(name);
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(path.with_extension("key.pub"));
    disk::run("ssh-keygen", Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", "kvci-standin", "-f"]).arg(&path));
    path
}

/// `disk01.qcow2` and `disk02.qcow2` in `work`: the box as a raw disk, each phase applied to it
/// and written as an overlay of the clusters it changed (checked to add up to the disk).
/// Meanwhile `work/box.qcow2` links to the cached box, so the backing names are kubevirtci's.
fn make_disks(base: &base::Base, work: &Path, user: User, authorized_key: &str) {
    let staging = work.join("staging");
    std::fs::create_dir_all(&staging).unwrap();
    let _ = std::fs::remove_file(work.join("box.qcow2"));
    std::os::unix::fs::symlink(base.dir.join("box.qcow2"), work.join("box.qcow2")).unwrap();
    let (raw, before) = (work.join("disk.raw"), work.join("before.raw"));
    disk::qemu_img(work, &["convert", "-O", "raw", "box.qcow2", "disk.raw"]);
    let phase = |apply: &dyn Fn(), name: &str, backing: &str| {
        disk::run("cp", Command::new("cp").arg("--sparse=always").arg(&raw).arg(&before));
        apply();
        disk::overlay(work, name, backing, &raw, &disk::changed_ranges(&before, &raw), &staging);
        disk::qemu_img(work, &["compare", "-q", "-f", "qcow2", "-F", "raw", name, "disk.raw"]); // the chain is the disk
    };
    phase(&|| phases::linux(&raw, &staging, user, authorized_key), "disk01.qcow2", "box.qcow2");
    phase(&|| phases::kubernetes(&raw, &staging), "disk02.qcow2", "disk01.qcow2");
    // kubevirtci's disk02 names its backing file absolutely, as it sits at the image root.
    disk::qemu_img(work, &["rebase", "-u", "-b", "/disk01.qcow2", "-F", "qcow2", "disk02.qcow2"]);
    for f in [&raw, &before, &work.join("box.qcow2")] {
        std::fs::remove_file(f).unwrap();
    }
    std::fs::remove_dir_all(&staging).unwrap();
}

fn link_or_copy(from: &Path, to: &Path) {
    if std::fs::hard_link(from, to).is_err() {
        std::fs::copy(from, to).unwrap();
    }
}

/// The Fedora runtime's stand-in: a few files and links, absolute ones among them (as Fedora's
/// have; `kvci image import` refuses them without --skip-unsafe-links).
fn runtime_layer(layout: &Path) -> Layer {
    let os_release = b"NAME=\"Fedora Linux\"\nVERSION_ID=43\nID=fedora\n# kvci stand-in of kubevirtci's runtime\n".to_vec();
    put_layer(
        layout,
        DOCKER_GZIP_LAYER,
        &tar_layer(&[
            Entry::Symlink("bin", "usr/bin"),
            Entry::Symlink("lib64", "usr/lib64"),
            Entry::File("etc/os-release", os_release),
            Entry::FileMode("usr/libexec/qemu-kvm", b"\x7fELF stand-in".to_vec(), 0o755),
            Entry::Symlink("usr/bin/qemu-kvm", "/usr/libexec/qemu-kvm"),
            Entry::FileMode("usr/sbin/dnsmasq", b"\x7fELF stand-in".to_vec(), 0o755),
            Entry::File("usr/lib64/libfoo.so.1", b"\x7fELF stand-in".to_vec()),
            Entry::Symlink("usr/lib64/libfoo.so", "/usr/lib64/libfoo.so.1"),
            Entry::FileMode("usr/local/bin/dockerize", b"\x7fELF stand-in".to_vec(), 0o755),
        ]),
    )
}

/// The centos9 `scripts/` copied to the image root: vm.sh, dnsmasq.sh and the kernel arguments.
fn root_scripts_layer(layout: &Path) -> Layer {
    let dir = base::files_dir("image");
    let read = |n: &str| std::fs::read(dir.join(n)).unwrap();
    put_layer(
        layout,
        DOCKER_GZIP_LAYER,
        &tar_layer(&[
            Entry::File("additional.kernel.args", Vec::new()),
            Entry::FileMode("dnsmasq.sh", read("dnsmasq.sh"), 0o755),
            Entry::File("kernel.args", KERNEL_ARGS.as_bytes().to_vec()),
            Entry::FileMode("vm.sh", read("vm.sh"), 0o755),
        ]),
    )
}

/// What `gocli provision` commits: the two disks, the provider's `scripts/`, and
/// `additional.kernel.args` written again (empty).
fn provision_layer(work: &Path, blobs: &Path) -> Layer {
    let empty = work.join("additional.kernel.args");
    std::fs::write(&empty, b"").unwrap();
    let scripts = base::files_dir("image").join("scripts");
    let files: Vec<(String, PathBuf, u32)> = [("disk01.qcow2".to_string(), work.join("disk01.qcow2"), 0o644), ("disk02.qcow2".into(), work.join("disk02.qcow2"), 0o644), ("additional.kernel.args".into(), empty, 0o644)]
        .into_iter()
        .chain(base::tree_files(&scripts).into_iter().map(|(p, mode)| (format!("scripts/{p}"), scripts.join(&p), mode)))
        .collect();
    let refs: Vec<(&str, &Path, u32)> = files.iter().map(|(n, p, m)| (n.as_str(), p.as_path(), *m)).collect();
    layout::gzip_layer_of_files(blobs, &refs)
}
