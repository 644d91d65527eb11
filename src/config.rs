//! The cluster spec: what the user asked `vm up` for, validated before anything starts.

use serde::{Deserialize, Serialize};

use crate::accel::AccelChoice;
use crate::ports::FixedPorts;
use crate::shape::{NodeShape, ShapeError};

/// Most nodes one cluster may have: names and MACs carry the node number in two digits.
pub const MAX_NODES: u32 = 99;
/// Least memory a node may get; below this Linux does not boot.
pub const MIN_MEMORY_MIB: u64 = 128;
/// Default cluster name, like kubevirtci's single cluster.
pub const DEFAULT_NAME: &str = "kvci";

/// A cluster as requested on the command line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    /// Cluster name (`--name`).
    pub name: String,
    /// Number of nodes, `node01`…`nodeNN`.
    pub nodes: u32,
    /// Image name in the store.
    pub image: String,
    /// Memory per node, MiB.
    pub memory_mib: u64,
    /// vCPUs per node.
    pub cpus: u32,
    /// Accelerator choice.
    pub accel: AccelChoice,
    /// How long a node may take to report ready.
    pub boot_timeout_secs: u64,
    /// The cluster network's subnet (`--subnet`).
    pub subnet: String,
    /// Fixed host ports (`--ssh-port`, …); the rest are random.
    pub ports: FixedPorts,
    /// DNS servers for names outside the cluster; empty means the host's `/etc/resolv.conf`.
    pub dns_upstreams: Vec<std::net::SocketAddr>,
    /// Where the cluster registry keeps its blobs (`--registry-dir`); `None` is the default
    /// under the data directory, kept across `down`/`up` of the same name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_dir: Option<std::path::PathBuf>,
    /// Which IP versions the nodes get (`--single-stack`, `--ipv4-only`).
    #[serde(default)]
    pub stack: IpStack,
    /// Guests may reach the host's 127.0.0.1 (`--allow-host-loopback`).
    #[serde(default)]
    pub allow_host_loopback: bool,
    /// NUMA, extra NICs and disks, huge pages, kernel and QEMU arguments (`--numa`, …).
    #[serde(default, skip_serializing_if = "NodeShape::is_empty")]
    pub shape: NodeShape,
}

/// Which IP versions a cluster's nodes get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpStack {
    /// IPv4 and IPv6, like kubevirtci.
    #[default]
    Dual,
    /// IPv4 only (`--ipv4-only`).
    Ipv4,
    /// IPv6 only (`--single-stack`, kubevirtci's `KUBEVIRT_SINGLE_STACK`).
    Ipv6,
}

impl From<IpStack> for kvci_net::topology::Stack {
    fn from(s: IpStack) -> Self {
        match s {
            IpStack::Dual => kvci_net::topology::Stack::Dual,
            IpStack::Ipv4 => kvci_net::topology::Stack::Ipv4,
            IpStack::Ipv6 => kvci_net::topology::Stack::Ipv6,
        }
    }
}

impl std::fmt::Display for IpStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IpStack::Dual => "dual stack",
            IpStack::Ipv4 => "IPv4 only",
            IpStack::Ipv6 => "IPv6 only",
        })
    }
}

/// What is wrong with a spec.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    /// Bad cluster name.
    #[error("invalid cluster name {0:?}: use 1-32 characters of a-z, 0-9 and '-', starting with a letter or digit")]
    Name(String),
    /// Node count out of range.
    #[error("--nodes {0} is out of range: a cluster has 1 to {MAX_NODES} nodes")]
    Nodes(u32),
    /// Memory string not understood.
    #[error("cannot read memory size {0:?}: use a number with an optional unit, like 512M, 3096M or 2G")]
    MemorySyntax(String),
    /// Too little memory per node.
    #[error("--memory {0} MiB is too small: a node needs at least {MIN_MEMORY_MIB} MiB")]
    MemoryTooSmall(u64),
    /// More memory than the host has.
    #[error("{nodes} node(s) x {per_node} MiB = {total} MiB is more than this host's {host} MiB of RAM: lower --memory or --nodes")]
    MemoryTooLarge {
        /// Nodes requested.
        nodes: u32,
        /// Memory per node, MiB.
        per_node: u64,
        /// Product.
        total: u64,
        /// Host RAM, MiB.
        host: u64,
    },
    /// vCPUs out of range.
    #[error("--cpus {0} is out of range: use 1 to 255")]
    Cpus(u32),
    /// Zero timeout.
    #[error("--boot-timeout must be at least one second")]
    Timeout,
    /// Bad subnet.
    #[error(transparent)]
    Subnet(#[from] kvci_net::topology::SubnetError),
    /// One host port asked for twice.
    #[error("host port {0} is given for two forwards: pick different --*-port values")]
    DuplicatePort(u16),
    /// The node shape (`--numa`, `--nvme`, …).
    #[error(transparent)]
    Shape(#[from] ShapeError),
}

/// Facts about the host that bound a spec.
#[derive(Debug, Clone, Copy)]
pub struct HostLimits {
    /// Total RAM, MiB.
    pub memory_mib: u64,
}

impl HostLimits {
    /// Reads `/proc/meminfo`.
    pub fn probe() -> HostLimits {
        let memory_mib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| parse_meminfo_total_kib(&s))
            .map(|kib| kib / 1024)
            .unwrap_or(u64::MAX);
        HostLimits { memory_mib }
    }
}

fn parse_meminfo_total_kib(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

impl ClusterSpec {
    /// Checks every field; the first problem found is returned.
    pub fn validate(&self, host: HostLimits) -> Result<(), SpecError> {
        validate_name(&self.name)?;
        if self.nodes == 0 || self.nodes > MAX_NODES {
            return Err(SpecError::Nodes(self.nodes));
        }
        if self.memory_mib < MIN_MEMORY_MIB {
            return Err(SpecError::MemoryTooSmall(self.memory_mib));
        }
        let total = self.memory_mib.saturating_mul(u64::from(self.nodes));
        if total > host.memory_mib {
            return Err(SpecError::MemoryTooLarge {
                nodes: self.nodes,
                per_node: self.memory_mib,
                total,
                host: host.memory_mib,
            });
        }
        if self.cpus == 0 || self.cpus > 255 {
            return Err(SpecError::Cpus(self.cpus));
        }
        if self.boot_timeout_secs == 0 {
            return Err(SpecError::Timeout);
        }
        kvci_net::topology::Subnet::parse(&self.subnet)?;
        if let Some(port) = crate::ports::duplicate_fixed(&self.ports) {
            return Err(SpecError::DuplicatePort(port));
        }
        self.shape.validate(self.nodes, self.memory_mib, self.cpus, 0)?;
        Ok(())
    }

    /// Node names in order: `node01`, `node02`, …
    pub fn node_names(&self) -> Vec<String> {
        (1..=self.nodes).map(node_name).collect()
    }
}

/// The name of node number `index` (1-based), as kubevirtci names them.
pub fn node_name(index: u32) -> String {
    format!("node{index:02}")
}

/// Cluster names become directory and socket names: keep them short and plain.
pub fn validate_name(name: &str) -> Result<(), SpecError> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(SpecError::Name(name.to_string()))
    }
}

/// Parses `512`, `512M`, `3096M`, `2G`, `2GiB`, `1T` into MiB (a bare number is MiB, like QEMU's `-m`).
pub fn parse_memory(text: &str) -> Result<u64, SpecError> {
    let err = || SpecError::MemorySyntax(text.to_string());
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| err())?;
    let factor = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "m" | "mb" | "mib" => 1,
        "g" | "gb" | "gib" => 1024,
        "t" | "tb" | "tib" => 1024 * 1024,
        _ => return Err(err()),
    };
    n.checked_mul(factor).ok_or_else(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ClusterSpec {
        ClusterSpec {
            name: "kvci".into(),
            nodes: 2,
            image: "tiny".into(),
            memory_mib: 512,
            cpus: 1,
            accel: AccelChoice::Auto,
            boot_timeout_secs: 300,
            subnet: "192.168.66.0/24".into(),
            ports: FixedPorts::default(),
            dns_upstreams: vec![],
            registry_dir: None,
            stack: Default::default(),
            allow_host_loopback: false,
            shape: Default::default(),
        }
    }
    const HOST: HostLimits = HostLimits { memory_mib: 24 * 1024 };

    #[test]
    fn memory_units_are_understood() {
        assert_eq!(parse_memory("512"), Ok(512));
        assert_eq!(parse_memory("3096M"), Ok(3096));
        assert_eq!(parse_memory("2G"), Ok(2048));
        assert_eq!(parse_memory("2GiB"), Ok(2048));
        assert_eq!(parse_memory("1t"), Ok(1024 * 1024));
    }

    #[test]
    fn memory_garbage_is_refused() {
        for bad in ["", "G", "12X", "-5M", "1.5G", "99999999999999999999T"] {
            assert!(parse_memory(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn valid_spec_passes() {
        assert_eq!(spec().validate(HOST), Ok(()));
    }

    #[test]
    fn zero_nodes_is_refused() {
        let s = ClusterSpec { nodes: 0, ..spec() };
        assert_eq!(s.validate(HOST), Err(SpecError::Nodes(0)));
        let s = ClusterSpec { nodes: 100, ..spec() };
        assert_eq!(s.validate(HOST), Err(SpecError::Nodes(100)));
    }

    #[test]
    fn absurd_memory_is_refused_with_totals() {
        let s = ClusterSpec { memory_mib: 1024 * 1024, ..spec() };
        let err = s.validate(HOST).unwrap_err();
        assert!(matches!(err, SpecError::MemoryTooLarge { total, .. } if total == 2 * 1024 * 1024));
        assert!(err.to_string().contains("lower --memory"));
        let s = ClusterSpec { memory_mib: 64, ..spec() };
        assert_eq!(s.validate(HOST), Err(SpecError::MemoryTooSmall(64)));
    }

    #[test]
    fn bad_subnet_and_port_clash_are_refused() {
        let s = ClusterSpec { subnet: "10.0.0.0/28".into(), ..spec() };
        assert!(matches!(s.validate(HOST), Err(SpecError::Subnet(_))));
        let s = ClusterSpec { ports: FixedPorts { ssh: Some(2201), k8s: Some(2201), ..Default::default() }, ..spec() };
        assert_eq!(s.validate(HOST), Err(SpecError::DuplicatePort(2201)));
    }

    #[test]
    fn names_are_plain() {
        for good in ["kvci", "a", "ci-run-7", "0x"] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-x", "A", "a/b", "a b", "..", &"x".repeat(33)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn nodes_are_named_like_kubevirtci() {
        assert_eq!(spec().node_names(), ["node01", "node02"]);
        assert_eq!(node_name(12), "node12");
    }

    #[test]
    fn meminfo_total_is_read() {
        assert_eq!(parse_meminfo_total_kib("MemTotal:       24634560 kB\nMemFree: 1 kB\n"), Some(24634560));
    }

    #[test]
    fn shape_is_validated_with_the_node_size() {
        let s = ClusterSpec { shape: NodeShape { numa: Some(2), ..Default::default() }, ..spec() };
        assert!(matches!(s.validate(HOST), Err(SpecError::Shape(ShapeError::Asymmetric { .. }))), "1 vCPU cannot split in two");
        let s = ClusterSpec { cpus: 2, ..s };
        assert_eq!(s.validate(HOST), Ok(()));
    }

    #[test]
    fn spec_json_without_a_shape_reads_as_the_empty_shape() {
        let v = serde_json::to_value(spec()).unwrap();
        assert!(v.get("shape").is_none(), "an empty shape is not written");
        assert_eq!(serde_json::from_value::<ClusterSpec>(v).unwrap().shape, NodeShape::default());
    }

    #[test]
    fn spec_json_rejects_unknown_fields() {
        let mut v = serde_json::to_value(spec()).unwrap();
        v["surprise"] = 1.into();
        assert!(serde_json::from_value::<ClusterSpec>(v).is_err());
    }
}
