//! Fetching and unpacking Debian packages with apt-get and dpkg-deb (nothing is installed).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::tools::{ToolError, APT_GET, DPKG_DEB};

/// Downloads `packages` (candidate versions from the configured mirror) into `dir`; returns the
/// `.deb` files that appeared there.
pub fn download(dir: &Path, packages: &[String]) -> Result<Vec<PathBuf>> {
    let before = debs_in(dir)?;
    let mut cmd = Command::new(APT_GET.locate()?);
    // No privilege drop to `_apt`: it cannot work inside a user namespace (rootless), and the
    // download goes into kvci's own directory anyway.
    cmd.current_dir(dir).args(["-o", "APT::Sandbox::User=root", "download"]).args(packages);
    // As root apt drops to `_apt`, which cannot write a private temp dir; that only warns.
    APT_GET.output(&mut cmd).map_err(|e| match &e {
        ToolError::Failed { stderr, .. } if stderr.contains("Unable to locate") || stderr.contains("has no installation candidate") => {
            anyhow::Error::new(e).context("a Debian package is unknown to apt: run `apt-get update` (as root) and retry")
        }
        _ => anyhow::Error::new(e).context("downloading Debian packages"),
    })?;
    let after = debs_in(dir)?;
    let new: Vec<PathBuf> = after.into_iter().filter(|p| !before.contains(p)).collect();
    if new.len() < packages.len() {
        bail!("apt-get download produced {} .deb file(s) for {} package(s)", new.len(), packages.len());
    }
    Ok(new)
}

fn debs_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "deb") {
            v.push(p);
        }
    }
    v.sort();
    Ok(v)
}

/// The first package a `.deb` depends on (a metapackage's real package).
pub fn first_dependency(deb: &Path) -> Result<String> {
    let out = DPKG_DEB.run(["-f".as_ref(), deb.as_os_str(), "Depends".as_ref()])?;
    first_package_of(&String::from_utf8_lossy(&out.stdout))
        .with_context(|| format!("{} has no Depends field", deb.display()))
}

/// `linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2), foo` → `linux-image-6.1.0-56-cloud-amd64`.
fn first_package_of(depends: &str) -> Option<String> {
    let first = depends.split([',', '|']).next()?.split_whitespace().next()?;
    (!first.is_empty()).then(|| first.to_string())
}

/// Unpacks a `.deb`'s files into `dest`.
pub fn extract(deb: &Path, dest: &Path) -> Result<()> {
    DPKG_DEB.run(["-x".as_ref(), deb.as_os_str(), dest.as_os_str()])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_field_gives_package_name() {
        assert_eq!(first_package_of("linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)\n").as_deref(), Some("linux-image-6.1.0-56-cloud-amd64"));
        assert_eq!(first_package_of("a | b, c").as_deref(), Some("a"));
        assert_eq!(first_package_of("\n"), None);
    }
}
