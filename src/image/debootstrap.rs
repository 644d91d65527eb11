//! Root layers made with debootstrap on the host (the `debian-12` provider): a Debian root
//! filesystem from the configured mirror, kvci's guest files on top, its own kernel and initrd,
//! as an ext4 disk converted to qcow2.

use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::provider::{DebootstrapBase, Loaded};
use super::rootfs::make_ext4;
use super::store::{Image, Store};

/// Kernel arguments of debootstrapped images (eth0 naming keeps `/etc/network/interfaces` simple).
const APPEND: &str = "console=ttyS0 root=/dev/vda rw net.ifnames=0 panic=-1 intel_iommu=on";

/// The Debian mirror apt already uses (`KVCI_DEBIAN_MIRROR` overrides).
pub fn mirror() -> String {
    if let Ok(m) = std::env::var("KVCI_DEBIAN_MIRROR") {
        return m;
    }
    let deb822 = std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources").unwrap_or_default();
    let classic = std::fs::read_to_string("/etc/apt/sources.list").unwrap_or_default();
    mirror_from(&deb822, &classic).unwrap_or_else(|| "http://deb.debian.org/debian".into())
}

fn mirror_from(deb822: &str, classic: &str) -> Option<String> {
    deb822
        .lines()
        .filter_map(|l| l.strip_prefix("URIs:"))
        .flat_map(str::split_whitespace)
        .find(|u| !u.contains("security"))
        .or_else(|| {
            classic
                .lines()
                .map(str::split_whitespace)
                .filter_map(|mut w| (w.next() == Some("deb")).then(|| w.find(|x| x.contains("://"))).flatten())
                .find(|u| !u.contains("security"))
        })
        .map(String::from)
}

fn run(what: &str, cmd: &mut Command) -> Result<()> {
    let status = cmd.stdin(Stdio::null()).status().with_context(|| format!("running {what} (is it installed?)"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// Builds the root layer `name` (caller holds the store lock).
pub fn build(store: &Store, provider: &Loaded, spec: &DebootstrapBase, id: &str, name: &str) -> Result<Image> {
    if !provider.recipe.phases.is_empty() {
        bail!("{}: a debootstrap base takes no phases; put them in a provider based on this one", provider.name);
    }
    let started = Instant::now();
    let work = store.staging()?;
    let root = work.path().join("root");
    let step = |n: u32, what: &str| eprintln!("kvci: building image {name} [{n}/3] {what} ({:.0}s)", started.elapsed().as_secs_f64());

    step(1, "debootstrap (a minute or two)");
    let mirror = mirror();
    let mut cmd = Command::new("debootstrap");
    cmd.arg(format!("--variant={}", spec.variant));
    if !spec.include.is_empty() {
        cmd.arg(format!("--include={}", spec.include.join(",")));
    }
    cmd.arg(&spec.suite).arg(&root).arg(&mirror);
    run("debootstrap (Debian package `debootstrap`)", &mut cmd)?;

    step(2, "adding kvci's guest files");
    if let Some(overlay) = &spec.rootfs {
        let mut cp = Command::new("cp");
        cp.arg("-a").arg(format!("{}/.", provider.dir.join(overlay).display())).arg(&root);
        run("cp", &mut cp)?;
    }
    for (path, data) in super::GUEST_TOOLS {
        let file = root.join(path);
        std::fs::create_dir_all(file.parent().unwrap_or(&root))?;
        std::fs::write(&file, data)?;
        std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    }
    for unit in &spec.services {
        run(&format!("systemctl enable {unit}"), Command::new("chroot").arg(&root).args(["systemctl", "enable", unit]))?;
    }
    // Console logins without a password (ssh needs the cluster key); a fresh machine-id per boot.
    run("passwd -d root", Command::new("chroot").arg(&root).args(["passwd", "-d", "root"]))?;
    std::fs::write(root.join("etc/machine-id"), b"")?;
    let _ = std::fs::remove_dir_all(root.join("var/cache/apt/archives"));
    std::fs::create_dir_all(root.join("var/cache/apt/archives/partial"))?;

    let boot = root.join("boot");
    let find = |prefix: &str| -> Result<std::path::PathBuf> {
        std::fs::read_dir(&boot)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(prefix)))
            .with_context(|| format!("the debootstrapped system has no /boot/{prefix}*: include a kernel package"))
    };
    step(3, "making the root disk");
    let raw = work.path().join("root.ext4");
    make_ext4(&root, &raw, spec.disk_size_mib)?;
    let (kernel, initrd) = (find("vmlinuz-")?, find("initrd.img-")?);
    let image = super::import::commit_root_layer(store, provider, [&raw, &kernel, &initrd], APPEND, id, name)?;
    eprintln!("kvci: image {name} built in {:.0}s ({} MiB)", started.elapsed().as_secs_f64(), image.manifest.size >> 20);
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_comes_from_apt_sources() {
        let deb822 = "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\n\nTypes: deb\nURIs: http://mirror.example/debian-security\n";
        assert_eq!(mirror_from(deb822, "").as_deref(), Some("http://mirror.example/debian"));
        let classic = "# c\ndeb [arch=amd64] http://m.example/debian bookworm main\n";
        assert_eq!(mirror_from("", classic).as_deref(), Some("http://m.example/debian"));
        assert_eq!(mirror_from("", ""), None);
    }
}
