//! `kvci vm up/status/down` with real QEMU: boot, IOMMU, overlays, clean-up, crashes.

mod common;

use std::time::Duration;

use common::{process_alive, run, stderr, Console, TestCluster};
use sha2::{Digest, Sha256};

fn sha256(path: &std::path::Path) -> String {
    format!("{:x}", Sha256::digest(std::fs::read(path).unwrap()))
}

fn qemu_img_backing(overlay: &std::path::Path) -> String {
    let out = std::process::Command::new("qemu-img")
        .args(["info", "-U", "--output=json"])
        .arg(overlay)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["backing-filename"].as_str().unwrap_or_default().to_string()
}

#[test]
fn two_nodes_boot_on_overlays_with_the_iommu_and_down_leaves_nothing() {
    let c = TestCluster::up("it-life", &["--nodes", "2"]);

    // QMP (query-status, through the supervisor) says both run.
    let status = c.status();
    assert_eq!(status["name"], "it-life");
    let nodes = status["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2);
    let mut pids = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        assert_eq!(n["name"], format!("node0{}", i + 1));
        assert_eq!(n["state"], "running");
        assert_eq!(n["qemu_status"], "running");
        pids.push(n["pid"].as_u64().unwrap());
    }
    assert!(pids.iter().all(|&p| process_alive(p)));

    // The guest kernel found the emulated IOMMU with interrupt remapping.
    let log = std::fs::read_to_string(c.dir().join("node01/serial.log")).unwrap();
    assert!(log.contains("DMAR: IOMMU enabled"), "no IOMMU in the guest log:\n{log}");
    assert!(log.contains("DMAR-IR: Enabled IRQ remapping"), "no IRQ remapping in the guest log");

    // Each node boots from its own overlay whose backing file is the read-only base.
    let images = common::data_dir().join("images");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(images.join("manifests/tiny:latest.json")).unwrap()).unwrap();
    let base = images.join("layers").join(manifest["id"].as_str().unwrap()).join("disk.qcow2");
    for node in ["node01", "node02"] {
        assert_eq!(qemu_img_backing(&c.dir().join(node).join("disk.qcow2")), base.to_str().unwrap());
    }
    assert!(base.metadata().unwrap().permissions().readonly());

    // `logs --follow` streams what the console prints from now on, and ends with the cluster.
    let mut follow = common::kvci()
        .args(["vm", "logs", "--follow", "--tail", "1", "--name", "it-life", "node01"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut follow_out = follow.stdout.take().unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut follow_out, &mut text).unwrap();
        let status = follow.wait().unwrap();
        let _ = done_tx.send((text, status));
    });

    // A guest write lands in node01's overlay, not in the base (nor in node02's overlay).
    let base_before = sha256(&base);
    let marker = format!("kvci-guest-write-{}", std::process::id());
    let mut console = Console::attach(&c.dir(), "node01");
    console.run(
        &format!("printf '%s%s' {marker} {marker} > /root/marker && sync && echo WROTE-$((40+2))"),
        "WROTE-42",
        Duration::from_secs(60),
    );
    drop(console);
    let needle = format!("{marker}{marker}");
    let contains = |p: &std::path::Path| std::fs::read(p).unwrap().windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(contains(&c.dir().join("node01/disk.qcow2")), "the write is not in node01's overlay");
    assert!(!contains(&c.dir().join("node02/disk.qcow2")));
    assert!(!contains(&base));
    assert_eq!(sha256(&base), base_before, "the base image changed");

    // The same name cannot be brought up twice.
    let again = run(&["vm", "up", "--name", "it-life", "--accel", "tcg"]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("already running"), "{}", stderr(&again));

    // The image of a running cluster cannot be removed from under it.
    let rm = run(&["image", "rm", "tiny"]);
    assert!(!rm.status.success());
    // (Other tests' clusters may use it too: all are named.)
    assert!(stderr(&rm).contains("used by running cluster(s)") && stderr(&rm).contains("\"it-life\""), "{}", stderr(&rm));

    // down: graceful, then no QEMU, no overlay, no state left; and down again is fine.
    let out = c.down();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("node01: graceful"), "{}", stderr(&out));
    for p in pids {
        assert!(!process_alive(p), "QEMU {p} survived down");
    }
    assert!(!c.dir().exists(), "cluster directory left behind");
    let (text, status) = done_rx.recv_timeout(Duration::from_secs(30)).expect("`vm logs --follow` did not end with the cluster");
    assert!(status.success());
    assert!(text.contains("WROTE-42"), "--follow missed the console output:\n{text}");
    let out = c.down();
    assert!(out.status.success(), "second down failed: {}", stderr(&out));
}

#[test]
fn killed_supervisor_takes_its_qemu_along_and_down_cleans_up() {
    let c = TestCluster::up("it-kill", &[]);
    let status = c.status();
    let supervisor = status["supervisor_pid"].as_u64().unwrap();
    let qemu = status["nodes"][0]["pid"].as_u64().unwrap();
    let mut console = Console::attach(&c.dir(), "node01");

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(supervisor as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    // QEMU dies with its supervisor (PR_SET_PDEATHSIG): its console closes.
    assert!(console.wait_closed(Duration::from_secs(20)), "QEMU kept its console open");
    let reaped = (0..200).any(|_| {
        let gone = !process_alive(qemu);
        if !gone {
            std::thread::sleep(Duration::from_millis(50));
        }
        gone
    });
    assert!(reaped, "QEMU {qemu} outlived its supervisor");

    let st = run(&["vm", "status", "--name", "it-kill"]);
    assert!(!st.status.success());
    assert!(stderr(&st).contains("vm down"), "{}", stderr(&st));
    let out = c.down();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!c.dir().exists());
}

#[test]
fn qemu_dying_during_boot_is_reported_with_its_console_tail() {
    // A wrapper that boots the node with a root disk that does not exist: the initramfs gives up
    // and powers off, so QEMU exits before the node is ready.
    let dir = tempfile::tempdir().unwrap();
    let wrapper = dir.path().join("qemu-wrapper");
    let real = std::process::Command::new("sh").args(["-c", "command -v qemu-system-x86_64"]).output().unwrap();
    let real = String::from_utf8(real.stdout).unwrap();
    std::fs::write(&wrapper, format!("#!/bin/sh\nexec {} \"$@\" -append 'console=ttyS0 root=/dev/vdz panic=-1'\n", real.trim())).unwrap();
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    let out = common::kvci()
        .env("KVCI_QEMU", &wrapper)
        .args(["vm", "up", "--name", "it-crash", "--accel", "tcg", "--boot-timeout", "120"])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(err.contains("QEMU exited during boot"), "{err}");
    assert!(err.contains("kvci-initramfs: cannot mount root /dev/vdz"), "no console tail in:\n{err}");
    assert!(!common::data_dir().join("clusters/it-crash").exists(), "a failed up left files");
}
