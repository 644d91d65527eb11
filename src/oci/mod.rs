//! OCI images: kvci images exported as OCI image layouts (one blob per file of every store
//! layer, kvci's metadata in the config) or as KubeVirt containerDisks, and OCI layouts
//! imported into the store: kvci's own, and kubevirtci's published provider images.
//!
//! For push/pull on top: [`export::export_layout`] and [`import::import_layout`] do the work,
//! [`layout::Layout::resolve`] and [`layout::Layout::blobs_of`] list what an image consists of;
//! [`transfer`] moves a layout to and from a registry.

pub mod blob;
pub mod config;
pub mod containerdisk;
pub mod export;
pub mod import;
pub mod kubevirtci;
pub mod layout;
pub mod media;
pub mod tarsafe;
pub mod transfer;
pub mod unpack;
