//! The plan: from a validated spec, an image and an accelerator, everything each node needs.
//! Pure: no files touched, so what `up` will do can be tested and printed.

use serde::{Deserialize, Serialize};

use crate::accel::Decision;
use crate::cluster::layout::{ClusterDir, NodeDir};
use crate::config::{node_name, ClusterSpec};
use crate::image::store::{Access, Image};
use crate::oci::kubevirtci::{OLD_USER, USER};
use crate::qemu::cmdline::{Boot, Endpoint, KubevirtciDevices, Nic, NodeMachine};
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
    // kubevirtci's nodes: gocli's default of 64 2 MiB huge pages on the kernel line.
    let hugepages = if kubevirtci { " hugepagesz=2M hugepages=64" } else { "" };
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
                        "{}{hugepages} no_timer_check kvci.hostname={name} kvci.stack={}",
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
            };
            let leases = crate::cluster::readiness::Leases {
                v4: topology.stack.v4().then_some(net.ip),
                v6: topology.stack.v6().then_some(net.ip6),
            };
            let ip = topology.node_addr(net);
            let mut node = NodePlan { index, name, dir: nd, base_disk: image.disk(), machine, ip, leases, state: None, access: access.clone(), mac: net.mac };
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
    Ok(Plan { name: spec.name.clone(), nodes, topology })
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
}
