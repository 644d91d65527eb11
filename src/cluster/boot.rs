//! Booting one node to ready: QEMU started, then either kvci's beacon says ready with its
//! static leases and sshd answers, or (images without a beacon, kubevirtci's) the DHCP servers
//! saw its leases taken and the image's key logs in. Shared by the supervisor (every node of a
//! cluster) and the image builder.

use kvci_net::network::NodeTaps;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use kvci_net::leases::Taken;
use kvci_net::netns::NetNs;
use tokio::sync::watch;

use crate::cluster::node::Node;
use crate::cluster::plan::{NodeAccess, NodePlan};
use crate::cluster::readiness;

/// Boots `plan` on `tap` and waits (up to `timeout` from QEMU's start) until it is ready.
/// Returns the node and how long it took. A node that fails is stopped before returning.
pub async fn boot_node(qemu: &Path, plan: NodePlan, tap: NodeTaps, ns: Arc<NetNs>, leases: watch::Receiver<Taken>, timeout: Duration) -> Result<(Node, Duration)> {
    let mut node = Node::start(qemu, plan, tap).await?;
    let deadline = tokio::time::Instant::from_std(node.started() + timeout);
    let ready = async {
        match node.plan.access.clone() {
            NodeAccess::Beacon => {
                let (msg, _) = node.wait_ready(timeout).await?;
                readiness::check_lease(node.name(), &msg, node.plan.leases)?;
                readiness::wait_sshd(node.name(), &ns, node.plan.ip, deadline).await?;
            }
            NodeAccess::Login { users, key } => {
                let p = node.plan.clone();
                let root_key = p.machine.authorized_keys.clone().unwrap_or_default();
                let work = async {
                    readiness::wait_leases(&p.name, p.mac, leases, p.leases, deadline).await?;
                    readiness::login(&p.name, &ns, p.ip, &users, &key, &root_key, deadline).await
                };
                let user = node.guarded(work, timeout).await?;
                tracing::info!(node = %p.name, %user, "logged in with the image's key; cluster key added for root");
            }
        }
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
