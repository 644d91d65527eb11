//! Node shapes (`vm up --numa/--secondary-nics/--nvme/--scsi/--usb/--shared-disk/--hugepages-*/
//! --kernel-args/--qemu-args`), each seen from inside a real guest. One cluster carries every
//! shape at once: TCG on two cores boots a debian-12 pair in about a minute.

mod common;

use std::process::Output;

use common::{kvci, run, stderr, TestCluster};

fn ssh(cluster: &str, node: &str, cmd: &str) -> Output {
    run(&["vm", "ssh", "--name", cluster, node, "--", cmd])
}

/// stdout of a command that must succeed.
fn guest(cluster: &str, node: &str, cmd: &str) -> String {
    let out = ssh(cluster, node, cmd);
    assert!(out.status.success(), "{node}: {cmd}: {}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn build(image: &str) {
    let out = kvci().args(["image", "build", image, "--accel", "tcg"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

/// The guest's block devices whose size is `bytes`.
fn disks_of_size(lsblk: &str, bytes: u64) -> Vec<String> {
    lsblk
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (name, size) = (w.next()?, w.next()?.parse::<u64>().ok()?);
            (size == bytes).then(|| name.to_string())
        })
        .collect()
}

#[test]
fn every_shape_is_seen_from_inside_the_guests() {
    build("debian-12");
    let name = "it-shapes";
    // 4G, not 2G: with 2 NUMA nodes of 2 GiB, node1 lies above 4 GiB (q35 keeps 2 GiB below)
    // and holds a whole aligned 1 GiB page; in 2 GiB the kernel finds no free aligned GiB at boot.
    let c = TestCluster::up(
        name,
        &[
            "--image", "debian-12", "--nodes", "2", "--memory", "4G", "--cpus", "2",
            "--numa", "2",
            "--secondary-nics", "2",
            "--nvme", "1Gi",
            "--scsi", "512Mi", "--scsi", "1G",
            "--usb", "64Mi",
            "--shared-disk", "256Mi",
            "--hugepages-2m", "16", "--hugepages-1g", "1",
            "--kernel-args", "kvci.test=shapes",
            "--qemu-args", "-device virtio-balloon-pci,id=balloon0,bus=pcie.0",
        ],
    );

    // Extra disk files live in the cluster directory while it is up.
    let dir = c.dir();
    for f in ["node01/nvme-0.img", "node01/scsi-0.img", "node01/scsi-1.img", "node01/usb-0.img", "node02/nvme-0.img", "shared/disk0.img"] {
        assert!(dir.join(f).is_file(), "{f} missing while the cluster is up");
    }
    assert_eq!(std::fs::metadata(dir.join("node02/scsi-1.img")).unwrap().len(), 1_000_000_000, "1G is a decimal Kubernetes quantity");

    // NUMA: two nodes, each with one vCPU.
    let numa = guest(name, "node01", "ls /sys/devices/system/node; cat /sys/devices/system/node/node1/cpulist");
    assert!(numa.contains("node0") && numa.contains("node1") && !numa.contains("node2"), "{numa}");
    assert!(numa.trim_end().ends_with('1'), "node1 has vCPU 1: {numa}");

    // Secondary NICs: one MAC counter over the cluster, node01's NICs first.
    for (node, macs) in [("node01", ["52:55:00:d1:56:00", "52:55:00:d1:56:01"]), ("node02", ["52:55:00:d1:56:02", "52:55:00:d1:56:03"])] {
        let addrs = guest(name, node, "cat /sys/class/net/*/address");
        for mac in macs {
            assert!(addrs.contains(mac), "{node} lacks {mac}: {addrs}");
        }
        assert_eq!(addrs.matches("52:55:00:d1:56:").count(), 2, "{node}: {addrs}");
    }

    // Disks, by their sizes (the cloud kernel loads nvme built in, virtio_scsi and sd_mod by udev).
    let lsblk = guest(name, "node01", "lsblk -b -d -n -o NAME,SIZE");
    assert_eq!(disks_of_size(&lsblk, 1 << 30), ["nvme0n1"], "{lsblk}");
    assert!(disks_of_size(&lsblk, 512 << 20).iter().all(|d| d.starts_with("sd")) && disks_of_size(&lsblk, 512 << 20).len() == 1, "{lsblk}");
    assert_eq!(disks_of_size(&lsblk, 1_000_000_000).len(), 1, "{lsblk}");
    let serial = guest(name, "node01", "cat /sys/block/nvme0n1/device/serial");
    assert_eq!(serial.trim(), "nvme-0");
    // USB: Debian's cloud kernel is built without USB support (CONFIG_USB_SUPPORT is not set),
    // so the stick itself cannot show up; its xHCI controller (1b36:000d) is on the PCI bus.
    let pci = guest(name, "node01", "for d in /sys/bus/pci/devices/*; do echo $(cat $d/vendor):$(cat $d/device); done");
    assert_eq!(pci.matches("0x1b36:0x000d").count(), 1, "one qemu-xhci for one stick: {pci}");
    // --qemu-args: the balloon device it added (virtio 1af4:1002).
    assert!(pci.contains("0x1af4:0x1002"), "the --qemu-args device is missing: {pci}");

    // The shared disk: what node01 writes past its cache, node02 reads past its own.
    let shared = disks_of_size(&lsblk, 256 << 20);
    assert_eq!(shared.len(), 1, "{lsblk}");
    let dev = format!("/dev/{}", shared[0]);
    guest(name, "node01", &format!("printf 'kvci-shared-marker\\n' | dd of={dev} bs=512 count=1 conv=sync oflag=direct && sync"));
    let lsblk2 = guest(name, "node02", "lsblk -b -d -n -o NAME,SIZE");
    assert_eq!(disks_of_size(&lsblk2, 256 << 20), shared, "the same shared disk on node02: {lsblk2}");
    let read = guest(name, "node02", &format!("dd if={dev} bs=512 count=1 iflag=direct 2>/dev/null | head -n 1"));
    assert_eq!(read.trim(), "kvci-shared-marker");

    // Huge pages and kernel arguments.
    let meminfo = guest(name, "node02", "grep -E '^(HugePages_Total|Hugepagesize)' /proc/meminfo; cat /sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages");
    let words: Vec<&str> = meminfo.split_whitespace().collect();
    assert_eq!(words, ["HugePages_Total:", "16", "Hugepagesize:", "2048", "kB", "1"], "{meminfo}");
    let cmdline = guest(name, "node02", "cat /proc/cmdline");
    assert!(cmdline.contains("kvci.test=shapes hugepagesz=2M hugepages=16 hugepagesz=1G hugepages=1"), "{cmdline}");

    // A cluster with extra disks is not frozen, and runs on.
    let out = run(&["vm", "freeze", "--name", name, "--to", "it-shapes-frozen"]);
    assert!(!out.status.success() && stderr(&out).contains("extra disks"), "{}", stderr(&out));
    assert_eq!(guest(name, "node01", "hostname").trim(), "node01");

    // Down removes every extra disk with the directory.
    let out = c.down();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!dir.exists(), "the cluster directory (and its disks) outlived down");
}

/// QEMU processes whose command line contains `needle`.
fn qemus_with(needle: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains("qemu-system") && c.contains(needle))
        .collect()
}

#[test]
fn bad_qemu_args_fail_up_before_any_node_boots_with_qemus_message() {
    build("debian-12");
    let name = "it-shapes-bad";
    let started = std::time::Instant::now();
    let out = run(&["vm", "up", "--name", name, "--accel", "tcg", "--image", "debian-12", "--qemu-args", "-device no-such-device"]);
    let took = started.elapsed();
    let err = stderr(&out);
    assert!(!out.status.success(), "up succeeded with a bad --qemu-args");
    assert!(err.contains("'no-such-device' is not a valid device model name"), "QEMU's own message is quoted: {err}");
    assert!(took.as_secs() < 20, "refused before booting anything, took {took:?}");
    assert!(!common::data_dir().join("clusters").join(name).exists(), "a cluster directory was left behind");
    // (Other tests' checks may run at the same time: look for this one's arguments only.)
    assert!(qemus_with("no-such-device").is_empty() && qemus_with(name).is_empty(), "a QEMU was left behind");
    // No supervisor was started, so no namespace either.
    let supervisors: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains("supervise") && c.contains(name))
        .collect();
    assert!(supervisors.is_empty(), "{supervisors:?}");

    // Unbalanced quotes and asymmetric NUMA are refused by kvci itself, also before anything.
    let out = run(&["vm", "up", "--name", name, "--accel", "tcg", "--image", "debian-12", "--qemu-args", "-device 'x"]);
    assert!(stderr(&out).contains("cannot split --qemu-args"), "{}", stderr(&out));
    let out = run(&["vm", "up", "--name", name, "--accel", "tcg", "--image", "debian-12", "--numa", "2", "--cpus", "3"]);
    assert!(stderr(&out).contains("unable to calculate symmetric NUMA topology"), "{}", stderr(&out));
    let out = run(&["vm", "up", "--name", name, "--accel", "tcg", "--image", "debian-12", "--gpu", "ff:1f.7"]);
    assert!(!out.status.success() && stderr(&out).contains("no PCI device 0000:ff:1f.7"), "{}", stderr(&out));
    assert!(!common::data_dir().join("clusters").join(name).exists());
}
