//! `kvci vm ports`: the cluster's forwarded host ports, like kubevirtci's `gocli ports`.

use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Args;

use crate::config;
use crate::paths::Dirs;

use super::output::{self, Output};
use super::status;

/// `kvci vm ports`
#[derive(Debug, Args)]
pub struct PortsArgs {
    /// Cluster name
    #[arg(long, default_value = config::DEFAULT_NAME, env = "KVCI_CLUSTER")]
    pub name: String,
    /// Print only this port's host port number (ssh, ssh-nodeNN, ssh-worker, k8s, ocp, registry, vnc,
    /// http, https, console, prometheus, grafana, uploadproxy, uploadproxy-lowerband, dns (UDP))
    pub port: Option<String>,
    /// Table for people, JSON for scripts
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
}

/// Runs `vm ports`.
pub fn run(dirs: &Dirs, a: PortsArgs) -> Result<ExitCode> {
    config::validate_name(&a.name)?;
    let s = status::query(dirs, &a.name)?;
    let ports: Vec<_> = match &a.port {
        Some(name) => {
            let found: Vec<_> = s.ports.iter().filter(|p| &p.name == name).cloned().collect();
            if found.is_empty() {
                let names: Vec<&str> = s.ports.iter().map(|p| p.name.as_str()).collect();
                bail!("cluster {:?} has no port {name:?}; it has: {}", a.name, names.join(", "));
            }
            found
        }
        None => s.ports.clone(),
    };
    match (a.output, &a.port) {
        (Output::Json, _) => println!("{}", serde_json::to_string_pretty(&ports)?),
        (Output::Table, Some(_)) => println!("{}", ports[0].host_port),
        (Output::Table, None) => {
            let mut t = output::table(&["NAME", "NODE", "HOST PORT", "GUEST PORT", "PROTO"]);
            for p in ports {
                t.add_row(vec![p.name, p.node, format!("127.0.0.1:{}", p.host_port), p.guest_port.to_string(), p.proto]);
            }
            println!("{t}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
