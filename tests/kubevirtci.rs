//! kubevirtci's provider images end to end, offline: a stand-in built from Debian packages and
//! laid out like the published images (tests/common/kubevirtci.rs) is pushed to a registry,
//! pulled with `kvci image pull`, and comes up as gocli would set it up: readiness without a
//! beacon (leases + a login with the image's key), the root-key step, gocli's `run` steps in
//! order (recorded by stand-in kubeadm/kubectl), kubevirtci's devices, the kubeconfig, freeze
//! and resume. What only a real image can show is said in the README.

mod common;

use std::process::Output;

use common::kubevirtci::{self, StandinOptions, User};
use common::{host_port, run, stderr, TestCluster};

fn ok(out: Output) -> Output {
    assert!(out.status.success(), "failed:\n{}", stderr(&out));
    out
}

fn on(cluster: &str, node: &str, cmd: &str) -> String {
    let out = ok(run(&["vm", "ssh", "--name", cluster, node, "--", cmd]));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The stand-in's record of kubeadm/kubectl calls on `node`, as `COMMAND ARGS…` lines.
fn calls(cluster: &str, node: &str) -> Vec<String> {
    on(cluster, node, "cat /var/log/standin-calls.log")
        .lines()
        .filter_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            // TIME USER COMMAND ARGS…
            let at = words.iter().position(|w| *w == "kubeadm" || *w == "kubectl" || w.ends_with("/kubeadm") || w.ends_with("/kubectl"))?;
            let mut line = words[at..].join(" ");
            line = line.replace("/usr/bin/", "");
            Some(line)
        })
        .collect()
}

/// Whether `calls` contains each of `wanted` (prefixes), in this order.
fn in_order(calls: &[String], wanted: &[&str]) -> bool {
    let mut it = calls.iter();
    wanted.iter().all(|w| it.any(|c| c.starts_with(w)))
}

#[test]
fn a_pulled_standin_comes_up_as_gocli_sets_it_up_and_survives_a_freeze() {
    let work = tempfile::tempdir().unwrap();
    let standin = kubevirtci::build(&work.path().join("standin"), &StandinOptions::default());

    // A registry the test runs: the cluster registry of a small kvci cluster.
    let reg = TestCluster::up("it-kv-reg", &["--ipv4-only"]);
    let port = host_port(&reg.status(), "registry");
    let reference = format!("127.0.0.1:{port}/kubevirtci/k8s-1.34:standin");
    ok(standin.push(&reference));
    let _ = run(&["image", "rm", "it-standin"]);
    ok(run(&["image", "pull", &reference, "--name", "it-standin", "--skip-unsafe-links"]));
    drop(reg);
    let img: serde_json::Value = serde_json::from_slice(&ok(run(&["image", "inspect", "it-standin"])).stdout).unwrap();
    assert_eq!(img["access"]["user"], "cloud-user", "{img}");
    assert!(img["append"].as_str().unwrap().starts_with("root=/dev/vda1 ro"), "{img}");

    // Three nodes at once, small enough for TCG on two cores.
    let up = run(&["vm", "up", "--name", "it-kv", "--image", "it-standin", "--nodes", "3", "--memory", "1G", "--cpus", "1", "--accel", "tcg"]);
    let c = TestCluster { name: "it-kv".into() };
    assert!(up.status.success(), "{}", stderr(&up));
    assert!(stderr(&up).contains("kubevirtci's devices under TCG"), "{}", stderr(&up));

    // gocli's node01 steps, in order; the workers joined node01 with the images' token.
    let node01 = calls("it-kv", "node01");
    assert!(
        in_order(
            &node01,
            &[
                "kubeadm init --config /etc/kubernetes/kubeadm_flannel.conf",
                "kubectl create -f /etc/kubernetes/flannel.yaml",
                "kubectl taint nodes node01 node-role.kubernetes.io/control-plane:NoSchedule-",
                "kubectl get nodes",
                "kubectl create -f /provision/local-volume.yaml",
                "kubectl label node node02 node-role.kubernetes.io/worker=",
                "kubectl label node node03 node-role.kubernetes.io/worker=",
            ]
        ),
        "node01's calls: {node01:#?}"
    );
    for node in ["node02", "node03"] {
        let joined = calls("it-kv", node);
        assert!(
            in_order(&joined, &["kubeadm join --token abcdef.1234567890123456 192.168.66.101:6443 --ignore-preflight-errors=all"]),
            "{node}'s calls: {joined:#?}"
        );
        let kubelet = on("it-kv", node, "cat /etc/sysconfig/kubelet");
        assert!(kubelet.contains("KUBELET_EXTRA_ARGS=--cgroup-driver=systemd") && kubelet.contains("--cpu-manager-policy=static"), "{kubelet}");
    }
    assert_eq!(on("it-kv", "node01", "test -d /var/lib/rook && echo rook-dir"), "rook-dir\n");

    // kubevirtci's devices: both sound cards (with vfio-pci asked for them) and the igb NIC.
    let pci = on(
        "it-kv",
        "node02",
        "for d in /sys/bus/pci/devices/*; do echo \"$(cat $d/vendor):$(cat $d/device) $(cat $d/driver_override) $(basename \"$(readlink $d/driver)\")\"; done",
    );
    for (id, what) in [("0x8086:0x2668", "intel-hda"), ("0x8086:0x293e", "ich9-intel-hda")] {
        let line = pci.lines().find(|l| l.starts_with(id)).unwrap_or_else(|| panic!("no {what} in:\n{pci}"));
        assert!(line.contains("vfio-pci"), "{what} not handed to vfio-pci: {line}");
    }
    assert!(pci.lines().any(|l| l.starts_with("0x8086:0x10c9")), "no igb (82576) in:\n{pci}");
    // Debian's cloud kernel has no igb driver (CentOS's has): the NIC's MAC is checked on QEMU's
    // command line instead of in the guest.
    let qemu = c.status()["nodes"][1]["pid"].as_u64().unwrap();
    let cmdline = std::fs::read(format!("/proc/{qemu}/cmdline")).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(cmdline.contains("igb,netdev=sriov0,mac=52:55:00:d1:57:02,bus=sriov-rp0"), "{cmdline}");
    assert!(on("it-kv", "node02", "cat /sys/class/net/eth0/address").contains("52:55:00:d1:55:02"));
    assert!(on("it-kv", "node02", "cat /proc/cmdline").contains("hugepagesz=2M hugepages=64"));

    // The kubeconfig points at the forwarded API port.
    let k8s = host_port(&c.status(), "k8s");
    let kubeconfig = String::from_utf8_lossy(&ok(run(&["vm", "kubeconfig", "--name", "it-kv"])).stdout).into_owned();
    assert!(kubeconfig.contains(&format!("server: https://127.0.0.1:{k8s}")), "{kubeconfig}");

    // Freeze, down, resume: a marker and the kubeconfig survive.
    on("it-kv", "node02", "echo kept > /root/marker && sync");
    let _ = run(&["image", "rm", "it-standin-frozen"]);
    ok(run(&["vm", "freeze", "--name", "it-kv", "--to", "it-standin-frozen"]));
    drop(c);
    let r = TestCluster::up("it-kv2", &["--image", "it-standin-frozen"]);
    assert_eq!(on("it-kv2", "node02", "cat /root/marker"), "kept\n");
    let k8s = host_port(&r.status(), "k8s");
    let kubeconfig = String::from_utf8_lossy(&ok(run(&["vm", "kubeconfig", "--name", "it-kv2"])).stdout).into_owned();
    assert!(kubeconfig.contains(&format!("server: https://127.0.0.1:{k8s}")), "{kubeconfig}");
    drop(r);
    let _ = run(&["image", "rm", "it-standin-frozen"]);
}

#[test]
fn an_older_vagrant_image_works_and_a_key_that_does_not_log_in_fails_up_by_name() {
    let work = tempfile::tempdir().unwrap();
    let vagrant = kubevirtci::build(&work.path().join("vagrant"), &StandinOptions { user: User::Vagrant, authorized: true });
    let _ = run(&["image", "rm", "it-standin-vagrant"]);
    ok(run(&["image", "import", vagrant.layout.to_str().unwrap(), "--name", "it-standin-vagrant", "--skip-unsafe-links"]));
    let c = TestCluster::up("it-kv-vagrant", &["--image", "it-standin-vagrant", "--memory", "1G", "--cpus", "1"]);
    let log = calls(&c.name, "node01");
    assert!(log.iter().any(|l| l.starts_with("kubeadm init")), "{log:#?}");
    drop(c);

    let locked = kubevirtci::build(&work.path().join("locked"), &StandinOptions { user: User::CloudUser, authorized: false });
    let _ = run(&["image", "rm", "it-standin-locked"]);
    ok(run(&["image", "import", locked.layout.to_str().unwrap(), "--name", "it-standin-locked", "--skip-unsafe-links"]));
    let up = run(&["vm", "up", "--name", "it-kv-locked", "--image", "it-standin-locked", "--memory", "1G", "--cpus", "1", "--accel", "tcg"]);
    let _c = TestCluster { name: "it-kv-locked".into() };
    assert!(!up.status.success(), "a node whose key does not log in came up");
    let err = stderr(&up);
    assert!(err.contains("refused the image's key") && err.contains("cloud-user") && err.contains("vagrant.key"), "{err}");
    assert!(err.contains("serial console"), "the console's tail is missing:\n{err}");
}
