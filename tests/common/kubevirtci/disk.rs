//! Changing the stand-in's raw disk (one partition from 1 MiB holding ext4) in place with
//! `debugfs` (no mount, no loop device), and qcow2 overlays that hold only the clusters a change
//! touched.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::unistd::{lseek, Whence};

use super::base::PART_OFFSET;

/// Runs `cmd`, panicking with its output when it fails; returns stdout.
pub fn run(what: &str, cmd: &mut Command) -> String {
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{what}: {e} (is it installed?)"));
    assert!(out.status.success(), "{what} failed ({}):\n{}{}", out.status, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `qemu-img ARGS` in `cwd` (relative backing names are stored as given).
pub fn qemu_img(cwd: &Path, args: &[&str]) {
    run(&format!("qemu-img {args:?}"), Command::new("qemu-img").args(args).current_dir(cwd));
}

/// The filesystem on the partition of a raw disk (see `base::make_disk`), as e2fsprogs' tools
/// name it.
fn fs_spec(raw: &Path) -> String {
    format!("{}?offset={PART_OFFSET}", raw.display())
}

/// Contents of `path` inside the filesystem of `raw`.
pub fn read_file(raw: &Path, path: &str) -> String {
    run("debugfs cat", Command::new("debugfs").args(["-R", &format!("cat {path}")]).arg(fs_spec(raw)))
}

/// Checks the filesystem of `raw` (read-only), panicking with e2fsck's report if it is damaged.
pub fn check(raw: &Path) {
    run("e2fsck -fn", Command::new("e2fsck").args(["-f", "-n"]).arg(fs_spec(raw)));
}

/// Changes to an ext4 filesystem, applied by one `debugfs -w` run. Paths are absolute inside the
/// filesystem and their parents must exist (or be made earlier in the same batch).
#[derive(Default)]
pub struct Changes {
    script: Vec<String>,
    /// Host files to write, kept until `apply`.
    staged: Vec<PathBuf>,
}

impl Changes {
    /// A directory, 0755 and root's if new; one that exists is left as it is.
    pub fn dir(&mut self, path: &str) {
        self.script.push(format!("mkdir {path}"));
    }

    /// A directory with `mode` and owner.
    pub fn owned_dir(&mut self, path: &str, mode: u32, uid: u32, gid: u32) {
        self.script.push(format!("mkdir {path}"));
        self.owner(path, 0o040000 | mode, uid, gid);
    }

    /// A regular file with `data` (replacing what is there), `mode` and owner.
    pub fn file(&mut self, staging: &Path, path: &str, data: &[u8], mode: u32, uid: u32, gid: u32) {
        let host = staging.join(format!("f{}", self.staged.len()));
        std::fs::write(&host, data).unwrap();
        self.script.push(format!("rm {path}"));
        self.script.push(format!("write {} {path}", host.display()));
        self.owner(path, 0o100000 | mode, uid, gid);
        self.staged.push(host);
    }

    /// A symbolic link (replacing what is there).
    pub fn symlink(&mut self, path: &str, target: &str) {
        self.script.push(format!("rm {path}"));
        self.script.push(format!("symlink {path} {target}"));
    }

    fn owner(&mut self, path: &str, mode: u32, uid: u32, gid: u32) {
        self.script.push(format!("sif {path} mode 0{mode:o}"));
        self.script.push(format!("sif {path} uid {uid}"));
        self.script.push(format!("sif {path} gid {gid}"));
    }

    /// Applies the changes to the filesystem of `raw`, then checks it. debugfs carries on after
    /// a failed command, so its complaints are read: only "already there" (mkdir of an existing
    /// directory) and "not there" (rm before writing a new file) are expected.
    pub fn apply(self, raw: &Path) {
        let mut child = Command::new("debugfs")
            .args(["-w", "-f", "-"])
            .arg(fs_spec(raw))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("debugfs (Debian package e2fsprogs)");
        child.stdin.take().unwrap().write_all(self.script.join("\n").as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        let unexpected: Vec<&str> = err
            .lines()
            .filter(|l| !l.starts_with("debugfs ") && !l.contains("already exists") && !l.contains("File not found by ext2_lookup"))
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert!(out.status.success() && unexpected.is_empty(), "debugfs on {}:\n{}", raw.display(), unexpected.join("\n"));
        for f in self.staged {
            let _ = std::fs::remove_file(f);
        }
        check(raw);
    }
}


/// qcow2's default cluster size: the unit overlays are written in.
const CLUSTER: u64 = 64 << 10;

/// Cluster-aligned byte ranges where `new` differs from `old`, a copy of it that blocks were
/// written over (so only where `new` holds data is looked at; its holes are old holes).
pub fn changed_ranges(old: &Path, new: &Path) -> Vec<(u64, u64)> {
    let (a, b) = (File::open(old).unwrap(), File::open(new).unwrap());
    let size = b.metadata().unwrap().len();
    let (mut x, mut y) = (vec![0u8; CLUSTER as usize], vec![0u8; CLUSTER as usize]);
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    let mut pos = 0;
    while let Ok(start) = lseek(b.as_raw_fd(), pos as i64, Whence::SeekData) {
        let end = lseek(b.as_raw_fd(), start, Whence::SeekHole).unwrap() as u64;
        let mut off = start as u64 & !(CLUSTER - 1);
        while off < end {
            let len = CLUSTER.min(size - off) as usize;
            a.read_exact_at(&mut x[..len], off).unwrap();
            b.read_exact_at(&mut y[..len], off).unwrap();
            if x[..len] != y[..len] {
                match ranges.last_mut() {
                    Some(r) if r.0 + r.1 == off => r.1 += len as u64,
                    _ => ranges.push((off, len as u64)),
                }
            }
            off += CLUSTER;
        }
        pos = end;
    }
    ranges
}

/// A new qcow2 overlay `name` in `dir`, backed by `backing` (a name relative to `dir`), holding
/// the bytes of `raw` in `ranges`: the disk `raw` is, as a delta on its backing file.
pub fn overlay(dir: &Path, name: &str, backing: &str, raw: &Path, ranges: &[(u64, u64)], staging: &Path) {
    qemu_img(dir, &["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", backing, name]);
    let src = File::open(raw).unwrap();
    let mut cmd = Command::new("qemu-io");
    for (i, (off, len)) in ranges.iter().enumerate() {
        let mut data = vec![0u8; *len as usize];
        src.read_exact_at(&mut data, *off).unwrap();
        let chunk = staging.join(format!("chunk{i}"));
        std::fs::write(&chunk, &data).unwrap();
        cmd.arg("-c").arg(format!("write -q -s {} {off} {len}", chunk.display()));
    }
    run("qemu-io", cmd.args(["-f", "qcow2", name]).current_dir(dir));
}
