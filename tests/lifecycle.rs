//! The lifecycle under contention and faults (issue 13): one owner per cluster name.

mod common;

use common::{kvci, process_alive, run, stderr, TestCluster};

/// Two `vm up --name X` started together: exactly one runs X, the other says so, and the name
/// is reusable after `down`. Before the lock moved out of the cluster directory (which `up`
/// removes and re-creates), both could win.
#[test]
fn two_ups_of_one_name_at_once_exactly_one_wins() {
    let name = "it-race";
    let _ = run(&["vm", "down", "--name", name]);
    let spawn = || kvci().args(["vm", "up", "--name", name, "--accel", "tcg"]).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let c = TestCluster { name: name.into() };
    let wins = [&a, &b].iter().filter(|o| o.status.success()).count();
    assert_eq!(wins, 1, "first:\n{}\nsecond:\n{}", stderr(&a), stderr(&b));
    let loser = if a.status.success() { &b } else { &a };
    assert!(stderr(loser).contains("already running or being started"), "{}", stderr(loser));

    // The winner's cluster is whole: one node, running, its QEMU alive.
    let status = c.status();
    let nodes = status["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0]["state"], "running");
    let pid = nodes[0]["pid"].as_u64().unwrap();
    assert!(process_alive(pid));
    assert!(c.down().status.success());
    assert!(!process_alive(pid));

    // The name is free again (the lock file stays, unheld).
    let again = TestCluster::up(name, &[]);
    assert_eq!(again.status()["nodes"][0]["state"], "running");
}
