//! `kvci vm logs`: a node's serial console output (kernel log, init, getty), and with
//! `--follow` what it writes from then on.

use std::io::{Read, Write};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

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
    /// Keep printing what the console writes, until the cluster goes down (or Ctrl-C)
    #[arg(long, short)]
    pub follow: bool,
}

/// Runs `vm logs`.
pub fn run(dirs: &Dirs, a: LogsArgs) -> Result<ExitCode> {
    config::validate_name(&a.name)?;
    let dir = ClusterDir::new(dirs, &a.name);
    let path = dir.node(&a.node).serial_log();
    let missing = || {
        format!("no console log for {} in cluster {:?} ({}); is the cluster up? see `kvci vm status --name {}`", a.node, a.name, path.display(), a.name)
    };
    let mut file = std::fs::File::open(&path).with_context(missing)?;
    // Watch before reading, so nothing written in between is missed.
    let watch = if a.follow { Some(Watch::new(&path).with_context(missing)?) } else { None };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let mut out = std::io::stdout().lock();
    match a.tail {
        Some(n) => writeln!(out, "{}", crate::tools::tail(&bytes, n))?,
        None => out.write_all(&bytes)?,
    }
    out.flush()?;
    if let Some(watch) = watch {
        follow(&mut file, &watch, &mut out)?;
        eprintln!("kvci: {}'s console log is gone: cluster {:?} went down", a.node, a.name);
    }
    Ok(ExitCode::SUCCESS)
}

/// inotify on the log file: woken when QEMU appends, or when `down` removes it.
struct Watch(Inotify);

impl Watch {
    fn new(path: &std::path::Path) -> Result<Watch> {
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC)?;
        inotify.add_watch(path, AddWatchFlags::IN_MODIFY | AddWatchFlags::IN_ATTRIB | AddWatchFlags::IN_DELETE_SELF | AddWatchFlags::IN_MOVE_SELF)?;
        Ok(Watch(inotify))
    }
}

/// Copies what is appended to `file` until it is removed.
fn follow(file: &mut std::fs::File, watch: &Watch, out: &mut impl Write) -> Result<()> {
    let mut buf = Vec::new();
    loop {
        let events = watch.0.read_events().context("waiting for the console log")?;
        buf.clear();
        file.read_to_end(&mut buf)?;
        out.write_all(&buf)?;
        out.flush()?;
        // An unlink shows as IN_ATTRIB (link count) while the file is still open somewhere.
        let gone = AddWatchFlags::IN_DELETE_SELF | AddWatchFlags::IN_MOVE_SELF | AddWatchFlags::IN_IGNORED;
        if events.iter().any(|e| e.mask.intersects(gone)) || std::os::unix::fs::MetadataExt::nlink(&file.metadata()?) == 0 {
            return Ok(());
        }
    }
}
