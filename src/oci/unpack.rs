//! Applying a container image's tar layers in order, extracting only the regular files a
//! caller wants (streamed into a staging directory, hashed on the way), with whiteouts of
//! later layers deleting files of earlier ones. Nothing else is written: no links, no other
//! paths, and only the directories leading to a wanted file (made by kvci, never taken from
//! the layer), so an entry can never land outside the staging directory.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::blob::{pump, HashingWriter};
use super::tarsafe::{check_link, components, whiteout};

/// The files extracted so far (name → sha256 of their contents), in a staging directory.
pub struct Unpacker {
    dir: PathBuf,
    wanted: fn(&[String]) -> bool,
    /// Skip links that are absolute or leave the root when the caller does not need them
    /// (instead of refusing the layer).
    pub skip_unsafe_links: bool,
    files: BTreeMap<String, String>,
}

impl Unpacker {
    /// Extracts the files whose path components `wanted` says yes to into `dir` (files are
    /// named by their path relative to the image root, `/`-separated).
    pub fn new(dir: &Path, wanted: fn(&[String]) -> bool) -> Unpacker {
        Unpacker { dir: dir.to_path_buf(), wanted, skip_unsafe_links: false, files: BTreeMap::new() }
    }

    /// The files present after the layers applied so far, with their sha256.
    pub fn files(&self) -> &BTreeMap<String, String> {
        &self.files
    }

    /// The staged path of `name`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Applies one layer (an uncompressed tar stream); `what` names it in errors.
    pub fn apply(&mut self, layer: impl Read, what: &str) -> Result<()> {
        let mut archive = tar::Archive::new(layer);
        let mut written: BTreeSet<String> = BTreeSet::new();
        let mut whiteouts = Vec::new();
        for entry in archive.entries().with_context(|| format!("{what} is not a tar archive"))? {
            let mut entry = entry.with_context(|| format!("{what}: malformed tar entry"))?;
            let kind = entry.header().entry_type();
            if matches!(kind, tar::EntryType::XGlobalHeader | tar::EntryType::XHeader | tar::EntryType::GNULongName | tar::EntryType::GNULongLink) {
                continue;
            }
            let raw = entry.path_bytes().into_owned();
            let path = components(&raw).with_context(|| format!("{what} is refused"))?;
            let needed = !path.is_empty() && (self.wanted)(&path);
            if kind.is_symlink() || kind.is_hard_link() {
                let target = entry.link_name_bytes().map(|t| t.into_owned()).unwrap_or_default();
                if let Err(e) = check_link(&path, &target, kind.is_hard_link()) {
                    if needed || !self.skip_unsafe_links {
                        return Err(anyhow::Error::new(e).context(format!(
                            "{what} is refused (kvci never follows links out of an image; if the image is trusted and \
                             the link is not one of the files kvci reads, --skip-unsafe-links ignores it)"
                        )));
                    }
                }
                if needed {
                    bail!("{what}: /{} is a link; kvci needs a regular file there", path.join("/"));
                }
                continue;
            }
            if let Some(w) = whiteout(&path) {
                whiteouts.push(w);
                continue;
            }
            if !needed {
                continue; // the tar reader skips its data
            }
            let name = path.join("/");
            // Directories below the root are made when a file in them is written; a wanted
            // name at the root is a file, never a directory.
            if kind.is_dir() && path.len() > 1 {
                continue;
            }
            if !(kind.is_file() || kind == tar::EntryType::GNUSparse) {
                bail!("{what}: /{name} is a {kind:?} entry; kvci needs a regular file there");
            }
            let dest = self.dir.join(&name);
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
            }
            let file = File::create(&dest).with_context(|| format!("creating {}", dest.display()))?;
            let mut out = HashingWriter::new(file);
            pump(&mut entry, &mut out).with_context(|| format!("{what}: extracting /{name}"))?;
            let (sha, _) = out.finish();
            self.files.insert(name.clone(), sha);
            written.insert(name);
        }
        // Whiteouts delete what lower layers had, never what this layer wrote itself.
        let hidden: Vec<String> = self
            .files
            .keys()
            .filter(|n| {
                let parts: Vec<String> = n.split('/').map(String::from).collect();
                !written.contains(*n) && whiteouts.iter().any(|w| w.hides(&parts))
            })
            .cloned()
            .collect();
        for name in hidden {
            self.files.remove(&name);
            std::fs::remove_file(self.dir.join(&name)).with_context(|| format!("removing whited-out /{name}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// One tar entry for [`tar_of`].
    pub enum E<'a> {
        File(&'a str, &'a [u8]),
        Dir(&'a str),
        Symlink(&'a str, &'a str),
        HardLink(&'a str, &'a str),
    }

    /// A tar archive of `entries`, paths written raw (so `..` survives).
    pub fn tar_of(entries: &[E]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for e in entries {
            let mut h = tar::Header::new_gnu();
            let (path, kind, data, link): (&str, _, &[u8], Option<&str>) = match e {
                E::File(p, d) => (p, tar::EntryType::Regular, d, None),
                E::Dir(p) => (p, tar::EntryType::Directory, b"", None),
                E::Symlink(p, t) => (p, tar::EntryType::Symlink, b"", Some(t)),
                E::HardLink(p, t) => (p, tar::EntryType::Link, b"", Some(t)),
            };
            h.set_entry_type(kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            // Raw bytes: Header::set_path refuses `..`, and tests need such entries.
            let name = &mut h.as_old_mut().name;
            name[..path.len()].copy_from_slice(path.as_bytes());
            if let Some(t) = link {
                h.as_old_mut().linkname[..t.len()].copy_from_slice(t.as_bytes());
            }
            h.set_cksum();
            b.append(&h, data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn wanted(path: &[String]) -> bool {
        matches!(path, [n] if n.ends_with(".qcow2") || n == "vmlinuz")
    }

    #[test]
    fn later_layers_replace_and_white_out() {
        let tmp = tempfile::tempdir().unwrap();
        let mut u = Unpacker::new(tmp.path(), wanted);
        u.apply(&tar_of(&[E::Dir("usr"), E::File("usr/bin/qemu", b"elf"), E::File("/box.qcow2", b"box"), E::File("bogus.qcow2", b"x")])[..], "layer 1")
            .unwrap();
        u.apply(&tar_of(&[E::File("./disk01.qcow2", b"d1"), E::File("vmlinuz", b"k1")])[..], "layer 2").unwrap();
        u.apply(&tar_of(&[E::File(".wh.bogus.qcow2", b""), E::File("vmlinuz", b"k2")])[..], "layer 3").unwrap();
        assert_eq!(u.files().keys().collect::<Vec<_>>(), ["box.qcow2", "disk01.qcow2", "vmlinuz"]);
        assert_eq!(std::fs::read(u.path("vmlinuz")).unwrap(), b"k2");
        assert!(!tmp.path().join("bogus.qcow2").exists());
        assert!(!tmp.path().join("usr").exists(), "unwanted files are never written");
        // An opaque root deletes everything below, but not what its own layer brings.
        u.apply(&tar_of(&[E::File("box.qcow2", b"new"), E::File(".wh..wh..opq", b"")])[..], "layer 4").unwrap();
        assert_eq!(u.files().keys().collect::<Vec<_>>(), ["box.qcow2"]);
        assert_eq!(std::fs::read(u.path("box.qcow2")).unwrap(), b"new");
    }

    #[test]
    fn escaping_paths_and_links_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let mut u = Unpacker::new(tmp.path(), wanted);
        let err = u.apply(&tar_of(&[E::File("../escape.qcow2", b"x")])[..], "layer 1").unwrap_err();
        assert!(format!("{err:#}").contains("`..`"), "{err:#}");
        let err = u.apply(&tar_of(&[E::Symlink("etc/evil", "/etc/shadow")])[..], "layer 1").unwrap_err();
        assert!(format!("{err:#}").contains("absolute"), "{err:#}");
        let err = u.apply(&tar_of(&[E::Symlink("a/b", "../../x")])[..], "layer 1").unwrap_err();
        assert!(format!("{err:#}").contains("leaves the image root"), "{err:#}");
        let err = u.apply(&tar_of(&[E::HardLink("x", "../y")])[..], "layer 1").unwrap_err();
        assert!(format!("{err:#}").contains("`..`") || format!("{err:#}").contains("leaves"), "{err:#}");
        // Trusted images: links kvci does not read may be skipped; wanted names never.
        u.skip_unsafe_links = true;
        u.apply(&tar_of(&[E::Symlink("etc/evil", "/etc/shadow")])[..], "layer 1").unwrap();
        assert!(u.apply(&tar_of(&[E::Symlink("box.qcow2", "/etc/shadow")])[..], "layer 1").is_err());
        let err = u.apply(&tar_of(&[E::Symlink("box.qcow2", "disk01.qcow2")])[..], "layer 1").unwrap_err();
        assert!(err.to_string().contains("regular file"), "{err}");
        assert!(u.apply(&tar_of(&[E::Dir("box.qcow2")])[..], "layer 1").is_err());
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    }
}

/// Bounded fuzzing of [`Unpacker::apply`], the code that reads layer tars from outside: random
/// bytes and mutated valid layers (whiteouts, links, long names) must never panic, and whatever
/// happens, the staging directory holds only wanted regular files. Fixed seed.
#[cfg(test)]
mod fuzz {
    use super::tests::{tar_of, E};
    use crate::fuzzing::Rng;
    use super::*;

    const RUNS: usize = 2_000;

    fn wanted(path: &[String]) -> bool {
        crate::oci::kubevirtci::wanted(path)
    }

    fn seeds() -> Vec<Vec<u8>> {
        let mut long = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        let deep = format!("{}/box.qcow2", "d".repeat(150));
        long.append_data(&mut h, &deep, &b"abc"[..]).unwrap();
        long.append_data(&mut h, "box.qcow2", &b"box"[..]).unwrap();
        vec![
            tar_of(&[E::File("box.qcow2", b"QFI\xfb box"), E::File("disk01.qcow2", b"d1"), E::Dir("usr"), E::File("usr/bin/x", b"elf")]),
            tar_of(&[E::File(".wh.disk01.qcow2", b""), E::File(".wh..wh..opq", b""), E::File("vmlinuz", b"kernel")]),
            tar_of(&[E::Symlink("usr/lib/a", "../b"), E::HardLink("initrd.img", "vmlinuz"), E::File("kernel.args", b"console=ttyS0")]),
            long.into_inner().unwrap(),
        ]
    }

    /// Rewrites the checksum of the 512-byte header at `at`, so the parser goes past it.
    fn fix_checksum(v: &mut [u8], at: usize) {
        let block = &mut v[at..at + 512];
        block[148..156].fill(b' ');
        let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
        block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    }

    fn mutate(r: &mut Rng, mut v: Vec<u8>) -> Vec<u8> {
        if r.below(2) == 0 && v.len() >= 512 {
            // Fields of one header, checksum kept valid: names, types, sizes, link targets.
            let at = r.below(v.len() / 512) * 512;
            for _ in 0..=r.below(4) {
                let field = [0, 100, 124, 156, 157, 345][r.below(6)];
                let i = at + field + r.below(12);
                v[i] = [b'.', b'/', b'0', b'7', b'1', b'2', b'5', b'L', b'x', 0, r.next() as u8][r.below(11)];
            }
            fix_checksum(&mut v, at);
            return v;
        }
        for _ in 0..=r.below(8) {
            match r.below(4) {
                0 if !v.is_empty() => {
                    let i = r.below(v.len());
                    v[i] = r.next() as u8;
                }
                1 if !v.is_empty() => {
                    // Header fields are where parsers go wrong: hit the first block harder.
                    let i = r.below(v.len().min(512));
                    v[i] = r.next() as u8;
                }
                2 => v.truncate(r.below(v.len() + 1)),
                _ => {
                    let i = r.below(v.len() + 1);
                    let junk: Vec<u8> = (0..r.below(64)).map(|_| r.next() as u8).collect();
                    v.splice(i..i, junk);
                }
            }
        }
        v
    }

    /// Only wanted regular files (and the directories leading to them), and exactly those the
    /// unpacker reports after success.
    fn check_dir(dir: &Path, u: &Unpacker, ok: bool) {
        let mut names = Vec::new();
        walk(dir, &mut Vec::new(), &mut names);
        if ok {
            names.sort();
            assert_eq!(names, u.files().keys().cloned().collect::<Vec<_>>());
        }
    }

    fn walk(dir: &Path, prefix: &mut Vec<String>, names: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            prefix.push(e.file_name().to_string_lossy().into_owned());
            let kind = e.file_type().unwrap();
            assert!(!kind.is_symlink(), "{} is a link", prefix.join("/"));
            if kind.is_dir() {
                walk(&e.path(), prefix, names);
            } else {
                assert!(kind.is_file(), "{} is not a regular file", prefix.join("/"));
                assert!(wanted(prefix), "unwanted {} written", prefix.join("/"));
                names.push(prefix.join("/"));
            }
            prefix.pop();
        }
    }

    #[test]
    fn mutated_and_random_layers_never_panic_or_escape() {
        let mut r = Rng::new(0x2545_f491_4f6c_dd1d);
        let seeds = seeds();
        let tmp = tempfile::tempdir().unwrap();
        let (mut oks, mut errs) = (0, 0);
        for run in 0..RUNS {
            let dir = tmp.path().join(run.to_string());
            std::fs::create_dir(&dir).unwrap();
            let mut u = Unpacker::new(&dir, wanted);
            u.skip_unsafe_links = r.below(2) == 0;
            for _ in 0..=r.below(3) {
                let input = if r.below(10) == 0 {
                    (0..r.below(2048)).map(|_| r.next() as u8).collect()
                } else {
                    let seed = seeds[r.below(seeds.len())].clone();
                    mutate(&mut r, seed)
                };
                let ok = u.apply(&input[..], "fuzzed layer").is_ok();
                check_dir(&dir, &u, ok);
                if !ok {
                    errs += 1;
                    break;
                }
                oks += 1;
            }
            std::fs::remove_dir_all(&dir).unwrap();
        }
        // Both outcomes are exercised, or the mutations are too timid or too wild.
        assert!(oks > RUNS / 10 && errs > RUNS / 10, "{oks} accepted, {errs} refused");
    }
}
