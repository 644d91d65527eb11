//! qcow2 disks: per-node overlays on a read-only base, and reading a disk's backing chain.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::tools::{ToolError, QEMU_IMG};

pub mod raw;

/// A disk operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// qemu-img failed or is missing.
    #[error("qcow2 operation on {path}")]
    Tool {
        /// The disk concerned.
        path: PathBuf,
        /// What qemu-img said.
        #[source]
        source: ToolError,
    },
    /// qemu-img's JSON was not understood.
    #[error("cannot read `qemu-img info` of {path}")]
    Info {
        /// The disk concerned.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

/// What `qemu-img info --output=json` says about a disk (the fields kvci uses).
#[derive(Debug, Clone, Deserialize)]
pub struct DiskInfo {
    /// `qcow2`, `raw`, …
    pub format: String,
    /// Size the guest sees, bytes.
    #[serde(rename = "virtual-size")]
    pub virtual_size: u64,
    /// Bytes used on the host.
    #[serde(rename = "actual-size", default)]
    pub actual_size: u64,
    /// Backing file as recorded in the image.
    #[serde(rename = "backing-filename")]
    pub backing_filename: Option<String>,
    /// Backing file's format.
    #[serde(rename = "backing-filename-format")]
    pub backing_format: Option<String>,
    /// Format-specific details (for qcow2: an external `data-file`, if any).
    #[serde(rename = "format-specific", default)]
    pub format_specific: Option<serde_json::Value>,
}

impl DiskInfo {
    /// The external data file of a qcow2: its data lives in another host file, so a disk from
    /// outside that names one could read any file of the host.
    pub fn data_file(&self) -> Option<&str> {
        self.format_specific.as_ref()?.get("data")?.get("data-file")?.as_str()
    }
}

/// Rewrites `disk`'s backing file name to `backing` (qcow2) without reading either
/// (`qemu-img rebase -u`): for chains moved as a whole, whose data is already right.
/// `-t unsafe`: no fdatasync, which would wait for the whole just-written file to reach the disk.
pub fn set_backing(disk: &Path, backing: &Path) -> Result<(), DiskError> {
    QEMU_IMG
        .run([
            "rebase".as_ref(),
            "-u".as_ref(),
            "-t".as_ref(),
            "unsafe".as_ref(),
            "-f".as_ref(),
            "qcow2".as_ref(),
            "-F".as_ref(),
            "qcow2".as_ref(),
            "-b".as_ref(),
            backing.as_os_str(),
            disk.as_os_str(),
        ])
        .map(drop)
        .map_err(|source| DiskError::Tool { path: disk.to_path_buf(), source })
}

/// Creates a qcow2 overlay at `overlay` whose backing file is `base` (which QEMU opens read-only).
pub fn create_overlay(base: &Path, overlay: &Path) -> Result<(), DiskError> {
    QEMU_IMG
        .run([
            "create".as_ref(),
            "-q".as_ref(),
            "-f".as_ref(),
            "qcow2".as_ref(),
            "-F".as_ref(),
            "qcow2".as_ref(),
            "-b".as_ref(),
            base.as_os_str(),
            overlay.as_os_str(),
        ])
        .map(drop)
        .map_err(|source| DiskError::Tool { path: overlay.to_path_buf(), source })
}

/// Reads a disk's format, sizes and backing file.
pub fn info(path: &Path) -> Result<DiskInfo, DiskError> {
    // -U: also works while a running QEMU holds the image's lock.
    let out = QEMU_IMG
        .run(["info".as_ref(), "-U".as_ref(), "--output=json".as_ref(), path.as_os_str()])
        .map_err(|source| DiskError::Tool { path: path.to_path_buf(), source })?;
    parse_info(&out.stdout).map_err(|source| DiskError::Info { path: path.to_path_buf(), source })
}

fn parse_info(json: &[u8]) -> Result<DiskInfo, serde_json::Error> {
    serde_json::from_slice(json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_img_json_is_read() {
        let json = br#"{"children": [], "virtual-size": 268435456, "filename": "ov.qcow2",
            "cluster-size": 65536, "format": "qcow2", "actual-size": 200704,
            "backing-filename": "/s/base.qcow2", "full-backing-filename": "/s/base.qcow2",
            "backing-filename-format": "qcow2", "dirty-flag": false}"#;
        let i = parse_info(json).unwrap();
        assert_eq!(i.format, "qcow2");
        assert_eq!(i.virtual_size, 256 << 20);
        assert_eq!(i.backing_filename.as_deref(), Some("/s/base.qcow2"));
    }

    #[test]
    fn overlay_records_its_base() {
        if QEMU_IMG.locate().is_err() {
            eprintln!("qemu-img missing; skipped");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.qcow2");
        QEMU_IMG.run(["create", "-q", "-f", "qcow2", base.to_str().unwrap(), "16M"]).unwrap();
        let top = dir.path().join("top.qcow2");
        create_overlay(&base, &top).unwrap();
        let i = info(&top).unwrap();
        assert_eq!(i.backing_filename.as_deref(), base.to_str());
        assert_eq!(i.virtual_size, 16 << 20);
    }

    #[test]
    fn missing_base_is_an_error_naming_the_overlay() {
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path().join("top.qcow2");
        let err = create_overlay(&dir.path().join("nope.qcow2"), &top).unwrap_err();
        assert!(err.to_string().contains("top.qcow2"));
    }
}

/// Copies `top` and its whole backing chain into one standalone, compressed qcow2.
pub fn flatten(top: &Path, out: &Path) -> Result<(), DiskError> {
    QEMU_IMG
        .run(["convert".as_ref(), "-c".as_ref(), "-O".as_ref(), "qcow2".as_ref(), top.as_os_str(), out.as_os_str()])
        .map(drop)
        .map_err(|source| DiskError::Tool { path: out.to_path_buf(), source })
}

/// Copies any disk qemu-img reads (and its backing chain) into one standalone qcow2,
/// uncompressed (fast; the store's files are sparse anyway).
pub fn standalone(src: &Path, out: &Path) -> Result<(), DiskError> {
    QEMU_IMG
        .run(["convert".as_ref(), "-O".as_ref(), "qcow2".as_ref(), src.as_os_str(), out.as_os_str()])
        .map(drop)
        .map_err(|source| DiskError::Tool { path: out.to_path_buf(), source })
}

/// The first file of `top`'s backing chain that qemu-img cannot read or finds corrupt, with
/// why; `None` when the whole chain checks out. For telling a damaged image from a guest that
/// died of its own accord.
pub fn damaged_in_chain(top: &Path) -> Option<String> {
    let mut current = top.to_path_buf();
    // A chain deeper than this is itself a fault (a loop).
    for _ in 0..64 {
        let info = match info(&current) {
            Ok(i) => i,
            Err(e) => return Some(format!("{}: {e}", current.display())),
        };
        if let Err(e) = check(&current) {
            return Some(e.to_string());
        }
        let backing = info.backing_filename?;
        let backing = Path::new(&backing);
        current = match current.parent() {
            Some(dir) if backing.is_relative() => dir.join(backing),
            _ => backing.to_path_buf(),
        };
    }
    Some(format!("{}: backing chain deeper than 64 files", top.display()))
}

/// A disk that `qemu-img check` finds damaged.
#[derive(Debug, thiserror::Error)]
#[error("{path} is corrupt (qemu-img check: {detail})")]
pub struct Corrupt {
    path: PathBuf,
    detail: String,
}

/// Checks a disk's metadata: corruption or an unfinished check is an error; leaked clusters
/// (harmless) and formats without checks (raw) pass.
pub fn check(path: &Path) -> Result<(), anyhow::Error> {
    let out = std::process::Command::new(QEMU_IMG.locate()?).args(["check", "-U"]).arg(path).output()?;
    match out.status.code() {
        Some(0) | Some(3) | Some(63) => Ok(()),
        _ => {
            let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
            let detail = text.lines().find(|l| l.contains("ERROR") || l.contains("errors")).unwrap_or("failed").trim().to_string();
            Err(Corrupt { path: path.to_path_buf(), detail }.into())
        }
    }
}
