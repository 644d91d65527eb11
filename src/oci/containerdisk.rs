//! `kvci image export IMAGE --oci DIR --containerdisk`: the image's disk flattened into a
//! KubeVirt containerDisk, a plain container image whose one tar layer holds
//! `disk/disk.qcow2` owned by 107:107 (the qemu user of KubeVirt's virt-launcher).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use oci_spec::image::{Arch, ConfigBuilder, ImageConfigurationBuilder, Os, RootFsBuilder, ANNOTATION_TITLE};

use super::blob::{self, BlobRef, BlobWriter};
use super::config::rfc3339;
use super::export::{default_tag, find_image, write_manifest, ExportOptions, ExportSummary};
use super::layout::{descriptor, Layout};
use super::media;
use crate::image::store::Store;

/// uid and gid of `qemu` in KubeVirt's virt-launcher, which must read the disk.
pub const QEMU_UID: u64 = 107;
/// Where KubeVirt looks for the disk in a containerDisk.
pub const DISK_PATH: &str = "disk/disk.qcow2";

/// Writes `image_name`'s disk (its whole chain, flattened) as a containerDisk into `dir`.
pub fn export_containerdisk(store: &Store, image_name: &crate::image::name::ImageName, dir: &Path, opts: &ExportOptions) -> Result<ExportSummary> {
    let image = find_image(store, image_name)?;
    if image.manifest.frozen.is_some() {
        bail!(
            "image {image_name} is a frozen cluster: its disks are only consistent with its saved RAM, \
             which KubeVirt cannot load; export the image it was started from instead"
        );
    }
    let layout = Layout::create(dir)?;
    let flat = tempfile::Builder::new().prefix(".flat-").tempfile_in(layout.blobs_dir())?;
    crate::disk::flatten(&image.disk(), flat.path()).with_context(|| format!("flattening {}", image.disk().display()))?;
    let created = image.manifest.created;
    let tar = write_disk_tar(&layout.blobs_dir(), flat.path(), created)?;
    drop(flat);

    let labels = HashMap::from([("org.kvci.source.image".to_string(), image.manifest.name.clone())]);
    let config = ImageConfigurationBuilder::default()
        .architecture(Arch::Amd64)
        .os(Os::Linux)
        .created(rfc3339(created))
        .config(ConfigBuilder::default().labels(labels).build()?)
        .rootfs(RootFsBuilder::default().typ("layers").diff_ids(vec![tar.digest()]).build()?)
        .build()?;
    let config = blob::write_bytes(&layout.blobs_dir(), &blob::canonical_json(&config)?)?;
    let layer = descriptor(media::OCI_TAR, &tar, HashMap::from([(ANNOTATION_TITLE.to_string(), "disk.tar".to_string())]))?;
    let manifest = write_manifest(&layout, &config, vec![layer], rfc3339(created))?;
    let tag = default_tag(&image.manifest.name, opts.tag.as_deref());
    layout.tag(manifest.clone(), &tag)?;
    Ok(ExportSummary { dir: dir.to_path_buf(), tag, manifest, blobs: 2, bytes: tar.size + config.size })
}

/// The layer: `disk/` and `disk/disk.qcow2`, 107:107, written straight into a blob.
fn write_disk_tar(blobs_dir: &Path, disk: &Path, mtime: u64) -> Result<BlobRef> {
    let mut file = File::open(disk)?;
    let size = file.metadata()?.len();
    let out = BufWriter::with_capacity(blob::BUF, BlobWriter::new(blobs_dir)?);
    let mut tar = tar::Builder::new(out);
    let header = |kind: tar::EntryType, mode: u32, size: u64| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(QEMU_UID);
        h.set_gid(QEMU_UID);
        h.set_size(size);
        h.set_mtime(mtime);
        h
    };
    let mut dir = header(tar::EntryType::Directory, 0o555, 0);
    tar.append_data(&mut dir, "disk/", std::io::empty())?;
    let mut f = header(tar::EntryType::Regular, 0o444, size);
    tar.append_data(&mut f, DISK_PATH, &mut file).context("writing the disk into the layer")?;
    let mut out = tar.into_inner()?;
    out.flush()?;
    let blob = out.into_inner().map_err(|e| e.into_error())?;
    blob.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_tar_is_owned_by_qemu() {
        let tmp = tempfile::tempdir().unwrap();
        let disk = tmp.path().join("d.qcow2");
        std::fs::write(&disk, b"QFI\xfbpretend").unwrap();
        let blob = write_disk_tar(tmp.path(), &disk, 1_700_000_000).unwrap();
        let mut archive = tar::Archive::new(File::open(tmp.path().join(&blob.sha256)).unwrap());
        let entries: Vec<(String, u64, u64, u64)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (e.path().unwrap().to_string_lossy().into_owned(), h.uid().unwrap(), h.gid().unwrap(), h.size().unwrap())
            })
            .collect();
        assert_eq!(entries, vec![("disk/".into(), 107, 107, 0), ("disk/disk.qcow2".into(), 107, 107, 11)]);
    }
}
