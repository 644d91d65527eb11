//! `kvci vm console`: attach the terminal to a node's serial console socket.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use nix::sys::termios::{self, SetArg};

use crate::cluster::layout::ClusterDir;
use crate::config;
use crate::paths::Dirs;

/// Ctrl-] ends the session, as in telnet and virsh.
const DETACH: u8 = 0x1d;

/// `kvci vm console`
#[derive(Debug, Args)]
pub struct ConsoleArgs {
    /// Cluster name
    #[arg(long, default_value = config::DEFAULT_NAME, env = "KVCI_CLUSTER")]
    pub name: String,
    /// Node, e.g. node01
    pub node: String,
}

/// Restores the terminal on every exit path.
struct RawMode {
    saved: termios::Termios,
}

impl RawMode {
    fn enter() -> Option<RawMode> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(&stdin, SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin(), SetArg::TCSANOW, &self.saved);
    }
}

/// Runs `vm console`.
pub fn run(dirs: &Dirs, a: ConsoleArgs) -> Result<ExitCode> {
    config::validate_name(&a.name)?;
    let path = ClusterDir::new(dirs, &a.name).node(&a.node).console_socket();
    let stream = UnixStream::connect(&path)
        .with_context(|| format!("cannot attach to {} of cluster {:?} ({}): is it up?", a.node, a.name, path.display()))?;
    eprintln!("kvci: attached to {} (Ctrl-] to detach)\r", a.node);
    let _raw = RawMode::enter();

    let mut from_node = stream.try_clone()?;
    let printer = std::thread::spawn(move || {
        let mut out = std::io::stdout();
        let mut buf = [0u8; 4096];
        while let Ok(n) = from_node.read(&mut buf) {
            if n == 0 || out.write_all(&buf[..n]).and_then(|_| out.flush()).is_err() {
                break;
            }
        }
    });
    let mut to_node = stream;
    let mut stdin = std::io::stdin().lock();
    let mut buf = [0u8; 1024];
    loop {
        let n = stdin.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if let Some(pos) = buf[..n].iter().position(|&b| b == DETACH) {
            to_node.write_all(&buf[..pos])?;
            break;
        }
        if to_node.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to_node.shutdown(std::net::Shutdown::Both);
    let _ = printer.join();
    eprintln!("\r\nkvci: detached from {}\r", a.node);
    Ok(ExitCode::SUCCESS)
}
