//! `kvci vm freeze`: save a running cluster's RAM and disks as a frozen cluster image.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;

use crate::cluster::layout::ClusterDir;
use crate::config;
use crate::image::name::ImageName;
use crate::paths::Dirs;
use crate::supervisor::client;
use crate::supervisor::protocol::{Request, Response};

/// `kvci vm freeze`
#[derive(Debug, Args)]
pub struct FreezeArgs {
    /// Cluster name
    #[arg(long, default_value = config::DEFAULT_NAME, env = "KVCI_CLUSTER")]
    pub name: String,
    /// Image to create (`NAME` or `NAME:TAG`; NAME means NAME:latest); `kvci vm up --image NAME` resumes it
    #[arg(long, value_name = "IMAGE")]
    pub to: ImageName,
    /// Replace an image of that name (refused otherwise)
    #[arg(long)]
    pub force: bool,
    /// Resume the cluster afterwards (default: it is taken down once saved)
    #[arg(long)]
    pub keep_running: bool,
    /// Seconds to wait for the image store while another kvci builds or imports into it; then
    /// the freeze fails and the cluster runs on
    #[arg(long, default_value_t = 120, value_name = "SECS")]
    pub store_timeout: u64,
}

/// Runs `vm freeze`.
pub fn run(dirs: &Dirs, a: FreezeArgs) -> Result<ExitCode> {
    config::validate_name(&a.name)?;
    let dir = ClusterDir::new(dirs, &a.name);
    let request = Request::Freeze { to: a.to.to_string(), keep_running: a.keep_running, force: a.force, store_timeout_secs: a.store_timeout };
    match client::request(&dir, &request, Duration::from_secs(1800 + a.store_timeout))? {
        Response::Frozen { image, seconds } => {
            eprintln!("kvci: cluster {} frozen into {image} in {seconds:.2}s", a.name);
            if !a.keep_running {
                eprintln!("kvci: cluster {} is down; `kvci vm up --image {image}` resumes it", a.name);
            }
            println!("{image}");
            Ok(ExitCode::SUCCESS)
        }
        Response::Error { message } => bail!("{message}"),
        other => bail!("unexpected answer from the supervisor: {other:?}"),
    }
}
