//! Manifest validation, pure: the JSON must be an OCI image manifest, an OCI index, a Docker v2
//! manifest or a Docker manifest list, agree with its declared media type, and name what it
//! references (blobs, or child manifests for indexes) by valid digests. Whether those exist is
//! the storage's question.

use serde::Deserialize;

use super::errors::{Code, RegistryError, Result};
use super::reference::Digest;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Largest manifest accepted (the reference registry's limit).
pub const MAX_MANIFEST: usize = 4 * 1024 * 1024;

/// A manifest over [`MAX_MANIFEST`]: 413, which the spec asks of a registry enforcing a limit,
/// with `MANIFEST_INVALID`, the spec's code for a manifest it will not take (`SIZE_INVALID` is
/// for a length that disagrees with the content, which is not the case here).
pub fn too_large() -> RegistryError {
    RegistryError::new(Code::ManifestInvalid, format!("manifest is over the {MAX_MANIFEST}-byte limit"))
        .with_status(hyper::StatusCode::PAYLOAD_TOO_LARGE)
}

/// What a manifest refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Referenced {
    /// Digest of the blob or manifest.
    pub digest: Digest,
    /// Its declared size.
    pub size: u64,
}

/// A manifest that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// Its media type (from Content-Type, else from the JSON).
    pub media_type: String,
    /// Config and layers (image manifests) or child manifests (indexes): all must exist.
    pub references: Vec<Referenced>,
    /// The references are manifests (an index), which must be in the same repository.
    pub is_index: bool,
}

#[derive(Deserialize)]
struct Raw {
    #[serde(rename = "schemaVersion")]
    schema_version: Option<u64>,
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
}

#[derive(Deserialize)]
struct Descriptor {
    digest: String,
    size: u64,
    /// Foreign/non-distributable layers live elsewhere and are not required here.
    #[serde(default)]
    urls: Vec<String>,
}

fn invalid(message: impl Into<String>) -> RegistryError {
    RegistryError::new(Code::ManifestInvalid, message)
}

/// Validates `body` sent with `content_type` (parameters after `;` ignored).
pub fn check(content_type: Option<&str>, body: &[u8]) -> Result<Checked> {
    if body.len() > MAX_MANIFEST {
        return Err(too_large());
    }
    let raw: Raw = serde_json::from_slice(body).map_err(|e| invalid(format!("manifest is not valid JSON: {e}")))?;
    let declared = content_type.map(|c| c.split(';').next().unwrap_or("").trim()).filter(|c| is_known(c));
    if let (Some(d), Some(j)) = (declared, raw.media_type.as_deref()) {
        if d != j {
            return Err(invalid(format!("Content-Type {d} does not match the manifest's mediaType {j}")));
        }
    }
    let media_type = match (declared, raw.media_type.as_deref()) {
        (Some(d), _) => d.to_string(),
        (None, Some(j)) if is_known(j) => j.to_string(),
        (None, Some(j)) => return Err(invalid(format!("unsupported manifest media type {j:?}"))),
        // OCI allows an untyped manifest: its shape says what it is.
        (None, None) if raw.manifests.is_some() => OCI_INDEX.to_string(),
        (None, None) => OCI_MANIFEST.to_string(),
    };
    if raw.schema_version != Some(2) {
        return Err(invalid("schemaVersion must be 2 (Docker schema 1 is not supported)"));
    }
    let mut references = Vec::new();
    let mut add = |d: &Descriptor| -> Result<()> {
        let digest = Digest::parse(&d.digest).map_err(|e| invalid(format!("bad descriptor digest: {}", e.message)))?;
        if d.urls.is_empty() {
            references.push(Referenced { digest, size: d.size });
        }
        Ok(())
    };
    let is_index = media_type == OCI_INDEX || media_type == DOCKER_LIST;
    if is_index {
        let manifests = raw.manifests.as_ref().ok_or_else(|| invalid("an index needs a manifests array"))?;
        manifests.iter().try_for_each(&mut add)?;
    } else {
        let config = raw.config.as_ref().ok_or_else(|| invalid("an image manifest needs a config descriptor"))?;
        let layers = raw.layers.as_ref().ok_or_else(|| invalid("an image manifest needs a layers array"))?;
        add(config)?;
        layers.iter().try_for_each(&mut add)?;
    }
    Ok(Checked { media_type, references, is_index })
}

fn is_known(media_type: &str) -> bool {
    [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST].contains(&media_type)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn image(config: &Digest, config_size: u64, layers: &[(&Digest, u64)]) -> Vec<u8> {
        serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.to_string(), "size": config_size },
            "layers": layers.iter().map(|(d, s)| serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d.to_string(), "size": s
            })).collect::<Vec<_>>(),
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn an_image_manifest_lists_config_and_layers() {
        let (c, l) = (Digest::of(b"{}"), Digest::of(b"layer"));
        let m = check(Some(OCI_MANIFEST), &image(&c, 2, &[(&l, 5)])).unwrap();
        assert_eq!(m.media_type, OCI_MANIFEST);
        assert_eq!(m.references, vec![Referenced { digest: c, size: 2 }, Referenced { digest: l, size: 5 }]);
    }

    #[test]
    fn an_index_lists_manifests_and_the_type_may_come_from_the_json() {
        let d = Digest::of(b"m");
        let body = serde_json::json!({ "schemaVersion": 2, "mediaType": DOCKER_LIST,
            "manifests": [{ "mediaType": DOCKER_MANIFEST, "digest": d.to_string(), "size": 1, "platform": {"os": "linux"} }] });
        let m = check(Some("application/octet-stream"), body.to_string().as_bytes()).unwrap();
        assert_eq!(m.media_type, DOCKER_LIST);
        assert_eq!(m.references.len(), 1);
        let untyped = serde_json::json!({ "schemaVersion": 2, "manifests": [] });
        assert_eq!(check(None, untyped.to_string().as_bytes()).unwrap().media_type, OCI_INDEX);
    }

    #[test]
    fn bad_manifests_are_invalid() {
        let code = |ct: Option<&str>, b: &[u8]| check(ct, b).unwrap_err().code;
        assert_eq!(code(Some(OCI_MANIFEST), b"not json"), Code::ManifestInvalid);
        assert_eq!(code(Some(OCI_MANIFEST), b"{\"schemaVersion\":1}"), Code::ManifestInvalid);
        assert_eq!(code(Some(OCI_MANIFEST), b"{\"schemaVersion\":2,\"layers\":[]}"), Code::ManifestInvalid);
        assert_eq!(code(Some(OCI_INDEX), b"{\"schemaVersion\":2}"), Code::ManifestInvalid);
        let c = Digest::of(b"{}");
        // Declared one type, JSON says another.
        assert_eq!(code(Some(DOCKER_MANIFEST), &image(&c, 2, &[])), Code::ManifestInvalid);
        let bad_digest = String::from_utf8(image(&c, 2, &[])).unwrap().replace(c.hex(), "xyz");
        assert_eq!(code(Some(OCI_MANIFEST), bad_digest.as_bytes()), Code::ManifestInvalid);
        let e = check(None, &vec![b' '; MAX_MANIFEST + 1]).unwrap_err();
        assert_eq!((e.code, e.status()), (Code::ManifestInvalid, hyper::StatusCode::PAYLOAD_TOO_LARGE));
    }

    #[test]
    fn foreign_layers_need_not_exist() {
        let c = Digest::of(b"{}");
        let body = serde_json::json!({ "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
            "config": { "digest": c.to_string(), "size": 2 },
            "layers": [{ "digest": Digest::of(b"win").to_string(), "size": 3, "urls": ["https://example.invalid/l"] }] });
        assert_eq!(check(Some(DOCKER_MANIFEST), body.to_string().as_bytes()).unwrap().references.len(), 1);
    }
}
