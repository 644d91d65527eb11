//! Shared fixture for tests that drive the real `kvci` binary with real QEMU (TCG here).
#![allow(dead_code)]

pub mod kubevirtci;
pub mod outside;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The data directory the tests share: one image store, built once, kept between runs
/// (`KVCI_TEST_DATA_DIR` overrides, CI points it at its cache).
pub fn data_dir() -> PathBuf {
    std::env::var_os("KVCI_TEST_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kvci-data"))
}

/// `kvci --data-dir <shared>` ready for arguments.
pub fn kvci() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kvci"));
    c.arg("--data-dir").arg(data_dir()).env_remove("KVCI_QEMU");
    c
}

/// Runs kvci with `args`, returning its output whatever the exit code.
pub fn run(args: &[&str]) -> Output {
    kvci().args(args).output().expect("running kvci")
}

/// Text of stderr.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A cluster brought up for one test and taken down (whatever happens) when dropped.
pub struct TestCluster {
    pub name: String,
}

impl TestCluster {
    /// `kvci vm up --name NAME ARGS…`, panicking with kvci's stderr when it fails.
    pub fn up(name: &str, args: &[&str]) -> TestCluster {
        let mut all = vec!["vm", "up", "--name", name, "--accel", "tcg"];
        all.extend_from_slice(args);
        let out = run(&all);
        // Taken down in Drop even if the assertion below fails.
        let cluster = TestCluster { name: name.to_string() };
        assert!(out.status.success(), "vm up failed:\n{}", stderr(&out));
        cluster
    }

    /// `kvci vm status --output json`.
    pub fn status(&self) -> serde_json::Value {
        let out = run(&["vm", "status", "--name", &self.name, "--output", "json"]);
        assert!(out.status.success(), "vm status failed:\n{}", stderr(&out));
        serde_json::from_slice(&out.stdout).expect("status JSON")
    }

    /// The cluster's directory.
    pub fn dir(&self) -> PathBuf {
        data_dir().join("clusters").join(&self.name)
    }

    /// `kvci vm down`.
    pub fn down(&self) -> Output {
        run(&["vm", "down", "--name", &self.name, "--timeout", "20"])
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        let _ = self.down();
    }
}

/// A shell session on a node's serial console.
pub struct Console {
    stream: UnixStream,
    seen: Vec<u8>,
}

impl Console {
    /// Attaches to `node` of the cluster in `dir`.
    pub fn attach(dir: &Path, node: &str) -> Console {
        let stream = UnixStream::connect(dir.join(node).join("console.sock")).expect("console socket");
        stream.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        Console { stream, seen: Vec::new() }
    }

    /// Runs a shell command and waits (up to `timeout`) until its output contains `expect`.
    /// Put `expect` together from shell expansions so the echoed command line cannot match.
    pub fn run(&mut self, command: &str, expect: &str, timeout: Duration) -> String {
        self.seen.clear();
        self.stream.write_all(format!("{command}\n").as_bytes()).unwrap();
        self.read_until(expect, timeout)
    }

    /// Reads until `expect` appears, or panics with what was seen after `timeout`.
    pub fn read_until(&mut self, expect: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&self.seen).into_owned();
            if text.contains(expect) {
                return text;
            }
            assert!(Instant::now() < deadline, "console never showed {expect:?}; saw:\n{text}");
            match self.stream.read(&mut buf) {
                Ok(0) => panic!("console closed before {expect:?}; saw:\n{text}"),
                Ok(n) => self.seen.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(e) => panic!("console read: {e}"),
            }
        }
    }

    /// Blocks until the console's other end (QEMU) closes, up to `timeout`.
    pub fn wait_closed(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            match self.stream.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(_) => return true,
            }
        }
        false
    }
}

/// Whether `pid` is a live (non-zombie) process.
pub fn process_alive(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => false,
    }
}

/// The inode of the network namespace a process holds open by fd (kvci's supervisor keeps its
/// cluster's namespace that way), if any other than its own.
pub fn held_netns(pid: u64) -> Option<String> {
    let own = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()?;
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .find(|t| t.to_string_lossy().starts_with("net:[") && *t != own)
        .map(|t| t.to_string_lossy().into_owned())
}

/// Whether any process still has the network namespace `ns` (as `net:[inode]`) as its own or
/// open as a file.
pub fn netns_in_use(ns: &str) -> bool {
    let Ok(procs) = std::fs::read_dir("/proc") else { return false };
    procs.filter_map(Result::ok).filter(|p| p.file_name().to_string_lossy().parse::<u32>().is_ok()).any(|p| {
        let own = std::fs::read_link(p.path().join("ns/net")).map(|t| t.to_string_lossy() == ns).unwrap_or(false);
        own || std::fs::read_dir(p.path().join("fd"))
            .map(|fds| fds.filter_map(Result::ok).any(|f| std::fs::read_link(f.path()).map(|t| t.to_string_lossy() == ns).unwrap_or(false)))
            .unwrap_or(false)
    })
}

/// `ip -o link` of the host namespace, names only.
pub fn host_links() -> Vec<String> {
    let out = Command::new("ip").args(["-o", "link"]).output().expect("ip");
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(':').nth(1).map(|s| s.trim().to_string()))
        .collect();
    v.sort();
    v
}

/// The host port of a named forward from `status`.
pub fn host_port(status: &serde_json::Value, name: &str) -> u16 {
    status["ports"].as_array().unwrap().iter().find(|p| p["name"] == name).unwrap()["host_port"].as_u64().unwrap() as u16
}

/// Reads the SSH banner from 127.0.0.1:`port`.
pub fn ssh_banner(port: u16) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("forwarded port answers");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// The egress helpers (slirp4netns) that are children of `supervisor`.
pub fn helpers_of(supervisor: u64) -> Vec<u64> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let after = stat.rsplit(')').next().unwrap_or("");
            let comm_ok = stat.contains("(slirp4netns)");
            comm_ok && after.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()) == Some(supervisor)
        })
        .collect()
}

/// Copies `tiny` (built in the shared store first if needed) into a fresh store at `data`: the
/// layer and its name, so a test with a data directory of its own need not build it again.
/// Returns the layer id.
pub fn copy_tiny_into(data: &Path) -> String {
    let out = run(&["image", "build", "tiny"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let shared = data_dir().join("images");
    let manifest = shared.join("manifests/tiny:latest.json");
    let id = serde_json::from_slice::<serde_json::Value>(&std::fs::read(&manifest).unwrap()).unwrap()["id"].as_str().unwrap().to_string();
    let layer = data.join("images/layers").join(&id);
    std::fs::create_dir_all(&layer).unwrap();
    std::fs::create_dir_all(data.join("images/manifests")).unwrap();
    for e in std::fs::read_dir(shared.join("layers").join(&id)).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), layer.join(e.file_name())).unwrap();
    }
    std::fs::copy(&manifest, data.join("images/manifests/tiny:latest.json")).unwrap();
    id
}

/// Processes whose command line mentions `dir` (a cluster's QEMUs and anything else of it).
pub fn processes_of(dir: &Path) -> Vec<u64> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .filter(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let dir = dir.as_os_str().as_encoded_bytes();
            cmd.windows(dir.len()).any(|w| w == dir)
        })
        .collect()
}

/// Waits until a shared lock on `lock` can be taken (its owner, a cluster's supervisor, is gone),
/// for at most `limit`: `Ok(true)` then.
pub fn lock_freed_within(lock: PathBuf, limit: Duration) -> Result<bool, std::sync::mpsc::RecvTimeoutError> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let f = std::fs::File::open(&lock).unwrap();
        let _ = tx.send(nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockShared).is_ok());
    });
    rx.recv_timeout(limit)
}

/// Gives processes of `dir` that die with their killed parent (PR_SET_PDEATHSIG) up to 5 s to
/// go; returns those still there.
pub fn processes_left_of(dir: &Path) -> Vec<u64> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !processes_of(dir).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    processes_of(dir)
}
