//! kubevirtci's `cluster-up/` folder replaced by kvci's, used as a kubevirt checkout uses it:
//! `kvci kubevirtci cluster-up` writes it into `kubevirtci/cluster-up`, then `up.sh` (which
//! pulls the provider image from a registry), `kubectl.sh`, `ssh.sh`, `cli.sh`,
//! `kubeconfig.sh`, `check.sh` and `down.sh` run with kubevirtci's variables against the
//! kubevirtci stand-in (tests/common/kubevirtci.rs); after `cli.sh freeze` a second `up.sh`
//! resumes. The copied `.kubectl` is the stand-in's: off the node it asks node01's API
//! stand-in through the kubeconfig's server, so `kubectl.sh get nodes` crosses the forwarded
//! API port. What only real Kubernetes can show is said in the README.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::kubevirtci::{self, StandinOptions};
use common::{data_dir, host_port, run, stderr, TestCluster};

fn ok(out: Output) -> Output {
    assert!(out.status.success(), "failed:\nstdout:\n{}\nstderr:\n{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A kubevirt checkout's view: its cluster-up folder and kubevirtci's variables.
struct Checkout {
    root: PathBuf,
    env: Vec<(String, String)>,
}

impl Checkout {
    fn cluster_up(&self) -> PathBuf {
        self.root.join("kubevirtci/cluster-up")
    }

    fn config(&self) -> PathBuf {
        self.root.join("kubevirtci/_ci-configs/k8s-1.34")
    }

    /// `bash kubevirtci/cluster-up/SCRIPT ARGS…` from the checkout's root.
    fn script(&self, script: &str, args: &[&str]) -> Output {
        Command::new("bash")
            .arg(self.cluster_up().join(script))
            .args(args)
            .current_dir(&self.root)
            .env_remove("KVCI_CLUSTER")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("bash")
    }
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn shellcheck(dir: &Path) {
    let mut files: Vec<String> = ["up.sh", "down.sh", "ssh.sh", "kubectl.sh", "cli.sh", "kubeconfig.sh", "check.sh"].map(String::from).to_vec();
    files.extend(["hack/common.sh", "hack/config.sh", "cluster/kvci-provider.sh", "cluster/k8s-1.34/provider.sh"].map(String::from));
    let out = Command::new("shellcheck").arg("-x").args(&files).current_dir(dir).output().expect("shellcheck");
    assert!(out.status.success(), "{}", stdout(&out));
}

#[test]
fn cluster_up_scripts_run_the_standin_like_kubevirtci_and_resume_after_a_freeze() {
    let work = tempfile::tempdir().unwrap();
    let standin = kubevirtci::build(&work.path().join("standin"), &StandinOptions::default());
    for name in ["k8s-1.34:standin", "k8s-1.34:standin-frozen"] {
        let _ = run(&["image", "rm", name]);
    }
    let reg = TestCluster::up("it-cu-reg", &["--ipv4-only"]);
    let reg_port = host_port(&reg.status(), "registry");
    ok(standin.push(&format!("127.0.0.1:{reg_port}/kubevirtci/k8s-1.34:standin")));

    let root = work.path().join("kubevirt");
    let checkout = Checkout {
        env: [
            ("KUBEVIRT_PROVIDER", "k8s-1.34".to_string()),
            ("KUBEVIRTCI_TAG", "standin".into()),
            ("KUBEVIRTCI_CONTAINER_REGISTRY", format!("127.0.0.1:{reg_port}")),
            ("KUBEVIRTCI_CONFIG_PATH", root.join("kubevirtci/_ci-configs").to_string_lossy().into_owned()),
            ("KUBEVIRT_NUM_NODES", "2".into()),
            ("KUBEVIRT_NUM_SECONDARY_NICS", "1".into()),
            ("KUBEVIRT_MEMORY_SIZE", "1G".into()),
            ("KUBEVIRT_NUM_VCPU", "1".into()),
            // kubevirt's hack/cluster-up.sh turns CDI on: kvci says it does not deploy it.
            ("KUBEVIRT_DEPLOY_CDI", "true".into()),
            // As in CI (no fixed OpenShift port 8443), and a DNS port nothing else holds.
            ("JOB_NAME", "kvci-it".into()),
            ("KUBEVIRT_DNS_HOST_PORT", free_udp_port().to_string()),
            ("KVCI_DATA_DIR", data_dir().to_string_lossy().into_owned()),
            ("KVCI_UP_ARGS", "--accel tcg".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
        root,
    };
    ok(run(&["kubevirtci", "cluster-up", &checkout.cluster_up().to_string_lossy()]));
    shellcheck(&checkout.cluster_up());

    // up.sh: pulled (the store lacked the image), booted, the config files written.
    let up = checkout.script("up.sh", &[]);
    let c = TestCluster { name: "k8s-1-34".into() };
    let up = ok(up);
    drop(reg);
    let log = stderr(&up);
    assert!(log.contains(&format!("pulling 127.0.0.1:{reg_port}/kubevirtci/k8s-1.34:standin")), "{log}");
    assert!(log.contains("CDI (KUBEVIRT_DEPLOY_CDI)"), "{log}");
    let status = c.status();
    let (k8s, registry) = (host_port(&status, "k8s"), host_port(&status, "registry"));
    let kubeconfig = std::fs::read_to_string(checkout.config().join(".kubeconfig")).unwrap();
    assert!(kubeconfig.contains(&format!("server: https://127.0.0.1:{k8s}")), "{kubeconfig}");
    assert!(kubeconfig.contains("insecure-skip-tls-verify: true") && !kubeconfig.contains("certificate-authority-data"), "{kubeconfig}");
    let config = std::fs::read_to_string(checkout.config().join("config-provider-k8s-1.34.sh")).unwrap();
    let keys: Vec<&str> = config.lines().filter_map(|l| l.split_once('=').map(|(k, _)| k)).collect();
    assert_eq!(keys, ["master_ip", "kubeconfig", "kubectl", "gocli", "docker_prefix", "manifest_docker_prefix"], "{config}");
    assert!(config.contains(&format!("docker_prefix=${{DOCKER_PREFIX:-localhost:{registry}/kubevirt}}")), "{config}");

    // kubectl.sh: the node's kubectl with the kubeconfig, through the forwarded API port.
    let nodes = stdout(&ok(checkout.script("kubectl.sh", &["get", "nodes"])));
    for node in ["node01", "node02"] {
        assert!(nodes.lines().any(|l| l.starts_with(node) && l.contains("Ready")), "{node} not listed:\n{nodes}");
    }
    let node_kubectl = ok(run(&["vm", "ssh", "--name", "k8s-1-34", "node01", "--", "cat /usr/bin/kubectl"])).stdout;
    assert_eq!(std::fs::read(checkout.config().join(".kubectl")).unwrap(), node_kubectl);

    // ssh.sh, cli.sh ports, kubeconfig.sh, check.sh.
    assert_eq!(stdout(&ok(checkout.script("ssh.sh", &["node02", "hostname"]))), "node02\n");
    assert_eq!(stdout(&ok(checkout.script("cli.sh", &["ports", "registry"]))).trim(), registry.to_string());
    let ports = stdout(&ok(checkout.script("cli.sh", &["ports"])));
    assert!(ports.contains(&format!("5000/tcp -> 127.0.0.1:{registry}")) && ports.contains(&format!("6443/tcp -> 127.0.0.1:{k8s}")), "{ports}");
    let dns = host_port(&status, "dns");
    assert!(ports.contains(&format!("31111/udp -> 127.0.0.1:{dns}")), "{ports}");
    assert_eq!(stdout(&ok(checkout.script("kubeconfig.sh", &[]))).trim(), checkout.config().join(".kubeconfig").to_string_lossy());
    let check = stdout(&ok(checkout.script("check.sh", &[])));
    assert!(check.contains("kvci runs nodes on"), "{check}");

    // KUBEVIRT_NUM_SECONDARY_NICS=1: one more NIC per node, MACs counted over all nodes.
    for (node, mac) in [("node01", "52:55:00:d1:56:00"), ("node02", "52:55:00:d1:56:01")] {
        let macs = stdout(&ok(checkout.script("ssh.sh", &[node, "cat /sys/class/net/*/address"])));
        assert!(macs.lines().any(|l| l == mac), "{node} has no {mac}: {macs}");
    }

    // cli.sh freeze, then up.sh again resumes (a marker survives) and rewrites the config.
    ok(checkout.script("ssh.sh", &["node02", "echo kept > /root/marker && sync"]));
    ok(checkout.script("cli.sh", &["freeze"]));
    assert!(run(&["image", "inspect", "k8s-1.34:standin-frozen"]).status.success());
    let again = stderr(&ok(checkout.script("up.sh", &[])));
    assert!(again.contains("resuming the frozen k8s-1.34:standin-frozen"), "{again}");
    assert_eq!(stdout(&ok(checkout.script("ssh.sh", &["node02", "cat /root/marker"]))), "kept\n");
    let k8s = host_port(&c.status(), "k8s");
    let kubeconfig = std::fs::read_to_string(checkout.config().join(".kubeconfig")).unwrap();
    assert!(kubeconfig.contains(&format!("server: https://127.0.0.1:{k8s}")), "{kubeconfig}");
    assert!(stdout(&ok(checkout.script("kubectl.sh", &["get", "nodes"]))).contains("node02"));

    // down.sh: the cluster is gone.
    ok(checkout.script("down.sh", &[]));
    assert!(!run(&["vm", "status", "--name", "k8s-1-34"]).status.success());
    assert!(!c.dir().exists(), "cluster directory left behind");
    for name in ["k8s-1.34:standin", "k8s-1.34:standin-frozen"] {
        let _ = run(&["image", "rm", name]);
    }
}

#[test]
fn unsupported_providers_and_a_missing_tag_fail_up_sh_with_what_to_set() {
    let work = tempfile::tempdir().unwrap();
    let cu = work.path().join("cluster-up");
    ok(run(&["kubevirtci", "cluster-up", &cu.to_string_lossy()]));
    let up = |env: &[(&str, &str)]| {
        Command::new("bash")
            .arg(cu.join("up.sh"))
            .env("KVCI_DATA_DIR", data_dir())
            .env("KUBEVIRTCI_CONFIG_PATH", work.path().join("configs"))
            .env_remove("KUBEVIRTCI_TAG")
            .envs(env.iter().copied())
            .output()
            .unwrap()
    };
    let out = up(&[("KUBEVIRT_PROVIDER", "k8s-1.34")]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("KUBEVIRTCI_TAG is not set"), "{}", stderr(&out));
    let out = up(&[("KUBEVIRT_PROVIDER", "k8s-1.34"), ("KUBEVIRTCI_TAG", "t"), ("KUBEVIRT_PROVIDER_EXTRA_ARGS", "--no-such-flag")]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--no-such-flag"), "{}", stderr(&out));
    // A second cluster-up into the same folder needs --force.
    let again = run(&["kubevirtci", "cluster-up", &cu.to_string_lossy()]);
    assert!(!again.status.success() && stderr(&again).contains("--force"));
}
