//! Requests that cannot work fail fast with a clear message and leave nothing behind.

mod common;

use common::{data_dir, run, stderr};

fn refused(args: &[&str], expect: &str) {
    let out = run(args);
    let err = stderr(&out);
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(err.contains(expect), "{args:?}: expected {expect:?} in:\n{err}");
}

#[test]
fn zero_nodes_is_refused() {
    refused(&["vm", "up", "--name", "bad-nodes", "--nodes", "0"], "--nodes 0 is out of range");
    assert!(!data_dir().join("clusters/bad-nodes").exists());
}

#[test]
fn absurd_memory_is_refused() {
    refused(&["vm", "up", "--name", "bad-mem", "--memory", "64T"], "more than this host");
    refused(&["vm", "up", "--name", "bad-mem", "--memory", "lots"], "cannot read memory size");
    refused(&["vm", "up", "--name", "bad-mem", "--memory", "16M"], "too small");
    assert!(!data_dir().join("clusters/bad-mem").exists());
}

#[test]
fn unknown_image_is_refused() {
    refused(&["vm", "up", "--name", "bad-img", "--image", "no-such-image"], "unknown image no-such-image:latest");
    assert!(!data_dir().join("clusters/bad-img").exists());
}

#[test]
fn bad_name_is_refused() {
    refused(&["vm", "up", "--name", "../etc"], "invalid cluster name");
}

#[test]
fn missing_qemu_names_the_package() {
    let out = common::kvci().env("KVCI_QEMU", "/nonexistent/qemu").args(["vm", "up", "--name", "bad-qemu"]).output().unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("qemu-system-x86"), "{}", stderr(&out));
    assert!(!data_dir().join("clusters/bad-qemu").exists());
}

#[test]
fn kvm_where_it_cannot_run_guests_is_an_error() {
    let facts = kvci::accel::KvmFacts::probe();
    let out = run(&["vm", "up", "--name", "bad-kvm", "--accel", "kvm"]);
    match kvci::accel::decide(kvci::accel::AccelChoice::Kvm, &facts) {
        Err(_) => {
            assert!(!out.status.success());
            assert!(stderr(&out).contains("--accel tcg"), "{}", stderr(&out));
        }
        // On a host with working KVM this just starts a cluster; take it down again.
        Ok(_) => {
            let _ = run(&["vm", "down", "--name", "bad-kvm"]);
        }
    }
    assert!(!data_dir().join("clusters/bad-kvm").exists() || facts.cpu_has_virt);
}

#[test]
fn status_of_unknown_cluster_is_an_error() {
    refused(&["vm", "status", "--name", "never-was"], "not running");
}

#[test]
fn down_of_unknown_cluster_is_fine() {
    let out = run(&["vm", "down", "--name", "never-was"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn clashing_or_tiny_subnet_is_refused() {
    refused(&["vm", "up", "--name", "bad-net", "--subnet", "127.0.0.0/24"], "clashes with reserved");
    refused(&["vm", "up", "--name", "bad-net", "--subnet", "10.0.0.0/28"], "too small");
    refused(&["vm", "up", "--name", "bad-net", "--subnet", "nonsense"], "cannot read subnet");
    assert!(!data_dir().join("clusters/bad-net").exists());
}

#[test]
fn the_same_fixed_port_twice_is_refused() {
    refused(&["vm", "up", "--name", "bad-ports", "--ssh-port", "40123", "--k8s-port", "40123"], "given for two forwards");
}
