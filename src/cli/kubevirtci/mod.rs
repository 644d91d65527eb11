//! `kvci kubevirtci`: what a kubevirt checkout's `cluster-up/` folder needs, on kvci. The
//! scripts (`kvci kubevirtci cluster-up DIR` writes them) call `up` and `gocli`; kubevirt's own
//! `make cluster-up` / `cluster-sync` then work unchanged.

mod config_files;
mod env;
mod gocli;
mod scripts;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use crate::accel::{self, AccelChoice, KvmFacts};
use crate::paths::Dirs;

/// `kvci kubevirtci …`
#[derive(Debug, Subcommand)]
pub enum KubevirtciCommand {
    /// Write kvci's cluster-up/ folder (up.sh, down.sh, ssh.sh, kubectl.sh, cli.sh,
    /// kubeconfig.sh, check.sh) into DIR, e.g. a kubevirt checkout's kubevirtci/cluster-up
    ClusterUp(ClusterUpArgs),
    /// What cluster-up's up.sh runs: the cluster the KUBEVIRT_* variables describe (a frozen
    /// one of the same shape resumes), then $KUBEVIRTCI_CONFIG_PATH/<provider>/ as kubevirtci
    /// writes it
    Up(UpArgs),
    /// gocli's verbs (run, rm, ssh, scp, ports) on kvci, plus freeze: what cli.sh passes on
    Gocli(gocli::GocliArgs),
    /// What check.sh prints: /dev/kvm, nested virtualisation, and the accelerator kvci picks
    Check,
}

/// `kvci kubevirtci cluster-up`
#[derive(Debug, Args)]
pub struct ClusterUpArgs {
    /// Where to write the folder (created if missing)
    pub dir: PathBuf,
    /// Write over the scripts of a non-empty DIR (kubevirtci's own); other files stay
    #[arg(long)]
    pub force: bool,
    /// Also give this provider a cluster/<provider>/provider.sh (repeatable; k8s-1.33 to
    /// k8s-1.36 always get one)
    #[arg(long, value_name = "PROVIDER")]
    pub provider: Vec<String>,
}

/// `kvci kubevirtci up`
///
/// Reads kubevirtci's variables (KUBEVIRT_PROVIDER, KUBEVIRTCI_TAG, KUBEVIRT_NUM_NODES,
/// KUBEVIRT_MEMORY_SIZE, KUBEVIRT_NUM_VCPU, KUBEVIRT_NUM_NUMA_NODES,
/// KUBEVIRT_NUM_SECONDARY_NICS, KUBEVIRT_HUGEPAGES_2M, KUBEVIRT_HUGEPAGES_1G,
/// KUBEVIRT_SINGLE_STACK, KUBEVIRT_PROVIDER_EXTRA_ARGS, KUBEVIRTCI_CONTAINER_REGISTRY…) with
/// cluster-up's defaults, and KVCI_UP_ARGS: more `kvci vm up` flags (e.g. `--accel tcg`).
/// Add-ons that kubevirtci deploys into Kubernetes (CDI, Multus, CNAO, Prometheus…) are named
/// and left out.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct UpArgs {
    /// Only (re)write the config files of the running cluster
    #[arg(long)]
    pub config_only: bool,
}

/// Runs `kvci kubevirtci …`.
pub fn run(dirs: &Dirs, c: KubevirtciCommand) -> Result<ExitCode> {
    match c {
        KubevirtciCommand::ClusterUp(a) => {
            let kvci = std::env::current_exe().context("finding kvci's own path")?;
            let n = scripts::write(&a.dir, &kvci, &a.provider, a.force)?;
            eprintln!(
                "kvci: wrote {n} files of cluster-up into {} (KVCI_BIN defaults to {}); \
                 `KUBEVIRT_PROVIDER=k8s-1.34 KUBEVIRTCI_TAG=<tag> {}/up.sh` starts a cluster",
                a.dir.display(),
                kvci.display(),
                a.dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        KubevirtciCommand::Up(a) => up(dirs, &a),
        KubevirtciCommand::Gocli(g) => gocli::run_verb(dirs, g),
        KubevirtciCommand::Check => check(),
    }
}

/// `up`: gocli `run` with cluster-up's flags, then the config files.
fn up(dirs: &Dirs, a: &UpArgs) -> Result<ExitCode> {
    let vars: env::Env = std::env::vars().collect();
    let provider = env::provider(&vars)?;
    let cluster = gocli::cluster_name(&provider)?;
    if !a.config_only {
        let words = env::gocli_run_args(&vars)?;
        eprintln!("kvci: gocli run {}", words.join(" "));
        let parsed = gocli::parse_run(&words)?;
        let extra = vars.get("KVCI_UP_ARGS").map(|s| shlex::split(s).with_context(|| format!("KVCI_UP_ARGS={s:?} is not shell words"))).transpose()?;
        let started = gocli::run(dirs, &provider, &parsed, &extra.unwrap_or_default())?;
        eprintln!("kvci: cluster {} runs {}; `cluster-up/ssh.sh node01`, `cluster-up/kubectl.sh get nodes`", started.cluster, started.image);
    }
    let base = match vars.get("KUBEVIRTCI_CONFIG_PATH").filter(|p| !p.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => std::env::current_dir()?,
    };
    config_files::write(dirs, &cluster, &base, &provider)?;
    Ok(ExitCode::SUCCESS)
}

/// `check`: kubevirtci's check.sh lines, and kvci's own accelerator decision.
fn check() -> Result<ExitCode> {
    let facts = KvmFacts::probe();
    match std::fs::metadata("/dev/kvm") {
        Ok(_) => println!("[ OK ] found /dev/kvm"),
        Err(_) => println!("[ERR ] missing /dev/kvm"),
    }
    let nested = [("/sys/module/kvm_intel/parameters/nested", "intel"), ("/sys/module/kvm_amd/parameters/nested", "amd")]
        .iter()
        .find_map(|(path, arch)| std::fs::read_to_string(path).ok().map(|v| (*arch, matches!(v.trim(), "1" | "Y" | "y"))));
    let (arch, nested_ok) = nested.unwrap_or(("kvm", false));
    if nested_ok {
        println!("[ OK ] {arch} nested virtualization enabled");
    } else {
        println!("[ERR ] {arch} nested virtualization not enabled");
    }
    match accel::decide(AccelChoice::Auto, &facts) {
        Ok(d) if d.accel == accel::Accel::Kvm => println!("[ OK ] kvci runs nodes on kvm: {}", d.reason),
        Ok(d) => println!("[WARN] kvci runs nodes on {}: {} (nodes are emulated, slowly; KubeVirt's VMs inside them cannot use KVM)", d.accel, d.reason),
        Err(e) => println!("[ERR ] {e}"),
    }
    if !nested_ok && std::env::var("KUBEVIRT_NESTED_VIRTUALIZATION_REQUIRED").as_deref() == Ok("true") {
        println!("[ERR ] nested virtualization required, exiting...");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
