//! gocli's verbs as kubevirtci's scripts call them (`cli.sh ports registry`, `ssh.sh node01 …`,
//! `run $params`), answered by kvci: each one becomes the `kvci vm …` command that does it.

use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::cluster::layout::ClusterDir;
use crate::cluster::plan::Launch;
use crate::image::name::ImageName;
use crate::image::store::Store;
use crate::paths::Dirs;
use crate::ports::PortBinding;

use super::super::{run_words, status, up};

/// `kvci kubevirtci gocli`
#[derive(Debug, Args)]
pub struct GocliArgs {
    /// The cluster's prefix, as gocli's `--prefix` (cluster-up passes the provider, e.g.
    /// k8s-1.34); the kvci cluster is named after it, dots as dashes (k8s-1-34)
    #[arg(long, global = true, default_value = "kubevirt")]
    pub prefix: String,
    #[command(subcommand)]
    pub verb: Verb,
}

/// The gocli verbs kubevirtci's scripts use.
#[derive(Debug, Subcommand)]
pub enum Verb {
    /// Start the cluster: gocli's `run` flags and provider (see `kvci kubevirtci gocli run --help`)
    Run(RunWords),
    /// Take the cluster down and remove it (`kvci vm down`)
    Rm,
    /// Run a command on a node as root, or open a shell: `ssh node01 -- cmd`
    Ssh {
        /// Node, e.g. node01
        node: String,
        /// Command line to run (words joined as ssh does)
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Copy a file from node01: `scp /etc/kubernetes/admin.conf -` (`-` is standard output)
    Scp {
        /// Path on node01
        source: String,
        /// Local path, or `-`
        destination: String,
    },
    /// The host port of NAME alone, or every gocli port as `PORT/PROTO -> 127.0.0.1:HOSTPORT`
    Ports {
        /// ssh, ssh-worker, k8s, ocp, registry, vnc, http, https, console, prometheus, grafana,
        /// uploadproxy, uploadproxy-lowerband, dns
        name: Option<String>,
    },
    /// kvci only: freeze the running cluster into <image>-frozen; the next `run` of the same
    /// provider, tag and shape resumes it instead of booting
    Freeze,
}

/// `run`'s words, parsed by [`parse_run`] (gocli's flags are many; kvci maps some and names the
/// rest).
#[derive(Debug, Args)]
pub struct RunWords {
    /// gocli `run` flags and the provider
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub words: Vec<String>,
}

/// gocli `run` flags that deploy something into Kubernetes or tune the node's software: kvci
/// brings the VMs up and runs the provider's own steps, not these (flag, takes a value, what).
const NOT_DONE: &[(&str, bool, &str)] = &[
    ("--deploy-cdi", false, "CDI (KUBEVIRT_DEPLOY_CDI)"),
    ("--cdi-version", true, "a CDI version (KUBEVIRT_CUSTOM_CDI_VERSION)"),
    ("--deploy-multus", false, "Multus (KUBEVIRT_WITH_MULTUS)"),
    ("--enable-cnao", false, "CNAO (KUBEVIRT_WITH_CNAO)"),
    ("--skip-cnao-cr", false, "CNAO's CR (KUBVIRT_WITH_CNAO_SKIP_CONFIG)"),
    ("--deploy-dnc", false, "the dynamic networks controller (KUBEVIRT_WITH_DYN_NET_CTRL)"),
    ("--deploy-aaq", false, "AAQ (KUBEVIRT_DEPLOY_AAQ)"),
    ("--aaq-version", true, "an AAQ version (KUBEVIRT_CUSTOM_AAQ_VERSION)"),
    ("--enable-prometheus", false, "Prometheus (KUBEVIRT_DEPLOY_PROMETHEUS)"),
    ("--enable-prometheus-alertmanager", false, "Alertmanager (KUBEVIRT_DEPLOY_PROMETHEUS_ALERTMANAGER)"),
    ("--enable-grafana", false, "Grafana (KUBEVIRT_DEPLOY_GRAFANA)"),
    ("--enable-istio", false, "Istio (KUBEVIRT_DEPLOY_ISTIO)"),
    ("--enable-ceph", false, "Rook Ceph (KUBEVIRT_STORAGE=rook-ceph-default)"),
    ("--enable-nfs-csi", false, "the NFS CSI driver (KUBEVIRT_DEPLOY_NFS_CSI)"),
    ("--nfs-data", true, "the NFS server (KUBEVIRT_NFS_DIR)"),
    ("--deploy-network-resources-injector", false, "the network resources injector (KUBEVIRT_DEPLOY_NETWORK_RESOURCES_INJECTOR)"),
    ("--enable-psa", false, "Pod Security Admission settings (KUBEVIRT_PSA)"),
    ("--enable-audit", false, "API audit logging (KUBEVIRT_ENABLE_AUDIT)"),
    ("--enable-fips", false, "FIPS mode (KUBEVIRT_FIPS)"),
    ("--enable-realtime-scheduler", false, "the realtime scheduler settings (KUBEVIRT_REALTIME_SCHEDULER)"),
    ("--run-etcd-on-memory", false, "etcd on tmpfs (KUBEVIRT_WITH_ETC_IN_MEMORY)"),
    ("--etcd-capacity", true, "etcd's tmpfs size (KUBEVIRT_WITH_ETC_CAPACITY)"),
    ("--no-etcd-fsync", false, "etcd without fsync (KUBEVIRT_NO_ETCD_FSYNC)"),
    ("--enable-ksm", false, "KSM (KUBEVIRT_KSM_ON)"),
    ("--ksm-page-count", true, "KSM's page count (KUBEVIRT_KSM_PAGES_TO_SCAN)"),
    ("--ksm-scan-interval", true, "KSM's scan interval (KUBEVIRT_KSM_SLEEP_BETWEEN_SCANS_MS)"),
    ("--enable-swap", false, "swap on the nodes (KUBEVIRT_SWAP_ON)"),
    ("--swap-size", true, "a swap size (KUBEVIRT_SWAP_SIZE_IN_GB)"),
    ("--swapiness", true, "swappiness (KUBEVIRT_SWAPPINESS)"),
    ("--swap-behavior", true, "kubelet's swap behaviour (KUBEVIRT_SWAP_BEHAVIOR)"),
    ("--docker-proxy", true, "a container proxy (KUBEVIRTCI_PROXY)"),
    ("--topology-manager-policy", true, "kubelet's topology manager policy (KUBEVIRT_TOPOLOGY_MANAGER_POLICY)"),
    ("--reserved-system-cpus", true, "kubelet's reserved CPUs (KUBEVIRT_RESERVED_SYSTEM_CPUS)"),
    ("--vsock-child-ns-mode", true, "the vsock namespace mode (KUBEVIRT_VSOCK_CHILD_NS_MODE)"),
    ("--enable-secondary-nic-bridges", false, "bridges on the secondary NICs inside the nodes (KUBEVIRT_SECONDARY_NIC_BRIDGES)"),
    ("--reverse", false, "the reversed node order"),
];

/// gocli `run` flags kvci honours (the rest are named by [`NOT_DONE`] or refused).
#[derive(Debug, Parser)]
#[command(name = "gocli run", no_binary_name = true, args_override_self = true, disable_help_flag = true)]
pub struct RunArgs {
    /// Provider, e.g. k8s-1.34
    pub provider: String,
    #[arg(long, default_value_t = 1)]
    pub nodes: u32,
    #[arg(long, default_value = "3096M")]
    pub memory: String,
    #[arg(long, default_value_t = 1)]
    pub numa: u32,
    #[arg(long, default_value_t = 2)]
    pub cpu: u32,
    #[arg(long, default_value_t = 0)]
    pub secondary_nics: u32,
    #[arg(long)]
    pub random_ports: bool,
    #[arg(long)]
    pub background: bool,
    #[arg(long)]
    pub prefix: Option<String>,
    #[arg(long)]
    pub ssh_port: Option<u16>,
    #[arg(long)]
    pub k8s_port: Option<u16>,
    #[arg(long)]
    pub ocp_port: Option<u16>,
    #[arg(long)]
    pub registry_port: Option<u16>,
    #[arg(long)]
    pub vnc_port: Option<u16>,
    #[arg(long)]
    pub http_port: Option<u16>,
    #[arg(long)]
    pub https_port: Option<u16>,
    #[arg(long)]
    pub prometheus_port: Option<u16>,
    #[arg(long)]
    pub grafana_port: Option<u16>,
    #[arg(long)]
    pub dns_port: Option<u16>,
    #[arg(long)]
    pub qemu_args: Option<String>,
    #[arg(long)]
    pub kernel_args: Option<String>,
    #[arg(long)]
    pub nvme: Vec<String>,
    #[arg(long)]
    pub scsi: Vec<String>,
    #[arg(long)]
    pub usb: Vec<String>,
    #[arg(long)]
    pub shared_block_device: Vec<String>,
    #[arg(long)]
    pub hugepages_2m: Option<u32>,
    #[arg(long)]
    pub hugepages_1g: Option<u32>,
    #[arg(long)]
    pub gpu: Option<String>,
    #[arg(long)]
    pub single_stack: bool,
    /// kubevirtci's default CNI, which the providers' own steps install.
    #[arg(long)]
    pub flannel: bool,
    #[arg(long)]
    pub slim: bool,
    #[arg(long, default_value = "quay.io")]
    pub container_registry: String,
    #[arg(long, default_value = "kubevirtci")]
    pub container_org: String,
    #[arg(long)]
    pub container_suffix: Option<String>,
}

/// `run`'s words parsed: what kvci honours, and a line for each flag it does not.
#[derive(Debug)]
pub struct ParsedRun {
    /// The honoured flags.
    pub args: RunArgs,
    /// "kvci does not deploy …" for each [`NOT_DONE`] flag given.
    pub not_done: Vec<String>,
}

/// Splits off the [`NOT_DONE`] flags (each gets its message), then parses the rest; a flag
/// neither list knows is an error naming it.
pub fn parse_run(words: &[String]) -> Result<ParsedRun> {
    let mut rest = Vec::new();
    let mut not_done = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let w = &words[i];
        let (flag, inline) = match w.split_once('=') {
            Some((f, _)) if w.starts_with("--") => (f, true),
            _ => (w.as_str(), false),
        };
        if let Some((_, takes_value, what)) = NOT_DONE.iter().find(|(f, _, _)| *f == flag) {
            not_done.push(format!("not done by kvci: {what} ({flag}); the cluster comes up without it"));
            i += if *takes_value && !inline { 2 } else { 1 };
            continue;
        }
        rest.push(w.clone());
        i += 1;
    }
    let args = RunArgs::try_parse_from(&rest).map_err(|e| {
        anyhow::anyhow!("gocli run {}: {}", rest.join(" "), e.to_string().lines().next().unwrap_or_default().trim_start_matches("error: "))
    })?;
    Ok(ParsedRun { args, not_done })
}

/// The kvci cluster a gocli prefix names: dots become dashes (`k8s-1.34` → `k8s-1-34`).
pub fn cluster_name(prefix: &str) -> Result<String> {
    let name = prefix.to_ascii_lowercase().replace(['.', '_'], "-");
    crate::config::validate_name(&name).with_context(|| format!("gocli prefix {prefix:?} cannot name a kvci cluster"))?;
    Ok(name)
}

/// Where gocli pulls the provider image from, and the name kvci's store keeps it under
/// (`quay.io/kubevirtci/k8s-1.34:TAG` → `k8s-1.34:TAG`).
pub fn image_source(a: &RunArgs) -> Result<(String, ImageName)> {
    let Some(suffix) = a.container_suffix.as_deref() else {
        bail!("no image tag: set KUBEVIRTCI_TAG, or pass gocli's --container-suffix=:TAG");
    };
    let mut reference = format!("{}/{}{suffix}", a.container_org, a.provider);
    if a.slim {
        reference.push_str("-slim");
    }
    if !a.container_registry.is_empty() {
        reference = format!("{}/{reference}", a.container_registry);
    }
    let last = reference.rsplit('/').next().unwrap_or_default();
    let name = ImageName::parse(last).with_context(|| format!("image {reference}"))?;
    Ok((reference, name))
}

/// The frozen image that `freeze` makes of (and `run` resumes for) a provider image.
pub fn frozen_name(cold: &ImageName) -> Result<ImageName> {
    if cold.tag().ends_with("-frozen") {
        return Ok(cold.clone());
    }
    Ok(ImageName::new(cold.repo(), &format!("{}-frozen", cold.tag()))?)
}

/// gocli's `--memory` (a Kubernetes quantity such as `5120M` or `8Gi`) as `kvci vm up` takes it.
fn memory_word(q: &str) -> String {
    q.strip_suffix('i').unwrap_or(q).to_string()
}

/// The `kvci vm up` words for `a` as cluster `cluster` of `image`.
pub fn vm_up_words(a: &RunArgs, cluster: &str, image: &ImageName) -> Vec<String> {
    let mut w: Vec<String> = ["vm", "up", "--name", cluster, "--image", &image.to_string()].iter().map(|s| s.to_string()).collect();
    let mut add = |flag: &str, value: String| {
        w.push(flag.to_string());
        w.push(value);
    };
    add("--nodes", a.nodes.to_string());
    add("--memory", memory_word(&a.memory));
    add("--cpus", a.cpu.to_string());
    if a.numa > 1 {
        add("--numa", a.numa.to_string());
    }
    if a.secondary_nics > 0 {
        add("--secondary-nics", a.secondary_nics.to_string());
    }
    for (flag, port) in [
        ("--ssh-port", a.ssh_port),
        ("--k8s-port", a.k8s_port),
        ("--ocp-port", a.ocp_port),
        ("--registry-port", a.registry_port),
        ("--vnc-port", a.vnc_port),
        ("--http-port", a.http_port),
        ("--https-port", a.https_port),
        ("--prometheus-port", a.prometheus_port),
        ("--grafana-port", a.grafana_port),
        ("--dns-port", a.dns_port),
    ] {
        if let Some(p) = port {
            add(flag, p.to_string());
        }
    }
    for (flag, sizes) in [("--nvme", &a.nvme), ("--scsi", &a.scsi), ("--usb", &a.usb), ("--shared-disk", &a.shared_block_device)] {
        for s in sizes {
            add(flag, s.clone());
        }
    }
    if let Some(n) = a.hugepages_2m {
        add("--hugepages-2m", n.to_string());
    }
    if let Some(n) = a.hugepages_1g {
        add("--hugepages-1g", n.to_string());
    }
    if let Some(k) = a.kernel_args.as_ref().filter(|k| !k.trim().is_empty()) {
        add("--kernel-args", k.trim().to_string());
    }
    if let Some(q) = a.qemu_args.as_ref().filter(|q| !q.trim().is_empty()) {
        add("--qemu-args", q.trim().to_string());
    }
    if let Some(g) = &a.gpu {
        add("--gpu", g.clone());
    }
    if a.single_stack {
        w.push("--single-stack".into());
    }
    w
}

/// What `run` started.
#[derive(Debug)]
pub struct Started {
    /// kvci's cluster name.
    pub cluster: String,
    /// The image it runs.
    pub image: ImageName,
}

/// gocli `run`: the provider image (a frozen one of the same shape first, else the store's,
/// pulled when missing), then `kvci vm up` with the mapped flags and `extra` (`KVCI_UP_ARGS`).
pub fn run(dirs: &Dirs, prefix: &str, parsed: &ParsedRun, extra: &[String]) -> Result<Started> {
    for line in &parsed.not_done {
        eprintln!("kvci: {line}");
    }
    let a = &parsed.args;
    let cluster = cluster_name(a.prefix.as_deref().unwrap_or(prefix))?;
    let (reference, cold) = image_source(a)?;
    let frozen = frozen_name(&cold)?;
    let store = Store::open(&dirs.images())?;
    let with_extra = |image: &ImageName| {
        let mut w = vm_up_words(a, &cluster, image);
        w.extend(extra.iter().cloned());
        w
    };
    let mut image = cold.clone();
    if let Some(f) = store.get(&frozen)? {
        let asked = super::super::parse_up(&with_extra(&frozen))?;
        match f.manifest.frozen.as_ref().map(|fm| up::frozen_refusal(&asked, fm)) {
            Some(None) => {
                eprintln!("kvci: resuming the frozen {frozen} (`kvci image rm {frozen}` to boot {cold} instead)");
                image = frozen.clone();
            }
            Some(Some(why)) => eprintln!("kvci: not resuming {frozen}: {why}; booting {cold}"),
            None => eprintln!("kvci: {frozen} is not a frozen cluster; booting {cold}"),
        }
    }
    if image == cold && store.get(&cold)?.is_none() {
        eprintln!("kvci: {cold} is not in the store: pulling {reference}");
        let pull = ["image", "pull", &reference, "--name", &cold.to_string(), "--skip-unsafe-links"].map(String::from);
        check(run_words(dirs, &pull)?, "image pull")?;
    }
    check(run_words(dirs, &with_extra(&image))?, "vm up")?;
    Ok(Started { cluster, image })
}

fn check(code: ExitCode, what: &str) -> Result<()> {
    if code == ExitCode::SUCCESS {
        Ok(())
    } else {
        bail!("kvci {what} failed")
    }
}

/// gocli's container port of each port name it knows (what `ports` lists: `6443/tcp -> …`).
pub const GOCLI_PORTS: &[(&str, u16, &str)] = &[
    ("ssh", 2201, "tcp"),
    ("ssh-worker", 2202, "tcp"),
    ("registry", 5000, "tcp"),
    ("ocp", 8443, "tcp"),
    ("k8s", 6443, "tcp"),
    ("vnc", 5901, "tcp"),
    ("http", 80, "tcp"),
    ("https", 443, "tcp"),
    ("console", 443, "tcp"),
    ("prometheus", 30007, "tcp"),
    ("grafana", 30008, "tcp"),
    ("uploadproxy", 31001, "tcp"),
    ("uploadproxy-lowerband", 30085, "tcp"),
    ("dns", 31111, "udp"),
];

/// `ports` without a name: one `PORT/PROTO -> 127.0.0.1:HOSTPORT` line per gocli name the
/// cluster has, as gocli prints Docker's port map (kvci binds 127.0.0.1 only). `console` shares
/// gocli's key `443/tcp` with `https`, as in Docker's map; both lines are printed.
pub fn port_lines(bindings: &[PortBinding]) -> Vec<String> {
    GOCLI_PORTS
        .iter()
        .filter_map(|(name, container, proto)| {
            let b = bindings.iter().find(|b| b.name == *name)?;
            Some(format!("{container}/{proto} -> 127.0.0.1:{}", b.host_port))
        })
        .collect()
}

/// Runs a gocli verb.
pub fn run_verb(dirs: &Dirs, g: GocliArgs) -> Result<ExitCode> {
    let cluster = cluster_name(&g.prefix)?;
    let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    match g.verb {
        Verb::Run(r) => {
            let parsed = parse_run(&r.words)?;
            run(dirs, &g.prefix, &parsed, &[])?;
            Ok(ExitCode::SUCCESS)
        }
        Verb::Rm => run_words(dirs, &words(&["vm", "down", "--name", &cluster])),
        Verb::Ssh { node, command } => {
            let mut w = words(&["vm", "ssh", "--name", &cluster, &node]);
            if !command.is_empty() {
                w.push("--".into());
                w.extend(command);
            }
            run_words(dirs, &w)
        }
        Verb::Scp { source, destination } => {
            if destination == "-" {
                let cat = format!("cat -- {}", crate::ssh::client::shell_quote(&source));
                run_words(dirs, &words(&["vm", "ssh", "-n", "--name", &cluster, "node01", "--", &cat]))
            } else {
                run_words(dirs, &words(&["vm", "scp", "--name", &cluster, &format!("node01:{source}"), &destination]))
            }
        }
        Verb::Ports { name } => {
            let s = status::query(dirs, &cluster)?;
            match name {
                Some(name) => {
                    if !GOCLI_PORTS.iter().any(|(n, _, _)| *n == name) {
                        bail!("unknown port name {name}");
                    }
                    let Some(b) = s.ports.iter().find(|p| p.name == name) else {
                        bail!("cluster {cluster:?} has no port {name:?}");
                    };
                    println!("{}", b.host_port);
                }
                None => {
                    for line in port_lines(&s.ports) {
                        println!("{line}");
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Verb::Freeze => {
            let text = std::fs::read_to_string(ClusterDir::new(dirs, &cluster).launch())
                .with_context(|| format!("cluster {cluster:?} is not running (no launch.json)"))?;
            let launch: Launch = serde_json::from_str(&text).context("reading the cluster's launch.json")?;
            let to = frozen_name(&ImageName::parse(&launch.spec.image)?)?;
            run_words(dirs, &words(&["vm", "freeze", "--name", &cluster, "--to", &to.to_string(), "--force"]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn cluster_ups_run_line_maps_onto_vm_up() {
        let p = parse_run(&words(
            "--dns-port 31111 --container-registry=127.0.0.1:5000 --container-suffix=:standin --deploy-cdi --flannel \
             --nodes 2 --memory 5Gi --numa 2 --cpu 2 --secondary-nics 1 --random-ports --background --prefix k8s-1.34 k8s-1.34 \
             --nvme 1G --nvme 2G --shared-block-device 256M --ocp-port 8443 --hugepages-2m 16",
        ))
        .unwrap();
        assert_eq!(p.not_done.len(), 1);
        assert!(p.not_done[0].contains("CDI (KUBEVIRT_DEPLOY_CDI)"), "{:?}", p.not_done);
        let (reference, cold) = image_source(&p.args).unwrap();
        assert_eq!(reference, "127.0.0.1:5000/kubevirtci/k8s-1.34:standin");
        assert_eq!(cold.to_string(), "k8s-1.34:standin");
        assert_eq!(frozen_name(&cold).unwrap().to_string(), "k8s-1.34:standin-frozen");
        assert_eq!(frozen_name(&frozen_name(&cold).unwrap()).unwrap().to_string(), "k8s-1.34:standin-frozen");
        let up = vm_up_words(&p.args, "k8s-1-34", &cold).join(" ");
        assert_eq!(
            up,
            "vm up --name k8s-1-34 --image k8s-1.34:standin --nodes 2 --memory 5G --cpus 2 --numa 2 --secondary-nics 1 \
             --ocp-port 8443 --dns-port 31111 --nvme 1G --nvme 2G --shared-disk 256M --hugepages-2m 16"
        );
    }

    #[test]
    fn quoted_values_and_value_flags_of_unsupported_add_ons_are_skipped_whole() {
        let mut w = words("--cdi-version v1.2 --swap-size=4 k8s-1.35 --kernel-args");
        w.push("a=1 b=2".into());
        let p = parse_run(&w).unwrap();
        assert_eq!(p.not_done.len(), 2);
        assert_eq!(p.args.provider, "k8s-1.35");
        assert_eq!(p.args.kernel_args.as_deref(), Some("a=1 b=2"));
        // The default image source needs a tag.
        assert!(image_source(&p.args).unwrap_err().to_string().contains("KUBEVIRTCI_TAG"));
    }

    #[test]
    fn unknown_flags_are_refused_by_name() {
        let err = parse_run(&words("k8s-1.34 --frobnicate")).unwrap_err().to_string();
        assert!(err.contains("--frobnicate"), "{err}");
    }

    #[test]
    fn a_repeated_flag_takes_the_last_value_as_gocli_does() {
        let p = parse_run(&words("k8s-1.34 --ocp-port 8443 --ocp-port 9443")).unwrap();
        assert_eq!(p.args.ocp_port, Some(9443));
    }

    #[test]
    fn slim_images_and_prefixes() {
        let p = parse_run(&words("k8s-1.34 --slim --container-suffix=:t1")).unwrap();
        assert_eq!(image_source(&p.args).unwrap().0, "quay.io/kubevirtci/k8s-1.34:t1-slim");
        assert_eq!(cluster_name("k8s-1.34").unwrap(), "k8s-1-34");
        assert!(cluster_name("a/b").is_err());
    }

    #[test]
    fn port_list_is_gocli_shaped() {
        let b = |name: &str, host_port: u16, proto: &str| PortBinding {
            name: name.into(),
            node: "node01".into(),
            host_port,
            guest_port: 0,
            proto: proto.into(),
        };
        let lines = port_lines(&[b("ssh-node01", 1, "tcp"), b("registry", 32771, "tcp"), b("k8s", 32772, "tcp"), b("dns", 31111, "udp")]);
        assert_eq!(lines, ["5000/tcp -> 127.0.0.1:32771", "6443/tcp -> 127.0.0.1:32772", "31111/udp -> 127.0.0.1:31111"]);
    }
}
