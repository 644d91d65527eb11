//! The cluster's state, with checked transitions, saved as JSON for `status` and for clean-up
//! after a crashed supervisor.

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::accel::Decision;

/// Where the cluster is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Disks and QEMU being set up, nodes booting.
    Starting,
    /// Every node reported ready.
    Running,
    /// `down` in progress.
    Stopping,
    /// Bring-up failed; being cleaned up.
    Failed,
}

impl Phase {
    /// Whether `self → next` is a legal step.
    pub fn can_become(self, next: Phase) -> bool {
        use Phase::*;
        matches!((self, next), (Starting, Running) | (Starting, Failed) | (Starting, Stopping) | (Running, Stopping))
    }
}

/// One node's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeState {
    /// QEMU started, not ready yet.
    Starting,
    /// Reported ready and QEMU runs.
    Running,
    /// QEMU is paused.
    Paused,
    /// Shut down on request.
    Stopped,
    /// QEMU exited on its own.
    Crashed,
    /// QEMU runs but did not answer a QMP query in time.
    Unresponsive,
}

/// A node as saved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// `node01`…
    pub name: String,
    /// Its state.
    pub state: NodeState,
    /// QEMU's pid while it runs.
    pub pid: Option<u32>,
    /// Seconds from QEMU start to ready (beacon, lease and sshd).
    pub ready_secs: Option<f64>,
    /// Its address on the cluster network.
    #[serde(default)]
    pub ip: String,
}

/// The cluster as saved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Cluster name.
    pub name: String,
    /// Its phase.
    pub phase: Phase,
    /// The supervisor's pid.
    pub supervisor_pid: u32,
    /// Image name.
    pub image: String,
    /// Accelerator and why.
    pub accel: Decision,
    /// Nodes in order.
    pub nodes: Vec<NodeRecord>,
    /// Forwarded host ports.
    #[serde(default)]
    pub ports: Vec<crate::ports::PortBinding>,
    /// The cluster registry's directory.
    #[serde(default)]
    pub registry_dir: Option<std::path::PathBuf>,
}

/// An illegal phase change (a bug, reported rather than ignored).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("cluster cannot go from {from:?} to {to:?}")]
pub struct BadTransition {
    from: Phase,
    to: Phase,
}

impl ClusterState {
    /// Moves to `next` if that is legal.
    pub fn transition(&mut self, next: Phase) -> Result<(), BadTransition> {
        if !self.phase.can_become(next) {
            return Err(BadTransition { from: self.phase, to: next });
        }
        self.phase = next;
        Ok(())
    }

    /// Records that `node` is up: its QEMU pid and how long it took to be ready.
    pub fn node_running(&mut self, node: &str, pid: u32, took: std::time::Duration) {
        if let Some(rec) = self.nodes.iter_mut().find(|r| r.name == node) {
            rec.state = NodeState::Running;
            rec.pid = Some(pid);
            rec.ready_secs = Some(took.as_secs_f64());
        }
    }

    /// Writes the state atomically (write a temp file, rename over).
    pub fn save(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
    }

    /// Reads a saved state.
    pub fn load(path: &Path) -> Result<ClusterState> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&bytes).with_context(|| format!("corrupt cluster state {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accel::Accel;

    fn state() -> ClusterState {
        ClusterState {
            name: "kvci".into(),
            phase: Phase::Starting,
            supervisor_pid: 1,
            image: "tiny".into(),
            accel: Decision { accel: Accel::Tcg, reason: "test".into() },
            nodes: vec![NodeRecord { name: "node01".into(), state: NodeState::Starting, pid: Some(2), ready_secs: None, ip: "192.168.66.101".into() }],
            ports: vec![],
            registry_dir: None,
        }
    }

    #[test]
    fn running_cannot_go_back_to_starting() {
        let mut s = state();
        s.transition(Phase::Running).unwrap();
        assert!(s.transition(Phase::Starting).is_err());
        s.transition(Phase::Stopping).unwrap();
        assert!(s.transition(Phase::Running).is_err());
    }

    #[test]
    fn state_round_trips_through_json() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        state().save(&p).unwrap();
        assert_eq!(ClusterState::load(&p).unwrap(), state());
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains("\"starting\""));
    }
}
