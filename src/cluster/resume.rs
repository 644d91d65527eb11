//! Resuming a frozen cluster: every node's QEMU loads its saved RAM and device state, all vCPUs
//! continue at nearly the same moment, then each guest gets fix-ups a saved machine needs: its
//! clock stepped to now and fresh entropy mixed into its RNG.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use kvci_net::netns::NetNs;

use crate::cluster::node::Node;
use crate::cluster::plan::NodePlan;
use crate::cluster::readiness;

/// `major.minor.micro` from a QMP greeting.
pub fn qemu_version(greeting: &serde_json::Value) -> String {
    let v = &greeting["QMP"]["version"]["qemu"];
    format!("{}.{}.{}", v["major"], v["minor"], v["micro"])
}

/// Starts `plan`'s QEMU waiting for a state and loads it; the node stays paused.
/// `expected_qemu` is the version that saved the state: another version is refused up front.
pub async fn load_node(qemu: &Path, plan: NodePlan, tap: Option<OwnedFd>, expected_qemu: &str, timeout: Duration) -> Result<Node> {
    let state = plan.state.clone().context("not a frozen node")?;
    let meta = std::fs::metadata(&state).with_context(|| format!("the frozen image has no state file {}", state.display()))?;
    let node = Node::start(qemu, plan, tap).await?;
    let running = qemu_version(node.qmp().greeting());
    if running != expected_qemu {
        let name = node.name().to_string();
        node.shutdown(Duration::ZERO).await;
        bail!("{name}: the frozen image was saved by QEMU {expected_qemu}, this is QEMU {running}: resume it with the same QEMU, or rebuild it");
    }
    if let Err(e) = node.load_state(&state, timeout).await {
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

/// After `cont`: sshd answers, the clock is stepped to the host's, the RNG gets new entropy.
pub async fn fix_up(name: &str, ns: &Arc<NetNs>, ip: std::net::Ipv4Addr, key: &Path, deadline: tokio::time::Instant) -> Result<()> {
    readiness::wait_sshd(name, ns, ip, deadline).await?;
    let stream = kvci_net::forward::connect_inside(ns.clone(), (ip, 22).into()).await?;
    let mut s = crate::ssh::client::connect(stream, "root", key).await?;
    // Rounded to the nearest second: busybox date takes whole seconds only.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64().round() as u64;
    let out = s.exec(&format!("date -u -s @{now} >/dev/null"), None).await?;
    if out.exit_code != 0 {
        bail!("{name}: could not set the clock: {}", String::from_utf8_lossy(&out.stderr));
    }
    let mut entropy = vec![0u8; 64];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut entropy)?;
    // Writing to /dev/urandom mixes the bytes in (the cloud kernel has no vmgenid driver).
    s.exec("cat > /dev/urandom", Some(entropy)).await?;
    let _ = s.close().await;
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
