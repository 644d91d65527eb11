//! `kvci vm ssh` and `kvci vm scp`: kvci's own ssh client (russh) with the cluster's key,
//! through the node's forwarded ssh port.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::cluster::layout::ClusterDir;
use crate::config;
use crate::paths::Dirs;
use crate::ssh::client::{self, Session};

use super::status;

/// `kvci vm ssh`
///
/// As with `ssh`, the words after `--` are joined with spaces and run by the remote user's
/// shell, so `-- 'uname -a; exit 7'` runs two commands and `-- echo "a  b"` prints `a b`
/// (quote once more for the remote shell: `-- echo "'a  b'"`). Standard input goes to the
/// command (`printf x | kvci vm ssh node01 -- wc -c`); `-n` closes it instead.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct SshArgs {
    /// Cluster name
    #[arg(long, default_value = config::DEFAULT_NAME, env = "KVCI_CLUSTER")]
    pub name: String,
    /// Node, e.g. node01
    pub node: String,
    /// Force a PTY even when a command is given
    #[arg(short = 't')]
    pub tty: bool,
    /// Give the command an empty standard input instead of this one's
    #[arg(short = 'n')]
    pub no_stdin: bool,
    /// Command line to run (after `--`, words joined as ssh does); a login shell when omitted
    #[arg(last = true)]
    pub command: Vec<String>,
}

/// `kvci vm scp`
///
/// Copies one file to or from a node. A destination that is a directory gets the file under
/// its own name, as with scp. An upload lands in a temporary file beside the target and is
/// renamed over it only once complete, so a failed copy never leaves a truncated file.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct ScpArgs {
    /// Cluster name
    #[arg(long, default_value = config::DEFAULT_NAME, env = "KVCI_CLUSTER")]
    pub name: String,
    /// Source: a local path or NODE:PATH
    pub source: String,
    /// Destination: a local path or NODE:PATH
    pub destination: String,
}

/// Opens an ssh session to `node` of cluster `name`.
async fn session(dirs: &Dirs, name: &str, node: &str) -> Result<Session> {
    let s = status::query(dirs, name)?;
    let port_name = format!("ssh-{node}");
    let Some(port) = s.ports.iter().find(|p| p.name == port_name) else {
        let nodes: Vec<&str> = s.nodes.iter().map(|n| n.name.as_str()).collect();
        bail!("cluster {name:?} has no node {node:?}; it has: {}", nodes.join(", "));
    };
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port.host_port))
        .await
        .with_context(|| format!("connecting to {node}'s forwarded ssh port {}", port.host_port))?;
    let key = ClusterDir::new(dirs, name).ssh_dir().join("id_ed25519");
    Ok(client::connect(stream, "root", &key).await?)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

/// Runs `vm ssh`; the exit code is the remote command's.
pub fn run_ssh(dirs: &Dirs, a: SshArgs) -> Result<ExitCode> {
    config::validate_name(&a.name)?;
    let rt = runtime()?;
    let code = rt.block_on(async {
        let mut s = session(dirs, &a.name, &a.node).await?;
        let command = remote_command(&a.command);
        let code = match (&command, a.tty) {
            (None, _) => s.interactive(None).await?,
            (Some(c), true) => s.interactive(Some(c)).await?,
            (Some(c), false) if a.no_stdin => s.exec_streaming(c, None).await?,
            (Some(c), false) => s.exec_streaming(c, Some(&mut tokio::io::stdin())).await?,
        };
        let _ = s.close().await;
        anyhow::Ok(code)
    });
    // A read of our stdin may still be blocked in tokio's blocking pool (the command exited
    // without reading it all): do not wait for it.
    rt.shutdown_background();
    Ok(ExitCode::from(u8::try_from(code?).unwrap_or(255)))
}

/// The command line ssh would send for `words`: joined with spaces, for the remote shell to
/// parse (no quoting added, so shell syntax works as with `ssh node -- 'a; b'`).
fn remote_command(words: &[String]) -> Option<String> {
    (!words.is_empty()).then(|| words.join(" "))
}

/// `NODE:PATH` → `(node, path)`; a local path → `None`.
fn remote(spec: &str) -> Option<(&str, &str)> {
    let (node, path) = spec.split_once(':')?;
    (!node.is_empty() && !node.contains('/')).then_some((node, path))
}

/// Runs `vm scp`.
pub fn run_scp(dirs: &Dirs, a: ScpArgs) -> Result<ExitCode> {
    config::validate_name(&a.name)?;
    runtime()?.block_on(async {
        match (remote(&a.source), remote(&a.destination)) {
            (None, Some((node, path))) => {
                let mut s = session(dirs, &a.name, node).await?;
                s.upload(Path::new(&a.source), path).await?;
                let _ = s.close().await;
            }
            (Some((node, path)), None) => {
                let mut s = session(dirs, &a.name, node).await?;
                s.download(path, &PathBuf::from(&a.destination)).await?;
                let _ = s.close().await;
            }
            _ => bail!("give exactly one side as NODE:PATH, e.g. `kvci vm scp ./file node01:/root/file`"),
        }
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_words_are_joined_like_ssh() {
        let w = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(remote_command(&w(&["uname -a; exit 7"])).as_deref(), Some("uname -a; exit 7"));
        assert_eq!(remote_command(&w(&["echo", "a  b", "'c  d'"])).as_deref(), Some("echo a  b 'c  d'"));
        assert_eq!(remote_command(&[]), None);
    }

    #[test]
    fn remote_paths_are_node_colon_path() {
        assert_eq!(remote("node01:/root/x"), Some(("node01", "/root/x")));
        assert_eq!(remote("./local:file"), None);
        assert_eq!(remote("/abs/path"), None);
        assert_eq!(remote(":x"), None);
    }
}
