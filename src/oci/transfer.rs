//! `image push` and `image pull`: an OCI layout's blobs to and from a registry over the OCI
//! distribution API (`oci-client`). Blobs stream between files and the network in 1 MiB pieces,
//! never a whole disk in memory; digests are checked on both ends (the registry checks what we
//! upload, we check what we download before it becomes a blob of the layout).

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use futures_util::Stream;
use indicatif::{ProgressBar, ProgressStyle};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use tokio::io::AsyncReadExt;

use super::blob;
use super::layout::{self, Layout};
use super::media;
use crate::registry::reference::Digest;

/// How to reach a registry.
#[derive(Debug, Clone, Copy, Default)]
pub struct Transport {
    /// Plain HTTP (loopback registries use it without being asked, like docker does).
    pub plain_http: bool,
    /// Accept TLS certificates that do not verify.
    pub insecure: bool,
}

/// Media types a pull accepts for the top manifest.
const ACCEPTED: [&str; 4] = [media::OCI_MANIFEST, media::OCI_INDEX, media::DOCKER_MANIFEST, media::DOCKER_LIST];

/// Pieces read from a blob file per request body chunk.
const PIECE: usize = 1 << 20;

/// Parses `REF` (`host[:port]/repo[:tag|@digest]`).
pub fn parse_reference(raw: &str) -> Result<Reference> {
    let host = explicit_registry(raw).with_context(|| {
        format!(
            "{raw:?} names no registry, and kvci does not guess one for short names (docker.io? quay.io?): \
             write HOST[:PORT]/REPOSITORY[:TAG], e.g. quay.io/kubevirtci/k8s-1.34:TAG or 127.0.0.1:5000/repo:tag"
        )
    })?;
    let port = match host.strip_prefix('[') {
        Some(v6) => v6.split_once("]:").map(|(_, p)| p),
        None => host.split_once(':').map(|(_, p)| p),
    };
    if let Some(port) = port {
        if !port.parse::<u16>().is_ok_and(|p| p != 0) {
            bail!("{raw:?}: {port:?} is not a TCP port (1-65535)");
        }
    }
    raw.parse::<Reference>().map_err(|e| anyhow::anyhow!("{raw:?} is not an image reference like 127.0.0.1:5000/repo:tag: {e}"))
}

/// The registry part of `raw` when it names one as OCI tools read it: a first path segment with
/// a `.` or a `:`, `localhost`, or an IPv6 literal.
fn explicit_registry(raw: &str) -> Option<&str> {
    let (first, rest) = raw.split_once('/')?;
    let explicit = first.contains('.') || first.contains(':') || first == "localhost" || first.starts_with('[');
    (explicit && !rest.is_empty()).then_some(first)
}

/// Whether `registry` (`host[:port]`) is on this machine.
pub fn is_loopback(registry: &str) -> bool {
    let host = match registry.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => registry.rsplit_once(':').map_or(registry, |(h, p)| if p.chars().all(|c| c.is_ascii_digit()) { h } else { registry }),
    };
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn client(reference: &Reference, t: Transport) -> Client {
    // rustls needs its crypto provider chosen once per process (ring, as the rest of kvci).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let registry = reference.resolve_registry().to_string();
    let protocol = if t.plain_http || is_loopback(&registry) { ClientProtocol::Http } else { ClientProtocol::Https };
    Client::new(ClientConfig {
        protocol,
        accept_invalid_certificates: t.insecure,
        // One PUT per blob with a streamed body: no per-chunk round trips.
        use_monolithic_push: true,
        connect_timeout: Some(Duration::from_secs(30)),
        ..Default::default()
    })
}

fn bar(len: u64, what: String) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("kvci: {msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb.set_message(what);
    pb
}

fn short(digest: &str) -> &str {
    digest.get(7..19).unwrap_or(digest)
}

/// A blob file as a stream of pieces, advancing `pb`.
fn file_stream(file: tokio::fs::File, pb: ProgressBar) -> impl Stream<Item = oci_client::errors::Result<bytes::Bytes>> + Send + 'static {
    futures_util::stream::unfold((file, pb), |(mut file, pb)| async move {
        let mut buf = bytes::BytesMut::zeroed(PIECE);
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                pb.inc(n as u64);
                Some((Ok(buf.freeze()), (file, pb)))
            }
            Err(e) => Some((Err(e.into()), (file, pb))),
        }
    })
}

/// Uploads the image `tag` of `layout` (or its only image) as `reference`; returns the
/// manifest digest.
pub async fn push(layout: &Layout, tag: Option<&str>, reference: &Reference, t: Transport) -> Result<String> {
    let resolved = layout.resolve(tag)?;
    let client = client(reference, t);
    let auth = RegistryAuth::Anonymous;
    client.auth(reference, &auth, RegistryOperation::Push).await.with_context(|| format!("reaching {}", reference.resolve_registry()))?;
    let blobs = layout.blobs_of(&resolved);
    // The manifest goes last, once everything it names is there.
    for desc in &blobs[1..] {
        let digest = desc.digest().to_string();
        if client.blob_exists(reference, &digest).await.with_context(|| format!("asking {} for blob {digest}", reference.resolve_registry()))? {
            eprintln!("kvci: blob {} already in the registry ({} bytes)", short(&digest), desc.size());
            continue;
        }
        let path = layout.blob_path(&digest)?;
        let file = tokio::fs::File::open(&path).await.with_context(|| format!("blob {digest} is missing from {}", layout.dir().display()))?;
        let pb = bar(desc.size(), format!("push {}", short(&digest)));
        let pushed = client.push_blob_stream(reference, file_stream(file, pb.clone()), &digest, Some(desc.size())).await;
        pb.finish_and_clear();
        pushed.with_context(|| format!("uploading blob {digest} ({} bytes)", desc.size()))?;
        eprintln!("kvci: pushed blob {} ({} bytes)", short(&digest), desc.size());
    }
    let manifest = resolved.manifest_bytes.clone();
    let content_type = resolved.descriptor.media_type().to_string().parse().context("manifest media type")?;
    client.push_manifest_raw(reference, manifest, content_type).await.with_context(|| format!("uploading the manifest to {reference}"))?;
    Ok(resolved.descriptor.digest().to_string())
}

/// Downloads `reference` into a new layout at `dir` (tagged with the reference's tag), every
/// blob checked against its digest; returns the manifest digest.
pub async fn pull(reference: &Reference, dir: &Path, t: Transport) -> Result<String> {
    let client = client(reference, t);
    let auth = RegistryAuth::Anonymous;
    let reach = || format!("pulling {reference}");
    let (bytes, digest) = client.pull_manifest_raw(reference, &auth, &ACCEPTED).await.with_context(reach)?;
    check_digest(&bytes, &digest, "manifest")?;
    let layout = Layout::create(dir)?;
    let (mut bytes, mut digest) = (bytes, digest);
    let mut media_type = media_type_of(&bytes)?;
    if media_type == media::OCI_INDEX || media_type == media::DOCKER_LIST {
        // A multi-platform image: kvci runs linux/amd64.
        let index: ImageIndex = serde_json::from_slice(&bytes).context("reading the image index")?;
        let entry = index
            .manifests()
            .iter()
            .find(|d| layout::is_linux_amd64(d))
            .with_context(|| format!("{reference} has no linux/amd64 image"))?;
        let by_digest = reference.clone_with_digest(entry.digest().to_string());
        (bytes, digest) = client.pull_manifest_raw(&by_digest, &auth, &ACCEPTED).await.with_context(reach)?;
        check_digest(&bytes, &digest, "manifest")?;
        media_type = media_type_of(&bytes)?;
    }
    let manifest: ImageManifest = serde_json::from_slice(&bytes).with_context(|| format!("{reference}: not an image manifest"))?;
    let mut wanted: Vec<&Descriptor> = vec![manifest.config()];
    wanted.extend(manifest.layers());
    for desc in wanted {
        fetch_blob(&client, reference, &layout, desc).await?;
    }
    let manifest_blob = blob::write_bytes(&layout.blobs_dir(), &bytes)?;
    let tag = reference.tag().unwrap_or("latest");
    layout.tag(layout::descriptor(&media_type, &manifest_blob, Default::default())?, tag)?;
    Ok(digest)
}

/// One blob into the layout: written to a temporary file, kept only if its digest matches.
async fn fetch_blob(client: &Client, reference: &Reference, layout: &Layout, desc: &Descriptor) -> Result<()> {
    let digest = desc.digest().to_string();
    let path = layout.blob_path(&digest)?;
    if path.exists() {
        return Ok(());
    }
    let tmp = tempfile::NamedTempFile::new_in(layout.blobs_dir())?;
    let file = tokio::fs::File::from_std(tmp.reopen()?);
    let pb = bar(desc.size(), format!("pull {}", short(&digest)));
    let out = tokio::io::BufWriter::with_capacity(PIECE, pb.wrap_async_write(file));
    let layer = OciDescriptor { media_type: desc.media_type().to_string(), digest: digest.clone(), size: desc.size() as i64, ..Default::default() };
    // oci-client hashes what it writes and fails on a mismatch.
    let pulled = client.pull_blob(reference, &layer, out).await;
    pb.finish_and_clear();
    pulled.with_context(|| format!("downloading blob {digest}"))?;
    let got = tmp.as_file().metadata()?.len();
    if got != desc.size() {
        bail!("blob {digest}: the registry sent {got} bytes, the manifest says {}", desc.size());
    }
    tmp.persist(&path).with_context(|| format!("storing blob {digest}"))?;
    eprintln!("kvci: pulled blob {} ({} bytes)", short(&digest), desc.size());
    Ok(())
}

fn check_digest(bytes: &[u8], digest: &str, what: &str) -> Result<()> {
    let have = Digest::of(bytes).to_string();
    if !digest.is_empty() && have != digest {
        bail!("the registry's {what} has digest {have}, not the {digest} it claims");
    }
    Ok(())
}

fn media_type_of(manifest: &[u8]) -> Result<String> {
    #[derive(serde::Deserialize)]
    struct Peek {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    let p: Peek = serde_json::from_slice(manifest).context("the registry sent a manifest that is not JSON")?;
    Ok(match p.media_type {
        Some(m) => m,
        // OCI allows leaving mediaType out: an index has `manifests`.
        None if p.manifests.is_some() => media::OCI_INDEX.into(),
        None => media::OCI_MANIFEST.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_name_a_registry_and_a_valid_port() {
        assert!(parse_reference("127.0.0.1:5000/r:t").is_ok());
        assert!(parse_reference("quay.io/kubevirtci/k8s-1.34:2511").is_ok());
        assert!(parse_reference("localhost/r").is_ok());
        let err = parse_reference("127.0.0.1:99999/r:t").unwrap_err().to_string();
        assert!(err.contains("\"99999\" is not a TCP port"), "{err}");
        assert!(parse_reference("127.0.0.1:0/r").is_err());
        assert!(parse_reference("[::1]:x/r").is_err());
        for short in ["justaname", "library/alpine", "justaname:tag"] {
            let err = parse_reference(short).unwrap_err().to_string();
            assert!(err.contains("names no registry"), "{short}: {err}");
        }
    }

    #[test]
    fn loopback_registries_are_recognised() {
        for r in ["127.0.0.1:5000", "localhost:41234", "[::1]:5000", "localhost", "127.0.0.2"] {
            assert!(is_loopback(r), "{r}");
        }
        for r in ["quay.io", "registry:5000", "192.168.66.2:5000", "docker.io"] {
            assert!(!is_loopback(r), "{r}");
        }
    }

    #[test]
    fn media_type_is_read_or_inferred() {
        assert_eq!(media_type_of(br#"{"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#).unwrap(), media::OCI_MANIFEST);
        assert_eq!(media_type_of(br#"{"schemaVersion":2,"manifests":[]}"#).unwrap(), media::OCI_INDEX);
        assert_eq!(media_type_of(br#"{"schemaVersion":2,"layers":[]}"#).unwrap(), media::OCI_MANIFEST);
        assert!(media_type_of(b"<html>").is_err());
    }

    #[test]
    fn references_parse_with_a_registry_and_tag() {
        let r = parse_reference("127.0.0.1:5000/kvci/tiny:v1").unwrap();
        assert_eq!(r.resolve_registry(), "127.0.0.1:5000");
        assert_eq!(r.repository(), "kvci/tiny");
        assert_eq!(r.tag(), Some("v1"));
        assert!(parse_reference("UPPER/Case:x").is_err());
    }

    #[test]
    fn a_wrong_manifest_digest_is_caught() {
        let b = br#"{"a":1}"#;
        let good = Digest::of(b).to_string();
        assert!(check_digest(b, &good, "manifest").is_ok());
        assert!(check_digest(b, &format!("sha256:{}", "0".repeat(64)), "manifest").is_err());
    }
}
