//! One task per running node, owning its [`Node`]: answers status, pause/save/resume (freeze)
//! and shutdown commands, and notices when QEMU exits on its own.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::cluster::node::{Node, ShutdownKind};
use crate::cluster::state::{NodeRecord, NodeState};
use crate::supervisor::protocol::NodeStatus;

pub(crate) enum NodeCmd {
    Status(oneshot::Sender<NodeStatus>),
    Shutdown(Duration, oneshot::Sender<ShutdownKind>),
    /// Pause the vCPUs.
    Pause(oneshot::Sender<Result<(), String>>),
    /// Save RAM and device state to the file.
    Save(PathBuf, Duration, oneshot::Sender<Result<(), String>>),
    /// Continue the vCPUs.
    Resume(oneshot::Sender<Result<(), String>>),
}

/// A running node, owned by a task of its own.
pub(crate) struct NodeHandle {
    pub(crate) name: String,
    tx: mpsc::Sender<NodeCmd>,
}

impl NodeHandle {
    pub(crate) fn spawn(node: Node, state_tx: mpsc::Sender<(String, NodeState)>) -> NodeHandle {
        let (tx, rx) = mpsc::channel(4);
        let name = node.name().to_string();
        tokio::spawn(node_task(node, rx, state_tx));
        NodeHandle { name, tx }
    }

    pub(crate) async fn status(&self, record: &NodeRecord) -> NodeStatus {
        let (tx, rx) = oneshot::channel();
        let fallback = NodeStatus {
            name: self.name.clone(),
            state: NodeState::Stopped,
            pid: None,
            qemu_status: None,
            ready_secs: record.ready_secs,
            disk: String::new(),
            ip: record.ip.clone(),
        };
        if self.tx.send(NodeCmd::Status(tx)).await.is_err() {
            return fallback;
        }
        let mut s = rx.await.unwrap_or(fallback);
        s.ready_secs = record.ready_secs;
        s.ip = record.ip.clone();
        s
    }

    pub(crate) async fn shutdown(&self, timeout: Duration) -> ShutdownKind {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(NodeCmd::Shutdown(timeout, tx)).await.is_err() {
            return ShutdownKind::AlreadyExited;
        }
        rx.await.unwrap_or(ShutdownKind::AlreadyExited)
    }
}

/// How long a node's status query may take.
const STATUS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

async fn node_task(mut node: Node, mut rx: mpsc::Receiver<NodeCmd>, state_tx: mpsc::Sender<(String, NodeState)>) {
    let mut exited = false;
    loop {
        tokio::select! {
            cmd = rx.recv() => match cmd {
                Some(NodeCmd::Status(reply)) => {
                    let (state, qemu_status) = if exited {
                        (NodeState::Crashed, None)
                    } else {
                        // `vm status` must answer quickly even when one QEMU does not.
                        match node.qmp().execute_within(&qapi::qmp::query_status {}, STATUS_TIMEOUT).await {
                            Ok(s) => {
                                let text = serde_json::to_value(s.status).ok().and_then(|v| v.as_str().map(String::from));
                                (if s.running { NodeState::Running } else { NodeState::Paused }, text)
                            }
                            // A failed query is not a crash while QEMU still runs.
                            Err(_) if node.alive() => (NodeState::Unresponsive, None),
                            Err(_) => (NodeState::Crashed, None),
                        }
                    };
                    let _ = reply.send(NodeStatus {
                        name: node.name().to_string(),
                        state,
                        pid: (!exited).then(|| node.pid()),
                        qemu_status,
                        ready_secs: None,
                        disk: node.plan.dir.disk().display().to_string(),
                        ip: String::new(),
                    });
                }
                Some(NodeCmd::Pause(reply)) => {
                    let _ = reply.send(node.pause().await.map_err(|e| e.to_string()));
                }
                Some(NodeCmd::Save(path, timeout, reply)) => {
                    let _ = reply.send(node.save_state(&path, timeout).await.map_err(|e| e.to_string()));
                }
                Some(NodeCmd::Resume(reply)) => {
                    let _ = reply.send(node.resume().await.map_err(|e| e.to_string()));
                }
                Some(NodeCmd::Shutdown(timeout, reply)) => {
                    let kind = node.shutdown(timeout).await;
                    let _ = reply.send(kind);
                    return;
                }
                None => {
                    node.shutdown(Duration::ZERO).await;
                    return;
                }
            },
            status = node.exited(), if !exited => {
                exited = true;
                tracing::error!(node = %node.name(), %status, "QEMU exited unexpectedly");
                let _ = state_tx.send((node.name().to_string(), NodeState::Crashed)).await;
            }
        }
    }
}

impl NodeHandle {
    /// Sends a command that answers with a `Result`, turning a gone task into an error.
    pub(crate) async fn ask(&self, make: impl FnOnce(oneshot::Sender<Result<(), String>>) -> NodeCmd) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.map_err(|_| format!("{}: node task is gone", self.name))?;
        rx.await.map_err(|_| format!("{}: node task is gone", self.name))?.map_err(|e| format!("{}: {e}", self.name))
    }
}


