//! Up hooks: the image's scripts run at `vm up` once every node is ready — on node01 first
//! (kubeadm init), then on all the others at once (join), then optionally once more on node01
//! (labels); or on every node at once (etcd's static bootstrap). Scripts get the cluster in
//! `KVCI_*` variables.

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
pub fn environment(cluster: &str, nodes: &[HookNode], this: &HookNode, token: &str, stack: &str) -> String {
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
        ("KVCI_STACK", stack.to_string()),
    ]
    .iter()
    .map(|(k, v)| format!("export {k}={}\n", q(v)))
    .collect()
}

/// The cluster as hooks see it.
pub struct HookCluster<'a> {
    /// Cluster name.
    pub name: &'a str,
    /// Its nodes, node01 first.
    pub nodes: &'a [HookNode],
    /// `dual`, `ipv4` or `ipv6`.
    pub stack: &'a str,
    /// The cluster's secret.
    pub token: &'a str,
}

/// Runs `image`'s up hooks on `cluster`'s nodes (inside `ns`), returning when all succeeded,
/// with the steps the hooks reported (`nodeNN NAME SECONDS`, see [`crate::provision::output::STEP`]).
pub async fn run(image: &Image, cluster: &HookCluster<'_>, ns: &Arc<NetNs>, key: &Path) -> Result<Vec<String>> {
    let Some(up) = &image.manifest.up else { return Ok(Vec::new()) };
    let Some((first_node, others)) = cluster.nodes.split_first() else { return Ok(Vec::new()) };
    let script = |f: &String| image.dir.join(f);
    let env = |n: &HookNode| environment(cluster.name, cluster.nodes, n, cluster.token, cluster.stack);
    let others_script = up.others.as_ref().map(script);
    if up.parallel {
        let mut jobs = vec![(first_node.clone(), script(&up.first))];
        jobs.extend(others_script.iter().flat_map(|s| others.iter().map(move |n| (n.clone(), s.clone()))));
        return run_all(jobs, &env, ns, key).await;
    }
    let mut steps = run_one(first_node, &script(&up.first), &env(first_node), ns.clone(), key).await?;
    if let Some(s) = &others_script {
        steps.extend(run_all(others.iter().map(|n| (n.clone(), s.clone())).collect(), &env, ns, key).await?);
    }
    if let Some(last) = &up.last {
        steps.extend(run_one(first_node, &script(last), &env(first_node), ns.clone(), key).await?);
    }
    Ok(steps)
}

/// Runs each (node, script) at the same time; the first failure is returned once all ended.
async fn run_all(jobs: Vec<(HookNode, std::path::PathBuf)>, env: &dyn Fn(&HookNode) -> String, ns: &Arc<NetNs>, key: &Path) -> Result<Vec<String>> {
    let mut set = tokio::task::JoinSet::new();
    for (n, script) in jobs {
        let (ns, key, env) = (ns.clone(), key.to_path_buf(), env(&n));
        set.spawn(async move { run_one(&n, &script, &env, ns, &key).await });
    }
    let (mut first_error, mut steps) = (None, Vec::new());
    while let Some(r) = set.join_next().await {
        match r.context("an up hook task panicked").and_then(|r| r) {
            Ok(s) => steps.extend(s),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    first_error.map_or(Ok(steps), Err)
}

async fn run_one(node: &HookNode, script: &Path, env: &str, ns: Arc<NetNs>, key: &Path) -> Result<Vec<String>> {
    let stream = kvci_net::forward::connect_inside(ns, (node.ip, 22).into()).await.with_context(|| format!("{}: connecting to sshd", node.name))?;
    let mut s = ssh::client::connect(stream, "root", key).await?;
    let body = std::fs::read_to_string(script).with_context(|| format!("reading {}", script.display()))?;
    let remote = "/tmp/kvci-up.sh";
    let tmp = tempfile::NamedTempFile::new()?;
    std::fs::write(tmp.path(), format!("{env}{body}"))?;
    s.upload(tmp.path(), remote).await?;
    let tail = Arc::new(Mutex::new(Vec::new()));
    let prefix = format!("  {} up | ", node.name);
    let steps = Arc::new(Mutex::new(Vec::new()));
    let (mut out, mut err) = (Tee::new(&prefix, tail.clone()).with_steps(steps.clone()), Tee::new(&prefix, tail.clone()));
    let code = s.exec_into(&format!("sh -e {remote}"), &mut out, &mut err).await?;
    let _ = s.close().await;
    if code != 0 {
        bail!("{}: up hook {} failed with exit code {code}:\n{}", node.name, script.display(), tail_lines(&tail, 20));
    }
    let steps = steps.lock().map(|s| s.iter().map(|step| format!("{} {step}", node.name)).collect()).unwrap_or_default();
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooks_see_the_whole_cluster() {
        let nodes: Vec<HookNode> =
            (1..=3).map(|i| HookNode { name: format!("node0{i}"), ip: std::net::Ipv4Addr::new(192, 168, 66, 100 + i).into() }).collect();
        let env = environment("c1", &nodes, &nodes[1], "tok", "dual");
        assert!(env.contains("export KVCI_NODE='node02'\n"), "{env}");
        assert!(env.contains("export KVCI_NODES='node01 node02 node03'\n"), "{env}");
        assert!(env.contains("export KVCI_NODE_IPS='192.168.66.101 192.168.66.102 192.168.66.103'\n"), "{env}");
        assert!(env.contains("export KVCI_FIRST_NODE='node01'\n"));
        assert!(env.contains("export KVCI_TOKEN='tok'\n"));
        assert!(env.contains("export KVCI_STACK='dual'\n"));
    }
}
