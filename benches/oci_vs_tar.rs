//! Benchmark: `kvci image export --oci` + `kvci image import` (into an empty store) of an image
//! whose chain is `tiny` plus a 1 GiB layer of incompressible data, against
//! `tar -cf - FILES | sha256sum` of the same layer files. Prints both times, the ratio
//! (tar time / kvci time; goal ≥ 0.8) and the peak RSS of each command.
//!
//! `cargo bench --bench oci_vs_tar` (`KVCI_BENCH_OCI_MIB` for another size, default 1024).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use kvci::image::store::{Manifest, Store};

const ROUNDS: usize = 3;

fn kvci(data: &Path, args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_kvci")).arg("--data-dir").arg(data).args(args).output().expect("kvci");
    assert!(out.status.success(), "kvci {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// Runs `cmd` through this binary (`--rss-of CMD…`), so the peak RSS it reports is that
/// command's alone (its process tree's largest member).
fn measured(cmd: &[&str]) -> (Duration, u64) {
    let t = Instant::now();
    let out = Command::new(std::env::current_exe().unwrap()).arg("--rss-of").args(cmd).output().expect("re-running the bench");
    let took = t.elapsed();
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    let kib = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0);
    (took, kib)
}

/// `--rss-of CMD…`: runs CMD, prints the peak RSS (KiB) of it and its descendants.
fn rss_of(cmd: &[String]) -> ! {
    let status = Command::new(&cmd[0]).args(&cmd[1..]).stdout(std::process::Stdio::null()).status().expect("running the measured command");
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN).expect("getrusage");
    println!("{}", usage.max_rss());
    std::process::exit(if status.success() { 0 } else { 1 });
}

/// An image `bench-oci`: tiny's disk under a 1 GiB+ overlay filled with random bytes.
fn big_image(data: &Path, mib: u64) -> (Store, Manifest) {
    kvci(data, &["image", "build", "tiny"]);
    let store = Store::open(&data.join("images")).unwrap();
    if let Some(img) = store.get(&kvci::image::name::ImageName::parse("bench-oci").unwrap()).unwrap() {
        return (store, img.manifest);
    }
    let tiny = store.get(&kvci::image::name::ImageName::parse("tiny").unwrap()).unwrap().unwrap();
    let staging = store.staging().unwrap();
    let random = staging.path().join("random");
    // Incompressible and the same on every run.
    let mut rng = fastrand::Rng::with_seed(0x9e37_79b9_7f4a_7c15);
    let mut buf = vec![0u8; (mib << 20) as usize];
    rng.fill(&mut buf);
    std::fs::write(&random, &buf).unwrap();
    drop(buf);
    let disk = staging.path().join("disk.qcow2");
    let size = format!("{}M", mib + 256);
    let st = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
        .arg(tiny.disk())
        .arg(&disk)
        .arg(&size)
        .status()
        .unwrap();
    assert!(st.success());
    let write = format!("write -q -s {} 0 {mib}M", random.display());
    let st = Command::new("qemu-io").args(["-f", "qcow2", "-c", &write]).arg(&disk).status().unwrap();
    assert!(st.success(), "qemu-io");
    std::fs::remove_file(&random).unwrap();
    let mut m = Manifest::root("bench-oci", "bench-oci-1g", tiny.manifest.append.clone(), 512, 1);
    m.parent = Some(tiny.manifest.id.clone());
    m.boot_layer = Some(tiny.manifest.id.clone());
    let _lock = store.lock().unwrap();
    let img = store.commit_staged(&store.lock().unwrap(), staging, m).unwrap();
    (store, img.manifest)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--rss-of") {
        rss_of(&args[i + 1..]);
    }
    if !args.iter().any(|a| a == "--bench") {
        return; // only under `cargo bench`
    }
    let data: PathBuf = std::env::var_os("KVCI_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kvci-bench-data"));
    let mib: u64 = std::env::var("KVCI_BENCH_OCI_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(1024);
    let (store, image) = big_image(&data, mib);
    let layers = store.root().join("layers");
    let ids = [image.parent.clone().unwrap(), image.id.clone()];
    let bytes: u64 = ids.iter().flat_map(|id| std::fs::read_dir(layers.join(id)).unwrap()).map(|e| e.unwrap().metadata().unwrap().len()).sum();
    println!("image bench-oci: tiny + {mib} MiB random layer, {} MiB in the layer files", bytes >> 20);

    let work = tempfile::tempdir_in(&data).unwrap();
    let exe = env!("CARGO_BIN_EXE_kvci");
    let data_s = data.to_str().unwrap();
    let tar_cmd = format!("tar -cf - -C {} {} {} | sha256sum", layers.display(), ids[0], ids[1]);
    let (mut tar_times, mut kvci_times) = (Vec::new(), Vec::new());
    let (mut rss_tar, mut rss_export, mut rss_import) = (0u64, 0u64, 0u64);
    for round in 0..ROUNDS {
        // Interleaved, page cache warm for both (the first tar run warms it).
        let (t, rss) = measured(&["sh", "-c", &tar_cmd]);
        tar_times.push(t);
        rss_tar = rss_tar.max(rss);
        let dir = work.path().join(format!("oci-{round}"));
        let other = work.path().join(format!("store-{round}"));
        let (e, rss) = measured(&[exe, "--data-dir", data_s, "image", "export", "bench-oci", "--oci", dir.to_str().unwrap()]);
        rss_export = rss_export.max(rss);
        let (i, rss) = measured(&[exe, "--data-dir", other.to_str().unwrap(), "image", "import", dir.to_str().unwrap()]);
        rss_import = rss_import.max(rss);
        kvci_times.push(e + i);
        println!(
            "round {}: tar|sha256sum {:.2}s; kvci export {:.2}s + import {:.2}s = {:.2}s",
            round + 1,
            t.as_secs_f64(),
            e.as_secs_f64(),
            i.as_secs_f64(),
            (e + i).as_secs_f64()
        );
        std::fs::remove_dir_all(&dir).unwrap();
        let _ = Command::new("chmod").arg("-R").arg("u+w").arg(&other).status();
        std::fs::remove_dir_all(&other).unwrap();
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2].as_secs_f64()
    };
    let (tar, kvci) = (median(&mut tar_times), median(&mut kvci_times));
    println!("median: tar|sha256sum {tar:.2}s, kvci export+import {kvci:.2}s, ratio {:.2} (goal >= 0.8)", tar / kvci);
    println!("peak RSS: tar|sha256sum {} MiB, export {} MiB, import {} MiB", rss_tar >> 10, rss_export >> 10, rss_import >> 10);
    push_pull(&data, work.path());
}

/// `image push` to a cluster registry and `image pull` back into an empty store: times and peak
/// RSS (goal: under 100 MiB each, whatever the image size).
fn push_pull(data: &Path, work: &Path) {
    let exe = env!("CARGO_BIN_EXE_kvci");
    let data_s = data.to_str().unwrap();
    let _ = kvci(data, &["vm", "down", "--name", "bench-reg"]);
    let _ = std::fs::remove_dir_all(data.join("registries/bench-reg"));
    kvci(data, &["vm", "up", "--name", "bench-reg", "--accel", "tcg"]);
    let port = String::from_utf8_lossy(&kvci(data, &["vm", "ports", "--name", "bench-reg", "registry"]).stdout).trim().to_string();
    let reference = format!("127.0.0.1:{port}/bench/oci:v1");
    let (push, rss_push) = measured(&[exe, "--data-dir", data_s, "image", "push", "bench-oci", &reference]);
    let other = work.join("pull-store");
    let (pull, rss_pull) = measured(&[exe, "--data-dir", other.to_str().unwrap(), "image", "pull", &reference]);
    kvci(data, &["vm", "down", "--name", "bench-reg"]);
    let _ = std::fs::remove_dir_all(data.join("registries/bench-reg"));
    println!(
        "push to the cluster registry {:.2}s (peak RSS {} MiB), pull into an empty store {:.2}s (peak RSS {} MiB); goal < 100 MiB",
        push.as_secs_f64(),
        rss_push >> 10,
        pull.as_secs_f64(),
        rss_pull >> 10
    );
}
