//! kubevirtci's published provider images (`quay.io/kubevirtci/k8s-1.xx`): container images
//! whose root holds `/box.qcow2` ← `/disk01.qcow2` ← `/disk02.qcow2` … (overlays backed by
//! `box.qcow2` or `/diskNN.qcow2`), `/vmlinuz`, `/initrd.img`, `/kernel.args` and
//! `/additional.kernel.args`, beside a Fedora runtime kvci does not need. Import extracts
//! those files, takes the newest disk as the top of the chain, and commits the chain as store
//! layers (one per qcow2, backing names rewritten to the store's paths).

use std::collections::BTreeMap;
use std::io::BufReader;

use anyhow::{bail, Context, Result};

use super::blob::{self, BlobRef, HashingReader};
use super::layout::{Layout, Resolved};
use super::media::{self, TarLayer};
use super::tarsafe::components;
use super::unpack::Unpacker;
use crate::image::digest::LayerDigest;
use crate::image::store::{Access, Image, Manifest, Store, UpManifest};

/// The cloud image at the bottom of the chain.
pub const BOX: &str = "box.qcow2";
/// Kernel, initrd and the two kernel argument files.
pub const KERNEL: &str = "vmlinuz";
/// The initramfs.
pub const INITRD: &str = "initrd.img";
/// Kernel arguments.
pub const KERNEL_ARGS: &str = "kernel.args";
/// More kernel arguments (appended).
pub const ADDITIONAL_ARGS: &str = "additional.kernel.args";
/// cluster-up's defaults (`KUBEVIRT_MEMORY_SIZE=5120M`, `KUBEVIRT_NUM_VCPU=6`); gocli's own
/// are 3096M and 2.
pub const MEMORY_MIB: u64 = 5120;
/// vCPUs per node.
pub const CPUS: u32 = 6;
/// The login user of current images, and of images built before the k8s-1.31 provider was
/// dropped (October 2025).
pub const USER: &str = "cloud-user";
/// See [`USER`].
pub const OLD_USER: &str = "vagrant";

/// gocli's `run` steps as kvci's up hooks (`images/kubevirtci/`), each with the shared part
/// in front: (file name in the layer, script).
pub fn hooks() -> [(&'static str, String); 3] {
    const COMMON: &str = include_str!("../../images/kubevirtci/up/common.sh");
    [
        ("up-node01.sh", format!("{COMMON}\n{}", include_str!("../../images/kubevirtci/up/node01.sh"))),
        ("up-nodes.sh", format!("{COMMON}\n{}", include_str!("../../images/kubevirtci/up/nodes.sh"))),
        ("up-last.sh", format!("{COMMON}\n{}", include_str!("../../images/kubevirtci/up/last.sh"))),
    ]
}

/// The login user an image most likely has: `vagrant` when its config says it was built
/// before October 2025, else `cloud-user`. (kvci also tries the other one at readiness.)
pub fn user_for(config: &[u8]) -> &'static str {
    let created = serde_json::from_slice::<serde_json::Value>(config).ok().and_then(|c| c["created"].as_str().map(String::from));
    match created {
        Some(c) if c.as_str() < "2025-10" => OLD_USER,
        _ => USER,
    }
}

/// `NN` of `diskNN.qcow2`.
pub fn disk_number(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("disk")?.strip_suffix(".qcow2")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The login key the image's nodes accept (Vagrant's well-known insecure key).
pub const KEY: &str = "vagrant.key";
/// The provider's folder (manifests, version), kept with the image.
pub const SCRIPTS: &str = "scripts";

/// Whether a file (by path components) is one kvci takes from a kubevirtci image: the disks,
/// boot files and login key at the root, and everything under `/scripts/` (a few levels deep).
pub fn wanted(path: &[String]) -> bool {
    match path {
        [name] => matches!(name.as_str(), BOX | KERNEL | INITRD | KERNEL_ARGS | ADDITIONAL_ARGS | KEY) || disk_number(name).is_some(),
        [dir, rest @ ..] => dir == SCRIPTS && !rest.is_empty() && rest.len() <= 8,
        [] => false,
    }
}

/// The disk `vm.sh` boots: the highest `diskNN.qcow2`, else `box.qcow2`.
pub fn newest_disk<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut best: Option<(u32, &str)> = None;
    let mut has_box = false;
    for n in names {
        if n == BOX {
            has_box = true;
        }
        if let Some(k) = disk_number(n) {
            if best.map_or(true, |(b, _)| k > b) {
                best = Some((k, n));
            }
        }
    }
    best.map(|(_, n)| n.to_string()).or_else(|| has_box.then(|| BOX.to_string()))
}

/// The image file a qcow2 backing name refers to: `box.qcow2`, `/disk01.qcow2` and
/// `./disk01.qcow2` are root-level files; anything else is not part of the image.
pub fn backing_name(raw: &str) -> Option<String> {
    let parts = components(raw.as_bytes()).ok()?;
    match parts.as_slice() {
        [name] if name == BOX || disk_number(name).is_some() => Some(name.clone()),
        _ => None,
    }
}

/// The chain from the base up to `top`, following `backing` (disk → raw backing name).
pub fn chain(top: &str, backing: &BTreeMap<String, Option<String>>) -> Result<Vec<String>> {
    let mut out = vec![top.to_string()];
    let mut cur = top.to_string();
    loop {
        let Some(raw) = backing.get(&cur).with_context(|| format!("/{cur} is missing from the image"))? else { break };
        let Some(next) = backing_name(raw) else {
            bail!("/{cur} is backed by {raw:?}; a kubevirtci image's disks are backed by box.qcow2 or /diskNN.qcow2");
        };
        if out.contains(&next) {
            bail!("the disks' backing files form a loop at /{next}");
        }
        if !backing.contains_key(&next) {
            bail!("/{cur} is backed by /{next}, which the image does not have (a later layer deleted it?)");
        }
        out.push(next.clone());
        cur = next;
    }
    out.reverse();
    Ok(out)
}

/// `kernel.args` and `additional.kernel.args` as one command line.
pub fn kernel_args(args: &str, additional: &str) -> String {
    args.split_whitespace().chain(additional.split_whitespace()).collect::<Vec<_>>().join(" ")
}

/// Reads every layer of `resolved` into `unpacker`, verifying each blob's digest as it streams.
pub fn unpack_layers(layout: &Layout, resolved: &Resolved, unpacker: &mut Unpacker) -> Result<()> {
    let n = resolved.manifest.layers().len();
    for (i, d) in resolved.manifest.layers().iter().enumerate() {
        let what = format!("layer {}/{n} ({})", i + 1, d.digest());
        eprintln!("kvci: reading {what}, {} MiB", d.size() >> 20);
        let kind = media::tar_layer(d.media_type().as_ref()).map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
        let path = layout.blob_path(d.digest().as_ref())?;
        let file = std::fs::File::open(&path).with_context(|| format!("{what} is missing ({}); copy the image again", path.display()))?;
        let mut hashed = HashingReader::new(BufReader::with_capacity(blob::BUF, file));
        match kind {
            TarLayer::Plain => unpacker.apply(&mut hashed, &what)?,
            TarLayer::Gzip => unpacker.apply(flate2::read::MultiGzDecoder::new(&mut hashed), &what)?,
        }
        let expected = BlobRef { sha256: blob::sha256_hex(d.digest().as_ref())?.to_string(), size: d.size() };
        hashed.verify(&expected, &what)?;
    }
    Ok(())
}

/// Imports a kubevirtci provider image as `name`; `skip_unsafe_links` ignores links kvci
/// does not read instead of refusing their layer.
pub fn import(store: &Store, layout: &Layout, resolved: &Resolved, name: &str, skip_unsafe_links: bool) -> Result<Image> {
    let staging = store.staging()?;
    let extract = staging.path().join("files");
    std::fs::create_dir(&extract)?;
    let mut unpacker = Unpacker::new(&extract, wanted);
    unpacker.skip_unsafe_links = skip_unsafe_links;
    unpack_layers(layout, resolved, &mut unpacker)?;
    let files = unpacker.files().clone();

    let top = newest_disk(files.keys().map(String::as_str)).context(
        "the image has no /box.qcow2 or /diskNN.qcow2 at its root: it is neither a kvci export nor a kubevirtci provider image",
    )?;
    for needed in [KERNEL, INITRD] {
        if !files.contains_key(needed) {
            bail!("the image has no /{needed}: kvci boots kubevirtci images with their own kernel and initrd");
        }
    }
    let mut backing = BTreeMap::new();
    for n in files.keys().filter(|n| *n == BOX || disk_number(n).is_some()) {
        let info = crate::disk::info(&unpacker.path(n))?;
        if info.format != "qcow2" {
            bail!("/{n} is {}, not qcow2", info.format);
        }
        if let Some(data) = info.data_file() {
            bail!("/{n} keeps its data in an external file ({data}): refused");
        }
        backing.insert(n.clone(), info.backing_filename);
    }
    let chain = chain(&top, &backing)?;
    let read = |f: &str| files.get(f).map(|_| std::fs::read_to_string(unpacker.path(f))).transpose();
    let append = kernel_args(&read(KERNEL_ARGS)?.unwrap_or_default(), &read(ADDITIONAL_ARGS)?.unwrap_or_default());

    // Layer ids from contents: the same box.qcow2 in two images is one store layer.
    let mut layers: Vec<Manifest> = Vec::new();
    for (i, disk) in chain.iter().enumerate() {
        let mut id = LayerDigest::default();
        id.feed("kubevirtci-disk", files[disk].as_bytes());
        id.feed("parent", layers.last().map(|m| m.id.as_str()).unwrap_or("").as_bytes());
        let is_top = i + 1 == chain.len();
        if is_top {
            id.feed("kernel", files[KERNEL].as_bytes());
            id.feed("initrd", files[INITRD].as_bytes());
            id.feed("append", append.as_bytes());
            // What kvci adds to the top layer: the login key, the provider's scripts, the hooks.
            for (f, sha) in files.iter().filter(|(f, _)| *f == KEY || f.starts_with("scripts/")) {
                id.feed(f, sha.as_bytes());
            }
            for (f, body) in hooks() {
                id.feed(f, body.as_bytes());
            }
        }
        let mut m = Manifest::root(name, &id.finish(), append.clone(), MEMORY_MIB, CPUS);
        m.parent = layers.last().map(|p| p.id.clone());
        if is_top {
            m.access = Access::Kubevirtci { user: user_for(&resolved.config).into(), key: KEY.into() };
            let [first, others, last] = hooks().map(|(f, _)| f.to_string());
            m.up = Some(UpManifest { first, others: Some(others), parallel: false, last: Some(last) });
        }
        layers.push(m);
    }

    let lock = store.lock()?;
    for (disk, m) in chain.iter().zip(&layers) {
        if store.layer_dir(&m.id).exists() {
            continue;
        }
        let dir = staging.path().join(&m.id);
        std::fs::create_dir_all(&dir)?;
        let staged = dir.join("disk.qcow2");
        std::fs::rename(unpacker.path(disk), &staged)?;
        if let Some(parent) = &m.parent {
            crate::disk::set_backing(&staged, &store.layer_dir(parent).join("disk.qcow2"))?;
        }
        if Some(m) == layers.last() {
            std::fs::rename(unpacker.path(KERNEL), dir.join(KERNEL))?;
            std::fs::rename(unpacker.path(INITRD), dir.join(INITRD))?;
            if !files.contains_key(KEY) {
                bail!("the image has no /{KEY}: kvci logs in to kubevirtci's nodes with the key the image carries");
            }
            for f in files.keys().filter(|f| *f == KEY || f.starts_with("scripts/")) {
                let to = dir.join(f);
                std::fs::create_dir_all(to.parent().unwrap_or(&dir))?;
                std::fs::rename(unpacker.path(f), &to)?;
            }
            for (f, body) in hooks() {
                std::fs::write(dir.join(f), body)?;
            }
        }
    }
    let mut top_manifest = None;
    for m in layers {
        let mut m = m;
        let dir = staging.path().join(&m.id);
        if dir.exists() {
            store.commit_layer(&lock, &dir, &mut m)?;
        } else {
            m.size = store.layer_manifest(&m.id)?.map(|l| l.size).unwrap_or(0);
        }
        top_manifest = Some(m);
    }
    let manifest = top_manifest.context("empty chain")?;
    store.name(&lock, &manifest)?;
    Ok(Image { dir: store.layer_dir(&manifest.id), manifest })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_disk_is_the_highest_number() {
        assert_eq!(newest_disk(["box.qcow2", "disk01.qcow2", "disk02.qcow2", "vmlinuz"]).as_deref(), Some("disk02.qcow2"));
        assert_eq!(newest_disk(["disk10.qcow2", "disk9.qcow2", "box.qcow2"]).as_deref(), Some("disk10.qcow2"));
        assert_eq!(newest_disk(["box.qcow2"]).as_deref(), Some("box.qcow2"));
        assert_eq!(newest_disk(["vmlinuz"]), None);
        assert_eq!(disk_number("disk.qcow2"), None);
        assert_eq!(disk_number("disk0x.qcow2"), None);
        let w = |p: &str| wanted(&p.split('/').map(String::from).collect::<Vec<_>>());
        assert!(w("kernel.args") && w("disk03.qcow2") && !w("usr") && !w("disk01.raw"));
        assert!(w("vagrant.key") && w("scripts/version") && w("scripts/manifests/a.yaml") && !w("scripts") && !w("usr/scripts/x"));
    }

    #[test]
    fn backing_names_map_to_root_files() {
        assert_eq!(backing_name("/disk01.qcow2").as_deref(), Some("disk01.qcow2"));
        assert_eq!(backing_name("box.qcow2").as_deref(), Some("box.qcow2"));
        assert_eq!(backing_name("./box.qcow2").as_deref(), Some("box.qcow2"));
        assert_eq!(backing_name("/var/lib/box.qcow2"), None);
        assert_eq!(backing_name("../box.qcow2"), None);
        assert_eq!(backing_name("json:{\"file\":\"/etc/shadow\"}"), None);
        assert_eq!(backing_name("/etc/shadow"), None);
    }

    #[test]
    fn chain_follows_backing_names_to_the_box() {
        let map = |v: &[(&str, Option<&str>)]| v.iter().map(|(k, b)| (k.to_string(), b.map(String::from))).collect::<BTreeMap<_, _>>();
        let disks = map(&[("box.qcow2", None), ("disk01.qcow2", Some("/box.qcow2")), ("disk02.qcow2", Some("disk01.qcow2"))]);
        assert_eq!(chain("disk02.qcow2", &disks).unwrap(), ["box.qcow2", "disk01.qcow2", "disk02.qcow2"]);
        let skip = map(&[("box.qcow2", None), ("disk01.qcow2", Some("box.qcow2")), ("disk02.qcow2", Some("/box.qcow2"))]);
        assert_eq!(chain("disk02.qcow2", &skip).unwrap(), ["box.qcow2", "disk02.qcow2"]);
        let missing = map(&[("disk02.qcow2", Some("/disk01.qcow2"))]);
        assert!(chain("disk02.qcow2", &missing).unwrap_err().to_string().contains("does not have"));
        let outside = map(&[("disk01.qcow2", Some("/var/lib/images/base.qcow2"))]);
        assert!(chain("disk01.qcow2", &outside).unwrap_err().to_string().contains("backed by"));
        let looped = map(&[("disk01.qcow2", Some("disk02.qcow2")), ("disk02.qcow2", Some("disk01.qcow2"))]);
        assert!(chain("disk02.qcow2", &looped).unwrap_err().to_string().contains("loop"));
    }

    #[test]
    fn kernel_args_are_joined() {
        assert_eq!(kernel_args("console=ttyS0 root=/dev/vda1\n", " intel_iommu=on\n"), "console=ttyS0 root=/dev/vda1 intel_iommu=on");
        assert_eq!(kernel_args("", ""), "");
    }
}
