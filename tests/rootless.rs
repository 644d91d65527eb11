//! Rootless: the same cluster for an unprivileged user the test creates, with nothing changed in
//! the host's namespaces. (As root, the test makes the user and sets /dev/net/tun to Debian's
//! default mode 0666, restoring it afterwards.)

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output};
use std::time::Duration;

use common::{held_netns, host_links, netns_in_use, process_alive, ssh_banner, stderr};

const USER: &str = "kvci-rootless";

struct Rootless {
    uid: u32,
    gid: u32,
    home: String,
    tun_mode: u32,
}

impl Rootless {
    fn setup() -> Rootless {
        assert!(nix::unistd::geteuid().is_root(), "the rootless test sets up its user as root");
        if Command::new("id").arg(USER).output().map(|o| !o.status.success()).unwrap_or(true) {
            let out = Command::new("useradd").args(["-m", USER]).output().unwrap();
            assert!(out.status.success(), "useradd: {}", String::from_utf8_lossy(&out.stderr));
        }
        let id = |flag: &str| -> u32 {
            String::from_utf8(Command::new("id").args([flag, USER]).output().unwrap().stdout).unwrap().trim().parse().unwrap()
        };
        let tun_mode = std::fs::metadata("/dev/net/tun").unwrap().permissions().mode() & 0o7777;
        std::fs::set_permissions("/dev/net/tun", std::fs::Permissions::from_mode(0o666)).unwrap();
        Rootless { uid: id("-u"), gid: id("-g"), home: format!("/home/{USER}"), tun_mode }
    }

    fn kvci(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_kvci"))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", &self.home)
            .current_dir(&self.home)
            .uid(self.uid)
            .gid(self.gid)
            .output()
            .expect("kvci as the unprivileged user (is the binary readable by others?)")
    }

    fn status(&self, name: &str) -> serde_json::Value {
        let out = self.kvci(&["vm", "status", "--name", name, "--output", "json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

impl Drop for Rootless {
    fn drop(&mut self) {
        for name in ["rl-a", "rl-b"] {
            let _ = self.kvci(&["vm", "down", "--name", name, "--timeout", "5"]);
        }
        let _ = std::fs::set_permissions("/dev/net/tun", std::fs::Permissions::from_mode(self.tun_mode));
    }
}

fn netns_list() -> String {
    String::from_utf8_lossy(&Command::new("ip").args(["netns", "list"]).output().unwrap().stdout).into_owned()
}

#[test]
fn unprivileged_user_gets_the_same_cluster_and_the_host_is_untouched() {
    let outside = common::outside::Outside::new(41);
    let links = host_links();
    let netns = netns_list();
    let r = Rootless::setup();

    // Without access to /dev/net/tun the error says how to fix it, and nothing is left behind.
    std::fs::set_permissions("/dev/net/tun", std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = r.kvci(&["vm", "up", "--name", "rl-a"]);
    std::fs::set_permissions("/dev/net/tun", std::fs::Permissions::from_mode(0o666)).unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("chmod 0666 /dev/net/tun"), "{}", stderr(&out));
    assert!(!std::path::Path::new(&format!("{}/.local/share/kvci/clusters/rl-a", r.home)).exists());

    let out = r.kvci(&["vm", "up", "--name", "rl-a", "--nodes", "2"]);
    let err = stderr(&out);
    assert!(out.status.success(), "rootless vm up failed:\n{err}");
    // /dev/kvm is root-only here: auto says why it uses TCG and how to get KVM.
    assert!(err.contains("accelerator tcg"), "{err}");
    assert_eq!(host_links(), links, "a link appeared in the host namespace");
    assert_eq!(netns_list(), netns);
    let status = r.status("rl-a");
    assert!(std::path::Path::new(&format!("{}/.local/share/kvci/clusters/rl-a", r.home)).is_dir(), "state is in the user's XDG dir");

    // node01 pings node02 by name.
    let out = r.kvci(&["vm", "ssh", "--name", "rl-a", "node01", "--", "ping -4 -c 1 -W 5 node02"]);
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("192.168.66.102"));

    // ssh through the forwarded port on the host's loopback.
    assert!(ssh_banner(common::host_port(&status, "ssh")).starts_with("SSH-"));

    // Egress, by the same mechanism as root: TCP and UDP to servers the test runs, no proxy.
    let cmd = format!("wget -q -O - {}; nslookup probe.example {}", outside.tcp_url(), outside.ip);
    let out = r.kvci(&["vm", "ssh", "--name", "rl-a", "node02", "--", &cmd]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(common::outside::TCP_REPLY), "{text}{}", stderr(&out));
    assert!(text.contains(&common::outside::UDP_ANSWER.to_string()), "{text}{}", stderr(&out));
    // Unprivileged ping through slirp4netns needs the user's group in the host's
    // net.ipv4.ping_group_range (kvci never changes host sysctls; the test does, and restores it).
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range").unwrap();
    std::fs::write("/proc/sys/net/ipv4/ping_group_range", format!("0 {}", r.gid)).unwrap();
    let out = r.kvci(&["vm", "ssh", "--name", "rl-a", "node02", "--", &format!("ping -c 1 -W 5 {}", outside.ip)]);
    std::fs::write("/proc/sys/net/ipv4/ping_group_range", range).unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 packets received"), "rootless ping: {}", stderr(&out));

    let out = r.kvci(&["vm", "down", "--name", "rl-a"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(host_links(), links);
    assert_eq!(netns_list(), netns);

    // kill -9 of the rootless supervisor leaves nothing running.
    let out = r.kvci(&["vm", "up", "--name", "rl-b"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let s = r.status("rl-b");
    let (sup, qemu) = (s["supervisor_pid"].as_u64().unwrap(), s["nodes"][0]["pid"].as_u64().unwrap());
    let ns = held_netns(sup).expect("the supervisor holds its namespace");
    let helpers = common::helpers_of(sup);
    assert_eq!(helpers.len(), 1, "one egress helper");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(sup as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    let gone = (0..200).any(|_| {
        let gone = !process_alive(qemu) && !netns_in_use(&ns) && helpers.iter().all(|&h| !process_alive(h));
        if !gone {
            std::thread::sleep(Duration::from_millis(50));
        }
        gone
    });
    assert!(gone, "QEMU, the egress helper or the namespace outlived the killed rootless supervisor");
    let out = r.kvci(&["vm", "down", "--name", "rl-b"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!std::path::Path::new(&format!("{}/.local/share/kvci/clusters/rl-b", r.home)).exists());
    assert_eq!(host_links(), links);
}
