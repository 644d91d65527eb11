//! Resuming a frozen cluster: every node's QEMU loads its saved RAM and device state, all vCPUs
//! continue at nearly the same moment, then each guest gets fix-ups a saved machine needs from kvci's
//! guest agent: its clock stepped to now and fresh entropy mixed into its RNG.


use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use kvci_net::netns::NetNs;

use crate::cluster::node::Node;
use crate::cluster::plan::{NodeAccess, NodePlan};
use crate::cluster::readiness;

/// `major.minor.micro` from a QMP greeting.
pub fn qemu_version(greeting: &serde_json::Value) -> String {
    let v = &greeting["QMP"]["version"]["qemu"];
    format!("{}.{}.{}", v["major"], v["minor"], v["micro"])
}

/// Starts `plan`'s QEMU waiting for a state and loads it; the node stays paused.
/// `expected_qemu` is the version that saved the state: another version is refused up front.
pub async fn load_node(qemu: &Path, plan: NodePlan, tap: kvci_net::network::NodeTaps, expected_qemu: &str, timeout: Duration) -> Result<Node> {
    let state = plan.state.clone().context("not a frozen node")?;
    let meta = std::fs::metadata(&state).with_context(|| format!("the frozen image has no state file {}", state.display()))?;
    let node = Node::start(qemu, plan, tap).await?;
    let running = qemu_version(node.qmp().greeting());
    if running != expected_qemu {
        let name = node.name().to_string();
        node.shutdown(Duration::ZERO).await;
        bail!("{name}: the frozen image was saved by QEMU {expected_qemu}, this is QEMU {running}: resume it with the same QEMU, or rebuild it");
    }
    let t = std::time::Instant::now();
    let loaded = node.load_state(&state, timeout).await;
    tracing::info!(node = node.name(), ms = t.elapsed().as_millis() as u64, bytes = meta.len(), "resume: state loaded");
    if let Err(e) = loaded {
        let name = node.name().to_string();
        node.shutdown(Duration::ZERO).await;
        return Err(anyhow::Error::new(e).context(format!(
            "{name}: cannot resume from {} ({} bytes): the state file is damaged or does not match this machine",
            state.display(),
            meta.len()
        )));
    }
    Ok(node)
}

/// After `cont`: kvci's guest agent steps the clock to the host's and mixes fresh entropy into
/// the RNG (the cloud kernel has no vmgenid driver), while sshd is checked to answer. The agent
/// was waiting in `read` when the node was frozen, so this takes milliseconds, not an ssh
/// handshake.
pub async fn fix_up(node: &Node, ns: &Arc<NetNs>, deadline: tokio::time::Instant) -> Result<()> {
    let t = std::time::Instant::now();
    let name = node.name();
    let mut entropy = vec![0u8; 64];
    getrandom::fill(&mut entropy).map_err(std::io::Error::from)?;
    let budget = deadline.saturating_duration_since(tokio::time::Instant::now());
    if let NodeAccess::Login { .. } = node.plan.access {
        // No kvci agent in these images: the same fix-ups over ssh, as root with the cluster key.
        ssh_fix_up(node, ns, entropy, deadline).await.with_context(|| format!("{name}: fix-ups after resume failed"))?;
        tracing::info!(node = name, ms = t.elapsed().as_millis() as u64, "resume: clock and RNG fixed up over ssh");
        return Ok(());
    }
    let agent = async {
        let r = node.agent_fixup(&entropy, budget).await;
        tracing::info!(node = name, ms = t.elapsed().as_millis() as u64, "resume: clock and RNG fixed up");
        r
    };
    let (fixed, sshd) = tokio::join!(agent, readiness::wait_sshd(name, ns, node.plan.ip, deadline));
    fixed.with_context(|| format!("{name}: fix-ups after resume failed"))?;
    sshd?;
    tracing::info!(node = name, ms = t.elapsed().as_millis() as u64, "resume: sshd answers");
    Ok(())
}

/// Steps the clock and reseeds the RNG through an ssh session as root (the cluster key was
/// added to root's authorized_keys at the first boot, before the freeze).
async fn ssh_fix_up(node: &Node, ns: &Arc<NetNs>, entropy: Vec<u8>, deadline: tokio::time::Instant) -> Result<()> {
    readiness::wait_sshd(node.name(), ns, node.plan.ip, deadline).await?;
    let public = node.plan.machine.authorized_keys.clone().context("the node has no cluster key")?;
    let private = public.with_extension("");
    let stream = kvci_net::forward::connect_inside(ns.clone(), (node.plan.ip, 22).into()).await?;
    let mut session = crate::ssh::client::connect(stream, "root", &private).await?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    let command = format!("date -s @{}.{:09} >/dev/null && head -c {} > /dev/urandom", now.as_secs(), now.subsec_nanos(), entropy.len());
    let out = session.exec(&command, Some(entropy)).await?;
    let _ = session.close().await;
    if out.exit_code != 0 {
        bail!("`{command}` failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_comes_from_the_greeting() {
        let g = serde_json::json!({"QMP": {"version": {"qemu": {"major": 10, "minor": 0, "micro": 2}}}});
        assert_eq!(qemu_version(&g), "10.0.2");
    }
}
