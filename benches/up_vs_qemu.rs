//! Benchmark: `kvci vm up` of one `tiny` node to ready, against bare `qemu-system-x86_64` with
//! the same arguments to the same ready signal (the guest's beacon line), in one run.
//!
//! `cargo bench --bench up_vs_qemu` (rounds: `KVCI_BENCH_ROUNDS`, default 5). Prints each round,
//! the medians and the ratio. Goal: kvci adds under 10 %.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kvci::accel::{AccelChoice, Decision};
use kvci::cluster::layout::ClusterDir;
use kvci::cluster::plan::{plan, Launch};
use kvci::config::ClusterSpec;
use kvci::image::store::Store;
use kvci::paths::Dirs;
use kvci::qemu::cmdline::{node_args, Endpoint};

const NAME: &str = "bench";

fn kvci(data: &Path, args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_kvci")).arg("--data-dir").arg(data).args(args).output().expect("kvci");
    assert!(out.status.success(), "kvci {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// One `kvci vm up` to ready, timed; `down` afterwards is not.
fn kvci_round(data: &Path) -> Duration {
    let t = Instant::now();
    kvci(data, &["vm", "up", "--name", NAME, "--accel", "tcg"]);
    let took = t.elapsed();
    kvci(data, &["vm", "down", "--name", NAME, "--timeout", "1"]);
    took
}

/// Bare QEMU with kvci's own arguments (sockets by path instead of inherited fds), timed from
/// spawn to the beacon's ready line. The overlay is made before the clock starts.
fn bare_round(data: &Path, qemu: &Path) -> Duration {
    let dirs = Dirs::at(data);
    let image = Store::open(&dirs.images()).unwrap().get(&kvci::image::name::ImageName::parse("tiny").unwrap()).unwrap().expect("tiny is built");
    let launch = Launch {
        image_id: None,
        spec: ClusterSpec {
            name: "bare".into(),
            nodes: 1,
            image: "tiny".into(),
            memory_mib: image.manifest.memory_mib,
            cpus: image.manifest.cpus,
            accel: AccelChoice::Tcg,
            boot_timeout_secs: 300,
            subnet: kvci_net::topology::DEFAULT_SUBNET.into(),
            ports: Default::default(),
            dns_upstreams: vec![],
            registry_dir: None,
            stack: Default::default(),
            allow_host_loopback: false,
            shape: Default::default(),
        },
        accel: Decision { accel: kvci::accel::Accel::Tcg, reason: "bench".into() },
    };
    let work = tempfile::tempdir().unwrap();
    let cdir = ClusterDir::new(&Dirs::at(work.path()), "bare");
    let mut node = plan(&launch, &image, &cdir).unwrap().nodes.remove(0);
    // Bare QEMU without kvci's network: user-mode networking stands in, no ssh key.
    node.machine.nic = None;
    node.machine.authorized_keys = None;
    std::fs::create_dir_all(node.dir.root()).unwrap();
    kvci::disk::create_overlay(&node.base_disk, &node.dir.disk()).unwrap();
    node.machine.qmp = Endpoint::Path(node.dir.qmp_socket());
    node.machine.console = Endpoint::Path(node.dir.console_socket());
    node.machine.beacon = Endpoint::Path(node.dir.beacon_socket());
    let mut args = node_args(&node.machine);
    // The guest still takes a DHCP lease, from QEMU's user-mode network instead of kvci's.
    args.extend(["-netdev", "user,id=net0", "-device", "virtio-net-pci,netdev=net0,mac=52:55:00:d1:55:01"].map(String::from));

    let t = Instant::now();
    let mut child = Command::new(qemu).args(&args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    // Bare QEMU binds its own socket: poll for it every millisecond (generous to the baseline).
    let stream = loop {
        match UnixStream::connect(node.dir.beacon_socket()) {
            Ok(s) => break s,
            Err(_) => {
                assert!(child.try_wait().unwrap().is_none(), "bare QEMU exited");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    };
    let mut lines = BufReader::new(stream).lines();
    loop {
        let line = lines.next().expect("beacon closed").unwrap();
        if kvci::beacon::parse_line(line.as_bytes()).is_ok_and(|m| m.event == "ready") {
            break;
        }
    }
    let took = t.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    took
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks what to run; nothing here is a test.
    }
    let rounds: usize = std::env::var("KVCI_BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let data: PathBuf = std::env::var_os("KVCI_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kvci-bench-data"));
    let qemu = kvci::tools::QEMU.locate().expect("qemu-system-x86_64");
    kvci(&data, &["image", "build", "tiny"]);
    let _ = Command::new(env!("CARGO_BIN_EXE_kvci")).arg("--data-dir").arg(&data).args(["vm", "down", "--name", NAME]).output();

    // Interleaved, so drift in machine load hits both sides alike.
    let (mut k, mut b) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let bare = bare_round(&data, &qemu);
        let ours = kvci_round(&data);
        println!("round {round}: bare qemu {:.3}s  kvci vm up {:.3}s", bare.as_secs_f64(), ours.as_secs_f64());
        b.push(bare);
        k.push(ours);
    }
    let (mb, mk) = (median(&mut b), median(&mut k));
    let ratio = mk.as_secs_f64() / mb.as_secs_f64();
    println!("median over {rounds} rounds: bare qemu {:.3}s, kvci vm up {:.3}s", mb.as_secs_f64(), mk.as_secs_f64());
    println!("ratio kvci/bare = {ratio:.3} (kvci adds {:+.1} %; goal < 10 %)", (ratio - 1.0) * 100.0);
}
