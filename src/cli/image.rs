//! `kvci image build|ls`: the frozen image store.

use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};

use crate::image::{store::Store, tiny};
use crate::paths::Dirs;

use super::output::{self, Output};

/// `kvci image …`
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build an image into the store (today: `tiny`, from Debian packages)
    Build(BuildArgs),
    /// List the images in the store
    Ls(LsArgs),
}

/// `kvci image build`
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// What to build
    pub provider: String,
    /// Rebuild even if the store has it for this recipe
    #[arg(long)]
    pub force: bool,
}

/// `kvci image ls`
#[derive(Debug, Args)]
pub struct LsArgs {
    /// Table for people, JSON for scripts
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
}

/// Runs `kvci image …`.
pub fn run(dirs: &Dirs, cmd: ImageCommand) -> Result<ExitCode> {
    let store = Store::open(&dirs.images())?;
    match cmd {
        ImageCommand::Build(a) => {
            if a.provider != tiny::NAME {
                bail!("unknown provider {:?}: kvci can build `{}`", a.provider, tiny::NAME);
            }
            let image = if a.force {
                let _lock = store.lock()?;
                tiny::build(&store, &dirs.cache(), &tiny::recipe_id())?
            } else {
                tiny::ensure(&store, &dirs.cache())?
            };
            println!("{} {}", image.manifest.name, image.manifest.id);
        }
        ImageCommand::Ls(a) => {
            let images = store.list()?;
            match a.output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&images)?),
                Output::Table => {
                    let mut t = output::table(&["NAME", "ID", "SIZE", "CREATED"]);
                    for m in images {
                        t.add_row(vec![m.name, m.id[..12.min(m.id.len())].to_string(), format!("{} MiB", m.size >> 20), m.created.to_string()]);
                    }
                    println!("{t}");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
