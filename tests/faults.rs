//! Fault injection by sweeping the delay (issue 13): kvci is killed with SIGKILL and with SIGINT
//! at several moments of `vm up` (the command), `image import` (the command) and `vm freeze`
//! (the supervisor doing it). The moments are fractions of a clean run's duration measured
//! first, so they fall early, in the middle and late whatever the machine's speed. After each
//! fault the next command must find: no staging directory of a dead process, every named image
//! intact (`kvci image check`), no QEMU of the cluster, its directory and lock gone (or, when
//! the fault came after the work was done, a whole cluster or image); at the end every named
//! image boots. A data directory of its own, seeded with `tiny`, keeps the checks small.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

/// Where in a run to strike, as fractions of a clean run's duration.
const POINTS: [f64; 3] = [0.1, 0.45, 0.85];
const SIGNALS: [Signal; 2] = [Signal::SIGKILL, Signal::SIGINT];

struct Store {
    data: tempfile::TempDir,
}

impl Store {
    fn new() -> Store {
        let data = tempfile::tempdir().unwrap();
        common::copy_tiny_into(data.path());
        Store { data }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kvci"));
        c.arg("--data-dir").arg(self.data.path()).args(args).env_remove("KVCI_QEMU").env_remove("KVCI_CLUSTER");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        assert!(out.status.success(), "kvci {}:\n{}", args.join(" "), common::stderr(&out));
        out
    }

    fn spawn(&self, args: &[&str]) -> Child {
        self.command(args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap()
    }

    fn cluster_dir(&self, name: &str) -> PathBuf {
        self.data.path().join("clusters").join(name)
    }

    /// Waits (bounded) until nobody holds cluster `name`'s lock: its supervisor, if any, is gone.
    fn wait_unlocked(&self, name: &str) {
        let path = self.data.path().join("clusters/.locks").join(format!("{name}.lock"));
        if !path.exists() {
            return;
        }
        assert_eq!(common::lock_freed_within(path, Duration::from_secs(90)), Ok(true), "cluster {name}'s owner never went away");
    }

    /// The invariants after a fault. `cluster`: a cluster that must be either whole and running
    /// or entirely gone (a gone supervisor's leftovers are cleaned by the next `vm up`).
    fn check(&self, what: &str, cluster: Option<&str>) {
        if let Some(name) = cluster {
            let running = self.run(&["vm", "status", "--name", name, "--output", "json"]);
            if running.status.success() {
                // The fault came after the cluster was ready: it must be whole.
                let s: serde_json::Value = serde_json::from_slice(&running.stdout).unwrap();
                assert!(s["nodes"].as_array().unwrap().iter().all(|n| n["state"] == "running"), "{what}: {s}");
                self.ok(&["vm", "down", "--name", name, "--timeout", "10"]);
            }
            // A signalled supervisor may still be taking its cluster down: wait until it is gone.
            self.wait_unlocked(name);
            let dir = self.cluster_dir(name);
            // Children the supervisor did not reap itself die with it (PR_SET_PDEATHSIG), a
            // moment after the lock frees: give them that moment, no more.
            let left: Vec<String> = common::processes_left_of(&dir).iter().map(|p| describe(*p)).collect();
            assert!(left.is_empty(), "{what}: processes of the cluster left: {left:#?}");
            if dir.exists() {
                // A killed supervisor cannot remove its files: the next `vm up` of the name does.
                self.ok(&["vm", "up", "--name", name, "--accel", "tcg"]);
                self.ok(&["vm", "down", "--name", name, "--timeout", "10"]);
            }
            assert!(!dir.exists(), "{what}: cluster directory left");
        }
        // The next command sweeps the staging of dead processes.
        self.ok(&["image", "ls"]);
        let staging: Vec<_> = std::fs::read_dir(self.data.path().join("images/staging")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(staging.is_empty(), "{what}: staging left: {staging:?}");
        let check = self.run(&["image", "check"]);
        assert!(check.status.success(), "{what}: image check:\n{}{}", String::from_utf8_lossy(&check.stdout), common::stderr(&check));
    }
}

impl Drop for Store {
    /// A failed run must not leave its clusters behind.
    fn drop(&mut self) {
        for name in ["f-up", "f-frz", "f-boot"] {
            let _ = self.run(&["vm", "down", "--name", name, "--timeout", "5"]);
        }
    }
}

/// A process for a failure message: its state, parent and command line.
fn describe(pid: u64) -> String {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    format!("{pid}: {} | {}", stat.rsplit_once(')').map(|(_, r)| r.trim()).unwrap_or(""), String::from_utf8_lossy(&cmd).replace('\0', " "))
}

fn signal(pid: u32, s: Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), s);
}

fn timed(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

#[test]
fn killed_at_any_moment_kvci_leaves_a_usable_store_and_no_cluster_debris() {
    let store = Store::new();
    let mut runs = 0;

    // vm up, killed (SIGKILL or Ctrl-C) at each point of its run.
    let clean_up = timed(|| {
        store.ok(&["vm", "up", "--name", "f-up", "--accel", "tcg"]);
    });
    store.ok(&["vm", "down", "--name", "f-up"]);
    for s in SIGNALS {
        for p in POINTS {
            let mut up = store.spawn(&["vm", "up", "--name", "f-up", "--accel", "tcg"]);
            std::thread::sleep(clean_up.mul_f64(p));
            signal(up.id(), s);
            let _ = up.wait();
            store.check(&format!("vm up, {s:?} at {p} of {clean_up:.1?}"), Some("f-up"));
            runs += 1;
        }
    }

    // image import of an exported tiny, killed at each point.
    let layout = store.data.path().join("tiny.oci");
    store.ok(&["image", "export", "tiny", "--oci", &layout.to_string_lossy()]);
    let clean_import = timed(|| {
        store.ok(&["image", "import", &layout.to_string_lossy(), "--name", "f-import"]);
    });
    store.ok(&["image", "rm", "f-import"]);
    for s in SIGNALS {
        for p in POINTS {
            let mut import = store.spawn(&["image", "import", &layout.to_string_lossy(), "--name", "f-import"]);
            std::thread::sleep(clean_import.mul_f64(p));
            signal(import.id(), s);
            let _ = import.wait();
            store.check(&format!("image import, {s:?} at {p} of {clean_import:.1?}"), None);
            let _ = store.run(&["image", "rm", "f-import"]);
            runs += 1;
        }
    }

    // vm freeze, its supervisor killed (SIGKILL) or signalled (SIGINT) at each point.
    store.ok(&["vm", "up", "--name", "f-frz", "--accel", "tcg"]);
    let clean_freeze = timed(|| {
        store.ok(&["vm", "freeze", "--name", "f-frz", "--to", "f-frozen"]);
    });
    store.ok(&["image", "rm", "f-frozen"]);
    for s in SIGNALS {
        for p in POINTS {
            store.ok(&["vm", "up", "--name", "f-frz", "--accel", "tcg"]);
            let st = store.ok(&["vm", "status", "--name", "f-frz", "--output", "json"]);
            let sup = serde_json::from_slice::<serde_json::Value>(&st.stdout).unwrap()["supervisor_pid"].as_u64().unwrap() as u32;
            let mut freeze = store.spawn(&["vm", "freeze", "--name", "f-frz", "--to", "f-frozen", "--force"]);
            std::thread::sleep(clean_freeze.mul_f64(p));
            signal(sup, s);
            let _ = freeze.wait();
            store.check(&format!("vm freeze, supervisor {s:?} at {p} of {clean_freeze:.1?}"), Some("f-frz"));
            runs += 1;
        }
    }
    eprintln!("faults: {runs} runs at {} points x {} signals of vm up, image import and vm freeze", POINTS.len(), SIGNALS.len());

    // Every named image boots (a frozen one resumes).
    let ls: serde_json::Value = serde_json::from_slice(&store.ok(&["image", "ls", "--output", "json"]).stdout).unwrap();
    for image in ls.as_array().unwrap() {
        let name = image["name"].as_str().unwrap();
        store.ok(&["vm", "up", "--name", "f-boot", "--image", name, "--accel", "tcg"]);
        let out = store.ok(&["vm", "ssh", "--name", "f-boot", "node01", "--", "echo", "up"]);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "up\n", "{name}");
        store.ok(&["vm", "down", "--name", "f-boot", "--timeout", "10"]);
    }
}
