//! `kvci vm up`: spec → image → accelerator → cluster directory → supervisor → ready.

use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::accel::{self, AccelChoice, KvmFacts};
use crate::cluster::layout::ClusterDir;
use crate::cluster::plan::Launch;
use crate::cluster::teardown;
use crate::config::{self, ClusterSpec, HostLimits, IpStack};
use crate::image::name::ImageName;
use crate::paths::Dirs;
use crate::ports::FixedPorts;
use crate::qemu::preflight;
use crate::shape::{self, NodeShape};
use crate::supervisor::{server, spawn};
use crate::tools::QEMU;

use super::output::{self, Output};

/// `kvci vm up`
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Cluster name; several clusters can run side by side
    #[arg(long, default_value = config::DEFAULT_NAME, env = "KVCI_CLUSTER")]
    pub name: String,
    /// Number of nodes (node01, node02, …) [default: the image's, else 1]
    #[arg(long, env = "KUBEVIRT_NUM_NODES")]
    pub nodes: Option<u32>,
    /// Image to boot, from the store (`kvci image ls`; NAME means NAME:latest); `tiny` is built on first use
    #[arg(long, default_value = "tiny")]
    pub image: ImageName,
    /// Memory per node, e.g. 512M, 3096M, 2G [default: the image's]
    #[arg(long, env = "KUBEVIRT_MEMORY_SIZE")]
    pub memory: Option<String>,
    /// vCPUs per node [default: the image's]
    #[arg(long)]
    pub cpus: Option<u32>,
    /// Accelerator: kvm only where it can really run guests (auto checks), tcg emulates
    #[arg(long, value_enum, default_value_t = AccelChoice::Auto)]
    pub accel: AccelChoice,
    /// Seconds each node may take to report ready
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    pub boot_timeout: u64,
    /// Subnet of the cluster network (bridge .2, nodes .101…); clusters may share it
    #[arg(long, default_value = kvci_net::topology::DEFAULT_SUBNET)]
    pub subnet: String,
    /// Fixed host port for ssh to node01 (random by default)
    #[arg(long, value_name = "PORT")]
    pub ssh_port: Option<u16>,
    /// Fixed host port for the Kubernetes API (node01:6443)
    #[arg(long, value_name = "PORT")]
    pub k8s_port: Option<u16>,
    /// Fixed host port for the OpenShift API (node01:8443)
    #[arg(long, value_name = "PORT")]
    pub ocp_port: Option<u16>,
    /// Fixed host port for the cluster registry (registry:5000)
    #[arg(long, value_name = "PORT")]
    pub registry_port: Option<u16>,
    /// Fixed host port for node01's VNC display
    #[arg(long, value_name = "PORT")]
    pub vnc_port: Option<u16>,
    /// Fixed host port for node01:80
    #[arg(long, value_name = "PORT")]
    pub http_port: Option<u16>,
    /// Fixed host port for node01:443
    #[arg(long, value_name = "PORT")]
    pub https_port: Option<u16>,
    /// Fixed host port for Prometheus (node01:30007)
    #[arg(long, value_name = "PORT")]
    pub prometheus_port: Option<u16>,
    /// Fixed host port for Grafana (node01:30008)
    #[arg(long, value_name = "PORT")]
    pub grafana_port: Option<u16>,
    /// Fixed host UDP port for the cluster's DNS (node01:31111/udp)
    #[arg(long, value_name = "PORT")]
    pub dns_port: Option<u16>,
    /// Ignore every fixed --*-port: all host ports random (the default when none is given)
    #[arg(long)]
    pub random_ports: bool,
    /// DNS server for names outside the cluster, ADDR:PORT (repeatable) [default: /etc/resolv.conf's]
    #[arg(long, value_name = "ADDR:PORT")]
    pub dns_upstream: Vec<std::net::SocketAddr>,
    /// Directory of the cluster registry (registry:5000) [default: DATA/registries/NAME, kept across down/up]
    #[arg(long, value_name = "DIR")]
    pub registry_dir: Option<std::path::PathBuf>,
    /// IPv6 only: nodes get fd00::1NN and no IPv4 lease (kubevirtci's KUBEVIRT_SINGLE_STACK)
    #[arg(long, conflicts_with = "ipv4_only")]
    pub single_stack: bool,
    /// IPv4 only: no IPv6 addresses, router advertisements or IPv6 egress
    #[arg(long)]
    pub ipv4_only: bool,
    /// Let guests reach this host's 127.0.0.1 services as 10.0.2.2 (off by default: guests
    /// reach the outside, never the host's loopback or link-local addresses)
    #[arg(long)]
    pub allow_host_loopback: bool,
    /// NUMA nodes per node; vCPUs and memory must split evenly (kubevirtci's KUBEVIRT_NUM_NUMA_NODES) [default: the image's, else 1]
    #[arg(long, value_name = "N", help_heading = "Node shape")]
    pub numa: Option<u32>,
    /// Extra virtio-net NICs per node, NIC i on bridge br{i+1} without DHCP (KUBEVIRT_NUM_SECONDARY_NICS)
    #[arg(long, value_name = "N", help_heading = "Node shape")]
    pub secondary_nics: Option<u32>,
    /// A raw NVMe disk of SIZE (10Gi, 10G, 512Mi…) on every node; repeat for more
    #[arg(long, value_name = "SIZE", help_heading = "Node shape")]
    pub nvme: Vec<String>,
    /// A raw disk of SIZE on every node's virtio-scsi controller (one LUN each); repeat for more
    #[arg(long, value_name = "SIZE", help_heading = "Node shape")]
    pub scsi: Vec<String>,
    /// A raw USB stick of SIZE on every node (xHCI; Debian's cloud kernel has no USB driver); repeat for more
    #[arg(long, value_name = "SIZE", help_heading = "Node shape")]
    pub usb: Vec<String>,
    /// One raw disk of SIZE attached to every node at once, uncached (gocli's --shared-block-device); repeat for more
    #[arg(long, value_name = "SIZE", help_heading = "Node shape")]
    pub shared_disk: Vec<String>,
    /// 2 MiB huge pages reserved at boot, 0 for none (KUBEVIRT_HUGEPAGES_2M) [default: 64 on kubevirtci's images, else none]
    #[arg(long, value_name = "N", help_heading = "Node shape")]
    pub hugepages_2m: Option<u32>,
    /// 1 GiB huge pages reserved at boot (KUBEVIRT_HUGEPAGES_1G)
    #[arg(long, value_name = "N", help_heading = "Node shape")]
    pub hugepages_1g: Option<u32>,
    /// Appended to every node's kernel command line (before the huge pages, as gocli does)
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true, help_heading = "Node shape")]
    pub kernel_args: Option<String>,
    /// Appended to every node's QEMU command line, split like a shell; checked by a paused QEMU before any node boots
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true, help_heading = "Node shape")]
    pub qemu_args: Option<String>,
    /// Host PCI device (DDDD:BB:DD.F or BB:DD.F, bound to vfio-pci, in an IOMMU group) passed to the last node; untested in kvci's CI (no such device there)
    #[arg(long, value_name = "PCI-ADDR", help_heading = "Node shape")]
    pub gpu: Option<String>,
    /// Stay attached: the cluster lives until Ctrl-C
    #[arg(long)]
    pub foreground: bool,
    /// How to print the ready cluster
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
}

/// Refuses options a frozen image cannot honour.
fn check_frozen(a: &UpArgs, f: &crate::image::store::FrozenManifest, memory: Option<u64>, decision: &accel::Decision) -> Result<()> {
    let n = f.nodes.len() as u32;
    if a.nodes.is_some_and(|x| x != n) {
        bail!("image {} is a frozen cluster of {n} node(s): --nodes must be {n} or left out", a.image);
    }
    if memory.is_some_and(|m| m != f.memory_mib) || a.cpus.is_some_and(|c| c != f.cpus) {
        bail!("image {} was frozen with {} MiB and {} vCPU(s) per node: leave --memory/--cpus out", a.image, f.memory_mib, f.cpus);
    }
    if a.subnet != kvci_net::topology::DEFAULT_SUBNET && a.subnet != f.subnet {
        bail!("image {} was frozen on subnet {}: its nodes keep their addresses, so --subnet cannot change", a.image, f.subnet);
    }
    if (a.single_stack || a.ipv4_only) && (a.single_stack != (f.stack == IpStack::Ipv6) || a.ipv4_only != (f.stack == IpStack::Ipv4)) {
        bail!("image {} was frozen {}: its nodes keep their addresses, so --single-stack/--ipv4-only cannot change that", a.image, f.stack);
    }
    if decision.accel != f.accel {
        bail!("image {} was frozen under {} and cannot resume under {} ({})", a.image, f.accel, decision.accel, decision.reason);
    }
    Ok(())
}

/// Why `a` cannot resume the frozen cluster `f`, if it cannot (kubevirtci's `run` then boots
/// the provider's cold image instead).
pub fn frozen_refusal(a: &UpArgs, f: &crate::image::store::FrozenManifest) -> Option<String> {
    let memory = match a.memory.as_deref().map(config::parse_memory).transpose() {
        Ok(m) => m,
        Err(e) => return Some(e.to_string()),
    };
    let decision = match accel::decide(a.accel, &KvmFacts::probe()) {
        Ok(d) => d,
        Err(e) => return Some(e.to_string()),
    };
    let shape = match requested_shape(a) {
        Ok(s) => s,
        Err(e) => return Some(e.to_string()),
    };
    check_frozen(a, f, memory, &decision).and_then(|_| check_frozen_shape(&a.image, f, &shape)).err().map(|e| e.to_string())
}

/// Refuses shape flags that differ from what a frozen cluster was saved with.
fn check_frozen_shape(image: &ImageName, f: &crate::image::store::FrozenManifest, requested: &NodeShape) -> Result<()> {
    if let Some(flag) = f.shape.conflicting_flag(requested, 0) {
        bail!("image {image} is a frozen cluster saved with a different {flag}: its nodes resume as they were, so leave {flag} out");
    }
    Ok(())
}

/// The shape the flags ask for, sizes and words parsed; what they leave unset comes from the image.
fn requested_shape(a: &UpArgs) -> Result<NodeShape> {
    Ok(NodeShape {
        numa: a.numa,
        secondary_nics: a.secondary_nics,
        nvme: shape::parse_sizes("--nvme", &a.nvme)?,
        scsi: shape::parse_sizes("--scsi", &a.scsi)?,
        usb: shape::parse_sizes("--usb", &a.usb)?,
        shared_disks: shape::parse_sizes("--shared-disk", &a.shared_disk)?,
        hugepages_2m: a.hugepages_2m,
        hugepages_1g: a.hugepages_1g,
        kernel_args: a.kernel_args.clone(),
        qemu_args: a.qemu_args.as_deref().map(shape::split_words).transpose()?.unwrap_or_default(),
        gpu: a.gpu.as_deref().map(shape::parse_pci_address).transpose()?,
    })
}

/// An absolute `--registry-dir` (the supervisor may run elsewhere), created now so a path that
/// cannot be a directory fails `up` before anything boots.
fn registry_dir(dir: &std::path::Path) -> Result<std::path::PathBuf> {
    let dir = std::path::absolute(dir).with_context(|| format!("--registry-dir {}", dir.display()))?;
    std::fs::create_dir_all(&dir).with_context(|| format!("--registry-dir {}: cannot create the directory", dir.display()))?;
    Ok(dir)
}

/// Runs `vm up`.
pub fn run(dirs: &Dirs, a: UpArgs) -> Result<ExitCode> {
    // Cheap checks first: nothing is built or created for a request that cannot work.
    config::validate_name(&a.name)?;
    if let Some(n) = a.nodes.filter(|&n| n == 0 || n > config::MAX_NODES) {
        return Err(config::SpecError::Nodes(n).into());
    }
    let memory_mib = a.memory.as_deref().map(config::parse_memory).transpose()?;
    let requested = requested_shape(&a)?;
    let qemu = QEMU.locate()?;
    let decision = accel::decide(a.accel, &KvmFacts::probe())?;
    let dir = ClusterDir::new(dirs, &a.name);
    dir.check_socket_paths().map_err(anyhow::Error::msg)?;
    // The cluster's lock, held from here on and handed to the supervisor: of two `vm up` of one
    // name, exactly one gets past this line.
    let Some(lock) = teardown::try_lock(&dir)? else {
        bail!(
            "cluster {:?} is already running or being started: see `kvci vm status --name {0}`, or take it down with `kvci vm down --name {0}`",
            a.name
        );
    };

    let image = crate::image::resolve(dirs, &a.image)?;
    let kubevirtci = matches!(image.manifest.access, crate::image::store::Access::Kubevirtci { .. });
    let spec = ClusterSpec {
        name: a.name.clone(),
        nodes: a.nodes.or(image.manifest.nodes).unwrap_or(1),
        image: image.manifest.name.clone(),
        memory_mib: memory_mib.unwrap_or(image.manifest.memory_mib),
        cpus: a.cpus.unwrap_or(image.manifest.cpus),
        accel: a.accel,
        boot_timeout_secs: a.boot_timeout,
        subnet: a.subnet.clone(),
        ports: if a.random_ports {
            FixedPorts::default()
        } else {
            FixedPorts {
                ssh: a.ssh_port,
                k8s: a.k8s_port,
                ocp: a.ocp_port,
                registry: a.registry_port,
                vnc: a.vnc_port,
                http: a.http_port,
                https: a.https_port,
                prometheus: a.prometheus_port,
                grafana: a.grafana_port,
                dns: a.dns_port,
            }
        },
        dns_upstreams: a.dns_upstream.clone(),
        registry_dir: a.registry_dir.as_deref().map(registry_dir).transpose()?,
        stack: match (a.single_stack, a.ipv4_only) {
            (true, _) => IpStack::Ipv6,
            (_, true) => IpStack::Ipv4,
            _ => IpStack::Dual,
        },
        allow_host_loopback: a.allow_host_loopback,
        shape: {
            let mut s = requested.clone().or(&image.manifest.shape);
            if kubevirtci {
                s.hugepages_2m.get_or_insert(crate::cluster::plan::KUBEVIRTCI_HUGEPAGES_2M);
            }
            s
        },
    };
    if let Some(frozen) = &image.manifest.frozen {
        check_frozen(&a, frozen, memory_mib, &decision)?;
        check_frozen_shape(&a.image, frozen, &requested)?;
    }
    let spec = match &image.manifest.frozen {
        // A frozen cluster resumes with exactly the machine and network it was saved with.
        Some(f) => ClusterSpec {
            subnet: f.subnet.clone(),
            memory_mib: f.memory_mib,
            cpus: f.cpus,
            nodes: f.nodes.len() as u32,
            stack: f.stack,
            shape: f.shape.clone(),
            ..spec
        },
        None => spec,
    };
    spec.validate(HostLimits::probe())?;
    if let Some(gpu) = &spec.shape.gpu {
        shape::check_gpu(gpu, std::path::Path::new("/sys")).map_err(anyhow::Error::msg)?;
    }
    // Before anything is created: a bad --qemu-args fails here with QEMU's own words.
    preflight::check(&qemu, decision.accel, spec.memory_mib, spec.cpus, spec.shape.numa_nodes(), &spec.shape.qemu_args)?;
    eprintln!("kvci: accelerator {}: {}", decision.accel, decision.reason);
    if kubevirtci && decision.accel == crate::accel::Accel::Tcg {
        eprintln!(
            "kvci: kubevirtci's devices under TCG: the sound cards, the igb SR-IOV NIC and the IOMMU are emulated and work, \
             slowly; kernel_irqchip=split (KVM only) is left out, and nested virtualisation (KubeVirt's VMs) is not available"
        );
    }
    if spec.allow_host_loopback {
        eprintln!(
            "kvci: --allow-host-loopback: guests reach every service on this host's 127.0.0.1 as {} \
             (other clusters' forwarded ports, the host's own daemons)",
            kvci_net::egress::HOST_ALIAS
        );
    }

    let stale = teardown::remove_stale_held(&dir, &lock)?;
    if !stale.is_empty() {
        eprintln!("kvci: cleaned up a dead earlier run of {:?} (killed QEMU pids {stale:?})", a.name);
    }
    std::fs::create_dir_all(dir.root()).with_context(|| format!("creating {}", dir.root().display()))?;
    let launch = Launch { spec, accel: decision, image_id: Some(image.manifest.id.clone()) };
    std::fs::write(dir.launch(), serde_json::to_vec_pretty(&launch)?)?;

    if a.foreground {
        server::run(dirs, &a.name, server::Reporter::Terminal, Some(lock))?;
        return Ok(ExitCode::SUCCESS);
    }
    let status = spawn::spawn_and_wait(dirs, &dir, lock)?;
    match a.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&status)?),
        Output::Table => {
            let mut t = output::table(&["NODE", "STATE", "IP", "READY AFTER", "PID"]);
            for n in &status.nodes {
                t.add_row(vec![
                    n.name.clone(),
                    format!("{:?}", n.state).to_lowercase(),
                    n.ip.clone(),
                    n.ready_secs.map(|s| format!("{s:.1}s")).unwrap_or_default(),
                    n.pid.map(|p| p.to_string()).unwrap_or_default(),
                ]);
            }
            println!("{t}");
            let ssh = status.ports.iter().find(|p| p.name == "ssh").map(|p| p.host_port).unwrap_or_default();
            eprintln!(
                "kvci: cluster {} is up: `kvci vm ssh --name {0} node01` (host port {ssh}), `kvci vm ports --name {0}`, `kvci vm down --name {0}`",
                status.name
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::store::{FrozenManifest, FrozenNode};

    fn frozen(shape: NodeShape) -> FrozenManifest {
        FrozenManifest {
            nodes: vec![FrozenNode { name: "node01".into(), uuid: "u".into(), disk: "node01.qcow2".into(), state: "node01.state".into() }],
            subnet: kvci_net::topology::DEFAULT_SUBNET.into(),
            accel: crate::accel::Accel::Tcg,
            qemu_version: "10.0.2".into(),
            memory_mib: 2048,
            cpus: 2,
            stack: IpStack::Dual,
            shape,
        }
    }

    #[test]
    fn frozen_image_refuses_another_numa_naming_the_flag() {
        let image = ImageName::parse("fz").unwrap();
        let f = frozen(NodeShape::default());
        let err = check_frozen_shape(&image, &f, &NodeShape { numa: Some(2), ..Default::default() }).unwrap_err().to_string();
        assert!(err.contains("--numa") && err.contains("frozen"), "{err}");
        // The same shape, or none asked for, resumes.
        assert!(check_frozen_shape(&image, &f, &NodeShape { numa: Some(1), ..Default::default() }).is_ok());
        assert!(check_frozen_shape(&image, &frozen(NodeShape { numa: Some(2), ..Default::default() }), &NodeShape::default()).is_ok());
    }

    #[test]
    fn frozen_manifest_without_a_shape_reads_as_the_empty_shape() {
        let mut v = serde_json::to_value(frozen(NodeShape::default())).unwrap();
        v.as_object_mut().unwrap().remove("shape");
        let f: FrozenManifest = serde_json::from_value(v).unwrap();
        assert!(f.shape.is_empty());
    }
}
