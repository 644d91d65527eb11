//! What kubevirtci's provisioning adds on top of the box, as changes to the raw disk: the
//! login user and its key (disk01, per variant) and the Kubernetes phase's files and units
//! (disk02: recording stand-ins, configs, manifests; the `k8s/` directory).

use std::path::Path;

use super::base::{files_dir, tree_files};
use super::disk::{read_file, Changes};

/// The node's login user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum User {
    /// `cloud-user`, as images from k8s-1.31 on have it.
    CloudUser,
    /// `vagrant`, as older images (before the k8s-1.31 provider was dropped) have it.
    Vagrant,
}

impl User {
    /// The login name.
    pub fn name(self) -> &'static str {
        match self {
            User::CloudUser => "cloud-user",
            User::Vagrant => "vagrant",
        }
    }

    /// sha512-crypt of the console password, which is the user's name.
    fn password(self) -> &'static str {
        match self {
            User::CloudUser => "$6$kvcistandin$aP4NbEMBgP.SuazanQxcdlpfuA1AK4ycPQAODBLVSuOXAxVDgpYyXsMLXGOSMR/prKynkVW5y4AWRlc4UIKfC/",
            User::Vagrant => "$6$kvcistandin$dc9/5qrie.gn0zZDGd0nSRL1xY5QzIJEixOQAlVQzS37d2xriLmR20YAPtnLMQ0FzbvSEmumzeBdVTzVMRa9b0",
        }
    }
}

const UID: u32 = 1000;
/// Units the Kubernetes phase enables.
const UNITS: &[&str] = &["crio.service", "kubelet.service"];

/// The gid of `group` in the text of /etc/group.
fn gid(group_file: &str, group: &str) -> u32 {
    group_file
        .lines()
        .find_map(|l| l.strip_prefix(group)?.strip_prefix(":x:")?.split(':').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no group {group} in the base's /etc/group"))
}

/// The login user, with passwordless sudo (as cloud-init's sudoers file on the real images),
/// a home from /etc/skel, and `authorized_key` as its only key.
pub fn linux(raw: &Path, staging: &Path, user: User, authorized_key: &str) {
    let (name, home) = (user.name(), format!("/home/{}", user.name()));
    let group = read_file(raw, "/etc/group");
    let shadow_gid = gid(&group, "shadow");
    assert!(!read_file(raw, "/etc/passwd").contains(&format!(":{UID}:")), "uid {UID} is taken in the base");
    let mut c = Changes::default();
    let mut append = |path: &str, line: String, mode: u32, gid: u32| {
        let text = read_file(raw, path) + &line + "\n";
        c.file(staging, path, text.as_bytes(), mode, 0, gid);
    };
    append("/etc/passwd", format!("{name}:x:{UID}:{UID}::{home}:/bin/bash"), 0o644, 0);
    append("/etc/group", format!("{name}:x:{UID}:"), 0o644, 0);
    append("/etc/shadow", format!("{name}:{}:20000:0:99999:7:::", user.password()), 0o640, shadow_gid);
    append("/etc/gshadow", format!("{name}:!::"), 0o640, shadow_gid);
    let sudoers = format!("# User rules for {name}\n{name} ALL=(ALL) NOPASSWD:ALL\n");
    c.file(staging, "/etc/sudoers.d/90-cloud-init-users", sudoers.as_bytes(), 0o440, 0, 0);
    c.owned_dir(&home, 0o700, UID, UID);
    for dot in [".bashrc", ".profile", ".bash_logout"] {
        c.file(staging, &format!("{home}/{dot}"), read_file(raw, &format!("/etc/skel/{dot}")).as_bytes(), 0o644, UID, UID);
    }
    c.owned_dir(&format!("{home}/.ssh"), 0o700, UID, UID);
    c.file(staging, &format!("{home}/.ssh/authorized_keys"), authorized_key.as_bytes(), 0o600, UID, UID);
    c.apply(raw);
}

/// The Kubernetes phase: every file of `k8s/` (new directories 0755, all root's), its units
/// enabled.
pub fn kubernetes(raw: &Path, staging: &Path) {
    let src = files_dir("k8s");
    let mut c = Changes::default();
    let mut made = std::collections::BTreeSet::new();
    for (path, mode) in tree_files(&src) {
        // Parents first, each once.
        let mut dir = String::new();
        for part in Path::new(&path).parent().unwrap().iter() {
            dir = format!("{dir}/{}", part.to_string_lossy());
            if made.insert(dir.clone()) {
                c.dir(&dir);
            }
        }
        c.file(staging, &format!("/{path}"), &std::fs::read(src.join(&path)).unwrap(), mode, 0, 0);
    }
    for unit in UNITS {
        c.symlink(&format!("/etc/systemd/system/multi-user.target.wants/{unit}"), &format!("/usr/lib/systemd/system/{unit}"));
    }
    c.apply(raw);
}
