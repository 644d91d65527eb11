//! The plan: from a validated spec, an image and an accelerator, everything each node needs.
//! Pure: no files touched, so what `up` will do can be tested and printed.

use serde::{Deserialize, Serialize};

use crate::accel::Decision;
use crate::cluster::layout::{ClusterDir, NodeDir};
use crate::config::{node_name, ClusterSpec};
use crate::image::store::{Access, Image};
use crate::oci::kubevirtci::{OLD_USER, USER};
use crate::qemu::cmdline::{Boot, Endpoint, KubevirtciDevices, Nic, NodeMachine, SecondaryNic, ShapeDevices};
use kvci_net::topology::{mac_string, Subnet, SubnetError, Topology};

/// What `vm up` hands the supervisor (saved as `launch.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Launch {
    /// The validated spec.
    pub spec: ClusterSpec,
    /// The accelerator picked for it.
    pub accel: Decision,
    /// The layer the image name pointed at when the cluster started: `image prune` keeps it
    /// (and its parents) while the cluster runs, whatever the name points at since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
}

/// One node of the plan.
#[derive(Debug, Clone, PartialEq)]
pub struct NodePlan {
    /// 1-based node number.
    pub index: u32,
    /// `nodeNN`.
    pub name: String,
    /// Its files.
    pub dir: NodeDir,
    /// Read-only base disk the overlay sits on.
    pub base_disk: std::path::PathBuf,
    /// The machine, with sockets still to be bound (their fds are filled in at start).
    pub machine: NodeMachine,
    /// Where kvci reaches it (ssh, forwards, hooks): IPv4 unless the cluster is IPv6 only.
    pub ip: std::net::IpAddr,
    /// The addresses it must report having taken (its static DHCPv4 and DHCPv6 leases).
    pub leases: crate::cluster::readiness::Leases,
    /// The saved RAM and device state to resume from (frozen images).
    pub state: Option<std::path::PathBuf>,
    /// How kvci learns it is ready and logs in.
    pub access: NodeAccess,
    /// Its NIC's MAC (what the DHCP servers know it by).
    pub mac: [u8; 6],
    /// Its raw extra disks (`--nvme`, `--scsi`, `--usb`) and their sizes in bytes, created
    /// sparse before QEMU starts.
    pub extra_disks: Vec<(std::path::PathBuf, u64)>,
}

/// A plan that cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The subnet.
    #[error(transparent)]
    Subnet(#[from] SubnetError),
    /// A kubevirtci image without its login key.
    #[error("image {image} has no {key} in its layers: kvci logs in to its nodes with that key; import or pull the image again")]
    MissingKey {
        /// The key's file name.
        key: String,
        /// The image.
        image: String,
    },
}

/// How a node is readied.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeAccess {
    /// kvci's beacon, then an sshd banner (the cluster key came in through fw_cfg).
    Beacon,
    /// No beacon (kubevirtci's images): its leases taken, then a login as one of `users` with
    /// the image's own `key`, which then adds the cluster key to root's (gocli's root-key step).
    Login {
        /// Users to try, the image's recorded one first.
        users: Vec<String>,
        /// The image's private key.
        key: std::path::PathBuf,
    },
}

/// gocli's default of 2 MiB huge pages on kubevirtci's nodes.
pub const KUBEVIRTCI_HUGEPAGES_2M: u32 = 64;

/// How kvci's guests learn which DHCP clients to run (`kvci.stack=` on the kernel command line).
pub fn stack_word(stack: crate::config::IpStack) -> &'static str {
    match stack {
        crate::config::IpStack::Dual => "dual",
        crate::config::IpStack::Ipv4 => "ipv4",
        crate::config::IpStack::Ipv6 => "ipv6",
    }
}

/// A stable UUID for a node of a cluster (the same on every `up` of that name).
pub fn node_uuid(cluster: &str, node: &str) -> String {
    let mut d = crate::image::digest::LayerDigest::default();
    d.feed("uuid", format!("{cluster}/{node}").as_bytes());
    let h = d.finish();
    // Shaped as a version-4 style UUID (the hex is the hash, not random).
    format!("{}-{}-4{}-8{}-{}", &h[0..8], &h[8..12], &h[13..16], &h[17..20], &h[20..32])
}

/// The whole cluster's plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Cluster name.
    pub name: String,
    /// Nodes in order.
    pub nodes: Vec<NodePlan>,
    /// The cluster network.
    pub topology: Topology,
    /// Raw disks every node shares (`--shared-disk`) and their sizes in bytes.
    pub shared_disks: Vec<(std::path::PathBuf, u64)>,
}

/// gocli's order on the kernel command line: `--kernel-args`, then the huge pages.
pub fn shape_kernel_args(kernel_args: Option<&str>, hugepages_2m: u32, hugepages_1g: u32) -> String {
    let mut s = String::new();
    if let Some(a) = kernel_args.map(str::trim).filter(|a| !a.is_empty()) {
        s.push(' ');
        s.push_str(a);
    }
    if hugepages_2m > 0 {
        s.push_str(&format!(" hugepagesz=2M hugepages={hugepages_2m}"));
    }
    if hugepages_1g > 0 {
        s.push_str(&format!(" hugepagesz=1G hugepages={hugepages_1g}"));
    }
    s
}

/// Plans the nodes of `launch` booting `image` under `dir`.
pub fn plan(launch: &Launch, image: &Image, dir: &ClusterDir) -> Result<Plan, PlanError> {
    let spec = &launch.spec;
    let access = match &image.manifest.access {
        Access::Beacon => NodeAccess::Beacon,
        Access::Kubevirtci { user, key } => {
            let key = image.layer_file(key).ok_or_else(|| PlanError::MissingKey { key: key.clone(), image: image.manifest.name.clone() })?;
            let other = if user == OLD_USER { USER } else { OLD_USER };
            NodeAccess::Login { users: vec![user.clone(), other.to_string()], key }
        }
    };
    let mut topology = Topology::with_stack(&spec.name, Subnet::parse(&spec.subnet)?, spec.nodes, spec.stack.into());
    let kubevirtci = access != NodeAccess::Beacon;
    if kubevirtci {
        topology = topology.with_sriov();
    }
    let shape = &spec.shape;
    if shape.nics() > 0 {
        topology = topology.with_secondary_nics(shape.nics());
    }
    // kubevirtci's nodes: gocli's default of 64 2 MiB huge pages, unless --hugepages-2m says.
    let hugepages_2m = shape.hugepages_2m_or(if kubevirtci { KUBEVIRTCI_HUGEPAGES_2M } else { 0 });
    let kernel_shape = shape_kernel_args(shape.kernel_args.as_deref(), hugepages_2m, shape.hugepages_1g.unwrap_or(0));
    let shared_disks: Vec<_> = shape.shared_disks.iter().enumerate().map(|(i, &size)| (dir.shared_disk(i), size)).collect();
    let nodes = (1..=spec.nodes)
        .map(|index| {
            let net = &topology.nodes[index as usize - 1];
            let name = node_name(index);
            let nd = dir.node(&name);
            let machine = NodeMachine {
                name: format!("kvci-{}-{name}", spec.name),
                accel: launch.accel.accel,
                memory_mib: spec.memory_mib,
                cpus: spec.cpus,
                boot: Boot {
                    kernel: image.kernel(),
                    initrd: image.initrd(),
                    // no_timer_check: on a loaded host the kernel's IO-APIC timer probe can miss
                    // its window under TCG and panic ("timer doesn't work through
                    // Interrupt-remapped IO-APIC"); seen in CI with several guests booting.
                    append: format!(
                        "{}{kernel_shape} no_timer_check kvci.hostname={name} kvci.stack={}",
                        image.manifest.append,
                        stack_word(spec.stack)
                    ),
                },
                disk: nd.disk(),
                qmp: Endpoint::Path(nd.qmp_socket()),
                console: Endpoint::Path(nd.console_socket()),
                console_log: nd.serial_log(),
                beacon: Endpoint::Path(nd.beacon_socket()),
                agent: Endpoint::Path(nd.agent_socket()),
                authorized_keys: Some(dir.ssh_dir().join("id_ed25519.pub")),
                nic: Some(Nic { tap_fd: None, mac: mac_string(&net.mac) }),
                vnc: Some(nd.vnc_socket()),
                uuid: Some(node_uuid(&spec.name, &name)),
                incoming: false,
                kubevirtci: kubevirtci.then(|| KubevirtciDevices {
                    sriov: net.sriov.as_ref().map(|(_, mac)| Nic { tap_fd: None, mac: mac_string(mac) }),
                }),
                shape: ShapeDevices {
                    numa: shape.numa_nodes(),
                    secondary: (net.secondary.iter().enumerate())
                        .map(|(i, (_, mac))| SecondaryNic { node: index - 1, index: i as u32, nic: Nic { tap_fd: None, mac: mac_string(mac) } })
                        .collect(),
                    nvme: (0..shape.nvme.len()).map(|i| nd.extra_disk("nvme", i)).collect(),
                    scsi: (0..shape.scsi.len()).map(|i| nd.extra_disk("scsi", i)).collect(),
                    usb: (0..shape.usb.len()).map(|i| nd.extra_disk("usb", i)).collect(),
                    shared: shared_disks.iter().map(|(p, _)| p.clone()).collect(),
                    // kubevirtci passes the device to the last node.
                    gpu: shape.gpu.clone().filter(|_| index == spec.nodes),
                    extra: shape.qemu_args.clone(),
                },
            };
            let extra_disks = [("nvme", &shape.nvme), ("scsi", &shape.scsi), ("usb", &shape.usb)]
                .into_iter()
                .flat_map(|(kind, sizes)| sizes.iter().enumerate().map(move |(i, &size)| (kind, i, size)))
                .map(|(kind, i, size)| (nd.extra_disk(kind, i), size))
                .collect();
            let leases = crate::cluster::readiness::Leases {
                v4: topology.stack.v4().then_some(net.ip),
                v6: topology.stack.v6().then_some(net.ip6),
            };
            let ip = topology.node_addr(net);
            let mut node =
                NodePlan { index, name, dir: nd, base_disk: image.disk(), machine, ip, leases, state: None, access: access.clone(), mac: net.mac, extra_disks };
            // A frozen image: each node resumes from its own saved disk and RAM.
            if let Some(frozen) = image.manifest.frozen.as_ref().and_then(|f| f.nodes.get(index as usize - 1)) {
                node.base_disk = image.dir.join(&frozen.disk);
                node.state = Some(image.dir.join(&frozen.state));
                node.machine.uuid = Some(frozen.uuid.clone());
                node.machine.incoming = true;
            }
            node
        })
        .collect();
    Ok(Plan { name: spec.name.clone(), nodes, topology, shared_disks })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accel::{Accel, AccelChoice};
    use crate::image::store::Manifest;
    use crate::paths::Dirs;

    #[test]
    fn each_node_gets_its_own_overlay_and_hostname() {
        let launch = Launch {
            image_id: None,
            spec: ClusterSpec {
                name: "c1".into(),
                nodes: 2,
                image: "tiny".into(),
                memory_mib: 768,
                cpus: 2,
                accel: AccelChoice::Auto,
                boot_timeout_secs: 60,
                subnet: "10.9.0.0/24".into(),
                ports: Default::default(),
                dns_upstreams: vec![],
                registry_dir: None,
                stack: Default::default(),
                allow_host_loopback: false,
                shape: Default::default(),
            },
            accel: Decision { accel: Accel::Tcg, reason: "test".into() },
        };
        let image = Image {
            manifest: Manifest::root("tiny", "id", "console=ttyS0".into(), 512, 1),
            dir: "/s/layers/id".into(),
        };
        let dir = ClusterDir::new(&Dirs::at("/d"), "c1");
        let p = plan(&launch, &image, &dir).unwrap();
        assert_eq!(p.nodes.len(), 2);
        let n2 = &p.nodes[1];
        assert_eq!(n2.name, "node02");
        assert_eq!(n2.machine.disk, std::path::Path::new("/d/clusters/c1/node02/disk.qcow2"));
        assert_eq!(n2.base_disk, std::path::Path::new("/s/layers/id/disk.qcow2"));
        assert_eq!(n2.machine.boot.append, "console=ttyS0 no_timer_check kvci.hostname=node02 kvci.stack=dual");
        assert_eq!(n2.machine.memory_mib, 768);
        assert_ne!(p.nodes[0].machine.disk, n2.machine.disk);
        assert_eq!(n2.ip, std::net::IpAddr::from([10, 9, 0, 102]));
        assert_eq!(n2.machine.nic.as_ref().unwrap().mac, "52:55:00:d1:55:02");
        assert_eq!(p.topology.bridge_ip, std::net::Ipv4Addr::new(10, 9, 0, 2));
        assert_eq!(n2.machine.uuid.as_deref(), Some(node_uuid("c1", "node02").as_str()));
        assert_ne!(node_uuid("c1", "node01"), node_uuid("c1", "node02"));
        assert!(!n2.machine.incoming && n2.state.is_none());
    }

    #[test]
    fn kernel_args_then_hugepages_like_gocli() {
        assert_eq!(shape_kernel_args(None, 0, 0), "");
        assert_eq!(shape_kernel_args(Some(" a=1 b "), 64, 0), " a=1 b hugepagesz=2M hugepages=64");
        assert_eq!(shape_kernel_args(Some(""), 0, 2), " hugepagesz=1G hugepages=2");
    }

    #[test]
    fn shape_reaches_every_node() {
        use crate::shape::NodeShape;
        let shape = NodeShape {
            numa: Some(2),
            secondary_nics: Some(2),
            nvme: vec![1 << 30],
            scsi: vec![1 << 20, 2 << 20],
            usb: vec![4 << 20],
            shared_disks: vec![8 << 20],
            hugepages_2m: Some(8),
            kernel_args: Some("foo=bar".into()),
            qemu_args: vec!["-device".into(), "x".into()],
            gpu: Some("0000:01:00.0".into()),
            ..Default::default()
        };
        let spec = ClusterSpec {
            name: "c1".into(),
            nodes: 2,
            image: "tiny".into(),
            memory_mib: 2048,
            cpus: 2,
            accel: AccelChoice::Tcg,
            boot_timeout_secs: 60,
            subnet: "10.9.0.0/24".into(),
            ports: Default::default(),
            dns_upstreams: vec![],
            registry_dir: None,
            stack: Default::default(),
            allow_host_loopback: false,
            shape,
        };
        let launch = Launch { spec, accel: Decision { accel: Accel::Tcg, reason: "test".into() }, image_id: None };
        let image = Image { manifest: Manifest::root("tiny", "id", "console=ttyS0".into(), 512, 1), dir: "/s/layers/id".into() };
        let p = plan(&launch, &image, &ClusterDir::new(&Dirs::at("/d"), "c1")).unwrap();
        assert_eq!(p.shared_disks, [(std::path::PathBuf::from("/d/clusters/c1/shared/disk0.img"), 8 << 20)]);
        assert_eq!(p.topology.secondary_nics, 2);
        let (n1, n2) = (&p.nodes[0], &p.nodes[1]);
        assert_eq!(n1.machine.boot.append, "console=ttyS0 foo=bar hugepagesz=2M hugepages=8 no_timer_check kvci.hostname=node01 kvci.stack=dual");
        let macs: Vec<&str> = n2.machine.shape.secondary.iter().map(|s| s.nic.mac.as_str()).collect();
        assert_eq!(macs, ["52:55:00:d1:56:02", "52:55:00:d1:56:03"]);
        assert_eq!((n2.machine.shape.secondary[1].node, n2.machine.shape.secondary[1].index), (1, 1));
        let disks: Vec<String> = n2.extra_disks.iter().map(|(p, s)| format!("{} {s}", p.display())).collect();
        assert_eq!(
            disks,
            [
                "/d/clusters/c1/node02/nvme-0.img 1073741824",
                "/d/clusters/c1/node02/scsi-0.img 1048576",
                "/d/clusters/c1/node02/scsi-1.img 2097152",
                "/d/clusters/c1/node02/usb-0.img 4194304"
            ]
        );
        assert_eq!(n1.machine.shape.numa, 2);
        assert_eq!(n1.machine.shape.shared, n2.machine.shape.shared, "one shared file for all nodes");
        assert_eq!((n1.machine.shape.gpu.as_deref(), n2.machine.shape.gpu.as_deref()), (None, Some("0000:01:00.0")), "the GPU goes to the last node");
        assert_eq!(n1.machine.shape.extra, ["-device", "x"]);
    }
}
