//! Owning a QEMU process: spawned so that it dies with its supervisor, killed and reaped on
//! every path, its stderr kept in a file for error reports.
//!
//! This file and `supervisor::spawn` are the only places with `unsafe` (the `pre_exec` hooks).

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::signal::Signal;

/// A QEMU process that could not be started.
#[derive(Debug, thiserror::Error)]
#[error("cannot start {program}")]
pub struct SpawnError {
    program: PathBuf,
    #[source]
    source: std::io::Error,
}

/// A running QEMU, killed when dropped.
pub struct QemuProcess {
    child: tokio::process::Child,
    pid: u32,
    stderr_log: PathBuf,
}

impl QemuProcess {
    /// Starts `program args…`. `pass_fds` stay open in QEMU (listening sockets, taps); stdout and
    /// stderr go to `stderr_log`. The child gets `PR_SET_PDEATHSIG(SIGKILL)` so it cannot outlive
    /// the supervisor (call this from the supervisor's main thread: the signal fires when the
    /// spawning *thread* exits), and a session of its own so terminal signals reach only kvci.
    pub fn spawn(program: &Path, args: &[String], pass_fds: &[RawFd], stderr_log: &Path) -> Result<Self, SpawnError> {
        let err = |source| SpawnError { program: program.to_path_buf(), source };
        let log = File::create(stderr_log).map_err(err)?;
        let mut cmd = std::process::Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(err)?)
            .stderr(log);
        let parent = nix::unistd::getpid();
        if nix::unistd::gettid() != parent {
            // PR_SET_PDEATHSIG fires when the spawning *thread* ends: from a short-lived thread
            // QEMU would be killed early, and from a pool thread it may outlive its cluster.
            tracing::warn!("QEMU spawned from a thread other than the main one: it dies with that thread");
        }
        let fds = pass_fds.to_vec();
        // SAFETY: the hook runs between fork and exec in the child and only makes
        // async-signal-safe system calls (prctl, getppid, setsid, fcntl); it allocates nothing
        // (`fds` was allocated before the fork and is only read).
        unsafe {
            cmd.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
                // The parent may have died before prctl took effect.
                if nix::unistd::getppid() != parent {
                    // No allocation between fork and exec: an errno, not a message.
                    return Err(std::io::Error::from_raw_os_error(nix::libc::ESRCH));
                }
                nix::unistd::setsid()?;
                for &fd in &fds {
                    fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty()))?;
                }
                Ok(())
            });
        }
        let child = tokio::process::Command::from(cmd).kill_on_drop(true).spawn().map_err(err)?;
        let pid = child.id().unwrap_or_default();
        Ok(QemuProcess { child, pid, stderr_log: stderr_log.to_path_buf() })
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits for QEMU to exit.
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait().await
    }

    /// Exit status if QEMU has exited, without waiting.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits up to `grace` for QEMU to exit on its own, then kills it; always reaps it.
    pub async fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        if let Ok(Ok(status)) = tokio::time::timeout(grace, self.child.wait()).await {
            return Some(status);
        }
        tracing::warn!(pid = self.pid, "QEMU did not exit in time; killing it");
        let _ = self.child.kill().await;
        self.child.wait().await.ok()
    }

    /// The last lines QEMU wrote to stderr.
    pub fn stderr_tail(&self, lines: usize) -> String {
        std::fs::read(&self.stderr_log).map(|b| crate::tools::tail(&b, lines)).unwrap_or_default()
    }
}

/// Keeps an fd number for passing to a child (`-chardev …,fd=N`).
pub fn raw(fd: &impl AsRawFd) -> RawFd {
    fd.as_raw_fd()
}
