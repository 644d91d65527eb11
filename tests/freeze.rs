//! Frozen RAM with real guests: freeze a running cluster, resume it, and check what survives.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{kvci, run, stderr, TestCluster};

fn ssh(cluster: &str, node: &str, cmd: &[&str]) -> std::process::Output {
    let mut args = vec!["vm", "ssh", "--name", cluster, node, "--"];
    args.extend_from_slice(cmd);
    run(&args)
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn freeze(cluster: &str, to: &str, keep_running: bool) {
    // Images from an earlier run of the tests stay in the shared store: replace them.
    let _ = run(&["image", "rm", to]);
    let mut args = vec!["vm", "freeze", "--name", cluster, "--to", to];
    if keep_running {
        args.push("--keep-running");
    }
    let out = run(&args);
    assert!(out.status.success(), "freeze failed: {}", stderr(&out));
}

/// The guest clock, read over ssh with `date FORMAT`, is within a second of the host's.
fn assert_clock_is_now(cluster: &str, node: &str, format: &str) {
    let now = || SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
    let before = now();
    let guest: f64 = stdout(&ssh(cluster, node, &["date", format])).parse().unwrap();
    let after = now();
    // The guest read its clock somewhere between the two host readings; busybox's whole
    // seconds (tiny) cost up to one more.
    let slack = if format.contains("%N") { 1.0 } else { 2.0 };
    assert!(guest > before - slack && guest < after + slack, "{node}: guest clock {guest} vs host {before}..{after}");
}

fn build(image: &str) {
    let out = kvci().args(["image", "build", image, "--accel", "tcg"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn frozen_debian_cluster_resumes_with_its_files_ssh_and_a_correct_clock() {
    build("debian-12");
    let c = TestCluster::up("it-fz-deb", &["--image", "debian-12", "--nodes", "2"]);
    let out = ssh("it-fz-deb", "node01", &["echo kept-across-freeze > /root/frozen.txt && sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    freeze("it-fz-deb", "it-fz-deb", false);
    assert!(!c.dir().exists(), "freeze without --keep-running takes the cluster down");

    let r = TestCluster::up("it-fz-deb2", &["--image", "it-fz-deb"]);
    assert_eq!(stdout(&ssh("it-fz-deb2", "node01", &["cat", "/root/frozen.txt"])), "kept-across-freeze");
    assert_eq!(stdout(&ssh("it-fz-deb2", "node02", &["hostname"])), "node02");
    assert_clock_is_now("it-fz-deb2", "node01", "+%s.%N");
    drop(r);
}

#[test]
fn frozen_etcd_cluster_is_healthy_after_resume_without_restarting_etcd() {
    build("etcd");
    let c = TestCluster::up("it-fz-etcd", &["--image", "etcd"]);
    let pid = |cluster: &str, node: &str| stdout(&ssh(cluster, node, &["systemctl", "show", "-p", "MainPID", "--value", "etcd"]));
    let before: Vec<String> = ["node01", "node02", "node03"].iter().map(|n| pid("it-fz-etcd", n)).collect();
    freeze("it-fz-etcd", "it-fz-etcd", false);
    drop(c);
    let r = TestCluster::up("it-fz-etcd2", &["--image", "it-fz-etcd"]);
    let health = ssh("it-fz-etcd2", "node01", &["etcdctl", "--endpoints", "http://node01:2379", "endpoint", "health", "--cluster"]);
    let text = stdout(&health) + &stderr(&health);
    assert_eq!(text.matches("is healthy").count(), 3, "{text}");
    let after: Vec<String> = ["node01", "node02", "node03"].iter().map(|n| pid("it-fz-etcd2", n)).collect();
    assert_eq!(before, after, "etcd was restarted by the resume");
    drop(r);
}

#[test]
fn one_frozen_image_resumes_twice_in_a_row_and_twice_at_once() {
    let c = TestCluster::up("it-fz-tiny", &["--nodes", "2"]);
    assert!(ssh("it-fz-tiny", "node01", &["echo 1 > /root/counter; sync"]).status.success());
    freeze("it-fz-tiny", "it-fz-tiny", true);
    // --keep-running: the original goes on.
    assert_eq!(stdout(&ssh("it-fz-tiny", "node01", &["cat", "/root/counter"])), "1");
    drop(c);

    for round in 0..2 {
        let r = TestCluster::up("it-fz-row", &["--image", "it-fz-tiny"]);
        // Each resume starts from the frozen disk, not from the previous run's changes.
        assert_eq!(stdout(&ssh("it-fz-row", "node01", &["cat", "/root/counter"])), "1", "round {round}");
        assert_clock_is_now("it-fz-row", "node02", "+%s");
        assert!(ssh("it-fz-row", "node01", &["echo 2 > /root/counter"]).status.success());
        drop(r);
    }
    let a = TestCluster::up("it-fz-a", &["--image", "it-fz-tiny"]);
    let b = TestCluster::up("it-fz-b", &["--image", "it-fz-tiny"]);
    assert_eq!(stdout(&ssh("it-fz-a", "node02", &["hostname"])), "node02");
    assert_eq!(stdout(&ssh("it-fz-b", "node01", &["cat", "/root/counter"])), "1");
    let refused = run(&["vm", "up", "--name", "it-fz-c", "--image", "it-fz-tiny", "--nodes", "3"]);
    assert!(stderr(&refused).contains("--nodes must be 2"), "{}", stderr(&refused));
    drop((a, b));
}

#[test]
fn truncated_state_file_is_a_clear_error() {
    let c = TestCluster::up("it-fz-trunc", &[]);
    freeze("it-fz-trunc", "it-fz-trunc", false);
    drop(c);
    let m = kvci().args(["image", "inspect", "it-fz-trunc"]).output().unwrap();
    let m: serde_json::Value = serde_json::from_slice(&m.stdout).unwrap();
    let state = common::data_dir().join("images/layers").join(m["id"].as_str().unwrap()).join("node01.state");
    let len = std::fs::metadata(&state).unwrap().len();
    std::fs::set_permissions(&state, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    std::fs::OpenOptions::new().write(true).open(&state).unwrap().set_len(len / 3).unwrap();

    let out = run(&["vm", "up", "--name", "it-fz-trunc2", "--accel", "tcg", "--image", "it-fz-trunc"]);
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(err.contains("cannot resume") && err.contains("node01.state"), "{err}");
    assert!(!common::data_dir().join("clusters/it-fz-trunc2").exists());
}
