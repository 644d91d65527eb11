//! The QEMU command line of a node, built from small pure functions, one per feature.
//!
//! Sockets (QMP, console, beacon) are created by kvci and handed over as fds, so kvci can
//! connect before QEMU even runs: no polling for a socket file to appear.

use std::os::fd::RawFd;
use std::path::{Path, PathBuf};

use crate::accel::Accel;

/// Name of the virtio-serial port the guest reports readiness on.
pub const BEACON_PORT: &str = "org.kvci.beacon";
/// Name of the virtio-serial port kvci's guest agent answers on.
pub const AGENT_PORT: &str = "org.kvci.agent";
/// fw_cfg name under which the guest finds its authorized ssh keys.
pub const FW_CFG_AUTHORIZED_KEYS: &str = "opt/org.kvci/authorized_keys";

/// How QEMU gets a listening unix socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A socket kvci already bound and listens on, inherited by QEMU.
    Fd(RawFd),
    /// A path QEMU binds itself (bare QEMU in the benchmark).
    Path(PathBuf),
}

/// Direct kernel boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Boot {
    /// The kernel image.
    pub kernel: PathBuf,
    /// The initramfs.
    pub initrd: PathBuf,
    /// Kernel command line.
    pub append: String,
}

/// Everything that makes one node's command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeMachine {
    /// Name shown by QEMU (`-name`), e.g. `kvci-node01`.
    pub name: String,
    /// Accelerator.
    pub accel: Accel,
    /// Memory, MiB.
    pub memory_mib: u64,
    /// vCPUs.
    pub cpus: u32,
    /// Kernel, initrd, arguments.
    pub boot: Boot,
    /// The node's qcow2 overlay.
    pub disk: PathBuf,
    /// QMP monitor socket.
    pub qmp: Endpoint,
    /// Serial console socket (`kvci vm console`).
    pub console: Endpoint,
    /// Everything the serial console prints, appended here (`kvci vm logs`).
    pub console_log: PathBuf,
    /// The readiness beacon socket.
    pub beacon: Endpoint,
    /// The guest agent socket.
    pub agent: Endpoint,
    /// A file with the ssh public keys to hand the guest through fw_cfg.
    pub authorized_keys: Option<PathBuf>,
    /// The node's NIC on the cluster network.
    pub nic: Option<Nic>,
    /// A unix socket for the node's VNC display.
    pub vnc: Option<PathBuf>,
    /// SMBIOS UUID, stable across freeze and resume.
    pub uuid: Option<String>,
    /// Wait for a saved state (`-incoming defer`, then QMP `migrate-incoming`) instead of booting.
    pub incoming: bool,
    /// kubevirtci's extra devices (its imported images).
    pub kubevirtci: Option<KubevirtciDevices>,
    /// What `--numa`, `--secondary-nics`, `--nvme`, … add.
    pub shape: ShapeDevices,
}

/// The node shape's devices (`vm up --numa`, `--secondary-nics`, `--nvme`, …).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShapeDevices {
    /// NUMA nodes (0 or 1: none).
    pub numa: u32,
    /// Secondary NICs, in order (the node's 0-based number and the NIC's go in their ids).
    pub secondary: Vec<SecondaryNic>,
    /// Raw NVMe disk files.
    pub nvme: Vec<PathBuf>,
    /// Raw disk files on one virtio-scsi controller.
    pub scsi: Vec<PathBuf>,
    /// Raw USB stick files.
    pub usb: Vec<PathBuf>,
    /// Raw files every node of the cluster shares.
    pub shared: Vec<PathBuf>,
    /// A host PCI device for vfio-pci.
    pub gpu: Option<String>,
    /// `--qemu-args`, word by word.
    pub extra: Vec<String>,
}

/// A secondary NIC: kubevirtci's `secondarynet{x}-{i}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecondaryNic {
    /// The node's 0-based number.
    pub node: u32,
    /// The NIC's 0-based number on the node (its bridge is `br{i+1}`).
    pub index: u32,
    /// Tap and MAC.
    pub nic: Nic,
}

/// What kubevirtci's `vm.sh` gives a node beyond kvci's own devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubevirtciDevices {
    /// The emulated SR-IOV NIC (`igb`) on its own bridge.
    pub sriov: Option<Nic>,
}

/// A virtio-net NIC backed by a tap that kvci opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    /// The tap's fd, inherited by QEMU (`None` until the tap exists).
    pub tap_fd: Option<RawFd>,
    /// The guest MAC, `52:55:00:d1:55:NN`.
    pub mac: String,
}

/// Escapes a value for QEMU's `key=value,…` option syntax (a comma is doubled).
pub fn escape(value: &str) -> String {
    value.replace(',', ",,")
}

fn path_value(p: &Path) -> String {
    escape(&p.to_string_lossy())
}

fn owned(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// No default devices, no user config, no display: kvci adds exactly what it needs.
pub fn base_args(name: &str) -> Vec<String> {
    let mut v = owned(&["-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"]);
    v.extend(["-name".to_string(), format!("{},process={}", escape(name), escape(name))]);
    v
}

/// q35; on KVM with a split irqchip as kubevirtci does (needed for interrupt remapping).
pub fn machine_args(accel: Accel) -> Vec<String> {
    match accel {
        Accel::Kvm => owned(&["-machine", "q35,accel=kvm,kernel_irqchip=split"]),
        Accel::Tcg => owned(&["-machine", "q35,accel=tcg"]),
    }
}

/// The host CPU on KVM (nested virt inside the node); QEMU's richest model on TCG.
///
/// kubevirtci uses `host,migratable=no,+invtsc`, which blocks saving the node's RAM (frozen
/// clusters). kvci keeps the CPU migratable and keeps an invariant TSC only with a fixed
/// `tsc-frequency` (from the host's `tsc_freq_khz`), which QEMU accepts for migration.
pub fn cpu_args(accel: Accel, tsc_khz: Option<u64>) -> Vec<String> {
    match (accel, tsc_khz) {
        (Accel::Kvm, Some(khz)) => vec!["-cpu".into(), format!("host,migratable=on,+invtsc,tsc-frequency={}", khz * 1000)],
        (Accel::Kvm, None) => owned(&["-cpu", "host,migratable=on"]),
        (Accel::Tcg, _) => owned(&["-cpu", "max"]),
    }
}

/// The host's TSC frequency in kHz, where the kernel publishes it.
pub fn host_tsc_khz() -> Option<u64> {
    std::fs::read_to_string("/sys/devices/system/cpu/cpu0/tsc_freq_khz").ok()?.trim().parse().ok()
}

/// Memory and vCPUs.
pub fn size_args(memory_mib: u64, cpus: u32) -> Vec<String> {
    vec!["-m".into(), format!("{memory_mib}M"), "-smp".into(), cpus.to_string()]
}

/// An emulated Intel IOMMU with interrupt remapping, like kubevirtci's nodes.
pub fn iommu_args() -> Vec<String> {
    owned(&["-device", "intel-iommu,intremap=on,caching-mode=on"])
}

/// Direct kernel boot.
pub fn boot_args(boot: &Boot) -> Vec<String> {
    vec![
        "-kernel".into(),
        boot.kernel.to_string_lossy().into_owned(),
        "-initrd".into(),
        boot.initrd.to_string_lossy().into_owned(),
        "-append".into(),
        boot.append.clone(),
    ]
}

/// The boot disk: the node's overlay on virtio-blk (`cache=unsafe`: disposable nodes).
pub fn disk_args(disk: &Path) -> Vec<String> {
    vec![
        "-drive".into(),
        format!("file={},if=none,id=disk0,format=qcow2,cache=unsafe,discard=unmap", path_value(disk)),
        "-device".into(),
        "virtio-blk-pci,drive=disk0".into(),
    ]
}

/// Entropy for the guest.
pub fn rng_args() -> Vec<String> {
    owned(&["-object", "rng-random,id=rng0,filename=/dev/urandom", "-device", "virtio-rng-pci,rng=rng0"])
}

/// A server-mode socket chardev that never waits for a client.
pub fn chardev_socket(id: &str, endpoint: &Endpoint, extra: &str) -> Vec<String> {
    let addr = match endpoint {
        Endpoint::Fd(fd) => format!("fd={fd}"),
        Endpoint::Path(p) => format!("path={}", path_value(p)),
    };
    vec!["-chardev".into(), format!("socket,id={id},{addr},server=on,wait=off{extra}")]
}

/// The serial console on a socket, logged to a file as well.
pub fn serial_args(console: &Endpoint, log: &Path) -> Vec<String> {
    let mut v = chardev_socket("serial0", console, &format!(",logfile={},logappend=on", path_value(log)));
    v.extend(owned(&["-serial", "chardev:serial0"]));
    v
}

/// The QMP monitor (the only monitor: no HMP).
pub fn qmp_args(qmp: &Endpoint) -> Vec<String> {
    let mut v = chardev_socket("qmp", qmp, "");
    v.extend(owned(&["-mon", "chardev=qmp,mode=control"]));
    v
}

/// The virtio-serial ports: the guest writes its readiness to one and answers kvci's requests
/// on the other.
pub fn serial_port_args(beacon: &Endpoint, agent: &Endpoint) -> Vec<String> {
    let mut v = owned(&["-device", "virtio-serial-pci,id=vser0"]);
    v.extend(chardev_socket("beacon", beacon, ""));
    v.extend(["-device".into(), format!("virtserialport,bus=vser0.0,chardev=beacon,name={BEACON_PORT}")]);
    v.extend(chardev_socket("agent", agent, ""));
    v.extend(["-device".into(), format!("virtserialport,bus=vser0.0,chardev=agent,name={AGENT_PORT}")]);
    v
}

/// ssh public keys for the guest, as a fw_cfg file.
pub fn fw_cfg_keys_args(keys: &Path) -> Vec<String> {
    vec!["-fw_cfg".into(), format!("name={FW_CFG_AUTHORIZED_KEYS},file={}", path_value(keys))]
}

/// The NIC: virtio-net on a tap fd (vhost off: /dev/vhost-net may be missing or root-only).
pub fn nic_args(nic: &Nic) -> Vec<String> {
    let fd = nic.tap_fd.map(|fd| fd.to_string()).unwrap_or_else(|| "-1".into());
    vec![
        "-netdev".into(),
        format!("tap,id=net0,fd={fd},vhost=off"),
        "-device".into(),
        format!("virtio-net-pci,netdev=net0,mac={}", nic.mac),
    ]
}

/// The VNC display on a unix socket (forwarded to a host port by kvci).
pub fn vnc_args(path: &Path) -> Vec<String> {
    vec!["-vnc".into(), format!("unix:{}", path_value(path))]
}

/// A fixed machine identity, so a frozen node resumes as the same machine.
pub fn uuid_args(uuid: &str) -> Vec<String> {
    vec!["-uuid".into(), uuid.to_string()]
}

/// Resume from a saved state given later over QMP.
pub fn incoming_args() -> Vec<String> {
    owned(&["-incoming", "defer"])
}

/// kubevirtci's extra devices: two sound cards (KubeVirt's host-device tests bind them to
/// vfio-pci) and the `igb` SR-IOV NIC behind its own PCIe expander and root port. They come
/// last and name their bus: after a `pxb-pcie`, devices without a bus would land on it.
pub fn kubevirtci_args(d: &KubevirtciDevices) -> Vec<String> {
    let mut v = owned(&[
        "-audiodev",
        "none,id=snd0",
        "-device",
        "intel-hda,id=hda0,bus=pcie.0",
        "-device",
        "hda-duplex,bus=hda0.0,audiodev=snd0",
        "-device",
        "ich9-intel-hda,id=hda1,bus=pcie.0",
        "-device",
        "hda-duplex,bus=hda1.0,audiodev=snd0",
    ]);
    if let Some(nic) = &d.sriov {
        let fd = nic.tap_fd.map(|fd| fd.to_string()).unwrap_or_else(|| "-1".into());
        v.extend([
            "-device".into(),
            "pxb-pcie,id=pxb0,bus_nr=128,bus=pcie.0".into(),
            "-device".into(),
            "pcie-root-port,id=sriov-rp0,bus=pxb0,chassis=128".into(),
            "-netdev".into(),
            format!("tap,id=sriov0,fd={fd},vhost=off"),
            "-device".into(),
            format!("igb,netdev=sriov0,mac={},bus=sriov-rp0", nic.mac),
        ]);
    }
    v
}

/// kubevirtci's symmetric NUMA: memory and vCPUs split evenly into `nodes` NUMA nodes, each
/// with its own RAM backend (`nodes` ≤ 1: nothing). The split is checked in the spec.
pub fn numa_args(nodes: u32, memory_mib: u64, cpus: u32) -> Vec<String> {
    if nodes <= 1 {
        return Vec::new();
    }
    let (mem, per) = (memory_mib / u64::from(nodes), cpus / nodes);
    let mut v = Vec::new();
    for k in 0..nodes {
        let (first, last) = (k * per, (k + 1) * per - 1);
        v.extend(["-object".into(), format!("memory-backend-ram,size={mem}M,id=m{k}")]);
        v.extend(["-numa".into(), format!("node,nodeid={k},memdev=m{k},cpus={first}-{last}")]);
    }
    v
}

/// A secondary NIC as kubevirtci's `vm.sh` adds it, on a tap fd as the main NIC.
pub fn secondary_nic_args(s: &SecondaryNic) -> Vec<String> {
    let id = format!("secondarynet{}-{}", s.node, s.index);
    let fd = s.nic.tap_fd.map(|fd| fd.to_string()).unwrap_or_else(|| "-1".into());
    vec!["-device".into(), format!("virtio-net-pci,netdev={id},mac={},bus=pcie.0", s.nic.mac), "-netdev".into(), format!("tap,id={id},fd={fd},vhost=off")]
}

/// Raw NVMe disks, `NVME{i}` with serial `nvme-{i}`.
pub fn nvme_args(disks: &[PathBuf]) -> Vec<String> {
    let mut v = Vec::new();
    for (i, d) in disks.iter().enumerate() {
        v.extend(["-drive".into(), format!("file={},format=raw,id=NVME{i},if=none", path_value(d))]);
        v.extend(["-device".into(), format!("nvme,drive=NVME{i},serial=nvme-{i},bus=pcie.0")]);
    }
    v
}

/// Raw disks as LUNs of one virtio-scsi controller.
pub fn scsi_args(disks: &[PathBuf]) -> Vec<String> {
    if disks.is_empty() {
        return Vec::new();
    }
    let mut v = owned(&["-device", "virtio-scsi-pci,id=scsi0,bus=pcie.0"]);
    for (i, d) in disks.iter().enumerate() {
        v.extend(["-drive".into(), format!("file={},format=raw,if=none,id=drive{i}", path_value(d))]);
        v.extend(["-device".into(), format!("scsi-hd,drive=drive{i},bus=scsi0.0,channel=0,scsi-id=0,lun={i}")]);
    }
    v
}

/// Raw USB sticks, two per xHCI controller.
pub fn usb_args(disks: &[PathBuf]) -> Vec<String> {
    let mut v = Vec::new();
    for (i, d) in disks.iter().enumerate() {
        let bus = i / 2;
        if i % 2 == 0 {
            v.extend(["-device".into(), format!("qemu-xhci,id=bus{bus},bus=pcie.0")]);
        }
        v.extend(["-drive".into(), format!("if=none,id=stick{i},format=raw,file={}", path_value(d))]);
        v.extend(["-device".into(), format!("usb-storage,bus=bus{bus}.0,drive=stick{i}")]);
    }
    v
}

/// Raw disks every node opens at once, on their own root ports, uncached so every node reads
/// what another wrote (kubevirtci's shared block devices).
pub fn shared_disk_args(disks: &[PathBuf]) -> Vec<String> {
    let mut v = Vec::new();
    for (i, d) in disks.iter().enumerate() {
        let (id, port) = (format!("shared-disk-{i}"), format!("pci.{}", i + 1));
        v.extend([
            "-blockdev".into(),
            format!("file,filename={},node-name={id},read-only=off,cache.direct=on,cache.no-flush=off", path_value(d)),
            "-device".into(),
            format!("pcie-root-port,id={port},bus=pcie.0"),
            "-device".into(),
            format!("virtio-blk-pci,bus={port},drive={id},id={id},share-rw=on,write-cache=on,werror=stop,rerror=stop"),
        ]);
    }
    v
}

/// A host PCI device passed through with vfio-pci.
pub fn gpu_args(address: &str) -> Vec<String> {
    vec!["-device".into(), format!("vfio-pci,host={address},bus=pcie.0")]
}

/// The shape's devices, in kubevirtci's order; `--qemu-args` last so they can refer to them.
pub fn shape_args(s: &ShapeDevices, memory_mib: u64, cpus: u32) -> Vec<String> {
    let mut v = numa_args(s.numa, memory_mib, cpus);
    for nic in &s.secondary {
        v.extend(secondary_nic_args(nic));
    }
    v.extend(nvme_args(&s.nvme));
    v.extend(scsi_args(&s.scsi));
    v.extend(usb_args(&s.usb));
    v.extend(shared_disk_args(&s.shared));
    if let Some(gpu) = &s.gpu {
        v.extend(gpu_args(gpu));
    }
    v.extend(s.extra.iter().cloned());
    v
}

/// The whole command line of a node (without the program name).
pub fn node_args(m: &NodeMachine) -> Vec<String> {
    let mut v = base_args(&m.name);
    v.extend(machine_args(m.accel));
    v.extend(cpu_args(m.accel, if m.accel == Accel::Kvm { host_tsc_khz() } else { None }));
    v.extend(size_args(m.memory_mib, m.cpus));
    v.extend(iommu_args());
    v.extend(boot_args(&m.boot));
    v.extend(disk_args(&m.disk));
    v.extend(rng_args());
    v.extend(serial_args(&m.console, &m.console_log));
    v.extend(qmp_args(&m.qmp));
    v.extend(serial_port_args(&m.beacon, &m.agent));
    if let Some(keys) = &m.authorized_keys {
        v.extend(fw_cfg_keys_args(keys));
    }
    if let Some(nic) = &m.nic {
        v.extend(nic_args(nic));
    }
    if let Some(vnc) = &m.vnc {
        v.extend(vnc_args(vnc));
    }
    if let Some(uuid) = &m.uuid {
        v.extend(uuid_args(uuid));
    }
    if m.incoming {
        v.extend(incoming_args());
    }
    // Before kubevirtci's pxb-pcie: every shape device names pcie.0 anyway.
    v.extend(shape_args(&m.shape, m.memory_mib, m.cpus));
    if let Some(d) = &m.kubevirtci {
        v.extend(kubevirtci_args(d));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kvm_machine_matches_kubevirtci_but_stays_migratable() {
        assert_eq!(machine_args(Accel::Kvm), ["-machine", "q35,accel=kvm,kernel_irqchip=split"]);
        assert_eq!(cpu_args(Accel::Kvm, Some(2_400_000)), ["-cpu", "host,migratable=on,+invtsc,tsc-frequency=2400000000"]);
        assert_eq!(cpu_args(Accel::Kvm, None), ["-cpu", "host,migratable=on"]);
    }

    #[test]
    fn tcg_machine_has_no_kernel_irqchip() {
        assert_eq!(machine_args(Accel::Tcg), ["-machine", "q35,accel=tcg"]);
        assert_eq!(cpu_args(Accel::Tcg, Some(1)), ["-cpu", "max"]);
    }

    #[test]
    fn iommu_is_always_there() {
        assert_eq!(iommu_args(), ["-device", "intel-iommu,intremap=on,caching-mode=on"]);
    }

    #[test]
    fn commas_in_paths_are_escaped() {
        assert_eq!(
            disk_args(Path::new("/a,b/disk.qcow2"))[1],
            "file=/a,,b/disk.qcow2,if=none,id=disk0,format=qcow2,cache=unsafe,discard=unmap"
        );
    }

    #[test]
    fn sockets_by_fd_or_path() {
        assert_eq!(chardev_socket("qmp", &Endpoint::Fd(7), ""), ["-chardev", "socket,id=qmp,fd=7,server=on,wait=off"]);
        assert_eq!(
            qmp_args(&Endpoint::Path("/r/q.sock".into())),
            ["-chardev", "socket,id=qmp,path=/r/q.sock,server=on,wait=off", "-mon", "chardev=qmp,mode=control"]
        );
    }

    #[test]
    fn serial_is_logged() {
        assert_eq!(
            serial_args(&Endpoint::Fd(5), Path::new("/n/serial.log")),
            [
                "-chardev",
                "socket,id=serial0,fd=5,server=on,wait=off,logfile=/n/serial.log,logappend=on",
                "-serial",
                "chardev:serial0"
            ]
        );
    }

    #[test]
    fn beacon_and_agent_are_named_virtio_serial_ports() {
        let a = serial_port_args(&Endpoint::Fd(9), &Endpoint::Fd(10));
        assert!(a.contains(&"virtserialport,bus=vser0.0,chardev=beacon,name=org.kvci.beacon".to_string()));
        assert_eq!(a.last().unwrap(), "virtserialport,bus=vser0.0,chardev=agent,name=org.kvci.agent");
        assert_eq!(a.iter().filter(|x| x.starts_with("virtio-serial-pci")).count(), 1);
    }

    #[test]
    fn nic_is_virtio_net_on_the_tap_fd() {
        assert_eq!(
            nic_args(&Nic { tap_fd: Some(8), mac: "52:55:00:d1:55:02".into() }),
            ["-netdev", "tap,id=net0,fd=8,vhost=off", "-device", "virtio-net-pci,netdev=net0,mac=52:55:00:d1:55:02"]
        );
    }

    #[test]
    fn whole_line_has_no_hmp_and_one_of_each() {
        let m = NodeMachine {
            name: "kvci-node01".into(),
            accel: Accel::Tcg,
            memory_mib: 512,
            cpus: 2,
            boot: Boot { kernel: "/i/vmlinuz".into(), initrd: "/i/initrd.img".into(), append: "console=ttyS0".into() },
            disk: "/c/node01/disk.qcow2".into(),
            qmp: Endpoint::Fd(3),
            console: Endpoint::Fd(4),
            console_log: "/c/node01/serial.log".into(),
            beacon: Endpoint::Fd(5),
            agent: Endpoint::Fd(7),
            authorized_keys: Some("/c/authorized_keys".into()),
            nic: Some(Nic { tap_fd: Some(6), mac: "52:55:00:d1:55:01".into() }),
            vnc: None,
            uuid: Some("0b2e8a3c-0000-4000-8000-000000000001".into()),
            incoming: true,
            kubevirtci: None,
            shape: Default::default(),
        };
        let args = node_args(&m);
        assert!(!args.iter().any(|a| a == "-monitor" || a.contains("mode=readline")));
        assert_eq!(args.iter().filter(|a| *a == "-machine").count(), 1);
        let size = args.iter().position(|a| a == "-m").unwrap();
        assert_eq!(args[size + 1], "512M");
        assert!(args.contains(&"name=opt/org.kvci/authorized_keys,file=/c/authorized_keys".to_string()));
        assert_eq!(args[..2], ["-nodefaults", "-no-user-config"]);
        assert!(args.ends_with(&["-uuid".into(), "0b2e8a3c-0000-4000-8000-000000000001".into(), "-incoming".into(), "defer".into()]));
    }

    #[test]
    fn kubevirtci_devices_name_their_buses_and_put_igb_behind_the_expander() {
        let args = kubevirtci_args(&KubevirtciDevices { sriov: Some(Nic { tap_fd: Some(9), mac: "52:55:00:d1:57:01".into() }) });
        let joined = args.join(" ");
        assert!(joined.contains("-device intel-hda,id=hda0,bus=pcie.0 -device hda-duplex,bus=hda0.0,audiodev=snd0"), "{joined}");
        assert!(joined.contains("-device ich9-intel-hda,id=hda1,bus=pcie.0 -device hda-duplex,bus=hda1.0,audiodev=snd0"), "{joined}");
        assert!(joined.ends_with(
            "-device pxb-pcie,id=pxb0,bus_nr=128,bus=pcie.0 -device pcie-root-port,id=sriov-rp0,bus=pxb0,chassis=128 \
             -netdev tap,id=sriov0,fd=9,vhost=off -device igb,netdev=sriov0,mac=52:55:00:d1:57:01,bus=sriov-rp0"
        ), "{joined}");
    }

    #[test]
    fn numa_splits_memory_and_cpus_like_kubevirtci() {
        assert!(numa_args(1, 2048, 2).is_empty());
        assert_eq!(
            numa_args(2, 2048, 4).join(" "),
            "-object memory-backend-ram,size=1024M,id=m0 -numa node,nodeid=0,memdev=m0,cpus=0-1 \
             -object memory-backend-ram,size=1024M,id=m1 -numa node,nodeid=1,memdev=m1,cpus=2-3"
        );
    }

    #[test]
    fn secondary_nic_is_kubevirtcis_on_a_tap_fd() {
        let s = SecondaryNic { node: 1, index: 0, nic: Nic { tap_fd: Some(11), mac: "52:55:00:d1:56:02".into() } };
        assert_eq!(
            secondary_nic_args(&s),
            ["-device", "virtio-net-pci,netdev=secondarynet1-0,mac=52:55:00:d1:56:02,bus=pcie.0", "-netdev", "tap,id=secondarynet1-0,fd=11,vhost=off"]
        );
    }

    #[test]
    fn nvme_scsi_and_usb_disks_match_kubevirtci() {
        let d = |n: &str| PathBuf::from(format!("/c/node01/{n}"));
        assert_eq!(
            nvme_args(&[d("nvme-0.img"), d("nvme-1.img")]).join(" "),
            "-drive file=/c/node01/nvme-0.img,format=raw,id=NVME0,if=none -device nvme,drive=NVME0,serial=nvme-0,bus=pcie.0 \
             -drive file=/c/node01/nvme-1.img,format=raw,id=NVME1,if=none -device nvme,drive=NVME1,serial=nvme-1,bus=pcie.0"
        );
        assert!(scsi_args(&[]).is_empty());
        assert_eq!(
            scsi_args(&[d("scsi-0.img"), d("scsi-1.img")]).join(" "),
            "-device virtio-scsi-pci,id=scsi0,bus=pcie.0 \
             -drive file=/c/node01/scsi-0.img,format=raw,if=none,id=drive0 -device scsi-hd,drive=drive0,bus=scsi0.0,channel=0,scsi-id=0,lun=0 \
             -drive file=/c/node01/scsi-1.img,format=raw,if=none,id=drive1 -device scsi-hd,drive=drive1,bus=scsi0.0,channel=0,scsi-id=0,lun=1"
        );
        let usb = usb_args(&[d("usb-0.img"), d("usb-1.img"), d("usb-2.img")]).join(" ");
        assert_eq!(
            usb,
            "-device qemu-xhci,id=bus0,bus=pcie.0 \
             -drive if=none,id=stick0,format=raw,file=/c/node01/usb-0.img -device usb-storage,bus=bus0.0,drive=stick0 \
             -drive if=none,id=stick1,format=raw,file=/c/node01/usb-1.img -device usb-storage,bus=bus0.0,drive=stick1 \
             -device qemu-xhci,id=bus1,bus=pcie.0 \
             -drive if=none,id=stick2,format=raw,file=/c/node01/usb-2.img -device usb-storage,bus=bus1.0,drive=stick2"
        );
    }

    #[test]
    fn shared_disks_get_a_root_port_each_and_no_cache() {
        assert_eq!(
            shared_disk_args(&["/c/shared/disk0.img".into()]),
            [
                "-blockdev",
                "file,filename=/c/shared/disk0.img,node-name=shared-disk-0,read-only=off,cache.direct=on,cache.no-flush=off",
                "-device",
                "pcie-root-port,id=pci.1,bus=pcie.0",
                "-device",
                "virtio-blk-pci,bus=pci.1,drive=shared-disk-0,id=shared-disk-0,share-rw=on,write-cache=on,werror=stop,rerror=stop"
            ]
        );
    }

    #[test]
    fn gpu_and_extra_args_come_last() {
        let s = ShapeDevices { gpu: Some("0000:01:00.0".into()), extra: vec!["-device".into(), "x".into()], ..Default::default() };
        assert_eq!(shape_args(&s, 512, 1), ["-device", "vfio-pci,host=0000:01:00.0,bus=pcie.0", "-device", "x"]);
        assert!(shape_args(&ShapeDevices::default(), 512, 1).is_empty());
    }
}
