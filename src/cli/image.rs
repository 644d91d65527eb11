//! `kvci image build|ls|inspect|rm|prune|export|import`: the frozen image store.

use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use serde::Serialize;

use crate::accel::AccelChoice;
use crate::image::name::ImageName;
use crate::image::{provider, store::Store, tiny};
use crate::oci::containerdisk;
use crate::oci::export::{self, ExportOptions};
use crate::oci::import::{self, ImportOptions};
use crate::oci::transfer;
use crate::paths::Dirs;
use crate::provision::build::{self, BuildOptions};

use super::output::{self, Output};

/// `kvci image …`
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build an image: `tiny` from Debian packages, or a provider from images/PROVIDER/
    Build(BuildArgs),
    /// List the images in the store
    Ls(LsArgs),
    /// Show one image's manifest (JSON)
    Inspect(NameArgs),
    /// Remove images' names (refused while a running cluster uses one); `prune` frees layers
    Rm(RmArgs),
    /// Delete layers no image needs
    Prune,
    /// Verify every layer against the hashes recorded when it was committed and every image
    /// against the layers it needs; exits 1 and says what is damaged
    Check(CheckArgs),
    /// Write an image as an OCI image layout (for registries, skopeo, KubeVirt)
    ///
    /// Writes IMAGE into DIR as an OCI image layout (oci-layout, index.json, blobs/sha256/), tagged
    /// with the image's tag (`latest` for untagged names). Every store layer the image needs is
    /// there, base first, one blob per file (qcow2 disk, kernel, initrd, and for frozen images each
    /// node's saved RAM and the cluster's ssh key), so registries store a shared base once. kvci's
    /// metadata rides in the image config. A DIR that is already a layout gets the image added.
    ///
    ///     kvci image export etcd --oci ./etcd-oci
    ///     skopeo inspect oci:./etcd-oci:latest
    ///     skopeo copy oci:./etcd-oci:latest docker://registry.example:5000/etcd:latest
    ///
    /// With --containerdisk the image's disk chain is flattened into one qcow2 and written as a
    /// KubeVirt containerDisk instead (one tar layer holding disk/disk.qcow2, owned 107:107), for
    /// a VirtualMachine's `containerDisk.image` on a real KubeVirt cluster:
    ///
    ///     kvci image export debian-12 --oci ./cd --containerdisk
    ///     skopeo copy oci:./cd:latest docker://registry.example:5000/debian-12-containerdisk
    ///
    /// Frozen images carry their cluster's private ssh key: treat their export like a secret.
    #[command(verbatim_doc_comment)]
    Export(ExportArgs),
    /// Read an OCI image layout into the store: kvci's own exports and kubevirtci's images
    ///
    /// Reads an OCI image layout into the store. Every blob's sha256 is checked while it streams;
    /// nothing is added unless the whole image was read and checked.
    ///
    /// kvci's own exports (`kvci image export`) get their layers back under the same ids (layers
    /// the store has are reused) and boot, or resume, as they did where they were exported:
    ///
    ///     kvci image import ./etcd-oci --name etcd-copy
    ///     kvci vm up --image etcd-copy
    ///
    /// Any other image is read as a kubevirtci provider image: its layers are applied in order
    /// (whiteouts honoured), /box.qcow2, /diskNN.qcow2, /vmlinuz, /initrd.img, /kernel.args and
    /// /additional.kernel.args are taken (everything else is skipped), the newest diskNN.qcow2 is
    /// the top of the chain, and the chain becomes store layers. Such images have no kvci beacon,
    /// so `vm up` may not report them ready.
    ///
    ///     skopeo copy docker://quay.io/kubevirtci/k8s-1.30:TAG oci:./k8s:k8s-1.30
    ///     kvci image import ./k8s --skip-unsafe-links
    ///     kvci vm up --image k8s-1-30     # names are a-z, 0-9 and '-'
    ///
    /// Layers with `..` in a path, or with links that are absolute or leave the image root, are
    /// refused. kvci only ever writes the regular files above, never a link, so for a trusted
    /// image whose runtime layers have absolute links (Fedora's do), --skip-unsafe-links ignores
    /// links elsewhere; a link at one of the names kvci reads is refused all the same.
    #[command(verbatim_doc_comment)]
    Import(ImportArgs),
    /// Upload an image to an OCI registry (the cluster registry, or any other)
    ///
    /// Exports IMAGE as `kvci image export` would (one blob per qcow2 of its chain, so a base
    /// shared by several images is uploaded once; blobs the registry has are skipped) and
    /// uploads it as REF, streaming every blob with its digest checked by the registry.
    /// Registries on loopback are spoken to over plain HTTP; --plain-http does so elsewhere.
    ///
    ///     kvci image push etcd 127.0.0.1:$(kvci vm ports registry)/kvci/etcd:v1
    ///     kvci image push debian-12 registry.example:5000/vms/debian:12 --containerdisk
    ///
    /// Prints the manifest digest.
    #[command(verbatim_doc_comment)]
    Push(PushArgs),
    /// Download an image from an OCI registry into the store
    ///
    /// Downloads REF (linux/amd64 of a multi-platform image), checks every blob against its
    /// digest as it streams to disk, then imports it as `kvci image import` does: kvci's own
    /// images come back as they were pushed, other images are read as kubevirtci provider
    /// images.
    ///
    ///     kvci image pull 127.0.0.1:41234/kvci/etcd:v1 --name etcd-copy
    ///     kvci vm up --image etcd-copy
    ///
    /// Prints the manifest digest, then the store name and layer id.
    #[command(verbatim_doc_comment)]
    Pull(PullArgs),
}

/// How to reach a registry (`push`, `pull`).
#[derive(Debug, Args)]
pub struct RegistryArgs {
    /// Plain HTTP instead of HTTPS (loopback registries use it anyway)
    #[arg(long)]
    pub plain_http: bool,
    /// Accept TLS certificates that do not verify
    #[arg(long)]
    pub insecure: bool,
}

impl RegistryArgs {
    fn transport(&self) -> transfer::Transport {
        transfer::Transport { plain_http: self.plain_http, insecure: self.insecure }
    }
}

/// `kvci image push`
#[derive(Debug, Args)]
pub struct PushArgs {
    /// Image name (NAME means NAME:latest)
    pub image: ImageName,
    /// Where to: HOST[:PORT]/REPOSITORY[:TAG]
    pub reference: String,
    /// Push the KubeVirt containerDisk form (the disk flattened) instead of kvci's layered form
    #[arg(long)]
    pub containerdisk: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// `kvci image pull`
#[derive(Debug, Args)]
pub struct PullArgs {
    /// What: HOST[:PORT]/REPOSITORY[:TAG|@DIGEST]
    pub reference: String,
    /// Name in the store (NAME or NAME:TAG) [default: as `kvci image import` names it]
    #[arg(long)]
    pub name: Option<ImageName>,
    /// As for `kvci image import`: ignore unsafe links in files kvci does not read
    #[arg(long)]
    pub skip_unsafe_links: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// `kvci image export`
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Image name (NAME means NAME:latest)
    pub image: ImageName,
    /// Directory of the OCI image layout (created if missing)
    #[arg(long, value_name = "DIR")]
    pub oci: std::path::PathBuf,
    /// Write a KubeVirt containerDisk (the disk flattened) instead of kvci's layered form
    #[arg(long)]
    pub containerdisk: bool,
    /// Tag in the layout [default: the image's tag, or latest]
    #[arg(long)]
    pub tag: Option<String>,
}

/// `kvci image import`
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Directory of the OCI image layout
    pub dir: std::path::PathBuf,
    /// Name in the store (NAME or NAME:TAG) [default: the exported image's name; for other
    /// images one made from the layout's tag]
    #[arg(long)]
    pub name: Option<ImageName>,
    /// Which image of the layout (its tag), when it holds several
    #[arg(long)]
    pub tag: Option<String>,
    /// Ignore unsafe links (absolute or leaving the root) in files kvci does not read, instead
    /// of refusing the layer: for trusted images whose runtime has such links
    #[arg(long)]
    pub skip_unsafe_links: bool,
}

/// `kvci image build`
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// `tiny`, or a provider folder under images/ (see images/README.md)
    pub provider: String,
    /// Tag of the built image [default: latest]
    #[arg(long, default_value = "latest")]
    pub tag: String,
    /// Flatten the chain into one compressed standalone layer
    #[arg(long)]
    pub compact: bool,
    /// Rebuild even if the store has this recipe
    #[arg(long)]
    pub force: bool,
    /// Accelerator for the build VM
    #[arg(long, value_enum, default_value_t = AccelChoice::Auto)]
    pub accel: AccelChoice,
    /// Also run the up hooks once on a fresh cluster and freeze it (RAM included) under the
    /// same name, so `vm up` of this image is a resume
    #[arg(long)]
    pub with_memory: bool,
}

/// `kvci image check`
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Lines for people, JSON for scripts
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
}

/// `kvci image ls`
#[derive(Debug, Args)]
pub struct LsArgs {
    /// Table for people, JSON for scripts
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
}

/// An image named on the command line.
#[derive(Debug, Args)]
pub struct NameArgs {
    /// Image name (NAME means NAME:latest)
    pub name: ImageName,
}

/// `kvci image rm`
#[derive(Debug, Args)]
pub struct RmArgs {
    /// Image names (NAME means NAME:latest)
    #[arg(required = true)]
    pub names: Vec<ImageName>,
}

/// One row of `image ls --output json`.
#[derive(Debug, Serialize)]
struct Row {
    name: String,
    id: String,
    size: u64,
    parent: Option<String>,
    created: u64,
}

/// Brings up a cluster of `image` (its up hooks run), then freezes it under the same name.
/// Runs kvci itself, so this is exactly `vm up` followed by `vm freeze`.
fn freeze_with_memory(dirs: &Dirs, image: &str, accel: AccelChoice) -> Result<String> {
    let exe = std::env::current_exe()?;
    let cluster = format!("wm-{}", image.split(':').next().unwrap_or("image").replace(['.', '_'], "-"));
    let accel = match accel {
        AccelChoice::Auto => "auto",
        AccelChoice::Kvm => "kvm",
        AccelChoice::Tcg => "tcg",
    };
    let kvci = |args: &[&str]| -> Result<()> {
        let status = std::process::Command::new(&exe).arg("--data-dir").arg(dirs.data()).args(args).status()?;
        if !status.success() {
            bail!("`kvci {}` failed", args.join(" "));
        }
        Ok(())
    };
    eprintln!("kvci: starting {image} once to freeze it with its memory");
    kvci(&["vm", "up", "--name", &cluster, "--image", image, "--accel", accel, "--output", "json"])?;
    // The frozen image replaces the one just built, under its name: that is the point.
    if let Err(e) = kvci(&["vm", "freeze", "--name", &cluster, "--to", image, "--force"]) {
        let _ = kvci(&["vm", "down", "--name", &cluster, "--timeout", "5"]);
        return Err(e);
    }
    Ok(image.to_string())
}

/// Runs `kvci image …`.
pub fn run(dirs: &Dirs, cmd: ImageCommand) -> Result<ExitCode> {
    let store = Store::open(&dirs.images())?;
    match cmd {
        ImageCommand::Build(a) => {
            let image = if a.provider == tiny::NAME {
                if a.force {
                    let _building = store.building(&tiny::recipe_id())?;
                    tiny::build(&store, &dirs.cache(), &tiny::recipe_id())?
                } else {
                    tiny::ensure(&store, &dirs.cache())?
                }
            } else {
                let loaded = provider::load(&crate::image::recipes::dir(dirs)?, &a.provider)?;
                build::build(dirs, &loaded, &BuildOptions { tag: a.tag, compact: a.compact, accel: a.accel, force: a.force })?
            };
            if a.with_memory {
                let frozen = freeze_with_memory(dirs, &image.manifest.name, a.accel)?;
                println!("{frozen}");
            } else {
                println!("{} {}", image.manifest.name, image.manifest.id);
            }
        }
        ImageCommand::Ls(a) => {
            let listing = store.list()?;
            listing.warn_unreadable();
            let rows: Vec<Row> = listing
                .images
                .into_iter()
                .map(|m| Row { name: m.name, id: m.id, size: m.size, parent: m.parent, created: m.created })
                .collect();
            match a.output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
                Output::Table => {
                    let mut t = output::table(&["NAME", "ID", "PARENT", "SIZE", "CREATED"]);
                    for r in rows {
                        let short = |s: &str| s[..12.min(s.len())].to_string();
                        t.add_row(vec![r.name, short(&r.id), r.parent.as_deref().map(short).unwrap_or_default(), format!("{} MiB", r.size >> 20), r.created.to_string()]);
                    }
                    println!("{t}");
                }
            }
        }
        ImageCommand::Inspect(a) => match store.get(&a.name)? {
            Some(img) => println!("{}", serde_json::to_string_pretty(&img.manifest)?),
            None => bail!("no image {} in the store (see `kvci image ls`)", a.name),
        },
        ImageCommand::Rm(a) => {
            let lock = store.lock()?;
            // Every name is checked before any is removed: a typo in the list removes nothing.
            for name in &a.names {
                if !store.exists(name) {
                    bail!("no image {name} in the store (see `kvci image ls`); nothing removed");
                }
                let users = crate::cluster::teardown::clusters_using(dirs, name)?;
                if let Some(first) = users.first() {
                    let names: Vec<String> = users.iter().map(|c| format!("{c:?}")).collect();
                    bail!(
                        "image {name} is used by running cluster(s) {}: take them down first (`kvci vm down --name {first}`); nothing removed",
                        names.join(", ")
                    );
                }
            }
            for name in &a.names {
                store.remove(&lock, name)?;
                eprintln!("kvci: removed {name} (its layers go with `kvci image prune` if nothing else needs them)");
            }
        }
        ImageCommand::Export(a) => {
            let opts = ExportOptions { tag: a.tag };
            let started = std::time::Instant::now();
            let summary = if a.containerdisk {
                containerdisk::export_containerdisk(&store, &a.image, &a.oci, &opts)?
            } else {
                export::export_layout(&store, &a.image, &a.oci, &opts)?
            };
            eprintln!(
                "kvci: exported {} to {} as tag {} ({} blobs, {} MiB, {:.1}s)",
                a.image,
                summary.dir.display(),
                summary.tag,
                summary.blobs,
                summary.bytes >> 20,
                started.elapsed().as_secs_f64()
            );
            println!("{}", summary.manifest.digest());
        }
        ImageCommand::Import(a) => {
            let opts = ImportOptions { name: a.name, tag: a.tag, skip_unsafe_links: a.skip_unsafe_links };
            let started = std::time::Instant::now();
            let image = import::import_layout(&store, &a.dir, &opts)?;
            eprintln!("kvci: imported {} as {} in {:.1}s", a.dir.display(), image.manifest.name, started.elapsed().as_secs_f64());
            println!("{} {}", image.manifest.name, image.manifest.id);
        }
        ImageCommand::Push(a) => {
            let reference = transfer::parse_reference(&a.reference)?;
            let staging = store.staging()?;
            let dir = staging.path().join("oci");
            let opts = ExportOptions { tag: Some("push".into()) };
            eprintln!("kvci: exporting {} for the upload", a.image);
            if a.containerdisk {
                containerdisk::export_containerdisk(&store, &a.image, &dir, &opts)?;
            } else {
                export::export_layout(&store, &a.image, &dir, &opts)?;
            }
            let layout = crate::oci::layout::Layout::open(&dir)?;
            let started = std::time::Instant::now();
            let digest = runtime()?.block_on(transfer::push(&layout, Some("push"), &reference, a.registry.transport()))?;
            eprintln!("kvci: pushed {} to {reference} in {:.1}s", a.image, started.elapsed().as_secs_f64());
            println!("{digest}");
        }
        ImageCommand::Pull(a) => {
            let reference = transfer::parse_reference(&a.reference)?;
            let staging = store.staging()?;
            let dir = staging.path().join("oci");
            let started = std::time::Instant::now();
            let digest = runtime()?.block_on(transfer::pull(&reference, &dir, a.registry.transport()))?;
            let tag = reference.tag().unwrap_or("latest").to_string();
            let opts = ImportOptions { name: a.name, tag: Some(tag), skip_unsafe_links: a.skip_unsafe_links };
            let image = import::import_layout(&store, &dir, &opts)?;
            eprintln!("kvci: pulled {reference} as {} in {:.1}s", image.manifest.name, started.elapsed().as_secs_f64());
            println!("{digest}");
            println!("{} {}", image.manifest.name, image.manifest.id);
        }
        ImageCommand::Check(a) => {
            let report = crate::image::check::check(&store)?;
            match a.output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
                Output::Table => {
                    for d in &report.damaged {
                        println!("DAMAGED {}: {}", d.what, d.problem);
                    }
                    if !report.layers_unrecorded.is_empty() {
                        eprintln!(
                            "kvci: {} layer(s) from an older kvci have no content record and were not verified",
                            report.layers_unrecorded.len()
                        );
                    }
                    eprintln!(
                        "kvci: {} layer(s) and {} image(s) intact, {} problem(s)",
                        report.layers_ok,
                        report.images_ok,
                        report.damaged.len()
                    );
                }
            }
            if !report.damaged.is_empty() {
                return Ok(ExitCode::FAILURE);
            }
        }
        ImageCommand::Prune => {
            let running = crate::cluster::teardown::layers_in_use(dirs)?;
            let removed = store.prune(&store.lock()?, &running)?;
            eprintln!("kvci: removed {} unused layer(s)", removed.len());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A runtime for the registry client (the image commands are otherwise synchronous).
fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}
