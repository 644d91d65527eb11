//! OCI image layout directories: `oci-layout`, `index.json`, `blobs/sha256/…`. Creating one,
//! adding a tagged manifest, and resolving a tag to its manifest and config (both verified).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, MediaType, ANNOTATION_REF_NAME};

use super::blob::{self, BlobRef};
use super::media;

/// Manifests and configs are small; anything larger is not one.
const MAX_JSON: u64 = 16 << 20;

/// An OCI image layout on disk.
#[derive(Debug, Clone)]
pub struct Layout {
    dir: PathBuf,
}

/// A manifest found in a layout, with its config.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The index entry that points at the manifest.
    pub descriptor: Descriptor,
    /// The manifest.
    pub manifest: ImageManifest,
    /// The manifest's bytes as stored (what its digest is of; what a push uploads).
    pub manifest_bytes: Vec<u8>,
    /// The config blob's bytes (verified).
    pub config: Vec<u8>,
    /// The `org.opencontainers.image.ref.name` of the entry, if any.
    pub ref_name: Option<String>,
}

impl Layout {
    /// Opens `dir` as a layout, creating it when missing or empty. A directory holding
    /// something else is refused, so an export never mixes its blobs into unrelated files.
    pub fn create(dir: &Path) -> Result<Layout> {
        let empty = match std::fs::read_dir(dir) {
            Ok(mut entries) => entries.next().is_none(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
        };
        if !empty && !dir.join("oci-layout").is_file() {
            bail!("{} exists and is not an OCI image layout: choose a new or empty directory", dir.display());
        }
        std::fs::create_dir_all(dir.join("blobs/sha256")).with_context(|| format!("creating {}", dir.display()))?;
        if empty {
            std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
            write_index(dir, &ImageIndex::default())?;
        }
        Ok(Layout { dir: dir.to_path_buf() })
    }

    /// Opens an existing layout.
    pub fn open(dir: &Path) -> Result<Layout> {
        if !dir.join("oci-layout").is_file() || !dir.join("index.json").is_file() {
            bail!(
                "{} is not an OCI image layout (no oci-layout or index.json); make one with \
                 `kvci image export IMAGE --oci DIR` or `skopeo copy docker://REF oci:DIR`",
                dir.display()
            );
        }
        Ok(Layout { dir: dir.to_path_buf() })
    }

    /// The layout's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `blobs/sha256`, where blobs are written.
    pub fn blobs_dir(&self) -> PathBuf {
        self.dir.join("blobs/sha256")
    }

    /// The file of a blob (`sha256:` digests only).
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.blobs_dir().join(blob::sha256_hex(digest)?))
    }

    /// The layout's index.
    pub fn index(&self) -> Result<ImageIndex> {
        let path = self.dir.join("index.json");
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&bytes).with_context(|| format!("{} is not an OCI image index", path.display()))
    }

    /// Points tag `ref_name` at `manifest` (replacing what had that tag).
    pub fn tag(&self, manifest: Descriptor, ref_name: &str) -> Result<()> {
        let mut index = self.index()?;
        let mut manifests: Vec<Descriptor> = index.manifests().iter().filter(|d| ref_of(d) != Some(ref_name)).cloned().collect();
        let mut desc = manifest;
        let mut annotations = desc.annotations().clone().unwrap_or_default();
        annotations.insert(ANNOTATION_REF_NAME.into(), ref_name.into());
        desc.set_annotations(Some(annotations));
        manifests.push(desc);
        index.set_manifests(manifests);
        write_index(&self.dir, &index)
    }

    /// Reads a small JSON blob, verified against its descriptor.
    pub fn read_json_blob(&self, desc: &Descriptor, what: &str) -> Result<Vec<u8>> {
        if desc.size() > MAX_JSON {
            bail!("{what} {} claims {} bytes: too large for JSON", desc.digest(), desc.size());
        }
        let path = self.blob_path(desc.digest().as_ref())?;
        let expected = BlobRef { sha256: blob::sha256_hex(desc.digest().as_ref())?.to_string(), size: desc.size() };
        let file = std::fs::File::open(&path).with_context(|| {
            format!("{what} {} is missing from {}: export or copy the image again", desc.digest(), self.dir.display())
        })?;
        let mut r = blob::HashingReader::new(std::io::Read::take(file, MAX_JSON + 1));
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut r, &mut bytes)?;
        r.verify(&expected, &format!("{what} {}", desc.digest()))?;
        Ok(bytes)
    }

    /// Finds the manifest tagged `tag`, or the only one; follows an image index to its
    /// linux/amd64 entry.
    pub fn resolve(&self, tag: Option<&str>) -> Result<Resolved> {
        let index = self.index()?;
        let entries = index.manifests();
        let entry = match tag {
            Some(t) => entries.iter().find(|d| ref_of(d) == Some(t)).cloned().with_context(|| {
                format!("{} has no image tagged {t:?}; it has {}", self.dir.display(), tags_of(entries))
            })?,
            None => match entries.as_slice() {
                [one] => one.clone(),
                [] => bail!("{} holds no image (its index.json is empty)", self.dir.display()),
                _ => bail!("{} holds several images ({}): choose one with --tag", self.dir.display(), tags_of(entries)),
            },
        };
        let ref_name = ref_of(&entry).map(String::from);
        let mut descriptor = entry;
        for _ in 0..4 {
            let mt = descriptor.media_type().to_string();
            if mt == media::OCI_INDEX || mt == media::DOCKER_LIST {
                let bytes = self.read_json_blob(&descriptor, "image index")?;
                let nested: ImageIndex = serde_json::from_slice(&bytes).context("reading a nested image index")?;
                descriptor = pick_platform(nested.manifests()).with_context(|| {
                    format!("the image index {} has no linux/amd64 image", descriptor.digest())
                })?;
                continue;
            }
            if mt != media::OCI_MANIFEST && mt != media::DOCKER_MANIFEST {
                bail!("index entry {} has media type {mt}: not an image manifest kvci can read", descriptor.digest());
            }
            let bytes = self.read_json_blob(&descriptor, "manifest")?;
            let manifest: ImageManifest = serde_json::from_slice(&bytes).with_context(|| format!("manifest {} is not an OCI image manifest", descriptor.digest()))?;
            let config = self.read_json_blob(manifest.config(), "config")?;
            return Ok(Resolved { descriptor, manifest, manifest_bytes: bytes, config, ref_name });
        }
        bail!("image indexes nested too deeply in {}", self.dir.display())
    }

    /// Every blob an image needs, manifest first (what a push uploads; what a pull fetches).
    pub fn blobs_of(&self, resolved: &Resolved) -> Vec<Descriptor> {
        let mut v = vec![resolved.descriptor.clone(), resolved.manifest.config().clone()];
        v.extend(resolved.manifest.layers().iter().cloned());
        v
    }
}

fn ref_of(d: &Descriptor) -> Option<&str> {
    d.annotations().as_ref().and_then(|a| a.get(ANNOTATION_REF_NAME)).map(String::as_str)
}

fn tags_of(entries: &[Descriptor]) -> String {
    let tags: Vec<&str> = entries.iter().map(|d| ref_of(d).unwrap_or("(untagged)")).collect();
    tags.join(", ")
}

/// Whether an index entry is the linux/amd64 image (what kvci runs).
pub fn is_linux_amd64(d: &Descriptor) -> bool {
    d.platform().as_ref().is_some_and(|p| p.architecture().to_string() == "amd64" && p.os().to_string() == "linux")
}

fn pick_platform(entries: &[Descriptor]) -> Option<Descriptor> {
    entries
        .iter()
        .find(|d| is_linux_amd64(d))
        .or_else(|| entries.iter().find(|d| d.platform().is_none()))
        .cloned()
}

fn write_index(dir: &Path, index: &ImageIndex) -> Result<()> {
    let mut index = index.clone();
    index.set_media_type(Some(MediaType::ImageIndex));
    let tmp = dir.join("index.json.tmp");
    std::fs::write(&tmp, blob::canonical_json(&index)?)?;
    std::fs::rename(&tmp, dir.join("index.json")).with_context(|| format!("writing {}/index.json", dir.display()))
}

/// A descriptor of `media_type` for `blob`, with `annotations`.
pub fn descriptor(media_type: &str, blob: &BlobRef, annotations: HashMap<String, String>) -> Result<Descriptor> {
    let digest: oci_spec::image::Digest = blob.digest().parse().context("a blob digest")?;
    let mut d = Descriptor::new(MediaType::from(media_type), blob.size, digest);
    if !annotations.is_empty() {
        d.set_annotations(Some(annotations));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_replace_and_resolve() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = Layout::create(&tmp.path().join("l")).unwrap();
        let config = blob::write_bytes(&layout.blobs_dir(), b"{}").unwrap();
        let d = crate::oci::export::write_manifest(&layout, &config, vec![], "1970-01-01T00:00:00Z".into()).unwrap();
        layout.tag(d.clone(), "a").unwrap();
        layout.tag(d.clone(), "a").unwrap();
        assert_eq!(layout.index().unwrap().manifests().len(), 1, "a tag is replaced, not added");
        let r = layout.resolve(None).unwrap();
        assert_eq!(r.ref_name.as_deref(), Some("a"));
        assert_eq!(r.config, b"{}");
        layout.tag(d, "b").unwrap();
        assert!(layout.resolve(None).unwrap_err().to_string().contains("--tag"));
        assert!(layout.resolve(Some("c")).unwrap_err().to_string().contains("a, b"));
        assert_eq!(layout.blobs_of(&layout.resolve(Some("b")).unwrap()).len(), 2);

        // A damaged config is caught when read.
        std::fs::write(layout.blobs_dir().join(&config.sha256), b"[]").unwrap();
        assert!(layout.resolve(Some("a")).unwrap_err().to_string().contains("damaged"));
    }

    #[test]
    fn unrelated_directory_is_not_overwritten() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("precious"), b"x").unwrap();
        assert!(Layout::create(tmp.path()).unwrap_err().to_string().contains("not an OCI image layout"));
        assert!(Layout::open(tmp.path()).is_err());
    }
}
