//! Scratch directories: each live registry keeps its uploads and temporary files in its own
//! `uploads/<id>/`, holding an exclusive `flock` on it. Upload sessions live in memory, so what
//! a stopped or crashed registry left there belongs to no session; but clusters may share a
//! registry directory (`--registry-dir`), so a registry that starts removes only the scratch
//! directories nobody holds, never another live registry's uploads.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// A scratch directory this registry holds; removed when dropped.
#[derive(Debug)]
pub struct Scratch {
    dir: PathBuf,
    _lock: Flock<File>,
}

/// Attempts at a fresh directory before giving up (each loses only to a concurrent sweep).
const ATTEMPTS: usize = 8;

impl Scratch {
    /// Creates and locks a new scratch directory in `uploads`.
    pub fn create(uploads: &Path, new_id: impl Fn() -> String) -> io::Result<Scratch> {
        fs::create_dir_all(uploads)?;
        for _ in 0..ATTEMPTS {
            let dir = uploads.join(new_id());
            fs::create_dir(&dir)?;
            // Another registry's sweep may lock and remove it before we lock it: keep it only
            // if, once locked, the path still names this very directory.
            let locked = File::open(&dir).and_then(|f| Flock::lock(f, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| io::Error::from(e)));
            let Ok(lock) = locked else { continue };
            if same_inode(&dir, &lock) {
                return Ok(Scratch { dir, _lock: lock });
            }
        }
        Err(io::Error::other(format!("no scratch directory could be made in {} ({ATTEMPTS} attempts)", uploads.display())))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Still locked here (fields drop after this), so no sweep races the removal.
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn same_inode(path: &Path, file: &File) -> bool {
    match (fs::metadata(path), file.metadata()) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// Removes from `uploads` every scratch directory no live registry holds, and loose files
/// (uploads of kvci versions before scratch directories, which no live session can own).
/// Returns how many entries went.
pub fn sweep(uploads: &Path) -> io::Result<usize> {
    let entries = match fs::read_dir(uploads) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for e in entries.filter_map(|e| e.ok()) {
        let path = e.path();
        let gone = if e.file_type().is_ok_and(|t| t.is_dir()) { remove_if_abandoned(&path) } else { fs::remove_file(&path).is_ok() };
        removed += usize::from(gone);
    }
    Ok(removed)
}

/// Removes a scratch directory if its lock can be taken (its registry is gone).
fn remove_if_abandoned(dir: &Path) -> bool {
    let Ok(f) = File::open(dir) else { return false };
    match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
        // Removed while we hold the lock, so its owner-to-be (see `create`) notices.
        Ok(_held) => fs::remove_dir_all(dir).is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> impl Fn() -> String {
        let n = std::sync::atomic::AtomicU32::new(0);
        move || format!("s{}", n.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    }

    #[test]
    fn a_sweep_keeps_live_scratch_directories_and_removes_the_rest() {
        let t = tempfile::tempdir().unwrap();
        let live = Scratch::create(t.path(), ids()).unwrap();
        fs::write(live.path().join("upload"), b"in flight").unwrap();
        let dead = t.path().join("dead");
        fs::create_dir(&dead).unwrap();
        fs::write(dead.join("upload"), vec![0u8; 4096]).unwrap();
        fs::write(t.path().join("loose"), b"from an older kvci").unwrap();

        assert_eq!(sweep(t.path()).unwrap(), 2);
        assert!(!dead.exists());
        assert!(!t.path().join("loose").exists());
        assert_eq!(fs::read(live.path().join("upload")).unwrap(), b"in flight");
        let path = live.path().to_path_buf();
        drop(live);
        assert!(!path.exists(), "a scratch directory goes with its registry");
    }

    #[test]
    fn a_missing_uploads_directory_is_nothing_to_sweep() {
        let t = tempfile::tempdir().unwrap();
        assert_eq!(sweep(&t.path().join("uploads")).unwrap(), 0);
    }
}
