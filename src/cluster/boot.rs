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
        readiness::check_lease(node.name(), &msg, node.plan.ip)?;
        readiness::wait_sshd(node.name(), &ns, node.plan.ip, deadline).await?;
        anyhow::Ok(node.started().elapsed())
    };
    match ready.await {
        Ok(took) => Ok((node, took)),
        Err(e) => {
            node.shutdown(Duration::ZERO).await;
            Err(e)
        }
    }
}
