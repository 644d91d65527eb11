//! `kvci vm ls`: every cluster with a directory, live or dead.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use serde::Serialize;

use crate::paths::Dirs;

use super::output::{self, Output};
use super::status;

/// `kvci vm ls`
#[derive(Debug, Args)]
pub struct LsArgs {
    /// Table for people, JSON for scripts
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
}

#[derive(Debug, Serialize)]
struct Row {
    name: String,
    phase: String,
    nodes: usize,
    image: String,
    accel: String,
}

/// Runs `vm ls`.
pub fn run(dirs: &Dirs, a: LsArgs) -> Result<ExitCode> {
    let mut rows = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dirs.clusters()) {
        let mut names: Vec<String> = entries.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        for name in names {
            rows.push(match status::query(dirs, &name) {
                Ok(s) => Row {
                    phase: format!("{:?}", s.phase).to_lowercase(),
                    nodes: s.nodes.len(),
                    image: s.image,
                    accel: s.accel,
                    name,
                },
                Err(_) => Row { name, phase: "dead (run `kvci vm down`)".into(), nodes: 0, image: String::new(), accel: String::new() },
            });
        }
    }
    match a.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        Output::Table => {
            let mut t = output::table(&["NAME", "PHASE", "NODES", "IMAGE", "ACCEL"]);
            for r in rows {
                t.add_row(vec![r.name, r.phase, r.nodes.to_string(), r.image, r.accel]);
            }
            println!("{t}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
