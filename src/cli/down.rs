//! `kvci vm down`: graceful power-down through the supervisor, or clean-up after a dead one.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;

use crate::cluster::layout::ClusterDir;
use crate::cluster::teardown;
use crate::config;
use crate::paths::Dirs;
use crate::supervisor::client::{self, ClientError};
use crate::supervisor::protocol::{Request, Response};

/// `kvci vm down`
#[derive(Debug, Args)]
pub struct DownArgs {
    /// Cluster name
    #[arg(long, default_value = config::DEFAULT_NAME, env = "KVCI_CLUSTER")]
    pub name: String,
    /// Seconds each guest gets to power off (ACPI) before QEMU is stopped
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub timeout: u64,
}

/// Runs `vm down`.
pub fn run(dirs: &Dirs, a: DownArgs) -> Result<ExitCode> {
    config::validate_name(&a.name)?;
    let dir = ClusterDir::new(dirs, &a.name);
    let wait = Duration::from_secs(a.timeout + 30);
    match client::request(&dir, &Request::Down { timeout_secs: a.timeout }, wait) {
        Ok(Response::Down { nodes }) => {
            for (node, how) in nodes {
                eprintln!("kvci: {node}: {how}");
            }
            eprintln!("kvci: cluster {} is down", a.name);
            Ok(ExitCode::SUCCESS)
        }
        Ok(other) => bail!("unexpected answer from the supervisor: {other:?}"),
        Err(ClientError::NotRunning(_)) => {
            if !dir.exists() {
                eprintln!("kvci: cluster {} is not running; nothing to do", a.name);
                return Ok(ExitCode::SUCCESS);
            }
            let killed = teardown::remove_stale(&dir)?;
            eprintln!("kvci: cluster {} had no live supervisor; removed its files (killed QEMU pids {killed:?})", a.name);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Err(e.into()),
    }
}
