//! Where one cluster's files live: `<data>/clusters/<name>/`, one subdirectory per node.
//!
//! ```text
//! launch.json  state.json  supervisor.sock  supervisor.log  (the lock: clusters/.locks/NAME.lock)
//! ssh/{id_ed25519, id_ed25519.pub}
//! node01/{disk.qcow2, serial.log, qemu.log, qmp.sock, console.sock, beacon.sock, agent.sock, vnc.sock}
//! node01/{nvme-0.img, scsi-0.img, usb-0.img, …}   raw extra disks (`--nvme`, `--scsi`, `--usb`)
//! shared/{disk0.img, …}                           raw disks every node shares (`--shared-disk`)
//! ```
//! `down` removes the whole directory: nothing of a cluster outlives it.

use std::path::{Path, PathBuf};

use crate::paths::Dirs;

/// Longest unix socket path the kernel accepts (`sun_path` minus the NUL).
const MAX_SOCKET_PATH: usize = 107;

/// One cluster's directory.
#[derive(Debug, Clone)]
pub struct ClusterDir {
    name: String,
    root: PathBuf,
}

/// One node's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeDir {
    root: PathBuf,
}

impl ClusterDir {
    /// The directory of cluster `name`.
    pub fn new(dirs: &Dirs, name: &str) -> ClusterDir {
        ClusterDir { name: name.to_string(), root: dirs.clusters().join(name) }
    }

    /// Cluster name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// Whether anything of the cluster is on disk.
    pub fn exists(&self) -> bool {
        self.root.exists()
    }
    /// What `up` asked for (spec and accelerator).
    pub fn launch(&self) -> PathBuf {
        self.root.join("launch.json")
    }
    /// The supervisor's view, saved on every change.
    pub fn state(&self) -> PathBuf {
        self.root.join("state.json")
    }
    /// Held (flock) by whoever owns the cluster: `vm up` while it prepares, then the supervisor
    /// it hands the lock to. It lives beside the cluster directories, not in the one it guards
    /// (that directory is removed and re-created under it), and is never removed.
    pub fn lock(&self) -> PathBuf {
        self.root.parent().unwrap_or(&self.root).join(".locks").join(format!("{}.lock", self.name))
    }
    /// The supervisor's control socket.
    pub fn control_socket(&self) -> PathBuf {
        self.root.join("supervisor.sock")
    }
    /// The supervisor's own log.
    pub fn supervisor_log(&self) -> PathBuf {
        self.root.join("supervisor.log")
    }
    /// The cluster's ssh key pair (`id_ed25519`, `id_ed25519.pub`).
    pub fn ssh_dir(&self) -> PathBuf {
        self.root.join("ssh")
    }
    /// Raw disks shared by every node (`--shared-disk`).
    pub fn shared_dir(&self) -> PathBuf {
        self.root.join("shared")
    }
    /// Shared disk `i`.
    pub fn shared_disk(&self, i: usize) -> PathBuf {
        self.shared_dir().join(format!("disk{i}.img"))
    }
    /// The directory of `node`.
    pub fn node(&self, node: &str) -> NodeDir {
        NodeDir { root: self.root.join(node) }
    }

    /// Refuses data directories so deep that socket paths would not fit.
    pub fn check_socket_paths(&self) -> Result<(), String> {
        let longest = self.node("node01").console_socket();
        let len = longest.as_os_str().len();
        if len > MAX_SOCKET_PATH {
            return Err(format!(
                "socket path {} is {len} bytes, longer than the {MAX_SOCKET_PATH} unix sockets allow: \
                 use a shorter --data-dir or cluster name",
                longest.display()
            ));
        }
        Ok(())
    }
}

impl NodeDir {
    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// The node's qcow2 overlay.
    pub fn disk(&self) -> PathBuf {
        self.root.join("disk.qcow2")
    }
    /// Extra raw disk `i` of `kind` (`nvme`, `scsi`, `usb`).
    pub fn extra_disk(&self, kind: &str, i: usize) -> PathBuf {
        self.root.join(format!("{kind}-{i}.img"))
    }
    /// Everything the serial console printed.
    pub fn serial_log(&self) -> PathBuf {
        self.root.join("serial.log")
    }
    /// QEMU's own stderr.
    pub fn qemu_log(&self) -> PathBuf {
        self.root.join("qemu.log")
    }
    /// QMP socket.
    pub fn qmp_socket(&self) -> PathBuf {
        self.root.join("qmp.sock")
    }
    /// Serial console socket.
    pub fn console_socket(&self) -> PathBuf {
        self.root.join("console.sock")
    }
    /// VNC display socket.
    pub fn vnc_socket(&self) -> PathBuf {
        self.root.join("vnc.sock")
    }
    /// Readiness beacon socket.
    pub fn beacon_socket(&self) -> PathBuf {
        self.root.join("beacon.sock")
    }
    /// Guest agent socket.
    pub fn agent_socket(&self) -> PathBuf {
        self.root.join("agent.sock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_files_are_under_the_cluster() {
        let c = ClusterDir::new(&Dirs::at("/d"), "kvci");
        assert_eq!(c.node("node01").disk(), Path::new("/d/clusters/kvci/node01/disk.qcow2"));
        assert_eq!(c.control_socket(), Path::new("/d/clusters/kvci/supervisor.sock"));
        assert_eq!(c.node("node02").extra_disk("nvme", 1), Path::new("/d/clusters/kvci/node02/nvme-1.img"));
        assert_eq!(c.shared_disk(0), Path::new("/d/clusters/kvci/shared/disk0.img"));
        assert!(c.check_socket_paths().is_ok());
    }

    #[test]
    fn too_deep_data_dir_is_refused() {
        let c = ClusterDir::new(&Dirs::at(format!("/{}", "x".repeat(90))), "kvci");
        assert!(c.check_socket_paths().unwrap_err().contains("--data-dir"));
    }
}
