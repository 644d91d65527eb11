//! Every shell script kvci ships (provider phases and up hooks, the tiny image's init scripts,
//! the initramfs) passes `shellcheck` as POSIX sh — including the k8s provider, which cannot be
//! built offline, and the kubevirtci stand-in's guest scripts (tests/common/kubevirtci).

use std::path::{Path, PathBuf};
use std::process::Command;

fn scripts(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            scripts(&p, out);
        } else if std::fs::read(&p).map(|b| b.starts_with(b"#!/bin/sh") || b.starts_with(b"#!/bin/busybox sh")).unwrap_or(false) {
            out.push(p);
        }
    }
}

#[test]
fn shipped_scripts_pass_shellcheck() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    scripts(&root.join("images"), &mut files);
    scripts(&root.join("firmware"), &mut files);
    scripts(&root.join("tests/common/kubevirtci"), &mut files);
    assert!(files.len() >= 10, "found only {files:?}");
    assert!(files.iter().any(|f| f.ends_with("k8s-1.34/up/init.sh")));
    assert!(files.iter().any(|f| f.ends_with("kubevirtci/k8s/usr/bin/kubeadm")));
    let out = Command::new("shellcheck")
        .args(["--shell=sh", "--severity=warning"])
        .args(&files)
        .output()
        .expect("shellcheck (Debian package `shellcheck`, installed by scripts/install-deps.sh)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

/// kvci's `cluster-up/` folder (bash, like kubevirtci's), with the files it sources followed.
#[test]
fn cluster_up_scripts_pass_shellcheck_as_bash() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("images/kubevirtci/cluster-up");
    let mut files = Vec::new();
    for sub in ["", "hack", "cluster"] {
        for e in std::fs::read_dir(dir.join(sub)).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            // cluster/provider.sh.in is checked where it is written (tests/cluster_up.rs).
            if name.ends_with(".sh") {
                files.push(Path::new(sub).join(name));
            }
        }
    }
    assert!(files.len() >= 12, "found only {files:?}");
    let out = Command::new("shellcheck").args(["-x", "--shell=bash"]).args(&files).current_dir(&dir).output().expect("shellcheck");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}
