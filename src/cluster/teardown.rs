//! Cleaning up a cluster whose supervisor is gone (killed, crashed, host rebooted).
//!
//! QEMU processes die with their supervisor (`PR_SET_PDEATHSIG`); this removes what stays on
//! disk and, as a safety net, kills any QEMU still running from the cluster's directory.

use std::fs::File;

use anyhow::{Context, Result};
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::cluster::layout::ClusterDir;

/// The environment variable through which `vm up` hands its held cluster lock to the supervisor
/// it starts (an inherited fd number).
pub const LOCK_FD_ENV: &str = "KVCI_CLUSTER_LOCK_FD";

/// Takes the cluster's lock without waiting: `None` when another owner (a live supervisor, or a
/// `vm up` preparing the cluster) holds it.
pub fn try_lock(dir: &ClusterDir) -> Result<Option<Flock<File>>> {
    let path = dir.lock();
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let f = File::options().create(true).truncate(false).write(true).open(&path).with_context(|| format!("opening {}", path.display()))?;
    match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(e).with_context(|| format!("locking {}", path.display())),
    }
}

/// Whether a supervisor is alive for this cluster.
pub fn supervisor_alive(dir: &ClusterDir) -> Result<bool> {
    if !dir.lock().exists() {
        return Ok(false);
    }
    Ok(try_lock(dir)?.is_none())
}

/// The lock `vm up` handed down (see [`LOCK_FD_ENV`]), checked to be this cluster's lock file
/// and held: `None` when the variable is unset.
pub fn inherited_lock(dir: &ClusterDir) -> Result<Option<Flock<File>>> {
    use std::os::fd::FromRawFd;
    use std::os::unix::fs::MetadataExt;
    let Some(fd) = std::env::var(LOCK_FD_ENV).ok().and_then(|v| v.parse::<i32>().ok()) else { return Ok(None) };
    let path = dir.lock();
    let want = std::fs::metadata(&path).with_context(|| format!("reading {}", path.display()))?;
    let got = nix::sys::stat::fstat(fd)
        .with_context(|| format!("{LOCK_FD_ENV}={fd} is not an open file"))?;
    if got.st_dev != want.dev() || got.st_ino != want.ino() {
        anyhow::bail!("{LOCK_FD_ENV}={fd} is not {}", path.display());
    }
    // Not to be inherited further: a QEMU or helper outliving the supervisor must not keep the
    // cluster locked.
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC)).context("closing the lock on exec")?;
    // SAFETY: the fd is open (fstat answered), is the lock file, and nothing else in this process
    // owns it: it was inherited for exactly this.
    let file = unsafe { File::from_raw_fd(fd) };
    // Our open file description already holds the lock: this only confirms it.
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, e)) => Err(e).with_context(|| format!("the inherited lock on {} is not held", path.display())),
    }
}

/// Lets `cmd` inherit `lock` and tells it so through [`LOCK_FD_ENV`]: both then hold the same
/// lock, which stays held until the last of them exits.
pub fn hand_down(lock: &Flock<File>, cmd: &mut std::process::Command) -> Result<()> {
    use std::os::fd::AsRawFd;
    let fd = lock.as_raw_fd();
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty())).context("letting the supervisor inherit the cluster lock")?;
    cmd.env(LOCK_FD_ENV, fd.to_string());
    Ok(())
}

/// Kills and reaps every child of this process (QEMUs, the egress helper), for a supervisor
/// whose bring-up was abandoned half way.
pub fn end_children() {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else { return };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let ppid = crate::procfs::stat_fields(pid as u32).and_then(|f| f.get(1)?.parse::<u32>().ok());
        if ppid == Some(me) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(Pid::from_raw(pid), None);
        }
    }
}

/// Waits (at most `limit`) until `pid` no longer exists; for processes that are not our
/// children, so cannot be waited for.
fn wait_gone(pid: u32, limit: std::time::Duration) {
    let deadline = std::time::Instant::now() + limit;
    // A killed process whose parent has not reaped it yet is a zombie: gone for our purpose.
    while crate::procfs::running(pid) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Removes a dead cluster's leftovers. Returns the QEMU pids it had to kill.
/// Refuses (returns an error) when a live supervisor still owns the cluster.
pub fn remove_stale(dir: &ClusterDir) -> Result<Vec<u32>> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let lock = match try_lock(dir)? {
        Some(l) => l,
        None => anyhow::bail!("cluster {:?} has a live supervisor", dir.name()),
    };
    remove_stale_held(dir, &lock)
}

/// [`remove_stale`] for a caller that already holds the cluster's lock.
pub fn remove_stale_held(dir: &ClusterDir, _lock: &Flock<File>) -> Result<Vec<u32>> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut killed = Vec::new();
    for pid in qemus_of(dir) {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        wait_gone(pid, std::time::Duration::from_secs(10));
        killed.push(pid);
    }
    std::fs::remove_dir_all(dir.root()).with_context(|| format!("removing {}", dir.root().display()))?;
    Ok(killed)
}

/// QEMU processes of this very cluster: a QEMU binary whose command line names the cluster's
/// directory (its overlays and sockets live there). Found by looking, not from `state.json`,
/// which has no pid for a node killed before it was ready.
fn qemus_of(dir: &ClusterDir) -> Vec<u32> {
    let root = dir.root().as_os_str().as_encoded_bytes();
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let is_qemu = std::fs::read_link(format!("/proc/{pid}/exe"))
                .ok()
                .and_then(|exe| exe.file_name().map(|n| n.to_string_lossy().starts_with("qemu-system")))
                .unwrap_or(false);
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            is_qemu && cmdline.windows(root.len()).any(|w| w == root)
        })
        .collect()
}

/// Each live cluster (a supervisor holds its lock) with what its `launch.json` says.
fn live_launches(dirs: &crate::paths::Dirs) -> Result<Vec<(ClusterDir, crate::cluster::plan::Launch)>> {
    let mut live = Vec::new();
    let Ok(entries) = std::fs::read_dir(dirs.clusters()) else { return Ok(live) };
    for e in entries.flatten() {
        let dir = ClusterDir::new(dirs, &e.file_name().to_string_lossy());
        let Ok(bytes) = std::fs::read(dir.launch()) else { continue };
        let Ok(launch) = serde_json::from_slice::<crate::cluster::plan::Launch>(&bytes) else { continue };
        if supervisor_alive(&dir)? {
            live.push((dir, launch));
        }
    }
    Ok(live)
}

/// The store layers live clusters started from (as their `launch.json` records them).
pub fn layers_in_use(dirs: &crate::paths::Dirs) -> Result<Vec<String>> {
    Ok(live_launches(dirs)?.into_iter().filter_map(|(_, launch)| launch.image_id).collect())
}

/// Names of live clusters booted from image `image` (its full `NAME:TAG` name).
pub fn clusters_using(dirs: &crate::paths::Dirs, image: &crate::image::name::ImageName) -> Result<Vec<String>> {
    Ok(live_launches(dirs)?
        .into_iter()
        // Clusters started by older kvci versions may record `tiny` for `tiny:latest`.
        .filter(|(_, launch)| crate::image::name::ImageName::parse(&launch.spec.image).is_ok_and(|n| n == *image))
        .map(|(dir, _)| dir.name().to_string())
        .collect())
}
