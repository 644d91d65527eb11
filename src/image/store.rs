//! The frozen image store: read-only, content-addressed layers and named manifests.
//!
//! ```text
//! images/layers/<id>/{vmlinuz,initrd.img,disk.qcow2}   read-only once committed
//! images/manifests/<name>:<tag>.json                    name → layer + boot settings
//! images/staging/                                       builds in progress (same filesystem)
//! images/lock                                           held while building or committing
//! ```
//! A build is staged and renamed into place in one step, so a failed build leaves nothing.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::name::ImageName;

/// What the store records about an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Image name (`tiny`).
    pub name: String,
    /// Layer id: sha256 of what built it.
    pub id: String,
    /// Kernel file in the layer.
    pub kernel: String,
    /// Initramfs file in the layer.
    pub initrd: String,
    /// Root disk (qcow2) in the layer.
    pub disk: String,
    /// Kernel command line.
    pub append: String,
    /// Default memory per node, MiB.
    pub memory_mib: u64,
    /// Default vCPUs per node.
    pub cpus: u32,
    /// Unix time of the build.
    pub created: u64,
    /// Bytes on disk.
    pub size: u64,
    /// The layer this one's disk is an overlay of (its qcow2 backing file), if any.
    #[serde(default)]
    pub parent: Option<String>,
    /// The layer holding kernel and initrd, when not this one.
    #[serde(default)]
    pub boot_layer: Option<String>,
    /// Scripts run at `vm up` (files in this layer).
    #[serde(default)]
    pub up: Option<UpManifest>,
    /// Default node count.
    #[serde(default)]
    pub nodes: Option<u32>,
    /// A frozen cluster: per-node disks and saved RAM, resumed instead of booted.
    #[serde(default)]
    pub frozen: Option<FrozenManifest>,
    /// Extra ports the image's provider exposes on node01 (name → guest port).
    #[serde(default)]
    pub ports: std::collections::BTreeMap<String, u16>,
    /// How kvci reaches and readies a node of this image.
    #[serde(default, skip_serializing_if = "Access::is_beacon")]
    pub access: Access,
    /// Default node shape for `vm up` (provider `[defaults]`); flags override field by field.
    #[serde(default, skip_serializing_if = "crate::shape::NodeShape::is_empty")]
    pub shape: crate::shape::NodeShape,
}

/// How kvci learns a node is ready and logs in.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Access {
    /// Images kvci builds: the guest's beacon says ready, the cluster key comes in through
    /// fw_cfg, kvci's guest agent applies resume fix-ups.
    #[default]
    Beacon,
    /// kubevirtci's images: ready once the node took its leases and `user` logs in with the
    /// image's own private key (`key`, a file in the layer); kvci then adds the cluster key to
    /// root's authorized_keys (gocli's root-key step) and the image gets kubevirtci's devices.
    Kubevirtci {
        /// Login user (`cloud-user`; `vagrant` in images from before 2025-10).
        user: String,
        /// The private key's file name in the image's top layer.
        key: String,
    },
}

impl Access {
    fn is_beacon(&self) -> bool {
        *self == Access::Beacon
    }
}

/// What a frozen cluster image holds beside its base.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrozenManifest {
    /// Nodes in order.
    pub nodes: Vec<FrozenNode>,
    /// The cluster network's subnet at freeze time (addresses are kept).
    pub subnet: String,
    /// Accelerator the state was saved under.
    pub accel: crate::accel::Accel,
    /// QEMU version that saved the state (`major.minor.micro`).
    pub qemu_version: String,
    /// Per-node memory, MiB (must match on resume).
    pub memory_mib: u64,
    /// Per-node vCPUs (must match on resume).
    pub cpus: u32,
    /// The IP versions its nodes had (images frozen before IPv6 had IPv4 only).
    #[serde(default = "ipv4_only")]
    pub stack: crate::config::IpStack,
    /// The node shape it was saved with (`--numa`, …; must match on resume). Images frozen
    /// before shapes have the empty one.
    #[serde(default)]
    pub shape: crate::shape::NodeShape,
}

fn ipv4_only() -> crate::config::IpStack {
    crate::config::IpStack::Ipv4
}

/// One frozen node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrozenNode {
    /// `nodeNN`.
    pub name: String,
    /// Its SMBIOS UUID.
    pub uuid: String,
    /// Its disk overlay in the layer.
    pub disk: String,
    /// Its saved RAM and device state in the layer.
    pub state: String,
}

impl Manifest {
    /// A root layer (no parent) with `vmlinuz`, `initrd.img` and `disk.qcow2`, created now.
    pub fn root(name: &str, id: &str, append: String, memory_mib: u64, cpus: u32) -> Manifest {
        Manifest {
            name: name.into(),
            id: id.into(),
            kernel: "vmlinuz".into(),
            initrd: "initrd.img".into(),
            disk: "disk.qcow2".into(),
            append,
            memory_mib,
            cpus,
            created: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            size: 0,
            parent: None,
            boot_layer: None,
            up: None,
            nodes: None,
            frozen: None,
            ports: Default::default(),
            access: Access::Beacon,
            shape: Default::default(),
        }
    }
}

/// Up hooks as stored with an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpManifest {
    /// Script for node01 (file name in the layer).
    pub first: String,
    /// Script for the other nodes.
    pub others: Option<String>,
    /// Run every node's hook at once.
    pub parallel: bool,
    /// Script run on node01 once every other node's hook succeeded (file name in the layer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<String>,
}

/// An image ready to boot.
#[derive(Debug, Clone)]
pub struct Image {
    /// Its manifest.
    pub manifest: Manifest,
    /// Its layer directory.
    pub dir: PathBuf,
}

impl Image {
    fn boot_dir(&self) -> PathBuf {
        match (&self.manifest.boot_layer, self.dir.parent()) {
            (Some(layer), Some(layers)) => layers.join(layer),
            _ => self.dir.clone(),
        }
    }
    /// Kernel path.
    pub fn kernel(&self) -> PathBuf {
        self.boot_dir().join(&self.manifest.kernel)
    }
    /// Initramfs path.
    pub fn initrd(&self) -> PathBuf {
        self.boot_dir().join(&self.manifest.initrd)
    }
    /// Read-only base disk.
    pub fn disk(&self) -> PathBuf {
        self.dir.join(&self.manifest.disk)
    }

    /// `file` in the image's own layer, or else in the nearest layer below it that has it (a
    /// frozen or derived image keeps using its base's login key).
    pub fn layer_file(&self, file: &str) -> Option<PathBuf> {
        let layers = self.dir.parent()?;
        let (mut dir, mut parent) = (self.dir.clone(), self.manifest.parent.clone());
        for _ in 0..64 {
            if dir.join(file).exists() {
                return Some(dir.join(file));
            }
            let id = parent?;
            dir = layers.join(&id);
            parent = std::fs::read(dir.join("manifest.json")).ok().and_then(|b| serde_json::from_slice::<Manifest>(&b).ok()).and_then(|m| m.parent);
        }
        None
    }
}

/// What [`Store::list`] found.
#[derive(Debug, Default)]
pub struct Listing {
    /// Readable manifests, by name.
    pub images: Vec<Manifest>,
    /// Manifests that could not be read, with why.
    pub unreadable: Vec<(PathBuf, String)>,
}

impl Listing {
    /// Says on stderr which manifests could not be read, so an empty list is not taken for an
    /// empty store.
    pub fn warn_unreadable(&self) {
        for (path, why) in &self.unreadable {
            eprintln!("kvci: warning: cannot read image manifest {} ({why}); `kvci image ls` leaves it out", path.display());
        }
    }
}

/// The store at one root directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the store at `root`. Manifests of older kvci versions named
    /// without a tag (`tiny.json`) get their one spelling (`tiny:latest.json`).
    pub fn open(root: &Path) -> Result<Store> {
        for sub in ["layers", "manifests", "staging", "building"] {
            let p = root.join(sub);
            std::fs::create_dir_all(&p).with_context(|| format!("creating image store directory {}", p.display()))?;
        }
        let store = Store { root: root.to_path_buf() };
        store.tag_untagged_manifests()?;
        store.sweep_staging();
        Ok(store)
    }

    fn tag_untagged_manifests(&self) -> Result<()> {
        let mut lock: Option<StoreLock> = None;
        for e in std::fs::read_dir(self.root.join("manifests"))? {
            let path = e?.path();
            let Some(stem) = path.file_stem().and_then(|s| s.to_str()).filter(|_| path.extension().is_some_and(|x| x == "json")) else {
                continue;
            };
            if stem.contains(':') {
                continue;
            }
            let Ok(name) = ImageName::parse(stem) else { continue };
            let Ok(mut manifest) = serde_json::from_slice::<Manifest>(&std::fs::read(&path)?) else { continue };
            if self.manifest_path(&name).exists() {
                // Both spellings exist (an older `vm freeze --to tiny` made `tiny:latest` beside
                // `tiny`): keep the untagged one under a tag of its own rather than lose it.
                let kept = ImageName::new(name.repo(), &format!("untagged-{}", &manifest.id[..12.min(manifest.id.len())]))?;
                eprintln!("kvci: image store: {stem} and {name} both existed; the older spelling is now {kept}");
                manifest.name = kept.to_string();
            } else {
                manifest.name = name.to_string();
            }
            if lock.is_none() {
                lock = Some(self.lock()?);
            }
            self.name(lock.as_ref().expect("just taken"), &manifest)?;
            std::fs::remove_file(&path)?;
        }
        Ok(())
    }

    /// The store's root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Blocks until this process is the only one building or committing; says who it waits for.
    pub fn lock(&self) -> Result<StoreLock> {
        match self.try_lock()? {
            Ok(lock) => Ok(lock),
            Err(holder) => {
                eprintln!("kvci: waiting for the image store: {holder}");
                let f = self.lock_file()?;
                let lock = Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| e).context("locking the image store")?;
                Ok(mark_holder(lock))
            }
        }
    }

    /// Serialises builds of one layer id across processes (so the same recipe is not built twice
    /// at once) without holding the store lock, which commits, freezes and prunes need.
    pub fn building(&self, id: &str) -> Result<Flock<File>> {
        let dir = self.root.join("building");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{id}.lock"));
        let f = File::options().create(true).truncate(false).write(true).open(&path).with_context(|| format!("opening {}", path.display()))?;
        match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
            Ok(l) => Ok(l),
            Err((f, nix::errno::Errno::EWOULDBLOCK)) => {
                eprintln!("kvci: another kvci is building the same image ({}); waiting for it", &id[..12.min(id.len())]);
                Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| e).context("waiting for the other build")
            }
            Err((_, e)) => Err(e).with_context(|| format!("locking {}", path.display())),
        }
    }

    /// As [`Store::lock`], giving up after `timeout` with an error naming the holder. Polls (a
    /// flock cannot be waited for with a deadline), so call it off an async runtime's thread.
    pub fn lock_within(&self, timeout: std::time::Duration) -> Result<StoreLock> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            match self.try_lock()? {
                Ok(lock) => return Ok(lock),
                Err(holder) if std::time::Instant::now() >= deadline => {
                    anyhow::bail!("the image store stayed locked for {}s: {holder}", timeout.as_secs())
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
            }
        }
    }

    /// The lock if free, else who holds it (pid and command line, as the holder wrote them).
    fn try_lock(&self) -> Result<std::result::Result<StoreLock, String>> {
        match Flock::lock(self.lock_file()?, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Ok(mark_holder(lock))),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                let who = std::fs::read_to_string(self.root.join("lock")).unwrap_or_default();
                let who = who.trim();
                Ok(Err(if who.is_empty() { "locked by another kvci".to_string() } else { format!("locked by {who}") }))
            }
            Err((_, e)) => Err(e).context("locking the image store"),
        }
    }

    fn lock_file(&self) -> Result<File> {
        let path = self.root.join("lock");
        File::options().create(true).truncate(false).read(true).write(true).open(&path).with_context(|| format!("opening {}", path.display()))
    }

    /// A fresh staging directory on the store's filesystem, removed when dropped.
    pub fn staging(&self) -> Result<tempfile::TempDir> {
        self.staging_for("build")
    }

    /// A fresh staging directory named `KIND-PID-START-…` after this process (pid and start
    /// time), so that once the process is gone (Ctrl-C, `kill -9`) the next [`Store::open`]
    /// knows the directory is nobody's and removes it.
    pub fn staging_for(&self, kind: &str) -> Result<tempfile::TempDir> {
        let pid = std::process::id();
        let prefix = format!("{kind}-{pid}-{}-", process_start(pid).unwrap_or(0));
        tempfile::Builder::new().prefix(&prefix).tempdir_in(self.root.join("staging")).context("creating a staging directory")
    }

    /// Removes staging directories whose process is gone; directories of older kvci versions
    /// (no pid in the name) once they are a day old. Says what it freed.
    fn sweep_staging(&self) {
        let Ok(entries) = std::fs::read_dir(self.root.join("staging")) else { return };
        let (mut count, mut bytes) = (0, 0u64);
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let stale = match staging_owner(&name) {
                Some((pid, start)) => process_start(pid) != Some(start),
                None => e.metadata().and_then(|m| m.modified()).is_ok_and(|t| t.elapsed().is_ok_and(|age| age.as_secs() > 24 * 3600)),
            };
            if stale {
                let path = e.path();
                bytes += tree_size(&path);
                make_writable(&path);
                if std::fs::remove_dir_all(&path).is_ok() || std::fs::remove_file(&path).is_ok() {
                    count += 1;
                }
            }
        }
        if count > 0 {
            eprintln!("kvci: removed {count} staging director{} ({} MiB) left by interrupted builds", if count == 1 { "y" } else { "ies" }, bytes >> 20);
        }
    }

    /// The image called `name`, if its manifest and layer are there.
    pub fn get(&self, name: &ImageName) -> Result<Option<Image>> {
        let path = self.manifest_path(name);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let mut manifest: Manifest = serde_json::from_str(&text).with_context(|| format!("corrupt image manifest {}", path.display()))?;
        manifest.name = name.to_string();
        let dir = self.root.join("layers").join(&manifest.id);
        if !dir.join(&manifest.disk).is_file() {
            anyhow::bail!("image {name} is damaged: its layer {} is missing; rebuild it (`kvci image build {}`)", dir.display(), name.repo());
        }
        Ok(Some(Image { manifest, dir }))
    }

    /// Whether an image is called `name`.
    pub fn exists(&self, name: &ImageName) -> bool {
        self.manifest_path(name).exists()
    }

    /// All images, by name, and the manifests that could not be read (damaged, or written by a
    /// newer kvci): callers must not take those for absent.
    pub fn list(&self) -> Result<Listing> {
        let mut listing = Listing::default();
        for e in std::fs::read_dir(self.root.join("manifests"))? {
            let p = e?.path();
            if !p.extension().is_some_and(|x| x == "json") {
                continue;
            }
            let parsed = std::fs::read(&p).map_err(anyhow::Error::from).and_then(|b| Ok(serde_json::from_slice::<Manifest>(&b)?));
            match parsed {
                Ok(m) => listing.images.push(m),
                Err(e) => listing.unreadable.push((p, e.to_string())),
            }
        }
        listing.images.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(listing)
    }

    /// Commits a staging directory (see [`Store::commit`]); on failure it is removed.
    pub fn commit_staged(&self, lock: &StoreLock, staging: tempfile::TempDir, manifest: Manifest) -> Result<Image> {
        let staged = staging.keep();
        let image = self.commit(lock, &staged, manifest);
        if image.is_err() {
            let _ = std::fs::remove_dir_all(&staged);
        }
        image
    }

    /// Moves a staged layer into place (read-only) and points `manifest.name` at it.
    /// Call with the store lock held.
    pub fn commit(&self, lock: &StoreLock, staged: &Path, mut manifest: Manifest) -> Result<Image> {
        let dir = self.commit_layer(lock, staged, &mut manifest)?;
        self.name(lock, &manifest)?;
        Ok(Image { manifest, dir })
    }

    /// Moves a staged layer into place (read-only) without naming it, unless a layer with that
    /// id is there already; sets `manifest.size`. Call with the store lock held.
    pub fn commit_layer(&self, _lock: &StoreLock, staged: &Path, manifest: &mut Manifest) -> Result<PathBuf> {
        let dir = self.layer_dir(&manifest.id);
        manifest.size = dir_size(staged)?;
        if !dir.exists() {
            // Each layer keeps its own manifest, so parent chains survive renames and `rm`.
            std::fs::write(staged.join("manifest.json"), serde_json::to_vec_pretty(&manifest)?)?;
            // What the layer holds, for `kvci image check` to compare with later.
            let content = super::check::hash_tree(staged)?;
            std::fs::write(staged.join(super::check::CONTENT), serde_json::to_vec_pretty(&content)?)?;
            read_only(staged)?;
            // On disk before it has its name: a crash must not leave a named, torn layer.
            sync_tree(staged)?;
            std::fs::rename(staged, &dir).with_context(|| format!("moving {} into the store", staged.display()))?;
            File::open(self.root.join("layers"))?.sync_all()?;
        }
        Ok(dir)
    }

    /// The directory of layer `id` (which may not exist).
    pub fn layer_dir(&self, id: &str) -> PathBuf {
        self.root.join("layers").join(id)
    }

    /// The layer's own manifest (`layers/<id>/manifest.json`), if the layer is there.
    pub fn layer_manifest(&self, id: &str) -> Result<Option<Manifest>> {
        let path = self.layer_dir(id).join("manifest.json");
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(serde_json::from_slice(&b).with_context(|| format!("corrupt layer manifest {}", path.display()))?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Points `manifest.name` (a valid [`ImageName`], stored with its tag) at its layer (which
    /// must be committed).
    pub fn name(&self, _lock: &StoreLock, manifest: &Manifest) -> Result<()> {
        let name = ImageName::parse(&manifest.name)?;
        let manifest = Manifest { name: name.to_string(), ..manifest.clone() };
        let path = self.manifest_path(&name);
        let tmp = path.with_extension("json.tmp");
        let mut f = File::create(&tmp)?;
        f.write_all(serde_json::to_string_pretty(&manifest)?.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        Ok(())
    }

    /// Removes the name `name` (its layers stay until `prune`).
    pub fn remove(&self, _lock: &StoreLock, name: &ImageName) -> Result<bool> {
        match std::fs::remove_file(self.manifest_path(name)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes layers no image needs (directly or as a parent or boot layer) and that do not
    /// back a running cluster (`running`: the layers they started from); returns their ids.
    /// Refuses while a manifest cannot be read: its layers would look unused.
    pub fn prune(&self, _lock: &StoreLock, running: &[String]) -> Result<Vec<String>> {
        let listing = self.list()?;
        if let Some((path, why)) = listing.unreadable.first() {
            anyhow::bail!(
                "not pruning: image manifest {} cannot be read ({why}), so the layers it needs are unknown; \
                 fix or remove that file first",
                path.display()
            );
        }
        let mut manifests = listing.images;
        for id in running {
            match self.layer_manifest(id)? {
                Some(m) => manifests.push(m),
                None => tracing::warn!(layer = %id, "a running cluster's layer is not in the store"),
            }
        }
        let mut keep: Vec<String> = Vec::new();
        for m in &manifests {
            keep.push(m.id.clone());
            keep.extend(m.boot_layer.clone());
            // Walk the parent chain through the layers' own manifests.
            let mut parent = m.parent.clone();
            while let Some(p) = parent {
                keep.push(p.clone());
                let layer_manifest = self.root.join("layers").join(&p).join("manifest.json");
                parent = std::fs::read(&layer_manifest).ok().and_then(|b| serde_json::from_slice::<Manifest>(&b).ok()).and_then(|m| {
                    keep.extend(m.boot_layer.clone());
                    m.parent
                });
            }
        }
        let mut removed = Vec::new();
        for e in std::fs::read_dir(self.root.join("layers"))? {
            let e = e?;
            let id = e.file_name().to_string_lossy().into_owned();
            if !keep.contains(&id) {
                make_writable(&e.path());
                std::fs::remove_dir_all(e.path())?;
                removed.push(id);
            }
        }
        Ok(removed)
    }

    fn manifest_path(&self, name: &ImageName) -> PathBuf {
        self.root.join("manifests").join(format!("{name}.json"))
    }
}

/// Makes a staged layer's files read-only (private keys readable by their owner only) and its
/// subdirectories read-only but traversable; the layer directory itself stays as it is.
fn read_only(dir: &Path) -> Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() && !p.is_symlink() {
            read_only(&p)?;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o555))?;
        } else {
            let mode = if p.extension().is_some_and(|x| x == "key") { 0o400 } else { 0o444 };
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
        }
    }
    Ok(())
}

/// The image store's lock, held: what commits, names, removals and prunes require (they take
/// it as an argument, so none can run without it). Dropping it clears the holder's record and
/// unlocks.
#[derive(Debug)]
pub struct StoreLock {
    lock: Flock<File>,
}

impl Drop for StoreLock {
    fn drop(&mut self) {
        let _ = self.lock.set_len(0);
    }
}

/// Writes who holds the store lock into the lock file, for those who wait on it.
fn mark_holder(lock: Flock<File>) -> StoreLock {
    use std::io::Seek;
    let cmdline = std::fs::read("/proc/self/cmdline").unwrap_or_default();
    let words: Vec<String> = cmdline.split(|b| *b == 0).filter(|w| !w.is_empty()).map(|w| String::from_utf8_lossy(w).into_owned()).collect();
    let text = format!("pid {} ({})\n", std::process::id(), words.join(" "));
    let mut f: &File = &lock;
    let _ = f.set_len(0).and_then(|_| f.rewind()).and_then(|_| f.write_all(text.as_bytes()));
    StoreLock { lock }
}

/// fsyncs every file and directory under `dir`, and `dir` itself.
fn sync_tree(dir: &Path) -> Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let p = e.path();
        let kind = e.file_type()?;
        if kind.is_dir() {
            sync_tree(&p)?;
        } else if kind.is_file() {
            File::open(&p).and_then(|f| f.sync_all()).with_context(|| format!("syncing {}", p.display()))?;
        }
    }
    File::open(dir).and_then(|f| f.sync_all()).with_context(|| format!("syncing {}", dir.display()))?;
    Ok(())
}

/// The owner of a staging directory named by [`Store::staging_for`]: its pid and start time.
fn staging_owner(name: &str) -> Option<(u32, u64)> {
    let mut parts = name.splitn(4, '-');
    let (_kind, pid, start) = (parts.next()?, parts.next()?.parse().ok()?, parts.next()?.parse().ok()?);
    parts.next()?;
    Some((pid, start))
}

/// A process's start time (clock ticks since boot, `/proc/PID/stat` field 22): with the pid it
/// names one process, whatever pids get reused.
fn process_start(pid: u32) -> Option<u64> {
    // A killed process not yet reaped (zombie) is gone for our purpose.
    if !crate::procfs::running(pid) {
        return None;
    }
    crate::procfs::stat_fields(pid)?.get(19)?.parse().ok()
}

/// Bytes a tree takes on disk (what a sweep frees).
fn tree_size(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else { return 0 };
    let own = meta.blocks() * 512;
    if !meta.is_dir() {
        return own;
    }
    own + std::fs::read_dir(path).map(|d| d.flatten().map(|e| tree_size(&e.path())).sum()).unwrap_or(0)
}

/// Undoes [`read_only`] so a layer can be deleted.
fn make_writable(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            let dir = p.is_dir() && !p.is_symlink();
            let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(if dir { 0o755 } else { 0o644 }));
            if dir {
                make_writable(&p);
            }
        }
    }
}

fn dir_size(dir: &Path) -> Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for e in std::fs::read_dir(dir)? {
        total += e?.metadata()?.blocks() * 512;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(name: &str, id: &str) -> Manifest {
        Manifest::root(name, id, "console=ttyS0".into(), 512, 1)
    }

    fn n(s: &str) -> ImageName {
        ImageName::parse(s).unwrap()
    }

    fn commit(store: &Store, name: &str, id: &str, parent: Option<&str>) {
        let staged = store.staging().unwrap();
        std::fs::write(staged.path().join("disk.qcow2"), b"q").unwrap();
        let mut m = manifest(name, id);
        m.parent = parent.map(String::from);
        store.commit(&store.lock().unwrap(), &staged.keep(), m).unwrap();
    }

    #[test]
    fn staging_of_dead_processes_is_swept_on_open_and_live_ones_stay() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let live = store.staging().unwrap();
        std::fs::write(live.path().join("disk.qcow2"), b"x").unwrap();
        // A dead owner: pid 1's start time is not 1, and a pid that cannot exist.
        for dead in ["build-1-1-abc", "work-4194305-7-xyz"] {
            let d = root.path().join("staging").join(dead);
            std::fs::create_dir_all(d.join("sub")).unwrap();
            std::fs::write(d.join("sub/f"), b"y").unwrap();
            std::fs::set_permissions(d.join("sub"), std::fs::Permissions::from_mode(0o555)).unwrap();
        }
        // An older kvci's directory, not yet a day old: kept.
        std::fs::create_dir(root.path().join("staging/build-Ab12")).unwrap();
        let _ = Store::open(root.path()).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(root.path().join("staging")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        left.sort();
        let own = live.path().file_name().unwrap().to_string_lossy().into_owned();
        let mut want = vec![own.clone(), "build-Ab12".to_string()];
        want.sort();
        assert_eq!(left, want);
        assert!(staging_owner(&own).is_some_and(|(pid, _)| pid == std::process::id()));
    }

    #[test]
    fn a_held_store_lock_names_its_holder_and_a_deadline_ends_the_wait() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let held = store.lock().unwrap();
        // Another open file description (as another process would have) waits in vain.
        let err = store.lock_within(std::time::Duration::from_millis(300)).unwrap_err().to_string();
        assert!(err.contains(&format!("locked by pid {}", std::process::id())), "{err}");
        drop(held);
        assert!(store.lock_within(std::time::Duration::from_millis(300)).is_ok());
    }

    #[test]
    fn check_finds_torn_missing_and_foreign_files_and_missing_layers() {
        use crate::image::check;
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        commit(&store, "base", "l1", None);
        commit(&store, "top", "l2", Some("l1"));
        let report = check::check(&store).unwrap();
        assert!(report.damaged.is_empty(), "{:?}", report.damaged);
        assert_eq!((report.layers_ok, report.images_ok), (2, 2));

        // A flipped byte in the parent's disk, a file gone, a file that was never there.
        let l1 = store.layer_dir("l1");
        make_writable(&l1);
        let disk = l1.join("disk.qcow2");
        let mut bytes = std::fs::read(&disk).unwrap();
        bytes[0] ^= 1;
        std::fs::write(&disk, bytes).unwrap();
        std::fs::remove_file(l1.join("manifest.json")).unwrap();
        std::fs::write(l1.join("stray"), b"?").unwrap();
        // And a name whose layer is gone.
        let mut ghost = manifest("ghost", "nope");
        ghost.name = "ghost:latest".into();
        store.name(&store.lock().unwrap(), &ghost).unwrap();
        let report = check::check(&store).unwrap();
        let lines: Vec<String> = report.damaged.iter().map(|d| format!("{}: {}", d.what, d.problem)).collect();
        for want in [
            "layer l1: disk.qcow2 changed since it was committed (torn or edited)",
            "layer l1: manifest.json is missing",
            "layer l1: stray was not part of the layer",
            "image ghost:latest: its layer nope is missing",
        ] {
            assert!(lines.iter().any(|l| l == want), "{want} not in {lines:#?}");
        }
        assert_eq!(report.layers_ok, 1);
    }

    #[test]
    fn committed_layer_is_read_only_and_named() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let staged = store.staging().unwrap();
        std::fs::write(staged.path().join("disk.qcow2"), b"q").unwrap();
        let img = store.commit(&store.lock().unwrap(), staged.path(), manifest("tiny", "abc")).unwrap();
        assert!(img.disk().metadata().unwrap().permissions().readonly());
        let got = store.get(&n("tiny")).unwrap().unwrap();
        assert_eq!(got.manifest.id, "abc");
        assert_eq!(got.manifest.name, "tiny:latest", "one spelling: NAME is NAME:latest");
        assert!(tmp.path().join("manifests/tiny:latest.json").exists());
        assert_eq!(store.list().unwrap().images.len(), 1);
        assert!(store.get(&n("other")).unwrap().is_none());
    }

    #[test]
    fn prune_keeps_parents_and_drops_orphans() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        for (name, id, parent) in [("base", "b", None), ("child:latest", "c", Some("b")), ("gone", "g", None)] {
            commit(&store, name, id, parent);
        }
        assert!(store.remove(&store.lock().unwrap(), &n("base")).unwrap());
        assert!(store.remove(&store.lock().unwrap(), &n("gone:latest")).unwrap());
        assert!(!store.remove(&store.lock().unwrap(), &n("gone")).unwrap());
        let removed = store.prune(&store.lock().unwrap(), &[]).unwrap();
        assert_eq!(removed, vec!["g".to_string()]);
        assert!(store.get(&n("child")).unwrap().is_some(), "NAME finds NAME:latest");
        assert!(tmp.path().join("layers/b/disk.qcow2").exists(), "a parent layer was pruned");
    }

    #[test]
    fn a_name_is_never_a_path() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let mut m = manifest("x", "i");
        m.name = "../../outside".into();
        assert!(store.name(&store.lock().unwrap(), &m).is_err());
        assert!(!tmp.path().join("outside.json").exists() && !tmp.path().parent().unwrap().join("outside.json").exists());
    }

    #[test]
    fn untagged_manifests_of_older_stores_get_their_tag() {
        let tmp = tempfile::tempdir().unwrap();
        {
            let store = Store::open(tmp.path()).unwrap();
            commit(&store, "tiny", "old", None);
            commit(&store, "etcd", "e", None);
            commit(&store, "other", "o", None);
        }
        // As an older kvci left them: `tiny.json` (untagged) beside `tiny:latest.json`, `etcd.json`.
        let m = |f: &str| tmp.path().join("manifests").join(f);
        std::fs::rename(m("tiny:latest.json"), m("tiny.json")).unwrap();
        std::fs::rename(m("etcd:latest.json"), m("etcd.json")).unwrap();
        std::fs::write(m("tiny:latest.json"), serde_json::to_vec(&manifest("tiny:latest", "o")).unwrap()).unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let names: Vec<String> = store.list().unwrap().images.into_iter().map(|m| m.name).collect();
        assert_eq!(names, ["etcd:latest", "other:latest", "tiny:latest", "tiny:untagged-old"]);
        assert_eq!(store.get(&n("tiny:untagged-old")).unwrap().unwrap().manifest.id, "old", "nothing is lost");
        assert!(!m("tiny.json").exists() && !m("etcd.json").exists());
    }

    #[test]
    fn unreadable_manifests_are_reported_and_stop_prune() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        commit(&store, "a", "la", None);
        commit(&store, "b", "lb", None);
        // Damaged, or from a newer kvci: its layer must survive a prune.
        let mut future = serde_json::to_value(manifest("b", "lb")).unwrap();
        future["new_field"] = serde_json::json!(1);
        std::fs::write(tmp.path().join("manifests/b:latest.json"), serde_json::to_vec(&future).unwrap()).unwrap();
        let listing = store.list().unwrap();
        assert_eq!(listing.images.len(), 1);
        assert_eq!(listing.unreadable.len(), 1);
        let err = store.prune(&store.lock().unwrap(), &[]).unwrap_err().to_string();
        assert!(err.contains("b:latest.json") && err.contains("not pruning"), "{err}");
        assert!(tmp.path().join("layers/lb/disk.qcow2").exists());
    }

    #[test]
    fn manifest_without_layer_is_reported_damaged() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        std::fs::write(tmp.path().join("manifests/x:latest.json"), serde_json::to_vec(&manifest("x", "gone")).unwrap()).unwrap();
        let err = store.get(&n("x")).unwrap_err().to_string();
        assert!(err.contains("damaged"), "{err}");
    }
}
