//! Node shapes: what `vm up --numa/--secondary-nics/--nvme/…` adds to every node beyond memory
//! and vCPUs (kubevirtci's gocli flags), as plain data checked before anything starts.
//!
//! A field left unset (`None`, empty) takes the image's default (provider `[defaults]`); see
//! [`NodeShape::or`].

use serde::{Deserialize, Serialize};

/// Most NUMA nodes per node.
pub const MAX_NUMA: u32 = 8;
/// Most secondary NICs per node (bridges `br1`…`br16`).
pub const MAX_SECONDARY_NICS: u32 = 16;
/// Most disks of one kind (nvme, scsi, usb, shared) per node.
pub const MAX_DISKS: usize = 8;

/// Extra hardware and kernel settings of every node of a cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeShape {
    /// NUMA nodes per node (`--numa`); 1 or unset is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numa: Option<u32>,
    /// Extra virtio-net NICs per node, NIC i on bridge `br{i+1}` (`--secondary-nics`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secondary_nics: Option<u32>,
    /// Raw NVMe disks per node, bytes (`--nvme`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nvme: Vec<u64>,
    /// Raw disks per node on one virtio-scsi controller, bytes (`--scsi`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scsi: Vec<u64>,
    /// Raw USB sticks per node, bytes (`--usb`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub usb: Vec<u64>,
    /// Raw disks shared by every node of the cluster, bytes (`--shared-disk`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shared_disks: Vec<u64>,
    /// 2 MiB huge pages reserved at boot (`--hugepages-2m`); unset is the image's default
    /// (64 on kubevirtci's images, as gocli, else none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hugepages_2m: Option<u32>,
    /// 1 GiB huge pages reserved at boot (`--hugepages-1g`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hugepages_1g: Option<u32>,
    /// Appended to the kernel command line (`--kernel-args`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_args: Option<String>,
    /// Appended to every node's QEMU command line, already split into words (`--qemu-args`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub qemu_args: Vec<String>,
    /// A host PCI device passed to the last node with vfio-pci (`--gpu`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<String>,
}

/// What is wrong with a shape.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ShapeError {
    /// A size kvci cannot read.
    #[error("cannot read size {0:?}: use a Kubernetes quantity like 10Gi, 10G, 512Mi or 1Ti")]
    SizeSyntax(String),
    /// A zero-sized disk.
    #[error("{flag} {text:?} is empty: a disk needs at least one byte")]
    ZeroSize {
        /// The flag.
        flag: &'static str,
        /// As given.
        text: String,
    },
    /// NUMA count out of range.
    #[error("--numa {0} is out of range: use 1 to {MAX_NUMA}")]
    Numa(u32),
    /// kubevirtci's message, word for word at its start.
    #[error("unable to calculate symmetric NUMA topology: {cpus} vCPU(s) and {memory_mib} MiB cannot be split evenly into {numa} NUMA nodes (--numa, --cpus, --memory)")]
    Asymmetric {
        /// NUMA nodes.
        numa: u32,
        /// vCPUs.
        cpus: u32,
        /// Memory, MiB.
        memory_mib: u64,
    },
    /// Too many secondary NICs.
    #[error("--secondary-nics {0} is out of range: use 0 to {MAX_SECONDARY_NICS}")]
    SecondaryNics(u32),
    /// The MAC counter would wrap.
    #[error("{nodes} node(s) x {nics} secondary NIC(s) is more than the 256 MACs 52:55:00:d1:56:XX has: lower --secondary-nics or --nodes")]
    TooManyMacs {
        /// Nodes.
        nodes: u32,
        /// NICs per node.
        nics: u32,
    },
    /// Too many disks of one kind.
    #[error("{flag} is given {count} times: at most {MAX_DISKS}")]
    TooManyDisks {
        /// The flag.
        flag: &'static str,
        /// How often.
        count: usize,
    },
    /// Huge pages that leave no memory.
    #[error("{hugepages_mib} MiB of huge pages (--hugepages-2m, --hugepages-1g) leave nothing of the node's {memory_mib} MiB: raise --memory or reserve fewer")]
    Hugepages {
        /// Reserved.
        hugepages_mib: u64,
        /// The node's memory.
        memory_mib: u64,
    },
    /// Unbalanced quotes and such.
    #[error("cannot split --qemu-args {0:?} into words: {1}")]
    QemuArgs(String, &'static str),
    /// Not a PCI address.
    #[error("--gpu {0:?} is not a PCI address: write it as DDDD:BB:DD.F or BB:DD.F (see `lspci -D`)")]
    GpuSyntax(String),
}

impl NodeShape {
    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        *self == NodeShape::default()
    }

    /// This shape, with every unset field taken from `defaults`.
    pub fn or(self, defaults: &NodeShape) -> NodeShape {
        fn vec<T: Clone>(v: Vec<T>, d: &[T]) -> Vec<T> {
            if v.is_empty() {
                d.to_vec()
            } else {
                v
            }
        }
        NodeShape {
            numa: self.numa.or(defaults.numa),
            secondary_nics: self.secondary_nics.or(defaults.secondary_nics),
            nvme: vec(self.nvme, &defaults.nvme),
            scsi: vec(self.scsi, &defaults.scsi),
            usb: vec(self.usb, &defaults.usb),
            shared_disks: vec(self.shared_disks, &defaults.shared_disks),
            hugepages_2m: self.hugepages_2m.or(defaults.hugepages_2m),
            hugepages_1g: self.hugepages_1g.or(defaults.hugepages_1g),
            kernel_args: self.kernel_args.or_else(|| defaults.kernel_args.clone()),
            qemu_args: vec(self.qemu_args, &defaults.qemu_args),
            gpu: self.gpu.or_else(|| defaults.gpu.clone()),
        }
    }

    /// NUMA nodes per node, at least 1.
    pub fn numa_nodes(&self) -> u32 {
        self.numa.unwrap_or(1).max(1)
    }

    /// Secondary NICs per node.
    pub fn nics(&self) -> u32 {
        self.secondary_nics.unwrap_or(0)
    }

    /// 2 MiB huge pages, with `image_default` when unset.
    pub fn hugepages_2m_or(&self, image_default: u32) -> u32 {
        self.hugepages_2m.unwrap_or(image_default)
    }

    /// Whether nodes get disks beyond their boot disk.
    pub fn has_extra_disks(&self) -> bool {
        !(self.nvme.is_empty() && self.scsi.is_empty() && self.usb.is_empty() && self.shared_disks.is_empty())
    }

    /// The first flag of `requested` (what the user gave) whose value differs from this shape's
    /// (a frozen cluster's), by its effective meaning: `--numa 1` equals no NUMA.
    pub fn conflicting_flag(&self, requested: &NodeShape, hugepages_default: u32) -> Option<&'static str> {
        let r = requested;
        let differs = [
            (r.numa.is_some() && r.numa_nodes() != self.numa_nodes(), "--numa"),
            (r.secondary_nics.is_some() && r.nics() != self.nics(), "--secondary-nics"),
            (!r.nvme.is_empty() && r.nvme != self.nvme, "--nvme"),
            (!r.scsi.is_empty() && r.scsi != self.scsi, "--scsi"),
            (!r.usb.is_empty() && r.usb != self.usb, "--usb"),
            (!r.shared_disks.is_empty() && r.shared_disks != self.shared_disks, "--shared-disk"),
            (r.hugepages_2m.is_some() && r.hugepages_2m_or(hugepages_default) != self.hugepages_2m_or(hugepages_default), "--hugepages-2m"),
            (r.hugepages_1g.is_some() && r.hugepages_1g.unwrap_or(0) != self.hugepages_1g.unwrap_or(0), "--hugepages-1g"),
            (r.kernel_args.is_some() && r.kernel_args.as_deref().unwrap_or("").trim() != self.kernel_args.as_deref().unwrap_or("").trim(), "--kernel-args"),
            (!r.qemu_args.is_empty() && r.qemu_args != self.qemu_args, "--qemu-args"),
            (r.gpu.is_some() && r.gpu != self.gpu, "--gpu"),
        ];
        differs.into_iter().find(|(d, _)| *d).map(|(_, flag)| flag)
    }

    /// Checks the shape against the node's size; `hugepages_default` is the image's 2 MiB count.
    pub fn validate(&self, nodes: u32, memory_mib: u64, cpus: u32, hugepages_default: u32) -> Result<(), ShapeError> {
        let numa = self.numa.unwrap_or(1);
        if numa == 0 || numa > MAX_NUMA {
            return Err(ShapeError::Numa(numa));
        }
        if cpus % numa != 0 || memory_mib % u64::from(numa) != 0 {
            return Err(ShapeError::Asymmetric { numa, cpus, memory_mib });
        }
        let nics = self.nics();
        if nics > MAX_SECONDARY_NICS {
            return Err(ShapeError::SecondaryNics(nics));
        }
        if nodes.saturating_mul(nics) > 256 {
            return Err(ShapeError::TooManyMacs { nodes, nics });
        }
        for (flag, disks) in [("--nvme", &self.nvme), ("--scsi", &self.scsi), ("--usb", &self.usb), ("--shared-disk", &self.shared_disks)] {
            if disks.len() > MAX_DISKS {
                return Err(ShapeError::TooManyDisks { flag, count: disks.len() });
            }
            if disks.contains(&0) {
                return Err(ShapeError::ZeroSize { flag, text: "0".into() });
            }
        }
        let hugepages_mib = u64::from(self.hugepages_2m_or(hugepages_default)) * 2 + u64::from(self.hugepages_1g.unwrap_or(0)) * 1024;
        if hugepages_mib >= memory_mib {
            return Err(ShapeError::Hugepages { hugepages_mib, memory_mib });
        }
        if let Some(gpu) = &self.gpu {
            parse_pci_address(gpu)?;
        }
        Ok(())
    }
}

/// Parses a Kubernetes quantity (`10Gi`, `10G`, `512Mi`, `512M`, `1Ti`, `100k`, a bare number of
/// bytes) into bytes, rounded up to whole 512-byte sectors. As in Kubernetes, `G` is 10^9 and
/// `Gi` is 2^30.
pub fn parse_size(text: &str) -> Result<u64, ShapeError> {
    let err = || ShapeError::SizeSyntax(text.to_string());
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| err())?;
    let factor: u64 = match unit {
        "" => 1,
        "k" => 1000,
        "M" => 1000u64.pow(2),
        "G" => 1000u64.pow(3),
        "T" => 1000u64.pow(4),
        "P" => 1000u64.pow(5),
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        _ => return Err(err()),
    };
    let bytes = n.checked_mul(factor).ok_or_else(err)?;
    bytes.checked_next_multiple_of(512).ok_or_else(err)
}

/// Parses every size given to `flag`.
pub fn parse_sizes(flag: &'static str, texts: &[String]) -> Result<Vec<u64>, ShapeError> {
    texts
        .iter()
        .map(|t| match parse_size(t)? {
            0 => Err(ShapeError::ZeroSize { flag, text: t.clone() }),
            n => Ok(n),
        })
        .collect()
}

/// Splits `--qemu-args` into words by the shell's quoting rules (blanks separate words; single
/// quotes keep everything; double quotes keep all but `\"`, `\\`, `\$` and `` \` ``; a
/// backslash outside quotes keeps the next character). No expansions.
pub fn split_words(text: &str) -> Result<Vec<String>, ShapeError> {
    let fail = |why| ShapeError::QemuArgs(text.to_string(), why);
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => words.extend(word.take()),
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => w.push(c),
                        None => return Err(fail("a single quote is not closed")),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => w.push(c),
                            Some(c) => {
                                w.push('\\');
                                w.push(c);
                            }
                            None => return Err(fail("a double quote is not closed")),
                        },
                        Some(c) => w.push(c),
                        None => return Err(fail("a double quote is not closed")),
                    }
                }
            }
            '\\' => match chars.next() {
                Some(c) => word.get_or_insert_with(String::new).push(c),
                None => return Err(fail("it ends with a lone backslash")),
            },
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Ok(words)
}

/// Parses a PCI address, `DDDD:BB:DD.F` or `BB:DD.F` (domain 0000), into its full form.
pub fn parse_pci_address(text: &str) -> Result<String, ShapeError> {
    let err = || ShapeError::GpuSyntax(text.to_string());
    let t = text.trim().to_ascii_lowercase();
    let parts: Vec<&str> = t.split(':').collect();
    let (domain, bus, rest) = match parts[..] {
        [d, b, r] => (d, b, r),
        [b, r] => ("0000", b, r),
        _ => return Err(err()),
    };
    let (dev, func) = rest.split_once('.').ok_or_else(err)?;
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !(hex(domain, 4) && hex(bus, 2) && hex(dev, 2) && hex(func, 1)) {
        return Err(err());
    }
    let (dev, func) = (u8::from_str_radix(dev, 16).map_err(|_| err())?, u8::from_str_radix(func, 16).map_err(|_| err())?);
    if dev > 0x1f || func > 7 {
        return Err(err());
    }
    Ok(format!("{domain}:{bus}:{dev:02x}.{func}"))
}

/// Checks that the host has PCI device `address` in an IOMMU group (what vfio-pci needs), under
/// `sysfs` (`/sys` on a real host). Returns the full address.
pub fn check_gpu(address: &str, sysfs: &std::path::Path) -> Result<String, String> {
    let full = parse_pci_address(address).map_err(|e| e.to_string())?;
    let dev = sysfs.join("bus/pci/devices").join(&full);
    if !dev.exists() {
        return Err(format!("--gpu {address}: this host has no PCI device {full} ({} does not exist; see `lspci -D`)", dev.display()));
    }
    if !dev.join("iommu_group").exists() {
        return Err(format!(
            "--gpu {address}: PCI device {full} is in no IOMMU group ({} is missing): enable the IOMMU (intel_iommu=on or amd_iommu=on) \
             and bind the device to vfio-pci",
            dev.join("iommu_group").display()
        ));
    }
    Ok(full)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_kubernetes_quantities() {
        assert_eq!(parse_size("10Gi"), Ok(10 << 30));
        assert_eq!(parse_size("10G"), Ok(10_000_000_000));
        assert_eq!(parse_size("512M"), Ok(512_000_000));
        assert_eq!(parse_size("512Mi"), Ok(512 << 20));
        assert_eq!(parse_size("1Ti"), Ok(1 << 40));
        assert_eq!(parse_size("1k"), Ok(1024), "rounded up to a whole sector");
        assert_eq!(parse_size("4096"), Ok(4096));
        for bad in ["", "G", "10 G", "10g", "1.5G", "-1G", "10GB", "99999999999Pi"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_sizes("--nvme", &["0".into()]), Err(ShapeError::ZeroSize { flag: "--nvme", text: "0".into() }));
    }

    #[test]
    fn words_split_like_a_shell() {
        assert_eq!(split_words("  -device  no-such-device ").unwrap(), ["-device", "no-such-device"]);
        assert_eq!(split_words(r#"-append 'a b' -x "c \"d\" \n" e\ f ''"#).unwrap(), ["-append", "a b", "-x", r#"c "d" \n"#, "e f", ""]);
        assert!(split_words("").unwrap().is_empty());
        assert!(split_words("'open").is_err());
        assert!(split_words("\"open").is_err());
        assert!(split_words("x\\").is_err());
    }

    #[test]
    fn pci_addresses_are_checked() {
        assert_eq!(parse_pci_address("0000:01:00.0").unwrap(), "0000:01:00.0");
        assert_eq!(parse_pci_address("3B:1f.7").unwrap(), "0000:3b:1f.7");
        for bad in ["", "01:00", "1:00.0", "0000:01:20.0", "0000:01:00.8", "g0:00.0", "0:0000:01:00.0"] {
            assert!(parse_pci_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn gpu_needs_the_device_and_its_iommu_group() {
        let sys = tempfile::tempdir().unwrap();
        let err = check_gpu("01:00.0", sys.path()).unwrap_err();
        assert!(err.contains("no PCI device 0000:01:00.0"), "{err}");
        let dev = sys.path().join("bus/pci/devices/0000:01:00.0");
        std::fs::create_dir_all(&dev).unwrap();
        assert!(check_gpu("01:00.0", sys.path()).unwrap_err().contains("no IOMMU group"));
        std::fs::create_dir_all(dev.join("iommu_group")).unwrap();
        assert_eq!(check_gpu("01:00.0", sys.path()).unwrap(), "0000:01:00.0");
    }

    #[test]
    fn numa_must_split_evenly_like_kubevirtci() {
        let s = NodeShape { numa: Some(2), ..Default::default() };
        assert_eq!(s.validate(2, 2048, 2, 0), Ok(()));
        let e = s.validate(2, 2048, 3, 0).unwrap_err();
        assert!(e.to_string().starts_with("unable to calculate symmetric NUMA topology"), "{e}");
        assert!(s.validate(2, 2047, 2, 0).is_err());
        assert_eq!(NodeShape { numa: Some(0), ..Default::default() }.validate(1, 512, 1, 0), Err(ShapeError::Numa(0)));
    }

    #[test]
    fn limits_are_enforced() {
        let nics = NodeShape { secondary_nics: Some(16), ..Default::default() };
        assert_eq!(nics.validate(16, 512, 1, 0), Ok(()));
        assert_eq!(nics.validate(17, 512, 1, 0), Err(ShapeError::TooManyMacs { nodes: 17, nics: 16 }));
        let many = NodeShape { nvme: vec![512; 9], ..Default::default() };
        assert!(matches!(many.validate(1, 512, 1, 0), Err(ShapeError::TooManyDisks { flag: "--nvme", count: 9 })));
        let huge = NodeShape { hugepages_1g: Some(2), ..Default::default() };
        assert_eq!(huge.validate(1, 2048, 1, 64), Err(ShapeError::Hugepages { hugepages_mib: 2048 + 128, memory_mib: 2048 }));
        assert_eq!(NodeShape { hugepages_2m: Some(0), ..huge.clone() }.validate(1, 2049, 1, 64), Ok(()));
        assert!(NodeShape { gpu: Some("nope".into()), ..Default::default() }.validate(1, 512, 1, 0).is_err());
    }

    #[test]
    fn flags_override_image_defaults_field_by_field() {
        let defaults = NodeShape { numa: Some(2), nvme: vec![1024], kernel_args: Some("quiet".into()), ..Default::default() };
        let flags = NodeShape { numa: Some(1), scsi: vec![512], ..Default::default() };
        let s = flags.or(&defaults);
        assert_eq!((s.numa, s.nvme, s.scsi, s.kernel_args.as_deref()), (Some(1), vec![1024], vec![512], Some("quiet")));
    }

    #[test]
    fn conflicts_name_the_flag_by_meaning() {
        let frozen = NodeShape { secondary_nics: Some(1), ..Default::default() };
        assert_eq!(frozen.conflicting_flag(&NodeShape { numa: Some(2), ..Default::default() }, 0), Some("--numa"));
        assert_eq!(frozen.conflicting_flag(&NodeShape { numa: Some(1), secondary_nics: Some(1), ..Default::default() }, 0), None);
        assert_eq!(frozen.conflicting_flag(&NodeShape { secondary_nics: Some(0), ..Default::default() }, 0), Some("--secondary-nics"));
        assert_eq!(frozen.conflicting_flag(&NodeShape { hugepages_2m: Some(64), ..Default::default() }, 64), None);
        assert_eq!(frozen.conflicting_flag(&NodeShape { hugepages_2m: Some(0), ..Default::default() }, 64), Some("--hugepages-2m"));
        assert_eq!(frozen.conflicting_flag(&NodeShape::default(), 0), None);
    }
}
