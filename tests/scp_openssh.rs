//! Plain OpenSSH `scp` against the shipped images through `kvci vm ssh-config`: the SFTP protocol
//! (OpenSSH 9's default, served by the image's sftp-server) and the legacy one (`scp -O`, served
//! by the image's `scp`), on `tiny` (dropbear) and `debian-12` (OpenSSH's sshd).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::TestCluster;

/// Runs `cmd` to completion, killing it (and failing the test) if it takes longer than `limit`.
fn output_within(mut cmd: Command, limit: Duration) -> Output {
    let what = format!("{cmd:?}");
    let child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("OpenSSH client (Debian openssh-client)");
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("waiting for the OpenSSH client"),
        Err(_) => {
            // Still our unreaped child, so the pid is still its own.
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = waiter.join();
            panic!("{what} did not finish within {limit:?}");
        }
    }
}

/// `scp -F CONF -o BatchMode=yes [-O] ARGS…`.
fn scp(conf: &Path, legacy: bool, args: &[&Path]) -> Output {
    let mut cmd = Command::new("scp");
    cmd.arg("-F").arg(conf).args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=60"]);
    if legacy {
        cmd.arg("-O");
    }
    cmd.args(args);
    output_within(cmd, Duration::from_secs(120))
}

/// `ssh -F CONF node01 COMMAND`, its stdout.
fn ssh(conf: &Path, command: &str) -> String {
    let mut cmd = Command::new("ssh");
    cmd.arg("-F").arg(conf).args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=60", "node01", command]);
    let out = output_within(cmd, Duration::from_secs(120));
    assert!(out.status.success(), "ssh {command:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `kvci vm ssh-config` of `cluster` to `dir/ssh_config`.
fn ssh_config(cluster: &str, dir: &Path) -> PathBuf {
    let conf = dir.join("ssh_config");
    let cfg = common::run(&["vm", "ssh-config", "--name", cluster]);
    assert!(cfg.status.success(), "{}", common::stderr(&cfg));
    std::fs::write(&conf, &cfg.stdout).unwrap();
    conf
}

/// Uploads files to node01 and downloads them back with `scp` (SFTP, or the legacy protocol),
/// comparing bytes on the node and back home; then asks for a missing file.
fn copies_both_ways_and_reports_a_missing_file(conf: &Path, dir: &Path, legacy: bool) {
    let (tag, protocol) = if legacy { ("legacy", "legacy scp (-O)") } else { ("sftp", "SFTP (scp's default)") };
    let mut rng = fastrand::Rng::with_seed(0x5c9);
    let random: Vec<u8> = (0..300 * 1024 + 17).map(|_| rng.u8(..)).collect();
    let files: [(&str, Vec<u8>); 3] = [("small.txt", b"scp payload 1234\n".to_vec()), ("empty", Vec::new()), ("random.bin", random)];
    for (name, data) in &files {
        let local = dir.join(format!("{tag}-{name}"));
        std::fs::write(&local, data).unwrap();
        let remote = format!("node01:/root/{tag}-{name}");
        let out = scp(conf, legacy, &[&local, Path::new(&remote)]);
        assert!(out.status.success(), "{protocol} upload of {name} failed: {}", String::from_utf8_lossy(&out.stderr));
        // The node holds exactly the bytes sent.
        let sum = ssh(conf, &format!("sha256sum /root/{tag}-{name}"));
        assert_eq!(sum.split_whitespace().next(), Some(sha256_hex(data).as_str()), "{protocol} upload of {name}: {sum}");

        let back = dir.join(format!("{tag}-{name}.back"));
        let out = scp(conf, legacy, &[Path::new(&remote), &back]);
        assert!(out.status.success(), "{protocol} download of {name} failed: {}", String::from_utf8_lossy(&out.stderr));
        assert!(std::fs::read(&back).unwrap() == *data, "{protocol}: {name} came back different");
    }

    // A missing remote file: a non-zero exit, the path and the reason, and no local file.
    let missing = dir.join(format!("{tag}-missing"));
    let out = scp(conf, legacy, &[Path::new("node01:/root/no-such-file"), &missing]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{protocol}: copying a missing file succeeded");
    assert!(err.contains("/root/no-such-file") && err.contains("No such file"), "{protocol}: unclear error: {err}");
    assert!(!missing.exists(), "{protocol}: a missing file left {}", missing.display());
}

#[test]
fn openssh_scp_copies_to_and_from_a_tiny_node_and_reports_a_missing_file() {
    let c = TestCluster::up("it-scp", &[]);
    let tmp = tempfile::tempdir().unwrap();
    let conf = ssh_config(&c.name, tmp.path());
    copies_both_ways_and_reports_a_missing_file(&conf, tmp.path(), false);
    copies_both_ways_and_reports_a_missing_file(&conf, tmp.path(), true);
}

#[test]
fn openssh_scp_copies_to_and_from_a_debian_node_and_reports_a_missing_file() {
    let out = common::kvci().args(["image", "build", "debian-12", "--accel", "tcg"]).output().unwrap();
    assert!(out.status.success(), "{}", common::stderr(&out));
    let c = TestCluster::up("it-scp-deb", &["--image", "debian-12"]);
    let tmp = tempfile::tempdir().unwrap();
    let conf = ssh_config(&c.name, tmp.path());
    copies_both_ways_and_reports_a_missing_file(&conf, tmp.path(), false);
    copies_both_ways_and_reports_a_missing_file(&conf, tmp.path(), true);
}
