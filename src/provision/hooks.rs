//! Up hooks: the image's scripts run at `vm up` once every node is ready — on node01 first
//! (kubeadm init), then on the others (join), or on all at once (etcd's static bootstrap).
//! Scripts get the cluster in `KVCI_*` variables.

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use kvci_net::netns::NetNs;

use crate::image::store::Image;
use crate::provision::output::{tail_lines, Tee};
use crate::ssh;

/// One node as the hooks see it.
#[derive(Debug, Clone)]
pub struct HookNode {
    /// `nodeNN`.
    pub name: String,
    /// Its address.
    pub ip: std::net::IpAddr,
}

/// The environment a hook script starts with (a shell prologue of `export` lines).
pub fn environment(cluster: &str, nodes: &[HookNode], this: &HookNode, token: &str) -> String {
    let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    let ips: Vec<String> = nodes.iter().map(|n| n.ip.to_string()).collect();
    let q = ssh::client::shell_quote;
    [
        ("KVCI_CLUSTER", cluster.to_string()),
        ("KVCI_NODE", this.name.clone()),
        ("KVCI_NODE_IP", this.ip.to_string()),
        ("KVCI_NODES", names.join(" ")),
        ("KVCI_NODE_IPS", ips.join(" ")),
        ("KVCI_FIRST_NODE", names.first().map(|s| s.to_string()).unwrap_or_default()),
        ("KVCI_TOKEN", token.to_string()),
    ]
    .iter()
    .map(|(k, v)| format!("export {k}={}\n", q(v)))
    .collect()
}

/// Runs `image`'s up hooks on `nodes` (inside `ns`), returning when all succeeded.
pub async fn run(image: &Image, cluster: &str, nodes: &[HookNode], ns: &Arc<NetNs>, key: &Path, token: &str) -> Result<()> {
    let Some(up) = &image.manifest.up else { return Ok(()) };
    let first = image.dir.join(&up.first);
    let others = up.others.as_ref().map(|o| image.dir.join(o));
    let jobs: Vec<(HookNode, std::path::PathBuf)> = nodes
        .iter()
        .enumerate()
        .filter_map(|(i, n)| if i == 0 { Some((n.clone(), first.clone())) } else { others.clone().map(|o| (n.clone(), o)) })
        .collect();
    if up.parallel {
        let mut set = tokio::task::JoinSet::new();
        for (n, script) in jobs {
            let (ns, key, env) = (ns.clone(), key.to_path_buf(), environment(cluster, nodes, &n, token));
            set.spawn(async move { run_one(&n, &script, &env, ns, &key).await });
        }
        while let Some(r) = set.join_next().await {
            r.context("an up hook task panicked")??;
        }
    } else {
        for (n, script) in jobs {
            run_one(&n, &script, &environment(cluster, nodes, &n, token), ns.clone(), key).await?;
        }
    }
    Ok(())
}

async fn run_one(node: &HookNode, script: &Path, env: &str, ns: Arc<NetNs>, key: &Path) -> Result<()> {
    let stream = kvci_net::forward::connect_inside(ns, (node.ip, 22).into()).await.with_context(|| format!("{}: connecting to sshd", node.name))?;
    let mut s = ssh::client::connect(stream, "root", key).await?;
    let body = std::fs::read_to_string(script).with_context(|| format!("reading {}", script.display()))?;
    let remote = "/tmp/kvci-up.sh";
    let tmp = tempfile::NamedTempFile::new()?;
    std::fs::write(tmp.path(), format!("{env}{body}"))?;
    s.upload(tmp.path(), remote).await?;
    let tail = Arc::new(Mutex::new(Vec::new()));
    let prefix = format!("  {} up | ", node.name);
    let (mut out, mut err) = (Tee::new(&prefix, tail.clone()), Tee::new(&prefix, tail.clone()));
    let code = s.exec_into(&format!("sh -e {remote}"), &mut out, &mut err).await?;
    let _ = s.close().await;
    if code != 0 {
        bail!("{}: up hook {} failed with exit code {code}:\n{}", node.name, script.display(), tail_lines(&tail, 20));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooks_see_the_whole_cluster() {
        let nodes: Vec<HookNode> =
            (1..=3).map(|i| HookNode { name: format!("node0{i}"), ip: std::net::Ipv4Addr::new(192, 168, 66, 100 + i).into() }).collect();
        let env = environment("c1", &nodes, &nodes[1], "tok");
        assert!(env.contains("export KVCI_NODE='node02'\n"), "{env}");
        assert!(env.contains("export KVCI_NODES='node01 node02 node03'\n"), "{env}");
        assert!(env.contains("export KVCI_NODE_IPS='192.168.66.101 192.168.66.102 192.168.66.103'\n"), "{env}");
        assert!(env.contains("export KVCI_FIRST_NODE='node01'\n"));
        assert!(env.contains("export KVCI_TOKEN='tok'\n"));
    }
}
