//! ssh to the cluster's nodes, in process (russh), with no `ssh` binary on the host.
//!
//! Each cluster has its own ed25519 key pair ([`keys`]); its public half is handed to every guest
//! through fw_cfg as `/root/.ssh/authorized_keys`. [`client`] connects over a TCP stream the
//! caller opened (directly or through a port forward), runs commands, opens interactive shells
//! and copies files.
//!
//! Copies run `cat` over an exec channel rather than SFTP, so they work with any sshd and a POSIX
//! shell: an upload lands under a temporary name beside the target and is renamed into place
//! only once every byte arrived.

pub mod client;
mod interactive;
pub mod keys;
mod tty;

#[cfg(test)]
mod test_server;
#[cfg(test)]
mod tests;

pub use client::{connect, ExecOutput, Session};
pub use keys::{authorized_keys_line, ensure_keypair, KeyPaths};

use std::path::PathBuf;

/// What can go wrong with keys, connections and remote commands. Each message says what to check.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// A key file could not be read or written.
    #[error("cannot {action} {}: {source}; check that the cluster directory exists and is writable by this user", path.display())]
    KeyIo {
        /// What kvci was doing (`read`, `create`, …).
        action: &'static str,
        /// The key file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A key file exists but is not an unencrypted OpenSSH ed25519 key.
    #[error(
        "{} is not a usable key ({reason}); remove it and its .pub so that kvci creates a new pair \
         (clusters started with the old key must then be restarted)",
        path.display()
    )]
    KeyInvalid {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The SSH handshake (version exchange, key exchange) failed.
    #[error("ssh handshake with the node failed: {0}; is the node up, and does the port lead to its sshd (port 22)?")]
    Handshake(#[source] russh::Error),
    /// The server refused kvci's public key.
    #[error(
        "the node does not accept kvci's key for user {user:?}: was the cluster started by this kvci \
         (same data directory)? see /root/.ssh/authorized_keys in the guest"
    )]
    AuthRejected {
        /// The user name kvci tried.
        user: String,
    },
    /// The connection or a channel broke after authentication.
    #[error("the ssh connection to the node broke: {0}; the node may have rebooted or powered off (kvci vm status)")]
    Connection(#[source] russh::Error),
    /// The server answered a channel request (pty, shell, exec) with a failure.
    #[error("the node's sshd refused the {what} request; check the guest's sshd log")]
    Refused {
        /// Which request (`exec`, `pty`, `shell`).
        what: &'static str,
    },
    /// A remote command used by a copy failed.
    #[error("`{command}` failed on the node (exit code {code}): {}", String::from_utf8_lossy(stderr).trim())]
    Remote {
        /// The command as sent.
        command: String,
        /// Its exit code (255: killed or no status).
        code: i32,
        /// What it wrote to stderr.
        stderr: Vec<u8>,
    },
    /// `vm scp` was given something other than a regular file to send.
    #[error(
        "{} is not a regular file: kvci vm scp copies one file at a time \
         (for a directory: `tar -C DIR -c . | kvci vm ssh NODE -- tar -C DEST -x`)",
        path.display()
    )]
    NotAFile {
        /// The local path.
        path: PathBuf,
    },
    /// A local file or the local terminal failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Local {
        /// What kvci was doing.
        action: &'static str,
        /// The local file (`/dev/stdin`, … for the terminal).
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}
