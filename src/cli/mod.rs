//! The command line: one `Args` struct and one handler file per subcommand.

mod console;
mod down;
mod freeze;
mod image;
mod kubeconfig;
mod kubevirtci;
mod logs;
mod ls;
mod output;
mod ports;
mod ssh;
mod ssh_config;
mod status;
mod up;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::paths::Dirs;

/// kvci runs pre-provisioned VM clusters (Kubernetes nodes first of all) straight on QEMU:
/// no Docker, one program. It is what kubevirtci's `cluster-up` does, without containers.
///
/// Start a one-node cluster of the default image `tiny` (built from Debian packages on first use):
///
///     kvci vm up
///
/// Then look at it, attach to node01's serial console, and take it down:
///
///     kvci vm status --output json
///     kvci vm console node01
///     kvci vm down
#[derive(Debug, Parser)]
#[command(name = "kvci", version, verbatim_doc_comment, max_term_width = 100)]
pub struct Cli {
    /// Where images, caches and clusters live [default: /var/lib/kvci for root,
    /// $XDG_DATA_HOME/kvci otherwise]
    #[arg(long, global = true, env = "KVCI_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// More log output (-v info, -vv debug); RUST_LOG overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Clusters of node VMs: up, status, console, logs, down
    #[command(subcommand)]
    Vm(VmCommand),
    /// The frozen image store: build and list images
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// kubevirtci compatibility: its `cluster-up/` scripts and gocli's verbs, on kvci
    #[command(subcommand)]
    Kubevirtci(kubevirtci::KubevirtciCommand),
    /// Internal: the background process that owns a cluster (started by `vm up`)
    #[command(hide = true)]
    Supervise {
        /// Cluster name
        #[arg(long)]
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum VmCommand {
    /// Start a cluster and return once every node is ready
    Up(Box<up::UpArgs>),
    /// Power a cluster down and remove its overlays and state (idempotent)
    Down(down::DownArgs),
    /// Show a cluster's nodes and their state
    Status(status::StatusArgs),
    /// List clusters
    Ls(ls::LsArgs),
    /// Attach to a node's serial console (detach with Ctrl-])
    Console(console::ConsoleArgs),
    /// Freeze a running cluster (RAM and disks) into an image that `vm up` resumes
    Freeze(freeze::FreezeArgs),
    /// Print a node's serial console log
    Logs(logs::LogsArgs),
    /// Show the forwarded host ports (ssh, k8s, registry, …)
    Ports(ports::PortsArgs),
    /// Print node01's admin kubeconfig, pointing at the forwarded k8s port
    Kubeconfig(kubeconfig::KubeconfigArgs),
    /// Print an OpenSSH config for the nodes (use with `ssh -F`)
    SshConfig(ssh_config::SshConfigArgs),
    /// Run a command on a node, or open a shell (kvci's own ssh client, the cluster's key)
    Ssh(ssh::SshArgs),
    /// Copy a file to or from a node: `kvci vm scp ./f node01:/root/f`
    Scp(ssh::ScpArgs),
}

/// Sets up `tracing` on stderr: warnings by default, more with `-v`, or as `RUST_LOG` says.
pub fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).try_init();
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<ExitCode> {
    // The user's own directories, chosen before becoming root inside a user namespace.
    let dirs = Dirs::resolve(cli.data_dir);
    if crate::rootless::needed() {
        crate::rootless::enter()?;
    }
    dispatch(&dirs, cli.command)
}

/// Runs one of kvci's own commands given as words, e.g. `["vm", "up", "--name", "x"]`: the
/// kubevirtci layer drives `vm up`, `image pull`… this way, with the checks and output a user
/// of those commands gets.
pub(crate) fn run_words(dirs: &Dirs, words: &[String]) -> Result<ExitCode> {
    let parsed = Words::try_parse_from(words).map_err(|e| anyhow::anyhow!("kvci {}: {e}", words.join(" ")))?;
    dispatch(dirs, parsed.command)
}

/// `kvci vm up` words parsed as that command's arguments (without running it).
pub(crate) fn parse_up(words: &[String]) -> Result<up::UpArgs> {
    let Command::Vm(VmCommand::Up(a)) = Words::try_parse_from(words).map_err(|e| anyhow::anyhow!("kvci {}: {e}", words.join(" ")))?.command else {
        anyhow::bail!("not a `vm up` command: {}", words.join(" "));
    };
    Ok(*a)
}

/// A kvci command line without the program name.
#[derive(Debug, Parser)]
#[command(name = "kvci", no_binary_name = true)]
struct Words {
    #[command(subcommand)]
    command: Command,
}

fn dispatch(dirs: &Dirs, command: Command) -> Result<ExitCode> {
    match command {
        Command::Vm(VmCommand::Up(a)) => up::run(dirs, *a),
        Command::Vm(VmCommand::Down(a)) => down::run(dirs, a),
        Command::Vm(VmCommand::Status(a)) => status::run(dirs, a),
        Command::Vm(VmCommand::Ls(a)) => ls::run(dirs, a),
        Command::Vm(VmCommand::Console(a)) => console::run(dirs, a),
        Command::Vm(VmCommand::Logs(a)) => logs::run(dirs, a),
        Command::Vm(VmCommand::Freeze(a)) => freeze::run(dirs, a),
        Command::Vm(VmCommand::Ports(a)) => ports::run(dirs, a),
        Command::Vm(VmCommand::SshConfig(a)) => ssh_config::run(dirs, a),
        Command::Vm(VmCommand::Kubeconfig(a)) => kubeconfig::run(dirs, a),
        Command::Vm(VmCommand::Ssh(a)) => ssh::run_ssh(dirs, a),
        Command::Vm(VmCommand::Scp(a)) => ssh::run_scp(dirs, a),
        Command::Image(c) => image::run(dirs, c),
        Command::Kubevirtci(c) => kubevirtci::run(dirs, c),
        Command::Supervise { name } => {
            crate::supervisor::server::run(dirs, &name, crate::supervisor::server::Reporter::Pipe, None)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn up_parses_every_flag() {
        let cli = Cli::try_parse_from([
            "kvci", "vm", "up", "--name", "c1", "--nodes", "3", "--image", "tiny", "--memory", "1G", "--cpus", "2", "--accel", "tcg",
        ])
        .unwrap();
        let Command::Vm(VmCommand::Up(a)) = cli.command else { panic!() };
        assert_eq!(a.name, "c1");
        assert_eq!(a.nodes, Some(3));
        assert_eq!(a.memory.as_deref(), Some("1G"));
    }

    #[test]
    fn up_defaults_like_kubevirtci() {
        let cli = Cli::try_parse_from(["kvci", "vm", "up"]).unwrap();
        let Command::Vm(VmCommand::Up(a)) = cli.command else { panic!() };
        assert_eq!((a.name.as_str(), a.nodes, a.image.to_string().as_str()), ("kvci", None, "tiny:latest"));
    }

    #[test]
    fn up_parses_the_shape_flags() {
        let cli = Cli::try_parse_from([
            "kvci", "vm", "up", "--numa", "2", "--secondary-nics", "1", "--nvme", "1Gi", "--nvme", "2G", "--scsi", "1Gi", "--usb", "1Gi",
            "--shared-disk", "1Gi", "--hugepages-2m", "8", "--hugepages-1g", "1", "--kernel-args", "-a b", "--qemu-args", "-device x",
            "--gpu", "01:00.0",
        ])
        .unwrap();
        let Command::Vm(VmCommand::Up(a)) = cli.command else { panic!() };
        assert_eq!((a.numa, a.secondary_nics, a.hugepages_2m, a.hugepages_1g), (Some(2), Some(1), Some(8), Some(1)));
        assert_eq!((a.nvme.len(), a.scsi.len(), a.usb.len(), a.shared_disk.len()), (2, 1, 1, 1));
        assert_eq!((a.kernel_args.as_deref(), a.qemu_args.as_deref(), a.gpu.as_deref()), (Some("-a b"), Some("-device x"), Some("01:00.0")));
    }

    #[test]
    fn image_names_that_are_paths_are_refused_by_the_parser() {
        for args in [
            &["kvci", "vm", "up", "--image", "../manifests/tiny"][..],
            &["kvci", "image", "rm", "/tmp/v"],
            &["kvci", "image", "inspect", "/tmp/v"],
            &["kvci", "vm", "freeze", "--to", "a/b"],
            &["kvci", "image", "import", "dir", "--name", "../x"],
            &["kvci", "image", "push", "../x", "127.0.0.1:5000/x"],
            &["kvci", "image", "export", "/x", "--oci", "d"],
        ] {
            let err = Cli::try_parse_from(args).err().unwrap_or_else(|| panic!("{args:?} was accepted")).to_string();
            assert!(err.contains("never a path"), "{args:?}: {err}");
        }
    }

    #[test]
    fn wrong_accel_is_refused_by_the_parser() {
        let err = Cli::try_parse_from(["kvci", "vm", "up", "--accel", "hvf"]).unwrap_err().to_string();
        assert!(err.contains("possible values"), "{err}");
    }

    #[test]
    fn ssh_takes_a_command_after_dashes() {
        let cli = Cli::try_parse_from(["kvci", "vm", "ssh", "--name", "x", "node02", "--", "echo", "hi there"]).unwrap();
        let Command::Vm(VmCommand::Ssh(a)) = cli.command else { panic!() };
        assert_eq!((a.node.as_str(), a.command.len()), ("node02", 2));
    }

    #[test]
    fn console_takes_a_node() {
        let cli = Cli::try_parse_from(["kvci", "vm", "console", "--name", "x", "node02"]).unwrap();
        let Command::Vm(VmCommand::Console(a)) = cli.command else { panic!() };
        assert_eq!(a.node, "node02");
    }
}
