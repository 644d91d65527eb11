//! Messages between the CLI and the supervisor: one JSON object per line.

use serde::{Deserialize, Serialize};

use crate::cluster::state::{NodeState, Phase};

/// A request on the control socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "kebab-case")]
pub enum Request {
    /// Report the cluster's state, asking each QEMU.
    Status,
    /// Power everything down and remove the cluster.
    Down {
        /// Seconds each guest gets to power off before QEMU is stopped.
        timeout_secs: u64,
    },
    /// Freeze the running cluster into a frozen cluster image.
    Freeze {
        /// Image name (`NAME` or `NAME:TAG`).
        to: String,
        /// Resume the cluster afterwards instead of taking it down.
        keep_running: bool,
        /// Replace an existing image of that name.
        #[serde(default)]
        force: bool,
        /// Seconds to wait for the image store's lock before giving up (the cluster runs on).
        #[serde(default = "default_store_timeout")]
        store_timeout_secs: u64,
    },
}

fn default_store_timeout() -> u64 {
    120
}

/// The supervisor's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "response", rename_all = "kebab-case")]
pub enum Response {
    /// Answer to [`Request::Status`].
    Status(ClusterStatus),
    /// Answer to [`Request::Down`]: how each node went down.
    Down {
        /// `(node, how)` pairs.
        nodes: Vec<(String, String)>,
    },
    /// Answer to [`Request::Freeze`].
    Frozen {
        /// The image's full name.
        image: String,
        /// Seconds from pausing the first node to the last state saved.
        seconds: f64,
    },
    /// The request failed.
    Error {
        /// Why.
        message: String,
    },
}

/// A cluster as `vm status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// Cluster name.
    pub name: String,
    /// Phase.
    pub phase: Phase,
    /// Image name.
    pub image: String,
    /// `kvm` or `tcg`.
    pub accel: String,
    /// Supervisor pid.
    pub supervisor_pid: u32,
    /// Nodes in order.
    pub nodes: Vec<NodeStatus>,
    /// Forwarded host ports.
    pub ports: Vec<crate::ports::PortBinding>,
    /// Where the cluster registry (`registry:5000`) keeps its blobs.
    #[serde(default)]
    pub registry_dir: Option<std::path::PathBuf>,
}

/// One node as `vm status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// `node01`…
    pub name: String,
    /// `running`, `paused`, `crashed`, …
    pub state: NodeState,
    /// QEMU's pid.
    pub pid: Option<u32>,
    /// QEMU's own run state (QMP `query-status`).
    pub qemu_status: Option<String>,
    /// Seconds from QEMU start to ready.
    pub ready_secs: Option<f64>,
    /// The node's overlay.
    pub disk: String,
    /// Its address on the cluster network.
    pub ip: String,
}

/// What the supervisor tells `vm up` while it brings the cluster up (on its stdout pipe).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "launch", rename_all = "kebab-case")]
pub enum LaunchEvent {
    /// A step started or finished.
    Progress {
        /// In words.
        message: String,
    },
    /// Every node is ready.
    Ready(ClusterStatus),
    /// Bring-up failed; everything was cleaned up.
    Failed {
        /// The whole error chain.
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_tagged_json() {
        assert_eq!(serde_json::to_string(&Request::Status).unwrap(), r#"{"request":"status"}"#);
        let down: Request = serde_json::from_str(r#"{"request":"down","timeout_secs":5}"#).unwrap();
        assert_eq!(down, Request::Down { timeout_secs: 5 });
        assert!(serde_json::from_str::<Request>(r#"{"request":"explode"}"#).is_err());
    }
}
