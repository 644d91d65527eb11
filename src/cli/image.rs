//! `kvci image build|ls|inspect|rm|prune`: the frozen image store.

use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use serde::Serialize;

use crate::accel::AccelChoice;
use crate::image::{provider, store::Store, tiny};
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
    /// Remove an image's name (refused while a running cluster uses it); `prune` frees layers
    Rm(NameArgs),
    /// Delete layers no image needs
    Prune,
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
    /// Image name (NAME finds NAME:latest)
    pub name: String,
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
    let cluster = format!("wm-{}", image.split(':').next().unwrap_or("image"));
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
    if let Err(e) = kvci(&["vm", "freeze", "--name", &cluster, "--to", image]) {
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
                    let _lock = store.lock()?;
                    tiny::build(&store, &dirs.cache(), &tiny::recipe_id())?
                } else {
                    tiny::ensure(&store, &dirs.cache())?
                }
            } else {
                let loaded = provider::load(&provider::recipes_dir(), &a.provider)?;
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
            let rows: Vec<Row> = store
                .list()?
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
            None => bail!("no image {:?} in the store (see `kvci image ls`)", a.name),
        },
        ImageCommand::Rm(a) => {
            let Some(img) = store.get(&a.name)? else { bail!("no image {:?} in the store (see `kvci image ls`)", a.name) };
            if let Some(cluster) = crate::cluster::teardown::clusters_using(dirs, &img.manifest.name)?.first() {
                bail!("image {} is used by running cluster {cluster:?}: take it down first (`kvci vm down --name {cluster}`)", img.manifest.name);
            }
            store.remove(&img.manifest.name)?;
            eprintln!("kvci: removed {} (its layers go with `kvci image prune` if nothing else needs them)", img.manifest.name);
        }
        ImageCommand::Prune => {
            let removed = store.prune()?;
            eprintln!("kvci: removed {} unused layer(s)", removed.len());
        }
    }
    Ok(ExitCode::SUCCESS)
}
