//! Booting one node to ready: QEMU started, beacon says ready, static lease taken, sshd
//! answering. Shared by the supervisor (every node of a cluster) and the image builder.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use kvci_net::netns::NetNs;

use crate::cluster::node::Node;
use crate::cluster::plan::NodePlan;
use crate::cluster::readiness;

/// Boots `plan` on `tap` and waits (up to `timeout` from QEMU's start) until it is ready.
/// Returns the node and how long it took. A node that fails is stopped before returning.
pub async fn boot_node(qemu: &Path, plan: NodePlan, tap: Option<OwnedFd>, ns: Arc<NetNs>, timeout: Duration) -> Result<(Node, Duration)> {
    let mut node = Node::start(qemu, plan, tap).await?;
    let deadline = tokio::time::Instant::from_std(node.started() + timeout);
    let ready = async {
        let (msg, _) = node.wait_ready(timeout).await?;
        readiness::check_lease(node.name(), &msg, node.plan.leases)?;
        readiness::wait_sshd(node.name(), &ns, node.plan.ip, deadline).await?;
        anyhow::Ok(node.started().elapsed())
    };
    match ready.await {
        Ok(took) => Ok((node, took)),
        Err(e) => {
            let serial = node.plan.dir.serial_log();
            node.shutdown(Duration::ZERO).await;
            // Readiness failures after boot (no lease, no sshd) come with the console's tail too;
            // boot failures already carry it.
            if e.downcast_ref::<readiness::NotReady>().is_some() {
                let tail = std::fs::read(&serial).map(|b| crate::tools::tail(&b, 20)).unwrap_or_default();
                return Err(e.context(format!("--- serial console (last 20 lines) ---\n{tail}")));
            }
            Err(e)
        }
    }
}
