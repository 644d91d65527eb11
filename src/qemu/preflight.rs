//! Checking `vm up --qemu-args` before any node boots: a throw-away QEMU with the node's machine,
//! CPU, memory and NUMA plus the extra arguments, started paused (`-S`); once it answers QMP's
//! `query-status` it has parsed them and created every device, and is told to quit. If it exits
//! instead, its own error message is the answer.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::accel::Accel;
use crate::qemu::cmdline::{base_args, cpu_args, machine_args, numa_args, size_args};

/// How long the check may take.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// The extra arguments were refused, or the check could not run.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    /// QEMU exited: it did not accept the arguments.
    #[error("QEMU refuses --qemu-args {args:?} ({status}):\n{stderr}")]
    Refused {
        /// The arguments as given, joined.
        args: String,
        /// Its exit status.
        status: String,
        /// What QEMU said.
        stderr: String,
    },
    /// No answer in time.
    #[error("QEMU did not answer within {}s while checking --qemu-args {args:?}", TIMEOUT.as_secs())]
    Timeout {
        /// The arguments.
        args: String,
    },
    /// Local trouble (temporary directory, spawning).
    #[error("checking --qemu-args: {what}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The check's command line: a paused node-like machine, QMP on `qmp`, then `extra`.
pub fn preflight_args(accel: Accel, memory_mib: u64, cpus: u32, numa: u32, qmp: &Path, extra: &[String]) -> Vec<String> {
    let mut v = base_args("kvci-preflight");
    v.extend(machine_args(accel));
    v.extend(cpu_args(accel, None));
    v.extend(size_args(memory_mib, cpus));
    v.extend(numa_args(numa, memory_mib, cpus));
    v.extend(["-S".into(), "-chardev".into(), format!("socket,id=qmp,path={},server=on,wait=off", qmp.display()), "-mon".into(), "chardev=qmp,mode=control".into()]);
    v.extend(extra.iter().cloned());
    v
}

/// Kills and reaps the check's QEMU on every path.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Runs the check (see the module doc). Nothing is left behind.
pub fn check(qemu: &Path, accel: Accel, memory_mib: u64, cpus: u32, numa: u32, extra: &[String]) -> Result<(), PreflightError> {
    if extra.is_empty() {
        return Ok(());
    }
    let io = |what| move |source| PreflightError::Io { what, source };
    let joined = extra.join(" ");
    let tmp = tempfile::Builder::new().prefix("kvci-preflight").tempdir().map_err(io("creating a temporary directory"))?;
    let (qmp, log) = (tmp.path().join("qmp.sock"), tmp.path().join("stderr"));
    let stderr = std::fs::File::create(&log).map_err(io("creating the log"))?;
    let child = Command::new(qemu)
        .args(preflight_args(accel, memory_mib, cpus, numa, &qmp, extra))
        .stdin(Stdio::null())
        .stdout(stderr.try_clone().map_err(io("creating the log"))?)
        .stderr(stderr)
        .spawn()
        .map_err(io("starting QEMU"))?;
    let mut guard = Guard(child);
    let refused = |guard: &mut Guard| -> Option<PreflightError> {
        let status = guard.0.try_wait().ok()??;
        let text = std::fs::read(&log).map(|b| crate::tools::tail(&b, 20)).unwrap_or_default();
        Some(PreflightError::Refused { args: joined.clone(), status: status.to_string(), stderr: text.trim().to_string() })
    };
    let deadline = Instant::now() + TIMEOUT;
    // The socket appears early, while QEMU still parses; an answer to query-status comes only
    // from the main loop, once every device exists.
    let stream = loop {
        if let Some(e) = refused(&mut guard) {
            return Err(e);
        }
        if Instant::now() > deadline {
            return Err(PreflightError::Timeout { args: joined });
        }
        match UnixStream::connect(&qmp) {
            Ok(s) => break s,
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let answered = (|| -> std::io::Result<bool> {
        stream.set_read_timeout(Some(deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1))))?;
        let mut w = stream.try_clone()?;
        w.write_all(b"{\"execute\":\"qmp_capabilities\"}\n{\"execute\":\"query-status\"}\n")?;
        for line in BufReader::new(stream).lines() {
            if line?.contains("\"status\"") {
                let _ = w.write_all(b"{\"execute\":\"quit\"}\n");
                return Ok(true);
            }
        }
        Ok(false)
    })();
    if matches!(answered, Ok(true)) {
        return Ok(());
    }
    // Closed or timed out: it exited (give it a moment to be reaped), or it hangs.
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        if let Some(e) = refused(&mut guard) {
            return Err(e);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(PreflightError::Timeout { args: joined })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preflight_is_a_paused_node_like_machine_with_the_extra_args_last() {
        let a = preflight_args(Accel::Tcg, 2048, 2, 2, Path::new("/t/q.sock"), &["-device".into(), "x".into()]);
        let joined = a.join(" ");
        assert!(joined.contains("-machine q35,accel=tcg -cpu max -m 2048M -smp 2 -object memory-backend-ram,size=1024M,id=m0"), "{joined}");
        assert!(joined.contains("-S -chardev socket,id=qmp,path=/t/q.sock,server=on,wait=off -mon chardev=qmp,mode=control"), "{joined}");
        assert!(joined.ends_with("-device x"));
        assert_eq!(a[..2], ["-nodefaults", "-no-user-config"]);
    }

    #[test]
    fn nothing_to_check_runs_nothing() {
        assert!(check(Path::new("/nonexistent/qemu"), Accel::Tcg, 512, 1, 1, &[]).is_ok());
    }
}
