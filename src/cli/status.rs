//! `kvci vm status`: the supervisor's live view of a cluster.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;

use crate::cluster::layout::ClusterDir;
use crate::config;
use crate::paths::Dirs;
use crate::supervisor::client::{self, ClientError};
use crate::supervisor::protocol::{ClusterStatus, Request, Response};

use super::output::{self, Output};

/// `kvci vm status`
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Cluster name
    #[arg(long, default_value = config::DEFAULT_NAME, env = "KVCI_CLUSTER")]
    pub name: String,
    /// Table for people, JSON for scripts
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
}

/// Asks a cluster's supervisor for its status.
pub fn query(dirs: &Dirs, name: &str) -> Result<ClusterStatus, anyhow::Error> {
    let dir = ClusterDir::new(dirs, name);
    match client::request(&dir, &Request::Status, Duration::from_secs(10)) {
        Ok(Response::Status(s)) => Ok(s),
        Ok(other) => bail!("unexpected answer from the supervisor: {other:?}"),
        Err(ClientError::NotRunning(_)) if dir.exists() => {
            bail!("cluster {name:?} has files but no live supervisor (it was killed or crashed): `kvci vm down --name {name}` cleans up")
        }
        Err(e) => Err(e.into()),
    }
}

/// Runs `vm status`.
pub fn run(dirs: &Dirs, a: StatusArgs) -> Result<ExitCode> {
    config::validate_name(&a.name)?;
    let s = query(dirs, &a.name)?;
    match a.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&s)?),
        Output::Table => {
            println!("cluster {}  phase {:?}  image {}  accel {}  supervisor pid {}", s.name, s.phase, s.image, s.accel, s.supervisor_pid);
            let mut t = output::table(&["NODE", "STATE", "QEMU", "PID", "READY AFTER"]);
            for n in &s.nodes {
                t.add_row(vec![
                    n.name.clone(),
                    format!("{:?}", n.state).to_lowercase(),
                    n.qemu_status.clone().unwrap_or_default(),
                    n.pid.map(|p| p.to_string()).unwrap_or_default(),
                    n.ready_secs.map(|s| format!("{s:.1}s")).unwrap_or_default(),
                ]);
            }
            println!("{t}");
            if let Some(dir) = &s.registry_dir {
                let port = s.ports.iter().find(|p| p.name == "registry").map(|p| p.host_port).unwrap_or_default();
                println!("registry: registry:5000 from the nodes, 127.0.0.1:{port} from the host, blobs in {}", dir.display());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
