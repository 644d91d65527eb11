//! `kvci image import DIR`: an OCI image layout into the store. kvci's own exports (kvci
//! metadata in the config) get their store layers back under the same ids; any other image is
//! read as a kubevirtci provider image ([`super::kubevirtci`]). Every blob is verified while
//! it streams, and nothing reaches the store unless the whole image was read and checked.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::blob::{self, BlobRef};
use super::config::KvciConfig;
use super::layout::{Layout, Resolved};
use super::{kubevirtci, media};
use crate::image::name::{ImageName, DEFAULT_TAG};
use crate::image::store::{Image, Store};

/// How to import.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Store name; default: the exported image's name, or for other images the layout's tag.
    pub name: Option<ImageName>,
    /// Which image of the layout (its `org.opencontainers.image.ref.name`); needed only when
    /// the layout holds several.
    pub tag: Option<String>,
    /// Ignore links that are absolute or leave the image root where kvci does not read them.
    pub skip_unsafe_links: bool,
}

/// A store name from a layout's tag, which may be a plain tag (`k8s-1.30`) or a whole
/// reference (`quay.io/kubevirtci/k8s-1.30:2405`): the last path segment, lowercased, other
/// characters turned into `-`.
pub fn name_from_ref(r: &str) -> Option<ImageName> {
    let last = r.rsplit('/').next().unwrap_or(r);
    let (base, tag) = last.split_once(':').unwrap_or((last, DEFAULT_TAG));
    let clean = |s: &str, keep: fn(char) -> bool| -> String {
        s.to_ascii_lowercase().chars().map(|c| if keep(c) { c } else { '-' }).collect::<String>().trim_matches('-').to_string()
    };
    let mut base = clean(base, |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    base.truncate(32);
    let base = base.trim_end_matches('-');
    let tag = clean(tag, |c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    ImageName::new(base, if tag.is_empty() { DEFAULT_TAG } else { &tag }).ok()
}

/// Imports the image of the layout at `dir` into `store`.
pub fn import_layout(store: &Store, dir: &Path, opts: &ImportOptions) -> Result<Image> {
    let layout = Layout::open(dir)?;
    let resolved = layout.resolve(opts.tag.as_deref())?;
    match KvciConfig::from_image_config(&resolved.config)? {
        Some(k) => {
            let name = match &opts.name {
                Some(n) => n.clone(),
                // The exporter's name (an older kvci's `tiny` is `tiny:latest`).
                None => ImageName::parse(&k.image.name).context("the exported image's name")?,
            };
            import_kvci(store, &layout, &resolved, &k, &name)
        }
        None => {
            let name = match (&opts.name, &resolved.ref_name) {
                (Some(n), _) => n.clone(),
                (None, Some(r)) => name_from_ref(r).with_context(|| format!("the layout's tag {r:?} makes no image name: pass --name NAME"))?,
                (None, None) => bail!("the image in {} has no tag to name it by: pass --name NAME", dir.display()),
            };
            kubevirtci::import(store, &layout, &resolved, &name.to_string(), opts.skip_unsafe_links)
        }
    }
}

/// Rebuilds the store layers recorded in `k` (reusing those the store has) and names the image.
fn import_kvci(store: &Store, layout: &Layout, resolved: &Resolved, k: &KvciConfig, name: &ImageName) -> Result<Image> {
    let listed: HashMap<String, u64> = resolved.manifest.layers().iter().map(|d| (d.digest().to_string(), d.size())).collect();
    for f in k.layers.iter().flat_map(|l| &l.files) {
        match listed.get(&f.digest) {
            Some(&size) if size == f.size => {}
            Some(size) => bail!("{} is {} bytes in the metadata but {size} in the manifest", f.digest, f.size),
            None => bail!("the metadata names blob {} ({}), which the manifest does not list", f.digest, f.name),
        }
        if ![media::DISK, media::KERNEL, media::INITRD, media::MEMORY, media::KEY, media::FILE].contains(&f.media_type.as_str()) {
            bail!("{} has media type {}, unknown to this kvci: update kvci", f.name, f.media_type);
        }
    }

    // Stage every new layer first, checked, so a bad blob leaves the store untouched; only the
    // commit holds the store lock (a freeze or another import need not wait for the copies).
    let mut staged = Vec::new();
    let mut reused = Vec::new();
    for layer in &k.layers {
        if store.layer_dir(&layer.id).exists() {
            // The store's copy is used, but a damaged layout is refused all the same: the user
            // learns of it here rather than in another store that lacks the layer.
            for f in &layer.files {
                let expected = BlobRef { sha256: blob::sha256_hex(&f.digest)?.to_string(), size: f.size };
                let what = format!("blob {} ({} of layer {})", f.digest, f.name, &layer.id[..12.min(layer.id.len())]);
                blob::verify(&layout.blob_path(&f.digest)?, &expected, &what)?;
            }
            tracing::info!(layer = %layer.id, "layer already in the store; its blobs check out");
            reused.push(layer.id.clone());
            continue;
        }
        let staging = store.staging()?;
        for f in &layer.files {
            let expected = BlobRef { sha256: blob::sha256_hex(&f.digest)?.to_string(), size: f.size };
            let dest = staging.path().join(&f.name);
            let what = format!("blob {} ({} of layer {})", f.digest, f.name, &layer.id[..12.min(layer.id.len())]);
            blob::copy_verified(&layout.blob_path(&f.digest)?, &expected, &dest, &what)?;
            if f.media_type == media::DISK {
                let info = crate::disk::info(&dest)?;
                if info.format != "qcow2" {
                    bail!("{what} is {}, not qcow2", info.format);
                }
                if let Some(data) = info.data_file() {
                    bail!("{what} keeps its data in an external file ({data}): refused");
                }
                match (&f.backing, &info.backing_filename) {
                    (Some(b), Some(_)) => crate::disk::set_backing(&dest, &store.layer_dir(&b.layer).join(&b.file))?,
                    (None, None) => {}
                    (Some(_), None) => bail!("{what} should be an overlay but has no backing file"),
                    (None, Some(raw)) => bail!("{what} has a backing file ({raw}) its metadata does not account for: refused"),
                }
            }
        }
        staged.push((staging, layer.manifest.clone()));
    }
    let lock = store.lock()?;
    if let Some(gone) = reused.iter().find(|id| !store.layer_dir(id).exists()) {
        bail!("layer {gone} left the store while the image was checked (a concurrent `kvci image prune`?): import again");
    }
    for (staging, mut manifest) in staged {
        store.commit_layer(&lock, staging.path(), &mut manifest)?;
    }
    let mut manifest = k.image.clone();
    manifest.name = name.to_string();
    store.name(&lock, &manifest)?;
    store.get(name)?.context("the imported image is not in the store")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_tags_become_store_names() {
        assert_eq!(name_from_ref("k8s-1.30").map(|n| n.to_string()).as_deref(), Some("k8s-1-30:latest"));
        assert_eq!(name_from_ref("quay.io/kubevirtci/k8s-1.30:2405151527-a4b1c5").map(|n| n.to_string()).as_deref(), Some("k8s-1-30:2405151527-a4b1c5"));
        assert_eq!(name_from_ref("it-kubevirtci").map(|n| n.to_string()).as_deref(), Some("it-kubevirtci:latest"));
        assert_eq!(name_from_ref("Fedora_39").map(|n| n.to_string()).as_deref(), Some("fedora-39:latest"));
        assert_eq!(name_from_ref("..."), None);
    }
}
