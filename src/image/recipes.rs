//! Where recipes are read from: `KVCI_IMAGES_DIR` if set, else the `images/` tree compiled into
//! kvci (by `build.rs`), written out once under the data directory's cache at
//! `cache/recipes/<content hash>/`. So a kvci copied anywhere (`cargo install`) finds its
//! recipes without the source tree it was built from.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::digest::LayerDigest;
use crate::paths::Dirs;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/embedded_recipes.rs"));
}

/// One file of a recipe tree: path relative to the tree, contents, permission bits.
pub type TreeFile = (&'static str, &'static [u8], u32);

/// The `images/` tree kvci was built with.
pub const EMBEDDED: &[TreeFile] = embedded::FILES;

/// Writing the compiled-in recipes out failed.
#[derive(Debug, thiserror::Error)]
#[error("writing kvci's compiled-in recipes to {path}")]
pub struct RecipesError {
    /// The file or directory that could not be written.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// The directory of provider folders: `KVCI_IMAGES_DIR`, else the compiled-in tree under
/// `dirs`' cache (written there on first use).
pub fn dir(dirs: &Dirs) -> Result<PathBuf, RecipesError> {
    match std::env::var_os("KVCI_IMAGES_DIR") {
        Some(d) => Ok(PathBuf::from(d)),
        None => materialise(&dirs.cache().join("recipes"), EMBEDDED),
    }
}

/// sha256 over every file's path, mode and contents: the name of the tree's directory.
pub fn content_hash(files: &[TreeFile]) -> String {
    let mut d = LayerDigest::default();
    for (path, data, mode) in files {
        d.feed(path, data);
        d.feed("mode", &mode.to_le_bytes());
    }
    d.finish()
}

/// Writes `files` to `root/<content hash>/` unless it is there already, and returns that
/// directory. The tree is written to a temporary directory beside it, synced, and renamed into
/// place, so a directory with that name is always complete; when two kvcis race, the second
/// rename fails, finds the first one's tree, and uses it.
pub fn materialise(root: &Path, files: &[TreeFile]) -> Result<PathBuf, RecipesError> {
    let dest = root.join(content_hash(files));
    if dest.is_dir() {
        return Ok(dest);
    }
    let at = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RecipesError { path, source }
    };
    std::fs::create_dir_all(root).map_err(at(root))?;
    let tmp = tempfile::Builder::new().prefix(".partial-").tempdir_in(root).map_err(at(root))?;
    for (rel, data, mode) in files {
        let path = tmp.path().join(rel);
        write_synced(&path, data, *mode).map_err(at(&path))?;
    }
    let sync_dirs = || -> std::io::Result<()> {
        let mut dirs: Vec<PathBuf> = files.iter().filter_map(|(rel, ..)| Path::new(rel).parent().map(|p| tmp.path().join(p))).collect();
        dirs.sort();
        dirs.dedup();
        for d in dirs.iter().chain([&tmp.path().to_path_buf()]) {
            std::fs::File::open(d)?.sync_all()?;
        }
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))
    };
    sync_dirs().map_err(at(tmp.path()))?;
    match std::fs::rename(tmp.path(), &dest) {
        Ok(()) => {
            // Renamed away: nothing left for the guard to remove.
            let _ = tmp.keep();
            std::fs::File::open(root).and_then(|d| d.sync_all()).map_err(at(root))?;
            Ok(dest)
        }
        // Another kvci renamed its copy first (the rename fails on a non-empty directory);
        // ours is removed when `tmp` drops.
        Err(_) if dest.is_dir() => Ok(dest),
        Err(e) => Err(at(&dest)(e)),
    }
}

fn write_synced(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut f = std::fs::File::create(path)?;
    f.write_all(data)?;
    // Explicitly, so the process umask does not change what the recipes' files are.
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::provider;

    const TREE: &[TreeFile] = &[("p/provider.toml", b"base = { image = \"tiny\" }\n", 0o644), ("p/up/first.sh", b"#!/bin/sh\ntrue\n", 0o755)];

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn materialised_tree_has_the_files_and_their_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = materialise(tmp.path(), TREE).unwrap();
        assert_eq!(dir, tmp.path().join(content_hash(TREE)));
        assert_eq!(std::fs::read(dir.join("p/up/first.sh")).unwrap(), b"#!/bin/sh\ntrue\n");
        assert_eq!(mode(&dir.join("p/up/first.sh")), 0o755);
        assert_eq!(mode(&dir.join("p/provider.toml")), 0o644);
        assert_eq!(mode(&dir), 0o755);
        // Nothing but the tree itself is left beside it.
        let names: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, [std::ffi::OsString::from(content_hash(TREE))]);
    }

    #[test]
    fn materialising_again_is_a_no_op() {
        let tmp = tempfile::tempdir().unwrap();
        let first = materialise(tmp.path(), TREE).unwrap();
        // A tree with its name is complete by construction: it is not rewritten.
        std::fs::write(first.join("p/marker"), b"").unwrap();
        let again = materialise(tmp.path(), TREE).unwrap();
        assert_eq!(first, again);
        assert!(again.join("p/marker").exists());
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_changed_file_or_mode_gets_its_own_tree() {
        let changed: &[TreeFile] = &[TREE[0], ("p/up/first.sh", b"#!/bin/sh\nfalse\n", 0o755)];
        let chmodded: &[TreeFile] = &[TREE[0], ("p/up/first.sh", TREE[1].1, 0o644)];
        let hashes = [content_hash(TREE), content_hash(changed), content_hash(chmodded)];
        assert!(hashes[0] != hashes[1] && hashes[0] != hashes[2] && hashes[1] != hashes[2], "{hashes:?}");
        let tmp = tempfile::tempdir().unwrap();
        let a = materialise(tmp.path(), TREE).unwrap();
        let b = materialise(tmp.path(), changed).unwrap();
        assert_ne!(a, b);
        assert_eq!(std::fs::read(a.join("p/up/first.sh")).unwrap(), TREE[1].1);
        assert_eq!(std::fs::read(b.join("p/up/first.sh")).unwrap(), b"#!/bin/sh\nfalse\n");
    }

    #[test]
    fn concurrent_materialisers_agree_on_one_complete_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let dirs: Vec<PathBuf> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8).map(|_| s.spawn(|| materialise(tmp.path(), TREE).unwrap())).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(dirs.iter().all(|d| *d == dirs[0]));
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1, "a partial copy was left behind");
        assert_eq!(std::fs::read_dir(dirs[0].join("p")).unwrap().count(), 2);
    }

    #[test]
    fn the_compiled_in_tree_is_the_source_tree() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("images");
        for (rel, data, mode) in EMBEDDED {
            assert_eq!(std::fs::read(src.join(rel)).unwrap(), *data, "{rel}");
            let exec = std::fs::metadata(src.join(rel)).unwrap().permissions().mode() & 0o100 != 0;
            assert_eq!(*mode, if exec { 0o755 } else { 0o644 }, "{rel}");
        }
        let tmp = tempfile::tempdir().unwrap();
        let dir = materialise(tmp.path(), EMBEDDED).unwrap();
        assert_eq!(provider::list(&dir), provider::list(&src));
        assert!(provider::list(&dir).contains(&"debian-12".to_string()));
    }

    #[test]
    fn layer_ids_do_not_depend_on_where_the_recipes_are() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, b) = (materialise(a.path(), EMBEDDED).unwrap(), materialise(b.path(), EMBEDDED).unwrap());
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("images");
        // debian-12 has a rootfs overlay, whose files are hashed one by one.
        for name in provider::list(&a) {
            let id = |dir: &Path| provider::load(dir, &name).unwrap().id("base").unwrap();
            assert_eq!(id(&a), id(&b), "{name}");
            assert_eq!(id(&a), id(&src), "{name}");
        }
    }
}
