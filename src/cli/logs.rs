//! `kvci vm logs`: a node's serial console output (kernel log, init, getty).

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;

use crate::cluster::layout::ClusterDir;
use crate::config;
use crate::paths::Dirs;

/// `kvci vm logs`
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Cluster name
    #[arg(long, default_value = config::DEFAULT_NAME, env = "KVCI_CLUSTER")]
    pub name: String,
    /// Node, e.g. node01
    pub node: String,
    /// Only the last N lines
    #[arg(long, value_name = "N")]
    pub tail: Option<usize>,
}

/// Runs `vm logs`.
pub fn run(dirs: &Dirs, a: LogsArgs) -> Result<ExitCode> {
    config::validate_name(&a.name)?;
    let dir = ClusterDir::new(dirs, &a.name);
    let path = dir.node(&a.node).serial_log();
    let bytes = std::fs::read(&path).with_context(|| {
        format!("no console log for {} in cluster {:?} ({}); is the cluster up? see `kvci vm status --name {}`", a.node, a.name, path.display(), a.name)
    })?;
    let mut out = std::io::stdout().lock();
    match a.tail {
        Some(n) => writeln!(out, "{}", crate::tools::tail(&bytes, n))?,
        None => out.write_all(&bytes)?,
    }
    Ok(ExitCode::SUCCESS)
}
