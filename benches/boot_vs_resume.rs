//! Benchmark: cold boot to ssh-ready against resume of a frozen cluster to ssh-ready, same
//! image, one run, for `tiny`, `debian-12` and a 3-node `etcd` cluster. Prints both times and
//! the ratio. Goals: ≥ 20× for debian-12, a 3-node resume under 2 s.
//!
//! `cargo bench --bench boot_vs_resume` (`KVCI_BENCH_IMAGES=tiny,debian-12,etcd` to choose).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn kvci(data: &Path, args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_kvci")).arg("--data-dir").arg(data).args(args).output().expect("kvci");
    assert!(out.status.success(), "kvci {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

fn timed(data: &Path, args: &[&str]) -> Duration {
    let t = Instant::now();
    kvci(data, args);
    t.elapsed()
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return; // only under `cargo bench`
    }
    let data: PathBuf = std::env::var_os("KVCI_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kvci-bench-data"));
    let images = std::env::var("KVCI_BENCH_IMAGES").unwrap_or_else(|_| "tiny,debian-12,etcd".into());
    for image in images.split(',') {
        kvci(&data, &["image", "build", image, "--accel", "tcg"]);
        let _ = Command::new(env!("CARGO_BIN_EXE_kvci")).arg("--data-dir").arg(&data).args(["vm", "down", "--name", "bench-rs"]).output();
        // Cold: boot to ready (beacon, lease, sshd; up hooks for etcd).
        let cold = timed(&data, &["vm", "up", "--name", "bench-rs", "--image", image, "--accel", "tcg"]);
        let frozen = format!("bench-frozen-{image}");
        kvci(&data, &["vm", "freeze", "--name", "bench-rs", "--to", &frozen]);
        // Resume: the same cluster, from its saved RAM, to ssh-ready with fix-ups done.
        let resume = timed(&data, &["vm", "up", "--name", "bench-rs", "--image", &frozen, "--accel", "tcg"]);
        kvci(&data, &["vm", "down", "--name", "bench-rs", "--timeout", "5"]);
        kvci(&data, &["image", "rm", &frozen]);
        println!(
            "{image}: cold boot {:.2}s, resume {:.2}s, ratio {:.1}x",
            cold.as_secs_f64(),
            resume.as_secs_f64(),
            cold.as_secs_f64() / resume.as_secs_f64()
        );
    }
    kvci(&data, &["image", "prune"]);
}
