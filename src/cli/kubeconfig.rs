//! `kvci vm kubeconfig`: node01's admin kubeconfig, pointing at the forwarded `k8s` port.

use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::cluster::layout::ClusterDir;
use crate::config;
use crate::paths::Dirs;
use crate::provision::kubeconfig::rewrite_server;

use super::status;

/// `kvci vm kubeconfig`
#[derive(Debug, Args)]
pub struct KubeconfigArgs {
    /// Cluster name
    #[arg(long, default_value = config::DEFAULT_NAME, env = "KVCI_CLUSTER")]
    pub name: String,
}

/// Runs `vm kubeconfig`.
pub fn run(dirs: &Dirs, a: KubeconfigArgs) -> Result<ExitCode> {
    config::validate_name(&a.name)?;
    let s = status::query(dirs, &a.name)?;
    let Some(k8s) = s.ports.iter().find(|p| p.name == "k8s") else { bail!("cluster {:?} has no k8s port", a.name) };
    let Some(ssh) = s.ports.iter().find(|p| p.name == "ssh-node01") else { bail!("cluster {:?} has no node01", a.name) };
    let key = ClusterDir::new(dirs, &a.name).ssh_dir().join("id_ed25519");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let out = rt.block_on(async {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", ssh.host_port)).await?;
        let mut session = crate::ssh::client::connect(stream, "root", &key).await?;
        let out = session.exec("cat /etc/kubernetes/admin.conf", None).await?;
        anyhow::Ok(out)
    })?;
    if out.exit_code != 0 {
        bail!(
            "node01 has no /etc/kubernetes/admin.conf (is this a Kubernetes image?): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8(out.stdout).context("admin.conf is not UTF-8")?;
    print!("{}", rewrite_server(&text, k8s.host_port));
    Ok(ExitCode::SUCCESS)
}
