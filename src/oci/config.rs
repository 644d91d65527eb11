//! kvci's metadata in an exported image: the store manifest and, per store layer, its own
//! manifest and files (digest, media type, qcow2 backing), enough to rebuild the store
//! entries on import. Carried as JSON in the image config's label `org.kvci.image.v1`, inside
//! a standard OCI image config so that standard tools inspect the image.

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use oci_spec::image::{Arch, ConfigBuilder, ImageConfiguration, ImageConfigurationBuilder, Os, RootFsBuilder};
use serde::{Deserialize, Serialize};

use super::media;
use crate::image::store::Manifest;

/// Version of [`KvciConfig`]; bumped when an older kvci could not read a newer one.
pub const FORMAT: u32 = 1;

/// What kvci records about an exported image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvciConfig {
    /// [`FORMAT`] of the writer.
    pub format: u32,
    /// The image's store manifest (its name is the default name on import).
    pub image: Manifest,
    /// Every store layer the image needs, parents before children.
    pub layers: Vec<LayerRecord>,
}

/// One store layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// The layer id (its directory name in the store).
    pub id: String,
    /// The layer's own manifest (`layers/<id>/manifest.json`: parent and boot layer).
    pub manifest: Manifest,
    /// Its files.
    pub files: Vec<FileRecord>,
}

/// One file of a layer, and the blob that holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// File name in the layer.
    pub name: String,
    /// `sha256:<hex>` of the blob.
    pub digest: String,
    /// Bytes.
    pub size: u64,
    /// Media type of the blob.
    pub media_type: String,
    /// For a qcow2 overlay: the layer file it is backed by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backing: Option<Backing>,
}

/// A qcow2 backing file, as a store reference instead of a path of the exporting machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backing {
    /// Layer id.
    pub layer: String,
    /// File name in that layer.
    pub file: String,
}

impl KvciConfig {
    /// Checks what import relies on: known format, ids and file names that are plain names,
    /// backings that point at layers of this image, the top layer last.
    pub fn validate(&self) -> Result<()> {
        if self.format > FORMAT {
            bail!("the image was exported by a newer kvci (format {}, this one reads {FORMAT}): update kvci", self.format);
        }
        let mut seen: Vec<&str> = Vec::new();
        for layer in &self.layers {
            plain_name(&layer.id).with_context(|| format!("layer id {:?}", layer.id))?;
            if layer.manifest.id != layer.id {
                bail!("layer {} carries the manifest of layer {}", layer.id, layer.manifest.id);
            }
            for f in &layer.files {
                plain_name(&f.name).with_context(|| format!("file {:?} of layer {}", f.name, layer.id))?;
                if f.name == "manifest.json" {
                    bail!("layer {} lists manifest.json as a file", layer.id);
                }
                if let Some(b) = &f.backing {
                    if !seen.contains(&b.layer.as_str()) && b.layer != layer.id {
                        bail!("{} of layer {} is backed by layer {}, which comes later or not at all", f.name, layer.id, b.layer);
                    }
                    plain_name(&b.file)?;
                }
            }
            for parent in layer.manifest.parent.iter().chain(&layer.manifest.boot_layer) {
                if !seen.contains(&parent.as_str()) {
                    bail!("layer {} needs layer {parent}, which comes later or not at all", layer.id);
                }
            }
            seen.push(&layer.id);
        }
        let Some(top) = self.layers.last().filter(|top| top.id == self.image.id) else {
            bail!("the image's own layer {} is not the last one listed", self.image.id);
        };
        // What booting needs must be there, or the import would name a broken image.
        let has = |layer: &LayerRecord, f: &str| layer.files.iter().any(|r| r.name == f);
        let boot_id = self.image.boot_layer.as_deref().unwrap_or(&top.id);
        let boot = self.layers.iter().find(|l| l.id == boot_id).with_context(|| format!("the boot layer {boot_id} is not listed"))?;
        let mut needed = vec![(top, self.image.disk.as_str()), (boot, self.image.kernel.as_str()), (boot, self.image.initrd.as_str())];
        for n in self.image.frozen.iter().flat_map(|f| &f.nodes) {
            needed.push((top, n.disk.as_str()));
            needed.push((top, n.state.as_str()));
        }
        for (layer, f) in needed {
            if !has(layer, f) {
                bail!("layer {} has no {f}, which the image needs", layer.id);
            }
        }
        Ok(())
    }

    /// The OCI image config that carries this (JSON in a label), with `diff_ids` of the layer
    /// blobs (uncompressed, so the same digests) and `created` as RFC 3339.
    pub fn to_image_config(&self, diff_ids: Vec<String>) -> Result<ImageConfiguration> {
        let json = serde_json::to_string(self)?;
        let labels = HashMap::from([(media::LABEL_CONFIG.to_string(), json)]);
        Ok(ImageConfigurationBuilder::default()
            .architecture(Arch::Amd64)
            .os(Os::Linux)
            .created(rfc3339(self.image.created))
            .config(ConfigBuilder::default().labels(labels).build()?)
            .rootfs(RootFsBuilder::default().typ("layers").diff_ids(diff_ids).build()?)
            .build()?)
    }

    /// kvci's metadata from an image config, or `None` for images kvci did not export.
    pub fn from_image_config(config: &[u8]) -> Result<Option<KvciConfig>> {
        // Read loosely: other tools' configs (Docker's) need not match oci-spec's types.
        let c: serde_json::Value = serde_json::from_slice(config).context("the image config is not JSON")?;
        let Some(json) = c.pointer(&format!("/config/Labels/{}", media::LABEL_CONFIG)).and_then(|v| v.as_str()) else {
            return Ok(None);
        };
        let k: KvciConfig = serde_json::from_str(json).with_context(|| format!("the image config's label {} is not kvci metadata", media::LABEL_CONFIG))?;
        k.validate()?;
        Ok(Some(k))
    }
}

/// A layer id or file name must be one plain path component.
pub fn plain_name(s: &str) -> Result<()> {
    let ok = !s.is_empty()
        && s.len() <= 128
        && !s.starts_with('.')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if !ok {
        bail!("{s:?} is not a plain file name");
    }
    Ok(())
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> KvciConfig {
        let base = Manifest::root("tiny", "b", "console=ttyS0".into(), 512, 1);
        let mut child = Manifest::root("etcd:latest", "c", "console=ttyS0".into(), 1024, 2);
        child.parent = Some("b".into());
        child.boot_layer = Some("b".into());
        let file = |name: &str, backing: Option<Backing>| FileRecord {
            name: name.into(),
            digest: format!("sha256:{}", "a".repeat(64)),
            size: 3,
            media_type: media::DISK.into(),
            backing,
        };
        KvciConfig {
            format: FORMAT,
            image: child.clone(),
            layers: vec![
                LayerRecord {
                    id: "b".into(),
                    manifest: base,
                    files: vec![file("disk.qcow2", None), file("initrd.img", None), file("vmlinuz", None)],
                },
                LayerRecord {
                    id: "c".into(),
                    manifest: child,
                    files: vec![file("disk.qcow2", Some(Backing { layer: "b".into(), file: "disk.qcow2".into() }))],
                },
            ],
        }
    }

    #[test]
    fn config_round_trips_through_the_image_config() {
        let k = sample();
        k.validate().unwrap();
        let oci = k.to_image_config(vec![format!("sha256:{}", "a".repeat(64))]).unwrap();
        let bytes = serde_json::to_vec(&oci).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains(r#""architecture":"amd64""#) && text.contains(r#""os":"linux""#), "{text}");
        assert_eq!(KvciConfig::from_image_config(&bytes).unwrap(), Some(k));
        // An ordinary image config is not kvci's.
        assert_eq!(KvciConfig::from_image_config(br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#).unwrap(), None);
        assert_eq!(KvciConfig::from_image_config(br#"{"config":{"Labels":null},"container_config":{}}"#).unwrap(), None);
        assert!(KvciConfig::from_image_config(b"not json").is_err());
    }

    #[test]
    fn config_with_bad_order_or_names_is_refused() {
        let mut k = sample();
        k.layers.swap(0, 1);
        assert!(k.validate().unwrap_err().to_string().contains("comes later"));
        let mut k = sample();
        k.layers[0].files[0].name = "../../etc/passwd".into();
        assert!(k.validate().is_err());
        let mut k = sample();
        k.layers[1].id = "../x".into();
        assert!(k.validate().is_err());
        let mut k = sample();
        k.layers.pop();
        assert!(k.validate().unwrap_err().to_string().contains("last"));
        let mut k = sample();
        k.layers[0].files.retain(|f| f.name != "vmlinuz");
        assert!(k.validate().unwrap_err().to_string().contains("has no vmlinuz"));
        let mut k = sample();
        k.format = FORMAT + 1;
        assert!(k.validate().unwrap_err().to_string().contains("newer kvci"));
    }

    #[test]
    fn dates_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
