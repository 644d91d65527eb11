//! Raw extra disks (`vm up --nvme/--scsi/--usb/--shared-disk`): sparse files created before
//! QEMU starts, removed with the cluster directory.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A raw disk that could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum RawDiskError {
    /// Creating or sizing the file failed.
    #[error("cannot create the raw disk {path} ({size} bytes)")]
    Create {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The filesystem refuses O_DIRECT, which a shared disk's `cache.direct=on` needs.
    #[error(
        "{path}: its filesystem refuses O_DIRECT, which --shared-disk needs (QEMU opens it with cache.direct=on so every \
         node sees the others' writes): put the data directory (--data-dir) on a filesystem with O_DIRECT, such as ext4 or xfs"
    )]
    NoDirectIo {
        /// The file.
        path: PathBuf,
        /// What open(2) said.
        #[source]
        source: std::io::Error,
    },
}

/// Creates `path` as a sparse file of `size` bytes (replacing any earlier one).
pub fn create_sparse(path: &Path, size: u64) -> Result<(), RawDiskError> {
    let err = |source| RawDiskError::Create { path: path.to_path_buf(), size, source };
    let file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).open(path).map_err(err)?;
    file.set_len(size).map_err(err)
}

/// Checks that `path` can be opened with O_DIRECT, as QEMU will open a shared disk.
pub fn check_direct_io(path: &Path) -> Result<(), RawDiskError> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::fcntl::OFlag::O_DIRECT.bits())
        .open(path)
        .map(drop)
        .map_err(|source| RawDiskError::NoDirectIo { path: path.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn disks_are_sparse_and_sized() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("nvme-0.img");
        create_sparse(&p, 10 << 30).unwrap();
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!(m.len(), 10 << 30);
        assert!(m.blocks() * 512 < 1 << 20, "10 GiB file takes {} blocks", m.blocks());
        check_direct_io(&p).unwrap();
        let missing = create_sparse(&dir.path().join("no/such/dir.img"), 512).unwrap_err();
        assert!(missing.to_string().contains("no/such/dir.img"), "{missing}");
    }

    #[test]
    fn no_direct_io_says_what_to_do() {
        let e = RawDiskError::NoDirectIo { path: "/x/disk0.img".into(), source: std::io::Error::from_raw_os_error(22) };
        assert!(e.to_string().contains("O_DIRECT") && e.to_string().contains("--data-dir"), "{e}");
    }
}
