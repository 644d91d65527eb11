//! Provider recipes: one folder per provider under `images/` (like kubevirtci's `k8s-1.xx`),
//! with a `provider.toml` and the scripts it names. See `images/README.md` for the format.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The recipe file's name inside a provider folder.
pub const RECIPE_FILE: &str = "provider.toml";

/// A parsed provider recipe.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    /// What the provider builds on.
    pub base: Base,
    /// Extra kernel arguments appended to the base's.
    #[serde(default)]
    pub kernel_args: String,
    /// Defaults for `vm up`.
    #[serde(default)]
    pub defaults: Defaults,
    /// Provisioning phases, run in order as root in the guest.
    #[serde(default, rename = "phase")]
    pub phases: Vec<Phase>,
    /// Ports the provider exposes (name → guest port), informational for `vm ports`.
    #[serde(default)]
    pub ports: BTreeMap<String, u16>,
    /// What runs at `vm up`.
    #[serde(default)]
    pub up: Option<UpHooks>,
}

/// The base of a provider: exactly one kind.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub enum Base {
    /// An image in the store or another provider (`tiny`, `debian-12`): phases chain.
    Image(String),
    /// A Debian root filesystem made on the host with debootstrap (a root layer).
    Debootstrap(DebootstrapBase),
    /// A local qcow2 disk with its kernel and initrd (paths relative to the provider folder
    /// or absolute).
    Qcow2 {
        /// The disk.
        disk: PathBuf,
        /// Its kernel.
        kernel: PathBuf,
        /// Its initramfs.
        initrd: PathBuf,
        /// Kernel command line.
        append: String,
    },
    /// A qcow2 disk, kernel and initrd downloaded over HTTP(S), each checked against its sha256.
    Url {
        /// The disk.
        disk: Download,
        /// Its kernel.
        kernel: Download,
        /// Its initramfs.
        initrd: Download,
        /// Kernel command line.
        append: String,
    },
}

/// A file to download and the sha256 it must have.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Download {
    /// Where from.
    pub url: String,
    /// Its sha256, hex.
    pub sha256: String,
}

/// How to debootstrap a base.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebootstrapBase {
    /// Debian suite (`bookworm`).
    pub suite: String,
    /// debootstrap variant.
    #[serde(default = "minbase")]
    pub variant: String,
    /// Extra packages; must include a kernel (`linux-image-cloud-amd64`).
    #[serde(default)]
    pub include: Vec<String>,
    /// A folder (relative to the provider's) copied over the root filesystem: kvci's guest files.
    pub rootfs: Option<PathBuf>,
    /// Size of the ext4 root disk, MiB.
    pub disk_size_mib: u64,
    /// systemd units to enable.
    #[serde(default)]
    pub services: Vec<String>,
}

fn minbase() -> String {
    "minbase".into()
}

/// `vm up` defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// vCPUs per node.
    pub cpus: Option<u32>,
    /// Memory per node, MiB.
    pub memory_mib: Option<u64>,
    /// Nodes.
    pub nodes: Option<u32>,
    /// NUMA nodes per node (`vm up --numa`).
    pub numa: Option<u32>,
    /// Secondary NICs per node (`--secondary-nics`).
    pub secondary_nics: Option<u32>,
    /// Raw NVMe disk sizes, like `["10Gi"]` (`--nvme`).
    #[serde(default)]
    pub nvme: Vec<String>,
    /// Raw virtio-scsi disk sizes (`--scsi`).
    #[serde(default)]
    pub scsi: Vec<String>,
    /// Raw USB stick sizes (`--usb`).
    #[serde(default)]
    pub usb: Vec<String>,
    /// Sizes of disks all nodes share (`--shared-disk`).
    #[serde(default)]
    pub shared_disk: Vec<String>,
    /// 2 MiB huge pages (`--hugepages-2m`).
    pub hugepages_2m: Option<u32>,
    /// 1 GiB huge pages (`--hugepages-1g`).
    pub hugepages_1g: Option<u32>,
    /// Kernel arguments `--kernel-args` replaces (unlike the top-level `kernel_args`, which are
    /// baked into the image).
    pub kernel_args: Option<String>,
    /// Extra QEMU arguments (`--qemu-args`).
    pub qemu_args: Option<String>,
}

impl Defaults {
    /// The node shape these defaults give `vm up` (sizes and words parsed).
    pub fn shape(&self) -> Result<crate::shape::NodeShape, crate::shape::ShapeError> {
        use crate::shape::{parse_sizes, split_words};
        Ok(crate::shape::NodeShape {
            numa: self.numa,
            secondary_nics: self.secondary_nics,
            nvme: parse_sizes("nvme", &self.nvme)?,
            scsi: parse_sizes("scsi", &self.scsi)?,
            usb: parse_sizes("usb", &self.usb)?,
            shared_disks: parse_sizes("shared_disk", &self.shared_disk)?,
            hugepages_2m: self.hugepages_2m,
            hugepages_1g: self.hugepages_1g,
            kernel_args: self.kernel_args.clone(),
            qemu_args: self.qemu_args.as_deref().map(split_words).transpose()?.unwrap_or_default(),
            gpu: None,
        })
    }
}

/// One provisioning phase.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    /// Shown in progress lines.
    pub name: String,
    /// Script (relative to the provider folder), run with `sh -e` as root.
    pub script: PathBuf,
    /// Files copied into the guest before the script runs.
    #[serde(default)]
    pub files: Vec<FileCopy>,
    /// Debian packages kvci downloads on the host (`apt-get download`, the configured mirror)
    /// and copies to `/var/cache/kvci/debs/` in the guest for the script to unpack or install.
    #[serde(default)]
    pub debs: Vec<String>,
}

/// A file copied into the guest.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCopy {
    /// Relative to the provider folder.
    pub src: PathBuf,
    /// Absolute path in the guest.
    pub dst: String,
}

/// Scripts run at `vm up`, with `KVCI_*` variables describing the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpHooks {
    /// Runs on node01.
    pub first: PathBuf,
    /// Runs on every other node (after `first` unless `parallel`).
    pub others: Option<PathBuf>,
    /// Run all nodes' hooks at once (etcd's static bootstrap needs every member starting).
    #[serde(default)]
    pub parallel: bool,
}

/// A recipe problem, naming the file and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// No such provider folder.
    #[error("no provider {name:?} in {dir} (it has: {known})")]
    Unknown {
        /// Asked for.
        name: String,
        /// Where we looked.
        dir: String,
        /// What exists.
        known: String,
    },
    /// The TOML is wrong.
    #[error("{file}: {message}")]
    Parse {
        /// The recipe file.
        file: String,
        /// The parser's message (names the field).
        message: String,
    },
    /// A referenced file is missing.
    #[error("{file}: {field} names {path}, which does not exist")]
    MissingFile {
        /// The recipe file.
        file: String,
        /// The field.
        field: String,
        /// The missing path.
        path: String,
    },
}

/// A provider and its folder.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// Provider name (the folder's).
    pub name: String,
    /// Its folder.
    pub dir: PathBuf,
    /// The recipe.
    pub recipe: Provider,
}

/// Loads and checks `images/<name>/provider.toml`.
pub fn load(dir: &Path, name: &str) -> Result<Loaded, ProviderError> {
    let folder = dir.join(name);
    let file = folder.join(RECIPE_FILE);
    let text = std::fs::read_to_string(&file).map_err(|_| ProviderError::Unknown {
        name: name.into(),
        dir: dir.display().to_string(),
        known: list(dir).join(", "),
    })?;
    let recipe = parse(&file.display().to_string(), &text)?;
    let check = |field: String, p: &Path| {
        if folder.join(p).is_file() {
            Ok(())
        } else {
            Err(ProviderError::MissingFile { file: file.display().to_string(), field, path: folder.join(p).display().to_string() })
        }
    };
    for (i, ph) in recipe.phases.iter().enumerate() {
        check(format!("phase[{i}].script"), &ph.script)?;
        for (j, f) in ph.files.iter().enumerate() {
            check(format!("phase[{i}].files[{j}].src"), &f.src)?;
        }
    }
    if let Err(e) = recipe.defaults.shape() {
        return Err(ProviderError::Parse { file: folder.join(RECIPE_FILE).display().to_string(), message: format!("[defaults]: {e}") });
    }
    if let Some(up) = &recipe.up {
        check("up.first".into(), &up.first)?;
        if let Some(o) = &up.others {
            check("up.others".into(), o)?;
        }
    }
    Ok(Loaded { name: name.into(), dir: folder, recipe })
}

/// Parses recipe text; `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<Provider, ProviderError> {
    toml::from_str(text).map_err(|e| ProviderError::Parse { file: file.into(), message: e.to_string() })
}

/// Provider folder names under `dir`.
pub fn list(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.path().join(RECIPE_FILE).is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

impl Loaded {
    /// sha256 over the recipe and every file it names, plus the base layer's id: the layer id.
    pub fn id(&self, base_id: &str) -> std::io::Result<String> {
        let mut d = super::digest::LayerDigest::default();
        let mut feed = |name: &str, data: &[u8]| d.feed(name, data);
        // Bumped when what kvci writes into a layer or its manifest changes.
        feed("layer-format", b"3");
        feed("base", base_id.as_bytes());
        for (path, data) in super::GUEST_TOOLS {
            feed(path, data);
        }
        feed(RECIPE_FILE, &std::fs::read(self.dir.join(RECIPE_FILE))?);
        if let Base::Debootstrap(DebootstrapBase { rootfs: Some(r), .. }) = &self.recipe.base {
            let mut all = Vec::new();
            walk(&self.dir.join(r), &mut all)?;
            all.sort();
            for f in all {
                // By path inside the provider folder, so the id does not depend on where it is.
                feed(&f.strip_prefix(&self.dir).unwrap_or(&f).to_string_lossy(), &std::fs::read(&f)?);
            }
        }
        let mut files: Vec<&Path> = Vec::new();
        for ph in &self.recipe.phases {
            feed("debs", ph.debs.join(" ").as_bytes());
            files.push(&ph.script);
            files.extend(ph.files.iter().map(|f| f.src.as_path()));
        }
        if let Some(up) = &self.recipe.up {
            files.push(&up.first);
            files.extend(up.others.as_deref());
        }
        for f in files {
            feed(&f.to_string_lossy(), &std::fs::read(self.dir.join(f))?);
        }
        Ok(d.finish())
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            walk(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
base = { image = "tiny" }
kernel_args = "quiet"
[defaults]
nodes = 3
[[phase]]
name = "packages"
script = "phases/10.sh"
files = [{ src = "files/a.conf", dst = "/etc/a.conf" }]
[ports]
etcd = 2379
[up]
first = "up/first.sh"
others = "up/others.sh"
parallel = true
"#;

    #[test]
    fn full_recipe_parses() {
        let p = parse("p.toml", GOOD).unwrap();
        assert_eq!(p.base, Base::Image("tiny".into()));
        assert_eq!(p.phases[0].files[0].dst, "/etc/a.conf");
        assert_eq!(p.ports["etcd"], 2379);
        assert!(p.up.unwrap().parallel);
        assert_eq!(p.defaults.nodes, Some(3));
    }

    #[test]
    fn shape_defaults_parse() {
        let text = "base = { image = \"tiny\" }\n[defaults]\nnuma = 2\nsecondary_nics = 1\nhugepages_2m = 16\nkernel_args = \"a=1\"\nnvme = [\"1Gi\"]\nqemu_args = \"-device 'x,y=z'\"\n";
        let s = parse("p.toml", text).unwrap().defaults.shape().unwrap();
        assert_eq!((s.numa, s.secondary_nics, s.hugepages_2m, s.kernel_args.as_deref()), (Some(2), Some(1), Some(16), Some("a=1")));
        assert_eq!((s.nvme, s.qemu_args), (vec![1 << 30], vec!["-device".to_string(), "x,y=z".to_string()]));
        let bad = parse("p.toml", "base = { image = \"tiny\" }\n[defaults]\nnvme = [\"lots\"]\n").unwrap().defaults.shape();
        assert!(bad.unwrap_err().to_string().contains("lots"));
    }

    #[test]
    fn errors_name_the_file_and_field() {
        let err = parse("images/x/provider.toml", "base = { image = \"tiny\" }\n[[phase]]\nname = \"a\"\nscrpt = \"x\"\n").unwrap_err().to_string();
        assert!(err.contains("images/x/provider.toml") && err.contains("scrpt"), "{err}");
        let err = parse("f.toml", "base = { image = 3 }").unwrap_err().to_string();
        assert!(err.contains("f.toml") && err.contains("image"), "{err}");
    }

    #[test]
    fn missing_script_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("p")).unwrap();
        std::fs::write(dir.path().join("p/provider.toml"), "base = { image = \"tiny\" }\n[[phase]]\nname = \"a\"\nscript = \"nope.sh\"\n").unwrap();
        let err = load(dir.path(), "p").unwrap_err().to_string();
        assert!(err.contains("phase[0].script") && err.contains("nope.sh"), "{err}");
        let err = load(dir.path(), "q").unwrap_err().to_string();
        assert!(err.contains("no provider \"q\"") && err.contains("p"), "{err}");
    }

    #[test]
    fn shipped_providers_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("images");
        for name in list(&dir) {
            load(&dir, &name).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}
