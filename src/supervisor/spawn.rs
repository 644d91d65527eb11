//! Starting the supervisor in the background and relaying its launch progress to `vm up`.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::cluster::layout::ClusterDir;
use crate::paths::Dirs;
use crate::supervisor::protocol::{ClusterStatus, LaunchEvent};

/// Starts `kvci supervise` detached (own session, stdin closed, log to `supervisor.log`) and
/// returns once it reports the cluster ready, printing its progress on the way.
/// The cluster's `lock` is handed down: the supervisor holds it from its first instruction, and
/// it stays held when `vm up` exits.
pub fn spawn_and_wait(dirs: &Dirs, dir: &ClusterDir, lock: crate::supervisor::server::ClusterLock) -> Result<ClusterStatus> {
    let exe = std::env::current_exe().context("finding the kvci executable")?;
    let log = std::fs::File::create(dir.supervisor_log()).context("creating the supervisor log")?;
    let mut cmd = Command::new(exe);
    cmd.arg("--data-dir")
        .arg(dirs.data())
        .args(["supervise", "--name", dir.name()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log);
    crate::cluster::teardown::hand_down(&lock, &mut cmd)?;
    // Ctrl-C while the cluster comes up stops it rather than leaving it to finish unseen.
    let guard = crate::interrupt::guard(&format!("the start of cluster {}", dir.name()), || {}).context("watching for Ctrl-C")?;
    crate::interrupt::unblock_in_child(&mut cmd);
    // SAFETY: between fork and exec the hook only calls setsid(2), which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| nix::unistd::setsid().map(drop).map_err(std::io::Error::from));
    }
    let mut child = cmd.spawn().context("starting the supervisor")?;
    // The supervisor holds the lock now (the same open file); this process lets go of its copy.
    drop(lock);
    let (pid, stopped) = (nix::unistd::Pid::from_raw(child.id() as i32), dir.clone());
    guard.set_cleanup(move || {
        // Its QEMUs die with it (PR_SET_PDEATHSIG) and the namespace with them; then its files.
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(pid, None);
        match crate::cluster::teardown::remove_stale(&stopped) {
            Ok(_) => eprintln!("kvci: cluster {} was not started; nothing of it is left", stopped.name()),
            Err(e) => eprintln!("kvci: cleaning up cluster {}: {e:#}", stopped.name()),
        }
    });
    let stdout = child.stdout.take().context("supervisor stdout")?;
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading the supervisor's progress")?;
        match serde_json::from_str::<LaunchEvent>(&line) {
            Ok(LaunchEvent::Progress { message }) => eprintln!("kvci: {message}"),
            Ok(LaunchEvent::Ready(status)) => return Ok(status),
            Ok(LaunchEvent::Failed { message }) => {
                let _ = child.wait();
                bail!("{message}");
            }
            Err(_) => tracing::debug!(line, "supervisor: unexpected output"),
        }
    }
    let status = child.wait().context("waiting for the supervisor")?;
    let log_tail = std::fs::read(dir.supervisor_log()).map(|b| crate::tools::tail(&b, 20)).unwrap_or_default();
    bail!("the supervisor exited ({status}) before the cluster was ready:\n{log_tail}")
}
