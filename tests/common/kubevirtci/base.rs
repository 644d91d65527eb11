//! The stand-in's base, shared by every variant: Debian 12 debootstrapped from the configured
//! mirror with what a kubevirtci node runs (systemd, sshd, sudo, ifupdown and dhclient, the cloud
//! kernel), the files of `box/` on top, made into `box.qcow2` with its kernel and initrd, and
//! their gzip'd layer blobs. Built once per recipe (a minute or two) and kept under
//! `$KVCI_TEST_DATA_DIR/standin-cache/<recipe hash>/`; tests that need it at the same time wait
//! on a lock file, and an entry of an older recipe is removed when nobody holds it.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use nix::fcntl::{Flock, FlockArg};
use sha2::{Digest, Sha256};

use super::disk::{qemu_img, run};
use super::layout::{gzip_layer_of_files, Layer};

const SUITE: &str = "bookworm";
/// The packages on top of minbase. libnss-myhostname resolves the DHCP-given hostname (sudo
/// warns otherwise), as the real images' nss-myhostname does.
const INCLUDE: &[&str] = &[
    "linux-image-cloud-amd64", "systemd-sysv", "udev", "openssh-server", "sudo", "iproute2",
    "ifupdown", "isc-dhcp-client", "kmod", "dbus", "libnss-myhostname",
];
/// Where the root partition starts (sector 2048), as `sfdisk` and the cloud images put it.
pub const PART_OFFSET: u64 = 1 << 20;
/// The disk's virtual size (CentOS' cloud image has 10 GiB; the stand-in needs less).
pub const DISK_MIB: u64 = 3072;
/// sha512-crypt of "root": console logins as root/root, as on the real images.
const ROOT_PASSWORD: &str = "$6$kvcistandin$fTo9l8uR7rqMmB6aDxQbYBGnQBNyS0iYnXurWIl3ey./7HXUDFsVTiq6F.fF8d1aa5slx..1JYB/4W43MWXfq0";

/// A directory of the fixture's guest files.
pub fn files_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/common/kubevirtci").join(name)
}

/// Every regular file under `dir`, sorted: (path relative to `dir`, 0755 or 0644). Modes are
/// normalised so a checkout's umask does not change the guest.
pub fn tree_files(dir: &Path) -> Vec<(String, u32)> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<(String, u32)>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, base, out);
            } else {
                let exec = p.metadata().unwrap().permissions().mode() & 0o100 != 0;
                out.push((p.strip_prefix(base).unwrap().to_string_lossy().into_owned(), if exec { 0o755 } else { 0o644 }));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// A hash of everything that goes into the base: packages, mirror, the `box/` files and this
/// file's own source (so any change to how the base is made rebuilds it).
fn recipe_key() -> String {
    let mut h = Sha256::new();
    for part in [SUITE, &INCLUDE.join(","), &kvci::image::debootstrap::mirror(), &DISK_MIB.to_string(), include_str!("base.rs")] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let dir = files_dir("box");
    for (path, mode) in tree_files(&dir) {
        h.update(format!("{path}\0{mode:o}\0").as_bytes());
        h.update(std::fs::read(dir.join(&path)).unwrap());
    }
    format!("{:x}", h.finalize())[..16].to_string()
}

/// The cached base, held (shared lock) while a variant is made from it.
pub struct Base {
    /// The cache entry: `box.qcow2`, `vmlinuz`, `initrd.img`, `blobs/`, `layers.json`.
    pub dir: PathBuf,
    _lock: Flock<File>,
}

impl Base {
    /// The layers of box.qcow2, vmlinuz and initrd.img, in that order, blobs in `blobs/`.
    pub fn layers(&self) -> Vec<Layer> {
        serde_json::from_slice(&std::fs::read(self.dir.join("layers.json")).unwrap()).unwrap()
    }

    /// A layer's blob file.
    pub fn blob(&self, layer: &Layer) -> PathBuf {
        self.dir.join("blobs").join(layer.hex())
    }
}

fn lock(path: &Path, arg: FlockArg) -> Result<Flock<File>, nix::errno::Errno> {
    let f = OpenOptions::new().create(true).truncate(false).write(true).open(path).unwrap();
    Flock::lock(f, arg).map_err(|(_, e)| e)
}

/// The base for the current recipe, built first if the cache does not have it.
pub fn get(cache: &Path) -> Base {
    std::fs::create_dir_all(cache).unwrap();
    let key = recipe_key();
    let dir = cache.join(&key);
    let lock = lock(&cache.join(format!("{key}.lock")), FlockArg::LockExclusive).unwrap();
    if !dir.join("layers.json").exists() {
        build(&dir);
        prune(cache, &key);
    }
    // Others may read it now; another recipe's prune leaves it alone until we are done.
    lock.relock(FlockArg::LockShared).unwrap();
    Base { dir, _lock: lock }
}

/// Removes cache entries of other recipes that nobody is using (their empty lock files stay:
/// removing one could let two builders of that recipe lock different files).
fn prune(cache: &Path, keep: &str) {
    for e in std::fs::read_dir(cache).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(key) = name.strip_suffix(".lock") else { continue };
        if key == keep {
            continue;
        }
        if let Ok(_held) = lock(&e.path(), FlockArg::LockExclusiveNonblock) {
            let _ = std::fs::remove_dir_all(cache.join(key));
            remove_partial(&cache.join(format!("{key}.partial")));
        }
    }
}

/// Builds the base into `dir` (via `dir.partial`, so a crash leaves no half entry).
fn build(dir: &Path) {
    let started = Instant::now();
    let tmp = dir.with_extension("partial");
    remove_partial(&tmp);
    std::fs::create_dir_all(tmp.join("blobs")).unwrap();
    let tree = tmp.join("tree");
    debootstrap(&tree, &tmp.join("debootstrap.log"));
    let debootstrapped = started.elapsed();
    customise(&tree);
    let raw = tmp.join("box.raw");
    make_disk(&tree, &raw, DISK_MIB);
    qemu_img(&tmp, &["convert", "-O", "qcow2", "box.raw", "box.qcow2"]);
    std::fs::remove_file(&raw).unwrap();
    for (prefix, name) in [("vmlinuz-", "vmlinuz"), ("initrd.img-", "initrd.img")] {
        std::fs::copy(boot_file(&tree, prefix), tmp.join(name)).unwrap();
    }
    std::fs::remove_dir_all(&tree).unwrap();

    let blobs = tmp.join("blobs");
    let layers: Vec<Layer> = ["box.qcow2", "vmlinuz", "initrd.img"]
        .iter()
        .map(|name| gzip_layer_of_files(&blobs, &[(name, &tmp.join(name), 0o644)]))
        .collect();
    std::fs::write(tmp.join("layers.json"), serde_json::to_vec_pretty(&layers).unwrap()).unwrap();
    std::fs::rename(&tmp, dir).unwrap();
    eprintln!(
        "kubevirtci stand-in: base built in {:.0}s (debootstrap {:.0}s), box.qcow2 {} MiB",
        started.elapsed().as_secs_f64(),
        debootstrapped.as_secs_f64(),
        dir.join("box.qcow2").metadata().unwrap().len() >> 20
    );
}

/// Removes what a killed build left, first unmounting what its debootstrap had mounted inside
/// (proc, sys, perhaps a bind of /dev), so the removal cannot reach into the host's.
fn remove_partial(tmp: &Path) {
    let Ok(tmp) = tmp.canonicalize() else { return };
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let mut points: Vec<&str> = mounts.lines().filter_map(|l| l.split(' ').nth(1)).filter(|m| Path::new(m).starts_with(&tmp)).collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        run("umount", Command::new("umount").arg("--lazy").arg(p));
    }
    std::fs::remove_dir_all(&tmp).unwrap();
}

fn debootstrap(tree: &Path, log: &Path) {
    let out = File::create(log).unwrap();
    let status = Command::new("debootstrap")
        .arg("--variant=minbase")
        .arg(format!("--include={}", INCLUDE.join(",")))
        .arg(SUITE)
        .arg(tree)
        .arg(kvci::image::debootstrap::mirror())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .status()
        .expect("debootstrap (Debian package debootstrap; scripts/install-deps.sh installs it)");
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(20)..].join("\n");
    assert!(status.success(), "debootstrap failed ({status}); the end of {}:\n{tail}", log.display());
}

/// The base system's own settings: `box/` (hostname, hosts, fstab, network, sshd), root's
/// console password, an empty `/root/.ssh` (gocli's rootkey step writes into it), no
/// machine-id (made at first boot), nothing of the build host's (resolv.conf, package cache).
fn customise(tree: &Path) {
    let src = files_dir("box");
    for (path, mode) in tree_files(&src) {
        let dest = tree.join(&path);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(src.join(&path), &dest).unwrap();
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let shadow = tree.join("etc/shadow");
    let text = std::fs::read_to_string(&shadow).unwrap();
    let text: String = text
        .lines()
        .map(|l| match l.strip_prefix("root:") {
            Some(rest) => format!("root:{ROOT_PASSWORD}:{}\n", rest.split_once(':').unwrap().1),
            None => format!("{l}\n"),
        })
        .collect();
    std::fs::write(&shadow, text).unwrap();
    std::fs::create_dir_all(tree.join("root/.ssh")).unwrap();
    std::fs::set_permissions(tree.join("root/.ssh"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(tree.join("etc/machine-id"), b"").unwrap();
    let _ = std::fs::remove_file(tree.join("var/lib/dbus/machine-id")); // a copy of the build's
    let _ = std::fs::remove_file(tree.join("etc/resolv.conf"));
    for e in std::fs::read_dir(tree.join("var/cache/apt/archives")).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "deb") {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
}

/// One MBR partition table entry: type 0x83 (Linux) from `PART_OFFSET` to the end of the disk.
fn mbr(disk_bytes: u64) -> [u8; 512] {
    let mut s = [0u8; 512];
    let first = (PART_OFFSET / 512) as u32;
    let count = (disk_bytes / 512) as u32 - first;
    s[440..444].copy_from_slice(&0x6b76_6369u32.to_le_bytes()); // disk identifier "kvci"
    let e = &mut s[446..462];
    e[1..4].copy_from_slice(&[0xfe, 0xff, 0xff]); // CHS unused: LBA only
    e[4] = 0x83;
    e[5..8].copy_from_slice(&[0xfe, 0xff, 0xff]);
    e[8..12].copy_from_slice(&first.to_le_bytes());
    e[12..16].copy_from_slice(&count.to_le_bytes());
    s[510] = 0x55;
    s[511] = 0xaa;
    s
}

/// A sparse raw disk of `size_mib` at `raw`: the partition table and an ext4 filesystem made
/// from the directory `tree` (owned by root inside, whoever owns the files here).
fn make_disk(tree: &Path, raw: &Path, size_mib: u64) {
    let mut f = std::fs::File::create(raw).unwrap();
    f.set_len(size_mib << 20).unwrap();
    f.write_all(&mbr(size_mib << 20)).unwrap();
    drop(f);
    let fs_size = format!("{}k", ((size_mib << 20) - PART_OFFSET) >> 10);
    let offset = format!("offset={PART_OFFSET},root_owner=0:0");
    run("mkfs.ext4", Command::new("mkfs.ext4").args(["-q", "-F", "-L", "root", "-E", &offset, "-d"]).arg(tree).arg(raw).arg(&fs_size));
}

/// The kernel or initrd the rootfs's kernel package installed in /boot.
fn boot_file(tree: &Path, prefix: &str) -> PathBuf {
    std::fs::read_dir(tree.join("boot"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(prefix)))
        .unwrap_or_else(|| panic!("no /boot/{prefix}* in the debootstrapped tree"))
}
