//! Benchmark: a 3-node stand-in kubevirtci cluster (tests/common/kubevirtci.rs: Debian laid out
//! like kubevirtci's published images) brought up cold — boot, leases, login with the image's
//! key, root-key step, gocli's `run` steps as up hooks — against a resume of the same cluster
//! frozen right after, in one run. `cargo bench --bench kubevirtci_resume` (image store:
//! `KVCI_TEST_DATA_DIR`, where the stand-in's Debian base is cached). Both figures are `vm up`
//! from start to return, TCG, 1 GiB and 1 vCPU per node.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::kubevirtci::{self, StandinOptions};
use common::run;

const IMAGE: &str = "bench-standin";
const FROZEN: &str = "bench-standin-frozen";

/// Takes the cluster down even when the bench panics.
struct Down(&'static str);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = run(&["vm", "down", "--name", self.0, "--timeout", "5"]);
    }
}

fn timed_up(name: &'static str, image: &str) -> (Duration, Down) {
    let t = Instant::now();
    let out = run(&["vm", "up", "--name", name, "--image", image, "--nodes", "3", "--memory", "1G", "--cpus", "1", "--accel", "tcg"]);
    let took = t.elapsed();
    let guard = Down(name);
    assert!(out.status.success(), "vm up {image}: {}", common::stderr(&out));
    (took, guard)
}

fn main() {
    let work = tempfile::tempdir().unwrap();
    let standin = kubevirtci::build(work.path(), &StandinOptions::default());
    for name in [IMAGE, FROZEN] {
        let _ = run(&["image", "rm", name]);
    }
    let import = run(&["image", "import", standin.layout.to_str().unwrap(), "--name", IMAGE, "--skip-unsafe-links"]);
    assert!(import.status.success(), "{}", common::stderr(&import));

    let (cold, guard) = timed_up("bench-kv", IMAGE);
    let freeze = run(&["vm", "freeze", "--name", "bench-kv", "--to", FROZEN]);
    assert!(freeze.status.success(), "{}", common::stderr(&freeze));
    drop(guard);
    let (resume, guard) = timed_up("bench-kv2", FROZEN);
    drop(guard);
    let _ = run(&["image", "rm", FROZEN]);

    println!("3-node stand-in kubevirtci cluster, TCG, {} cores", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0));
    println!("  cold up (boot, leases, login, root key, gocli's steps): {:>7.1} s", cold.as_secs_f64());
    println!("  resume of the same cluster frozen:                      {:>7.1} s", resume.as_secs_f64());
    println!("  ratio cold/resume: {:.1}x", cold.as_secs_f64() / resume.as_secs_f64());
}
