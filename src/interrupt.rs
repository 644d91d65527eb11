//! Ctrl-C (SIGINT) and SIGTERM for commands that start work in the background (`vm up` starts
//! a supervisor in its own session): instead of dying and leaving that work running, the command
//! runs a clean-up, says so, and exits 130.
//!
//! The signals are blocked in the calling thread and taken by a thread waiting in `sigwait`, so
//! no async-signal-safety rules bind the clean-up. Children must not inherit the blocked mask:
//! [`unblock_in_child`] resets it between fork and exec.

use std::os::unix::process::CommandExt as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};

type Cleanup = Box<dyn FnOnce() + Send>;

/// While alive, SIGINT and SIGTERM run the clean-up instead of killing the process.
pub struct Guard {
    done: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    old: SigSet,
    cleanup: Arc<Mutex<Option<Cleanup>>>,
}

fn signals() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set
}

/// Starts guarding; `what` names the work in the message printed when a signal comes.
pub fn guard(what: &str, cleanup: impl FnOnce() + Send + 'static) -> nix::Result<Guard> {
    let mut old = SigSet::empty();
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&signals()), Some(&mut old))?;
    let done = Arc::new(AtomicBool::new(false));
    let cleanup: Arc<Mutex<Option<Cleanup>>> = Arc::new(Mutex::new(Some(Box::new(cleanup))));
    let (d, c, what) = (done.clone(), cleanup.clone(), what.to_string());
    // The new thread inherits the blocked mask, which sigwait needs.
    let thread = std::thread::spawn(move || {
        let Ok(signal) = signals().wait() else { return };
        if d.load(Ordering::SeqCst) {
            return;
        }
        eprintln!("kvci: {signal:?}: stopping {what}");
        if let Some(f) = c.lock().ok().and_then(|mut g| g.take()) {
            f();
        }
        std::process::exit(130);
    });
    Ok(Guard { done, thread: Some(thread), old, cleanup })
}

impl Guard {
    /// Replaces the clean-up (e.g. once the pid of what to stop is known).
    pub fn set_cleanup(&self, cleanup: impl FnOnce() + Send + 'static) {
        if let Ok(mut g) = self.cleanup.lock() {
            *g = Some(Box::new(cleanup));
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            // Wake the waiting thread with a signal aimed at it alone; it sees `done` and ends.
            use std::os::unix::thread::JoinHandleExt as _;
            let _ = nix::sys::pthread::pthread_kill(t.as_pthread_t(), Signal::SIGTERM);
            let _ = t.join();
        }
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&self.old), None);
    }
}

/// Makes `cmd`'s process start with no signal blocked, whatever this thread blocks.
pub fn unblock_in_child(cmd: &mut std::process::Command) {
    // SAFETY: sigprocmask is async-signal-safe and allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
            Ok(())
        });
    }
}
