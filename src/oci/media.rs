//! Media types and annotation keys kvci writes and reads, and what each file of a store layer
//! is exported as.

use crate::image::store::Manifest;

/// A qcow2 disk of a store layer (the image's disk, or a frozen node's overlay).
pub const DISK: &str = "application/vnd.kvci.disk.layer.v1.qcow2";
/// A kernel for direct boot.
pub const KERNEL: &str = "application/vnd.kvci.kernel.v1";
/// An initramfs.
pub const INITRD: &str = "application/vnd.kvci.initrd.v1";
/// A frozen node's saved RAM and device state (QEMU's migration stream).
pub const MEMORY: &str = "application/vnd.kvci.memory.v1";
/// A frozen cluster's ssh key (private or public half).
pub const KEY: &str = "application/vnd.kvci.ssh-key.v1";
/// Any other file of a layer (up hooks).
pub const FILE: &str = "application/vnd.kvci.file.v1";

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config. kvci's own exports use it too: `skopeo inspect` (containers/image)
/// refuses any other config type as "an artifact".
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker's manifest (schema 2), found in layouts copied from Docker registries.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker's manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker's image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// An uncompressed tar layer.
pub const OCI_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// Label in the image config holding kvci's metadata ([`super::config::KvciConfig`], JSON).
pub const LABEL_CONFIG: &str = "org.kvci.image.v1";
/// Descriptor annotation: the store layer a blob belongs to.
pub const ANNOTATION_LAYER: &str = "org.kvci.layer";
/// Descriptor annotation: the file name inside that layer (also in `org.opencontainers.image.title`).
pub const ANNOTATION_FILE: &str = "org.kvci.file";

/// How a layer blob of a container image is packed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TarLayer {
    /// Plain tar.
    Plain,
    /// gzip-compressed tar.
    Gzip,
}

/// Classifies a container image's layer media type; `Err` says why kvci cannot read it.
pub fn tar_layer(media_type: &str) -> Result<TarLayer, String> {
    match media_type {
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar"
        | "application/vnd.docker.image.rootfs.diff.tar" => Ok(TarLayer::Plain),
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip"
        | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Ok(TarLayer::Gzip),
        t if t.ends_with("+zstd") => Err(format!(
            "layer media type {t} (zstd) is not supported: copy the image again with gzip layers \
             (`skopeo copy --dest-compress-format gzip …`)"
        )),
        t => Err(format!("unknown layer media type {t}: kvci reads tar and tar+gzip layers")),
    }
}

/// The media type a file of a store layer is exported as.
pub fn for_layer_file(file: &str, layer: &Manifest) -> &'static str {
    if file == layer.kernel {
        KERNEL
    } else if file == layer.initrd {
        INITRD
    } else if file == layer.disk || file.ends_with(".qcow2") {
        DISK
    } else if file.ends_with(".state") {
        MEMORY
    } else if file.ends_with(".key") || file.ends_with(".key.pub") {
        KEY
    } else {
        FILE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_files_get_their_media_types() {
        let m = Manifest::root("tiny", "id", String::new(), 512, 1);
        assert_eq!(for_layer_file("disk.qcow2", &m), DISK);
        assert_eq!(for_layer_file("node02.qcow2", &m), DISK);
        assert_eq!(for_layer_file("vmlinuz", &m), KERNEL);
        assert_eq!(for_layer_file("initrd.img", &m), INITRD);
        assert_eq!(for_layer_file("node01.state", &m), MEMORY);
        assert_eq!(for_layer_file("cluster.key", &m), KEY);
        assert_eq!(for_layer_file("cluster.key.pub", &m), KEY);
        assert_eq!(for_layer_file("up-first.sh", &m), FILE);
    }

    #[test]
    fn container_layers_are_classified() {
        assert_eq!(tar_layer("application/vnd.oci.image.layer.v1.tar"), Ok(TarLayer::Plain));
        assert_eq!(tar_layer("application/vnd.docker.image.rootfs.diff.tar.gzip"), Ok(TarLayer::Gzip));
        assert!(tar_layer("application/vnd.oci.image.layer.v1.tar+zstd").unwrap_err().contains("gzip"));
        assert!(tar_layer("text/plain").unwrap_err().contains("unknown"));
    }
}
