//! Images: the frozen image store ([`store`]) and the builder of the default image `tiny`
//! ([`tiny`], from Debian packages via [`debs`], [`initramfs`] and [`rootfs`]).

pub mod check;
pub mod debootstrap;
pub mod debs;
pub mod digest;
pub mod import;
pub mod initramfs;
pub mod name;
pub mod provider;
pub mod recipe;
pub mod recipes;
pub mod rootfs;
pub mod store;
pub mod tiny;

use anyhow::{bail, Result};

/// The guest's readiness beacon (`firmware/beacon`), installed by every image kvci builds at
/// `/usr/libexec/kvci/beacon`.
pub const BEACON: &[u8] = include_bytes!("../../firmware/beacon");
/// The guest agent (`firmware/agent`) at `/usr/libexec/kvci/agent`: answers the host on the
/// virtio-serial port `org.kvci.agent` (clock and RNG fix-ups after a resume).
pub const AGENT: &[u8] = include_bytes!("../../firmware/agent");
/// kvci's guest programs, by path in the guest.
pub const GUEST_TOOLS: [(&str, &[u8]); 2] = [("usr/libexec/kvci/beacon", BEACON), ("usr/libexec/kvci/agent", AGENT)];

use crate::paths::Dirs;
use name::ImageName;
use store::{Image, Store};

/// Finds `name` in the store; `tiny` is built (or rebuilt after a recipe change) on first use.
pub fn resolve(dirs: &Dirs, name: &ImageName) -> Result<Image> {
    let store = Store::open(&dirs.images())?;
    if *name == tiny::name() {
        return tiny::ensure(&store, &dirs.cache());
    }
    match store.get(name)? {
        Some(image) => Ok(image),
        None => {
            let listing = store.list()?;
            listing.warn_unreadable();
            let known: Vec<String> = listing.images.into_iter().map(|m| m.name).collect();
            bail!(
                "unknown image {name}: the store at {} has [{}] and kvci can build `{}`; \
                 see `kvci image ls` and `kvci image build`",
                store.root().display(),
                known.join(", "),
                tiny::NAME
            )
        }
    }
}
