//! `kvci vm ssh-config`: an OpenSSH config stanza per node, so plain `ssh`/`scp` work too:
//! `kvci vm ssh-config > ~/.ssh/kvci.conf; ssh -F ~/.ssh/kvci.conf node01`.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use crate::cluster::layout::ClusterDir;
use crate::config;
use crate::paths::Dirs;
use crate::ports::PortBinding;

use super::status;

/// `kvci vm ssh-config`
#[derive(Debug, Args)]
pub struct SshConfigArgs {
    /// Cluster name
    #[arg(long, default_value = config::DEFAULT_NAME, env = "KVCI_CLUSTER")]
    pub name: String,
}

/// The stanzas: `Host nodeNN <cluster>-nodeNN` for every node with a forwarded ssh port.
pub fn render(cluster: &str, ports: &[PortBinding], key: &Path) -> String {
    let mut out = String::new();
    // `ssh-nodeNN` only: `ssh-worker` is node02 again under kubevirtci's other name.
    for p in ports.iter().filter(|p| p.name == format!("ssh-{}", p.node)) {
        let _ = writeln!(out, "Host {node} {cluster}-{node}", node = p.node);
        let _ = writeln!(out, "  HostName 127.0.0.1");
        let _ = writeln!(out, "  Port {}", p.host_port);
        let _ = writeln!(out, "  User root");
        let _ = writeln!(out, "  IdentityFile {}", key.display());
        let _ = writeln!(out, "  IdentitiesOnly yes");
        // Disposable nodes get fresh host keys on every image build.
        let _ = writeln!(out, "  StrictHostKeyChecking no");
        let _ = writeln!(out, "  UserKnownHostsFile /dev/null");
        let _ = writeln!(out, "  LogLevel ERROR");
        out.push('\n');
    }
    out
}

/// Runs `vm ssh-config`.
pub fn run(dirs: &Dirs, a: SshConfigArgs) -> Result<ExitCode> {
    config::validate_name(&a.name)?;
    let s = status::query(dirs, &a.name)?;
    let key = ClusterDir::new(dirs, &a.name).ssh_dir().join("id_ed25519");
    print!("{}", render(&a.name, &s.ports, &key));
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_stanza_per_node_port() {
        let ports = vec![
            PortBinding { name: "ssh".into(), node: "node01".into(), host_port: 40001, guest_port: 22, proto: "tcp".into() },
            PortBinding { name: "ssh-node01".into(), node: "node01".into(), host_port: 40002, guest_port: 22, proto: "tcp".into() },
            PortBinding { name: "ssh-node02".into(), node: "node02".into(), host_port: 40003, guest_port: 22, proto: "tcp".into() },
            PortBinding { name: "k8s".into(), node: "node01".into(), host_port: 40004, guest_port: 6443, proto: "tcp".into() },
            PortBinding { name: "ssh-worker".into(), node: "node02".into(), host_port: 40005, guest_port: 22, proto: "tcp".into() },
        ];
        let text = render("c1", &ports, Path::new("/d/ssh/id_ed25519"));
        assert_eq!(text.matches("Host ").count(), 2);
        assert!(text.contains("Host node02 c1-node02\n  HostName 127.0.0.1\n  Port 40003\n  User root\n  IdentityFile /d/ssh/id_ed25519\n"));
    }
}
