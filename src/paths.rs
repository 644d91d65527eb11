//! Where kvci keeps its files: the image store, caches and per-cluster directories.
//!
//! Root uses `/var/lib/kvci`; other users `$XDG_DATA_HOME/kvci` (`~/.local/share/kvci`).
//! `--data-dir` / `KVCI_DATA_DIR` override both (tests use it to stay isolated).

use std::path::{Path, PathBuf};

/// The directories of one kvci installation.
#[derive(Debug, Clone)]
pub struct Dirs {
    data: PathBuf,
}

impl Dirs {
    /// Picks the data directory: the override, else root's or the user's default.
    pub fn resolve(data_override: Option<PathBuf>) -> Dirs {
        let data = data_override.unwrap_or_else(|| {
            if nix::unistd::geteuid().is_root() {
                PathBuf::from("/var/lib/kvci")
            } else if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
                PathBuf::from(xdg).join("kvci")
            } else {
                let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
                PathBuf::from(home).join(".local/share/kvci")
            }
        });
        // Absolute, because qcow2 backing names and the supervisor (which changes directory)
        // keep these paths.
        let data = std::path::absolute(&data).unwrap_or(data);
        Dirs { data }
    }

    /// Uses `data` as the data directory as given.
    pub fn at(data: impl Into<PathBuf>) -> Dirs {
        Dirs { data: data.into() }
    }

    /// The root of everything kvci writes.
    pub fn data(&self) -> &Path {
        &self.data
    }

    /// The frozen image store.
    pub fn images(&self) -> PathBuf {
        self.data.join("images")
    }

    /// Downloads kept between builds (Debian packages).
    pub fn cache(&self) -> PathBuf {
        self.data.join("cache")
    }

    /// One directory per cluster that is up (or was, until `down` cleans it).
    pub fn clusters(&self) -> PathBuf {
        self.data.join("clusters")
    }

    /// The default registry directory of cluster `name`: outside `clusters/`, so its blobs
    /// survive `down` and are there again at the next `up` of that name.
    pub fn registry(&self, name: &str) -> PathBuf {
        self.data.join("registries").join(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relative_data_dir_becomes_absolute() {
        let d = Dirs::resolve(Some("rel/data".into()));
        assert!(d.data().is_absolute());
        assert!(d.data().ends_with("rel/data"));
    }
}
