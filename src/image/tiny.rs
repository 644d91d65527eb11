//! The default image `tiny`, built by kvci from Debian packages: the cloud kernel, an initramfs
//! that loads the virtio modules, and an ext4 root disk with busybox, udhcpc, dropbear and what
//! OpenSSH's `scp` needs on the remote side (sftp-server, scp).
//!
//! The recipe's files are compiled in; their hash is the layer id, so the image is rebuilt
//! exactly when the recipe changes.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::name::{ImageName, DEFAULT_TAG};
use super::initramfs::{self, Entry};
use super::recipe::TinyRecipe;
use super::rootfs::{self, File};
use super::store::{Image, Manifest, Store};
use super::debs;
use super::digest::LayerDigest;

/// The image's name.
pub const NAME: &str = "tiny";

const RECIPE: &str = include_str!("../../images/tiny/recipe.toml");
const INITRAMFS_INIT: &[u8] = include_bytes!("../../firmware/initramfs/init");
const MODULES: &str = include_str!("../../firmware/modules.list");

macro_rules! rootfs_file {
    ($path:literal, $mode:literal) => {
        File { path: $path, data: include_bytes!(concat!("../../images/tiny/rootfs/", $path)), mode: $mode }
    };
}

/// Files the recipe adds to the root disk.
const ROOTFS: &[File] = &[
    rootfs_file!("etc/inittab", 0o644),
    rootfs_file!("etc/init.d/rcS", 0o755),
    rootfs_file!("etc/init.d/rcK", 0o755),
    rootfs_file!("etc/acpi/PWRF/00000080", 0o755),
    rootfs_file!("etc/passwd", 0o644),
    rootfs_file!("etc/group", 0o644),
    rootfs_file!("etc/shadow", 0o600),
    rootfs_file!("etc/shells", 0o644),
    rootfs_file!("etc/nsswitch.conf", 0o644),
    rootfs_file!("etc/hosts", 0o644),
    File { path: "usr/libexec/kvci/beacon", data: crate::image::BEACON, mode: 0o755 },
    File { path: "usr/libexec/kvci/agent", data: crate::image::AGENT, mode: 0o755 },
    rootfs_file!("usr/share/udhcpc/default.script", 0o755),
    rootfs_file!("usr/share/kvci/dhclient6.script", 0o755),
];

/// The recipe's identity: sha256 over every input file, by name.
pub fn recipe_id() -> String {
    let mut d = LayerDigest::default();
    let mut feed = |name: &str, data: &[u8]| d.feed(name, data);
    feed("recipe.toml", RECIPE.as_bytes());
    feed("firmware/initramfs/init", INITRAMFS_INIT);
    feed("firmware/modules.list", MODULES.as_bytes());
    for f in ROOTFS {
        feed(f.path, f.data);
        feed("mode", &f.mode.to_le_bytes());
    }
    d.finish()
}

/// The parsed recipe.
pub fn recipe() -> TinyRecipe {
    TinyRecipe::parse("images/tiny/recipe.toml", RECIPE).expect("the compiled-in recipe is tested to parse")
}

/// `tiny:latest`, the name the image has in the store.
pub fn name() -> ImageName {
    ImageName::new(NAME, DEFAULT_TAG).expect("tiny is a valid image name")
}

/// Returns `tiny` from the store, building it first if it is missing or its recipe changed.
pub fn ensure(store: &Store, cache: &Path) -> Result<Image> {
    let id = recipe_id();
    if let Some(img) = store.get(&name())? {
        if img.manifest.id == id {
            return Ok(img);
        }
    }
    let _building = store.building(&id)?;
    // Another kvci may have built it while we waited for the lock.
    if let Some(img) = store.get(&name())? {
        if img.manifest.id == id {
            return Ok(img);
        }
    }
    build(store, cache, &id)
}

/// Builds `tiny` unconditionally (the caller holds the store lock).
pub fn build(store: &Store, _cache: &Path, id: &str) -> Result<Image> {
    let recipe = recipe();
    let started = Instant::now();
    let staging = store.staging()?;
    let work = store.staging_for("work")?;
    let step = |n: u32, what: &str| eprintln!("kvci: building image {NAME} [{n}/5] {what} ({:.1}s)", started.elapsed().as_secs_f64());

    step(1, "downloading Debian packages");
    let debs_dir = work.path().join("debs");
    std::fs::create_dir_all(&debs_dir)?;
    let meta = debs::download(&debs_dir, std::slice::from_ref(&recipe.kernel_package))?;
    let kernel_pkg = debs::first_dependency(&meta[0])?;
    let kernel_deb = debs::download(&debs_dir, std::slice::from_ref(&kernel_pkg))?;
    let user_debs = debs::download(&debs_dir, &recipe.packages)?;

    step(2, "unpacking");
    let kernel_root = work.path().join("kernel");
    debs::extract(&kernel_deb[0], &kernel_root)?;
    let root = work.path().join("root");
    for deb in &user_debs {
        debs::extract(deb, &root)?;
    }
    for (package, paths) in &recipe.files_from {
        // One download per package, so the new .deb is known to be this package's.
        let deb = debs::download(&debs_dir, std::slice::from_ref(package))?;
        let unpacked = work.path().join("files-from").join(package);
        std::fs::create_dir_all(&unpacked)?;
        debs::extract(&deb[0], &unpacked)?;
        for path in paths {
            rootfs::copy_from_package(&unpacked, package, path, &root)?;
        }
    }
    let (vmlinuz, modules_dir) = find_kernel(&kernel_root)?;
    std::fs::copy(&vmlinuz, staging.path().join("vmlinuz")).context("copying the kernel")?;

    step(3, "writing the initramfs");
    let entries = initramfs_entries(&root.join("bin/busybox"), &modules_dir)?;
    let initrd = std::fs::File::create(staging.path().join("initrd.img"))?;
    initramfs::write(&entries, std::io::BufWriter::new(initrd))?.into_inner().map_err(|e| e.into_error())?.sync_all()?;

    step(4, "making the root disk");
    rootfs::complete(&root, ROOTFS)?;
    let raw = work.path().join("root.ext4");
    rootfs::make_ext4(&root, &raw, recipe.disk_size_mib)?;
    crate::disk::standalone(&raw, &staging.path().join("disk.qcow2"))?;

    step(5, "committing to the image store");
    let manifest = Manifest::root(&name().to_string(), id, recipe.append.clone(), recipe.memory_mib, recipe.cpus);
    let image = store.commit_staged(&store.lock()?, staging, manifest)?;
    eprintln!("kvci: image {NAME} built in {:.1}s ({} MiB)", started.elapsed().as_secs_f64(), image.manifest.size >> 20);
    Ok(image)
}

/// The kernel image and its modules directory inside an unpacked kernel package.
fn find_kernel(kernel_root: &Path) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    let boot = kernel_root.join("boot");
    let vmlinuz = std::fs::read_dir(&boot)
        .with_context(|| format!("the kernel package has no {}", boot.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-")))
        .context("the kernel package has no /boot/vmlinuz-*")?;
    let version = vmlinuz.file_name().unwrap_or_default().to_string_lossy().trim_start_matches("vmlinuz-").to_string();
    let modules = kernel_root.join("lib/modules").join(&version).join("kernel");
    if !modules.is_dir() {
        bail!("the kernel package has no modules at {}", modules.display());
    }
    Ok((vmlinuz, modules))
}

/// The modules to load, in order (comments and blank lines dropped).
pub fn module_list() -> Vec<&'static str> {
    MODULES.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect()
}

fn initramfs_entries(busybox: &Path, modules_dir: &Path) -> Result<Vec<Entry>> {
    let mut entries = vec![Entry::Dir("bin".into())];
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    entries.push(Entry::File { path: "bin/busybox".into(), mode: 0o755, data: read(busybox)? });
    entries.push(Entry::File { path: "init".into(), mode: 0o755, data: INITRAMFS_INIT.to_vec() });
    let list: String = module_list().iter().map(|m| format!("{m}\n")).collect();
    entries.push(Entry::File { path: "modules.list".into(), mode: 0o644, data: list.into_bytes() });
    for m in module_list() {
        let path = format!("lib/modules/{m}.ko");
        initramfs::add_parents(&mut entries, &path);
        entries.push(Entry::File { path, mode: 0o644, data: read(&modules_dir.join(format!("{m}.ko")))? });
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipe_id_is_stable_and_hex() {
        assert_eq!(recipe_id(), recipe_id());
        assert_eq!(recipe_id().len(), 64);
    }

    #[test]
    fn virtio_ring_loads_before_virtio() {
        let list = module_list();
        let pos = |m: &str| list.iter().position(|x| x.ends_with(m)).unwrap();
        assert!(pos("/virtio_ring") < pos("/virtio"));
        assert!(pos("/virtio") < pos("/virtio_pci"));
        assert!(pos("/virtio_pci") < pos("/virtio_blk"));
        assert!(pos("/failover") < pos("/virtio_net"));
    }
}
