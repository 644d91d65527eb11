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

/// After `cont`: one ssh session (which proves sshd answers) steps the clock to the host's and
/// mixes fresh entropy into the RNG, in a single command.
pub async fn fix_up(name: &str, ns: &Arc<NetNs>, ip: std::net::Ipv4Addr, key: &Path, deadline: tokio::time::Instant) -> Result<()> {
    let t = std::time::Instant::now();
    let mut backoff = Duration::from_millis(20);
    // sshd was running when the node was frozen: retry only for the moment the NIC needs.
    let mut s = loop {
        let attempt = async {
            let stream = kvci_net::forward::connect_inside(ns.clone(), (ip, 22).into()).await?;
            anyhow::Ok(crate::ssh::client::connect(stream, "root", key).await?)
        };
        match tokio::time::timeout_at(deadline, attempt).await {
            Ok(Ok(s)) => break s,
            Ok(Err(e)) if tokio::time::Instant::now() + backoff < deadline => {
                tracing::debug!(node = name, error = %e, "resume: ssh not yet");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(500));
            }
            Ok(Err(e)) => return Err(e.context(format!("{name}: no ssh after resume"))),
            Err(_) => bail!("{name}: no ssh after resume before the deadline"),
        }
    };
    tracing::info!(node = name, ms = t.elapsed().as_millis() as u64, "resume: ssh session open");
    let mut entropy = vec![0u8; 64];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut entropy)?;
    // Rounded to the nearest second: busybox date takes whole seconds only. Writing to
    // /dev/urandom mixes the bytes in (the cloud kernel has no vmgenid driver).
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64().round() as u64;
    let out = s.exec(&format!("date -u -s @{now} >/dev/null && cat > /dev/urandom"), Some(entropy)).await?;
    if out.exit_code != 0 {
        bail!("{name}: fix-ups after resume failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let _ = s.close().await;
    tracing::info!(node = name, ms = t.elapsed().as_millis() as u64, "resume: fix-ups done");
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
