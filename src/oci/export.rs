//! `kvci image export IMAGE --oci DIR`: a store image as an OCI image layout, one blob per file
//! of every store layer it needs (parents first, so a shared base is one blob in a registry),
//! and kvci's metadata in the config.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use oci_spec::image::{Descriptor, ImageManifestBuilder, MediaType, ANNOTATION_CREATED, ANNOTATION_TITLE};

use super::blob::{self, BlobRef};
use super::config::{rfc3339, Backing, FileRecord, KvciConfig, LayerRecord, FORMAT};
use super::layout::{descriptor, Layout};
use super::media;
use crate::image::name::ImageName;
use crate::image::store::{Image, Manifest, Store};

/// How to export.
#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    /// Tag in the layout's index (`org.opencontainers.image.ref.name`); default: the image's
    /// tag, `latest` for untagged names.
    pub tag: Option<String>,
}

/// What an export wrote.
#[derive(Debug, Clone)]
pub struct ExportSummary {
    /// The layout directory.
    pub dir: PathBuf,
    /// The tag it is under.
    pub tag: String,
    /// The manifest's descriptor (as in index.json).
    pub manifest: Descriptor,
    /// Blobs the image references (config and layers).
    pub blobs: usize,
    /// Their bytes.
    pub bytes: u64,
}

/// The tag an image is exported under: `--tag`, else the part after `:`, else `latest`.
pub fn default_tag(image_name: &str, tag: Option<&str>) -> String {
    tag.map(String::from).unwrap_or_else(|| image_name.split_once(':').map(|(_, t)| t.to_string()).unwrap_or_else(|| "latest".into()))
}

/// Looks `name` up, saying what to do when it is not there.
pub fn find_image(store: &Store, name: &ImageName) -> Result<Image> {
    store.get(name)?.with_context(|| format!("no image {name} in the store (see `kvci image ls`; `kvci image build {}` makes one)", name.repo()))
}

/// Every layer `image` needs, parents and boot layers before the layers that use them.
pub fn layer_chain(store: &Store, image: &Image) -> Result<Vec<Manifest>> {
    fn visit(store: &Store, image: &Image, id: &str, out: &mut Vec<Manifest>, path: &mut Vec<String>) -> Result<()> {
        if out.iter().any(|m| m.id == id) {
            return Ok(());
        }
        if path.iter().any(|p| p == id) {
            bail!("layer {id} of image {} depends on itself", image.manifest.name);
        }
        let m = match store.layer_manifest(id)? {
            Some(m) => m,
            None if id == image.manifest.id => image.manifest.clone(),
            None => bail!("layer {id} of image {} is missing from the store; rebuild the image", image.manifest.name),
        };
        path.push(id.to_string());
        for dep in m.parent.iter().chain(&m.boot_layer) {
            visit(store, image, dep, out, path)?;
        }
        path.pop();
        out.push(m);
        Ok(())
    }
    let mut out = Vec::new();
    visit(store, image, &image.manifest.id, &mut out, &mut Vec::new())?;
    Ok(out)
}

/// Where a qcow2 in the store is backed: `raw` (absolute, or relative to the disk's
/// directory) must be a file of a layer of `layers_dir`.
pub fn backing_in_store(layers_dir: &Path, disk_dir: &Path, raw: &str) -> Result<Backing> {
    let path = if Path::new(raw).is_absolute() { PathBuf::from(raw) } else { disk_dir.join(raw) };
    let real = path.canonicalize().with_context(|| format!("the backing file {raw} is missing"))?;
    let layers = layers_dir.canonicalize()?;
    let rel = real.strip_prefix(&layers).map_err(|_| anyhow::anyhow!("the backing file {raw} is outside the image store"))?;
    let parts: Vec<String> = rel.iter().map(|c| c.to_string_lossy().into_owned()).collect();
    match parts.as_slice() {
        [layer, file] => Ok(Backing { layer: layer.clone(), file: file.clone() }),
        _ => bail!("the backing file {raw} is not a file of a store layer"),
    }
}

/// Writes `image_name` from `store` into the layout at `dir` (created, or added to when it is
/// one already) and tags it.
pub fn export_layout(store: &Store, image_name: &ImageName, dir: &Path, opts: &ExportOptions) -> Result<ExportSummary> {
    let started = Instant::now();
    let image = find_image(store, image_name)?;
    let chain = layer_chain(store, &image)?;
    let ids: BTreeSet<&str> = chain.iter().map(|m| m.id.as_str()).collect();
    let layout = Layout::create(dir)?;
    let blobs_dir = layout.blobs_dir();
    let layers_dir = store.root().join("layers");

    let mut records = Vec::new();
    let mut descriptors: Vec<Descriptor> = Vec::new();
    for m in &chain {
        let layer_dir = store.layer_dir(&m.id);
        let mut names: Vec<String> = Vec::new();
        for e in std::fs::read_dir(&layer_dir).with_context(|| format!("reading layer {}", layer_dir.display()))? {
            let e = e?;
            if e.file_type()?.is_file() && e.file_name() != "manifest.json" {
                names.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        names.sort();
        let mut files = Vec::new();
        for name in names {
            let path = layer_dir.join(&name);
            let media_type = media::for_layer_file(&name, m);
            let backing = if media_type == media::DISK {
                let info = crate::disk::info(&path)?;
                match info.backing_filename {
                    Some(raw) => {
                        let b = backing_in_store(&layers_dir, &layer_dir, &raw).with_context(|| format!("exporting {}", path.display()))?;
                        if !ids.contains(b.layer.as_str()) {
                            bail!("{} is backed by layer {}, which image {image_name} does not list as a parent", path.display(), b.layer);
                        }
                        Some(b)
                    }
                    None => None,
                }
            } else {
                None
            };
            let blob = blob::copy_file_into(&blobs_dir, &path)?;
            let annotations = HashMap::from([
                (ANNOTATION_TITLE.to_string(), name.clone()),
                (media::ANNOTATION_LAYER.to_string(), m.id.clone()),
                (media::ANNOTATION_FILE.to_string(), name.clone()),
            ]);
            // One descriptor per blob: identical files share it.
            if !descriptors.iter().any(|d| d.digest().to_string() == blob.digest()) {
                descriptors.push(descriptor(media_type, &blob, annotations)?);
            }
            files.push(FileRecord { name, digest: blob.digest(), size: blob.size, media_type: media_type.into(), backing });
        }
        records.push(LayerRecord { id: m.id.clone(), manifest: m.clone(), files });
    }

    let kvci = KvciConfig { format: FORMAT, image: image.manifest.clone(), layers: records };
    kvci.validate().context("the store's layers do not form an exportable image")?;
    let diff_ids = descriptors.iter().map(|d| d.digest().to_string()).collect();
    let config = blob::write_bytes(&blobs_dir, &blob::canonical_json(&kvci.to_image_config(diff_ids)?)?)?;
    let tag = default_tag(&image.manifest.name, opts.tag.as_deref());
    let manifest = write_manifest(&layout, &config, descriptors.clone(), rfc3339(image.manifest.created))?;
    layout.tag(manifest.clone(), &tag)?;
    let bytes = descriptors.iter().map(|d| d.size()).sum::<u64>() + config.size;
    tracing::info!(image = %image_name, secs = started.elapsed().as_secs_f64(), bytes, "exported");
    Ok(ExportSummary { dir: dir.to_path_buf(), tag, manifest, blobs: descriptors.len() + 1, bytes })
}

/// Writes an image manifest (OCI config type) for `config` and `layers`; returns its descriptor.
pub fn write_manifest(layout: &Layout, config: &BlobRef, layers: Vec<Descriptor>, created: String) -> Result<Descriptor> {
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(descriptor(media::OCI_CONFIG, config, HashMap::new())?)
        .layers(layers)
        .annotations(HashMap::from([(ANNOTATION_CREATED.to_string(), created)]))
        .build()?;
    let blob = blob::write_bytes(&layout.blobs_dir(), &blob::canonical_json(&manifest)?)?;
    descriptor(media::OCI_MANIFEST, &blob, HashMap::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_default_to_the_image_tag() {
        assert_eq!(default_tag("etcd:v1", None), "v1");
        assert_eq!(default_tag("tiny", None), "latest");
        assert_eq!(default_tag("tiny", Some("x")), "x");
    }

    #[test]
    fn backing_paths_map_to_store_layers() {
        let tmp = tempfile::tempdir().unwrap();
        let layers = tmp.path().join("layers");
        std::fs::create_dir_all(layers.join("base")).unwrap();
        std::fs::create_dir_all(layers.join("child")).unwrap();
        std::fs::write(layers.join("base/disk.qcow2"), b"").unwrap();
        let abs = layers.join("base/disk.qcow2");
        let b = backing_in_store(&layers, &layers.join("child"), abs.to_str().unwrap()).unwrap();
        assert_eq!(b, Backing { layer: "base".into(), file: "disk.qcow2".into() });
        let b = backing_in_store(&layers, &layers.join("child"), "../base/disk.qcow2").unwrap();
        assert_eq!(b.layer, "base");
        std::fs::write(tmp.path().join("outside.qcow2"), b"").unwrap();
        let err = backing_in_store(&layers, &layers.join("child"), tmp.path().join("outside.qcow2").to_str().unwrap()).unwrap_err();
        assert!(err.to_string().contains("outside the image store"), "{err}");
        assert!(backing_in_store(&layers, &layers.join("child"), "/nope.qcow2").unwrap_err().to_string().contains("missing"));
    }

    #[test]
    fn chain_lists_parents_and_boot_layers_first() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let commit = |name: &str, id: &str, parent: Option<&str>, boot: Option<&str>| {
            let staged = store.staging().unwrap();
            std::fs::write(staged.path().join("disk.qcow2"), b"q").unwrap();
            let mut m = Manifest::root(name, id, String::new(), 512, 1);
            m.parent = parent.map(String::from);
            m.boot_layer = boot.map(String::from);
            store.commit(&store.lock().unwrap(), &staged.keep(), m).unwrap()
        };
        commit("tiny", "t", None, None);
        commit("a:latest", "a", Some("t"), Some("t"));
        let flat = commit("flat:latest", "f", None, Some("t"));
        let top = commit("b:latest", "b", Some("a"), Some("t"));
        let ids = |v: Vec<Manifest>| v.into_iter().map(|m| m.id).collect::<Vec<_>>();
        assert_eq!(ids(layer_chain(&store, &top).unwrap()), ["t", "a", "b"]);
        assert_eq!(ids(layer_chain(&store, &flat).unwrap()), ["t", "f"], "a compact image needs its boot layer");
    }
}
