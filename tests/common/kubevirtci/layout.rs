//! Hand-made container images as OCI image layouts: tar layers (paths written raw, so tests can
//! make hostile ones), gzip, blobs, and the config, manifest and index around them, with OCI or
//! Docker media types. Large files are streamed into their layer; digests are computed on the way.

use std::io::{Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Docker's layer type for gzip'd tars, as kubevirtci's published images use.
pub const DOCKER_GZIP_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// The OCI type skopeo gives those layers when it copies such an image into a layout.
pub const OCI_GZIP_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// One entry of a hand-made layer.
pub enum Entry<'a> {
    /// A regular file, 0644.
    File(&'a str, Vec<u8>),
    /// A regular file with the given permission bits.
    FileMode(&'a str, Vec<u8>, u32),
    /// A symbolic link to the target, written as given (absolute ones too).
    Symlink(&'a str, &'a str),
}

fn header(path: &str, size: u64, mode: u32, kind: tar::EntryType, link: Option<&str>) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(0);
    h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
    if let Some(t) = link {
        h.as_old_mut().linkname[..t.len()].copy_from_slice(t.as_bytes());
    }
    h.set_cksum();
    h
}

/// A tar of `entries`, paths written raw (so `..` survives), root-owned.
pub fn tar_layer(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let (h, data) = match e {
            Entry::File(p, d) => (header(p, d.len() as u64, 0o644, tar::EntryType::Regular, None), d.as_slice()),
            Entry::FileMode(p, d, m) => (header(p, d.len() as u64, *m, tar::EntryType::Regular, None), d.as_slice()),
            Entry::Symlink(p, t) => (header(p, 0, 0o777, tar::EntryType::Symlink, Some(t)), &[][..]),
        };
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

/// `bytes`, gzip'd.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// Stores `bytes` as a blob of the layout at `dir`: `{digest, size}` for a descriptor.
pub fn put_blob(dir: &Path, bytes: &[u8]) -> serde_json::Value {
    let hex = sha256_hex(bytes);
    std::fs::write(dir.join("blobs/sha256").join(&hex), bytes).unwrap();
    serde_json::json!({ "digest": format!("sha256:{hex}"), "size": bytes.len() })
}

/// A layer blob already in a blob directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Layer {
    /// Its media type.
    pub media_type: String,
    /// `sha256:…` of the blob.
    pub digest: String,
    /// Blob size in bytes.
    pub size: u64,
    /// `sha256:…` of the uncompressed tar (the config's `diff_ids`).
    pub diff_id: String,
}

impl Layer {
    /// The blob's file name under `blobs/sha256/`.
    pub fn hex(&self) -> &str {
        self.digest.strip_prefix("sha256:").unwrap()
    }
}

/// Stores the tar `tar` as a layer of media type `media_type`, gzip'd first when the type says so.
pub fn put_layer(dir: &Path, media_type: &str, tar: &[u8]) -> Layer {
    let gz = media_type.ends_with("gzip");
    let blob = if gz { gzip(tar) } else { tar.to_vec() };
    let d = put_blob(dir, &blob);
    Layer {
        media_type: media_type.into(),
        digest: d["digest"].as_str().unwrap().into(),
        size: blob.len() as u64,
        diff_id: format!("sha256:{}", sha256_hex(tar)),
    }
}

/// A writer that hashes what passes through it.
struct Hashing<W> {
    inner: W,
    sha: Sha256,
    len: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn hashing<W>(inner: W) -> Hashing<W> {
    Hashing { inner, sha: Sha256::new(), len: 0 }
}

/// Streams host files into a gzip'd tar layer in `blobs` (a `blobs/sha256` directory): each
/// `(name in the image, file on the host, mode)`. For files too large to hold in memory.
pub fn gzip_layer_of_files(blobs: &Path, files: &[(&str, &Path, u32)]) -> Layer {
    let tmp = blobs.join(format!(".partial-{}", std::process::id()));
    let out = hashing(std::fs::File::create(&tmp).unwrap());
    let gz = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
    let mut tar = tar::Builder::new(hashing(gz));
    for (name, path, mode) in files {
        let mut f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let size = f.metadata().unwrap().len();
        let h = header(name, size, *mode, tar::EntryType::Regular, None);
        tar.append(&h, (&mut f as &mut dyn Read).take(size)).unwrap();
    }
    let plain = tar.into_inner().unwrap();
    let diff_id = format!("sha256:{:x}", plain.sha.finalize());
    let mut blob = plain.inner.finish().unwrap();
    blob.flush().unwrap();
    let hex = format!("{:x}", blob.sha.finalize());
    std::fs::rename(&tmp, blobs.join(&hex)).unwrap();
    Layer { media_type: DOCKER_GZIP_LAYER.into(), digest: format!("sha256:{hex}"), size: blob.len, diff_id }
}

/// Which media types an image's manifest and config carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// OCI manifest and config, as `skopeo copy … oci:DIR` writes any image.
    Oci,
    /// Docker schema 2 manifest and config, as images pushed by `docker push` have.
    Docker,
}

impl Flavour {
    fn manifest(self) -> &'static str {
        match self {
            Flavour::Oci => "application/vnd.oci.image.manifest.v1+json",
            Flavour::Docker => "application/vnd.docker.distribution.manifest.v2+json",
        }
    }
    fn config(self) -> &'static str {
        match self {
            Flavour::Oci => "application/vnd.oci.image.config.v1+json",
            Flavour::Docker => "application/vnd.docker.container.image.v1+json",
        }
    }
}

/// The config of an image of `layers`.
fn config_json(layers: &[Layer]) -> Vec<u8> {
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": { "Cmd": ["/vm.sh"] },
        "rootfs": { "type": "layers", "diff_ids": layers.iter().map(|l| &l.diff_id).collect::<Vec<_>>() },
    });
    serde_json::to_vec(&config).unwrap()
}

/// The manifest of an image of `layers` whose config blob is `config` (`{digest, size}`).
fn manifest_json(layers: &[Layer], mut config: serde_json::Value, flavour: Flavour) -> Vec<u8> {
    config["mediaType"] = flavour.config().into();
    let descs: Vec<_> = layers.iter().map(|l| serde_json::json!({ "mediaType": l.media_type, "digest": l.digest, "size": l.size })).collect();
    let manifest = serde_json::json!({ "schemaVersion": 2, "mediaType": flavour.manifest(), "config": config, "layers": descs });
    serde_json::to_vec(&manifest).unwrap()
}

/// Writes the config, manifest and `index.json` (tagged `tag`) of an image made of `layers`
/// (already in the layout's blobs) into the layout at `dir`. skopeo sees only OCI-typed
/// manifests in a layout, as it writes them.
pub fn write_image(dir: &Path, layers: &[Layer], tag: &str, flavour: Flavour) {
    let config = put_blob(dir, &config_json(layers));
    let mut m = put_blob(dir, &manifest_json(layers, config, flavour));
    m["mediaType"] = flavour.manifest().into();
    m["annotations"] = serde_json::json!({ "org.opencontainers.image.ref.name": tag });
    let index = serde_json::json!({ "schemaVersion": 2, "manifests": [m] });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

/// Writes an image of `layers` (whose blobs `blob` names) with Docker media types as skopeo's
/// `dir:` transport keeps one: every blob as `DIR/<hex>`, `manifest.json`, `version`. Copied
/// from there to a registry, its manifest stays Docker's, as registries serve the published
/// images.
pub fn write_docker_dir(dir: &Path, layers: &[Layer], blob: impl Fn(&Layer) -> std::path::PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    for l in layers {
        let to = dir.join(l.hex());
        if std::fs::hard_link(blob(l), &to).is_err() {
            std::fs::copy(blob(l), &to).unwrap();
        }
    }
    let config = config_json(layers);
    let hex = sha256_hex(&config);
    std::fs::write(dir.join(&hex), &config).unwrap();
    let desc = serde_json::json!({ "digest": format!("sha256:{hex}"), "size": config.len() });
    std::fs::write(dir.join("manifest.json"), manifest_json(layers, desc, Flavour::Docker)).unwrap();
    std::fs::write(dir.join("version"), b"Directory Transport Version: 1.1\n").unwrap();
}

/// Makes `dir` an empty OCI image layout.
pub fn create_layout(dir: &Path) {
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

/// An OCI layout at `dir` of an ordinary container image with `layers` (media type, blob bytes
/// as given: compress them yourself), tagged `tag`, as `skopeo copy docker://… oci:DIR:TAG`
/// writes it.
pub fn container_layout(dir: &Path, layers: Vec<(&str, Vec<u8>)>, tag: &str) {
    create_layout(dir);
    let layers: Vec<Layer> = layers
        .iter()
        .map(|(mt, bytes)| {
            let d = put_blob(dir, bytes);
            // diff_id of the blob as given: kvci does not check diff_ids, and these tests
            // hand it damaged or odd blobs on purpose.
            Layer { media_type: mt.to_string(), digest: d["digest"].as_str().unwrap().into(), size: bytes.len() as u64, diff_id: d["digest"].as_str().unwrap().into() }
        })
        .collect();
    write_image(dir, &layers, tag, Flavour::Oci);
}
