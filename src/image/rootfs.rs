//! Assembling the `tiny` root filesystem: unpacked packages, busybox applet links and the
//! recipe's own files, then an ext4 image made from the directory.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use crate::tools::MKFS_EXT4;

/// A file the recipe adds to the root filesystem.
#[derive(Debug, Clone, Copy)]
pub struct File {
    /// Path inside the guest, no leading slash.
    pub path: &'static str,
    /// Contents.
    pub data: &'static [u8],
    /// Permission bits.
    pub mode: u32,
}

/// Directories a booting busybox system needs.
const SKELETON: &[&str] = &["dev", "proc", "sys", "tmp", "run", "root", "var/log", "etc/dropbear", "bin", "sbin", "usr/bin", "usr/sbin"];

/// Trims documentation and the kernel out of an unpacked package tree.
const PRUNE: &[&str] = &["usr/share/doc", "usr/share/man", "usr/share/lintian", "usr/share/locale", "usr/lib/x86_64-linux-gnu/gconv", "boot", "lib/modules"];

/// Completes `root` (already holding the unpacked packages) into a bootable tree.
pub fn complete(root: &Path, files: &[File]) -> Result<()> {
    for p in PRUNE {
        let p = root.join(p);
        if p.exists() {
            std::fs::remove_dir_all(&p).with_context(|| format!("removing {}", p.display()))?;
        }
    }
    for d in SKELETON {
        std::fs::create_dir_all(root.join(d))?;
    }
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777))?;
    link_busybox_applets(root)?;
    for f in files {
        let dest = root.join(f.path);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let _ = std::fs::remove_file(&dest); // may be an applet link
        std::fs::write(&dest, f.data).with_context(|| format!("writing {}", dest.display()))?;
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(f.mode))?;
    }
    Ok(())
}

/// One symlink per applet (`/bin/sh` → `/bin/busybox`, …), where no real file exists.
fn link_busybox_applets(root: &Path) -> Result<()> {
    let busybox = root.join("bin/busybox");
    let out = Command::new(&busybox)
        .arg("--list-full")
        .output()
        .with_context(|| format!("running {} --list-full", busybox.display()))?;
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        let applet = applet.trim().trim_start_matches('/');
        if applet.is_empty() || applet.contains("..") {
            continue;
        }
        let link = root.join(applet);
        if link.symlink_metadata().is_ok() {
            continue;
        }
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::os::unix::fs::symlink("/bin/busybox", &link)?;
    }
    Ok(())
}

/// Copies the regular file `path` (relative) from the unpacked package at `from` to the same
/// place under `root`, keeping its permission bits; `package` names the source in errors. Runs
/// before [`complete`]; a file some other package already put there is an error.
pub fn copy_from_package(from: &Path, package: &str, path: &str, root: &Path) -> Result<()> {
    let src = from.join(path);
    let meta = src.symlink_metadata().with_context(|| format!("package {package} has no /{path}"))?;
    if !meta.file_type().is_file() {
        anyhow::bail!("/{path} in package {package} is not a regular file");
    }
    let dest = root.join(path);
    if dest.symlink_metadata().is_ok() {
        anyhow::bail!("/{path} of package {package}: another package already has it");
    }
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::copy(&src, &dest).with_context(|| format!("copying /{path} of package {package}"))?;
    Ok(())
}

/// Makes an ext4 filesystem image of `size_mib` from the tree at `root`.
pub fn make_ext4(root: &Path, raw: &Path, size_mib: u64) -> Result<()> {
    let f = std::fs::File::create(raw).with_context(|| format!("creating {}", raw.display()))?;
    f.set_len(size_mib << 20)?;
    drop(f);
    let mut cmd = Command::new(MKFS_EXT4.locate()?);
    cmd.args(["-q", "-F", "-L", "kvci-root", "-E", "root_owner=0:0", "-d"]).arg(root).arg(raw);
    MKFS_EXT4.output(&mut cmd)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_from_package_takes_one_file_with_its_mode() {
        let (pkg, root) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        std::fs::create_dir_all(pkg.path().join("usr/bin")).unwrap();
        std::fs::write(pkg.path().join("usr/bin/scp"), b"elf").unwrap();
        std::fs::set_permissions(pkg.path().join("usr/bin/scp"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(pkg.path().join("usr/bin/ssh"), b"other").unwrap();
        std::os::unix::fs::symlink("scp", pkg.path().join("usr/bin/link")).unwrap();

        copy_from_package(pkg.path(), "openssh-client", "usr/bin/scp", root.path()).unwrap();
        let copied = root.path().join("usr/bin/scp");
        assert_eq!(std::fs::read(&copied).unwrap(), b"elf");
        assert_eq!(copied.metadata().unwrap().permissions().mode() & 0o7777, 0o755);
        assert!(!root.path().join("usr/bin/ssh").exists());

        let err = copy_from_package(pkg.path(), "openssh-client", "usr/bin/scp", root.path()).unwrap_err();
        assert!(format!("{err:#}").contains("already has it"), "{err:#}");
        let err = copy_from_package(pkg.path(), "openssh-client", "usr/bin/nope", root.path()).unwrap_err();
        assert!(format!("{err:#}").contains("package openssh-client has no /usr/bin/nope"), "{err:#}");
        let err = copy_from_package(pkg.path(), "openssh-client", "usr/bin/link", root.path()).unwrap_err();
        assert!(format!("{err:#}").contains("not a regular file"), "{err:#}");
    }
}
