//! kvci's `cluster-up/` folder (images/kubevirtci/cluster-up/), compiled in and written out by
//! `kvci kubevirtci cluster-up DIR` in place of kubevirtci's.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// Where the folder is in the compiled-in `images/` tree.
const FOLDER: &str = "kubevirtci/cluster-up/";
/// The template of each provider's `cluster/<provider>/provider.sh`.
const PROVIDER_TEMPLATE: &str = "cluster/provider.sh.in";

/// The folder's files by relative path, from the `images/` tree compiled into kvci.
fn files() -> impl Iterator<Item = (&'static str, &'static str)> {
    crate::image::recipes::EMBEDDED
        .iter()
        .filter_map(|(path, bytes, _)| Some((path.strip_prefix(FOLDER)?, std::str::from_utf8(bytes).ok()?)))
}

/// kubevirtci's current VM providers: each gets its `cluster/<provider>/provider.sh`.
pub const PROVIDERS: &[&str] = &["k8s-1.33", "k8s-1.34", "k8s-1.35", "k8s-1.36"];

/// The files to write: path and contents, with `kvci` standing for `KVCI_BIN`'s default.
pub fn render(kvci: &Path, providers: &[String]) -> Vec<(String, String)> {
    let template = files().find(|(p, _)| *p == PROVIDER_TEMPLATE).map(|(_, t)| t).unwrap_or_default();
    let mut out: Vec<(String, String)> = files()
        .filter(|(p, _)| *p != PROVIDER_TEMPLATE)
        .map(|(p, text)| (p.to_string(), text.replace("@KVCI_BIN@", &kvci.to_string_lossy())))
        .collect();
    for p in PROVIDERS.iter().map(|p| p.to_string()).chain(providers.iter().cloned()) {
        if !out.iter().any(|(path, _)| *path == format!("cluster/{p}/provider.sh")) {
            out.push((format!("cluster/{p}/provider.sh"), template.replace("@PROVIDER@", &p)));
        }
    }
    out
}

/// Writes the folder into `dir`. A non-empty `dir` (a kubevirtci checkout's own cluster-up) is
/// only written over with `force`; its other files stay.
pub fn write(dir: &Path, kvci: &Path, providers: &[String], force: bool) -> Result<usize> {
    for p in providers {
        if p.is_empty() || p.contains('/') || p.starts_with('.') {
            bail!("--provider {p:?} is not a provider name (like k8s-1.34)");
        }
    }
    let occupied = std::fs::read_dir(dir).map(|mut d| d.next().is_some()).unwrap_or(false);
    if occupied && !force {
        bail!("{} is not empty: pass --force to write kvci's scripts over the ones there (other files stay)", dir.display());
    }
    let files = render(kvci, providers);
    for (rel, text) in &files {
        let path = dir.join(rel);
        let parent = path.parent().context("a script has a directory")?;
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        let mut tmp = tempfile::Builder::new().prefix(".kvci-").tempfile_in(parent)?;
        std::io::Write::write_all(&mut tmp, text.as_bytes())?;
        tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o755))?;
        tmp.persist(&path).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(files.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_provider_gets_its_script_and_kvci_is_named() {
        let files = render(Path::new("/opt/kvci/bin/kvci"), &["k8s-1.37".into(), "k8s-1.34".into()]);
        let common = &files.iter().find(|(p, _)| p == "hack/common.sh").unwrap().1;
        assert!(common.contains("KVCI_BIN=${KVCI_BIN:-/opt/kvci/bin/kvci}"), "{common}");
        let providers: Vec<&str> = files.iter().filter(|(p, _)| p.ends_with("/provider.sh")).map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            providers,
            ["cluster/k8s-1.33/provider.sh", "cluster/k8s-1.34/provider.sh", "cluster/k8s-1.35/provider.sh", "cluster/k8s-1.36/provider.sh", "cluster/k8s-1.37/provider.sh"]
        );
        for script in ["up.sh", "down.sh", "ssh.sh", "kubectl.sh", "cli.sh", "kubeconfig.sh", "check.sh"] {
            assert!(files.iter().any(|(p, _)| p == script), "{script}");
        }
    }

    #[test]
    fn a_checkouts_folder_is_kept_unless_forced() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("README.md"), "kubevirtci's").unwrap();
        let err = write(dir.path(), Path::new("kvci"), &[], false).unwrap_err().to_string();
        assert!(err.contains("--force"), "{err}");
        let n = write(dir.path(), Path::new("kvci"), &[], true).unwrap();
        assert_eq!(n, files().count() - 1 + PROVIDERS.len());
        assert_eq!(std::fs::read_to_string(dir.path().join("README.md")).unwrap(), "kubevirtci's");
        let mode = std::fs::metadata(dir.path().join("up.sh")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        assert!(write(dir.path(), Path::new("kvci"), &["../x".into()], true).is_err());
    }
}
