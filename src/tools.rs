//! Host programs kvci drives (QEMU, qemu-img, apt, dpkg-deb, mkfs.ext4): finding them, running
//! them, and saying which Debian package to install when one is missing.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Command, Output};

/// A host program kvci needs, with the Debian package that ships it.
#[derive(Debug, Clone, Copy)]
pub struct Tool {
    /// Executable name looked up on `PATH`.
    pub name: &'static str,
    /// Debian package that provides it.
    pub package: &'static str,
}

/// QEMU system emulator (QEMU 10 from bookworm-backports on Debian 12).
pub const QEMU: Tool = Tool { name: "qemu-system-x86_64", package: "qemu-system-x86" };
/// qcow2 create/convert/info.
pub const QEMU_IMG: Tool = Tool { name: "qemu-img", package: "qemu-utils" };
/// Downloads Debian packages for image builds.
pub const APT_GET: Tool = Tool { name: "apt-get", package: "apt" };
/// Unpacks Debian packages.
pub const DPKG_DEB: Tool = Tool { name: "dpkg-deb", package: "dpkg" };
/// Makes the ext4 root disk from a directory.
pub const MKFS_EXT4: Tool = Tool { name: "mkfs.ext4", package: "e2fsprogs" };

/// A tool that is missing or failed.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// Not on `PATH`.
    #[error("`{name}` not found on PATH: install the Debian package `{package}`")]
    Missing {
        /// Executable name.
        name: &'static str,
        /// Package to install.
        package: &'static str,
    },
    /// Could not be started.
    #[error("cannot run `{name}`")]
    Spawn {
        /// Executable name.
        name: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Ran and failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        /// The command line, for the user to retry by hand.
        command: String,
        /// Exit status.
        status: std::process::ExitStatus,
        /// Tail of its stderr.
        stderr: String,
    },
}

impl Tool {
    /// Full path of the tool, or an error naming the package to install.
    pub fn locate(&self) -> Result<PathBuf, ToolError> {
        if self.name == QEMU.name {
            // KVCI_QEMU picks another binary (a wrapper, a newer build).
            if let Some(p) = std::env::var_os("KVCI_QEMU").map(PathBuf::from) {
                return if p.is_file() { Ok(p) } else { Err(ToolError::Missing { name: self.name, package: self.package }) };
            }
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
            .map(|dir| dir.join(self.name))
            .find(|p| p.is_file())
            .ok_or(ToolError::Missing { name: self.name, package: self.package })
    }

    /// Runs the tool to completion, returning its output or an error with its stderr tail.
    pub fn run<I, S>(&self, args: I) -> Result<Output, ToolError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(self.locate()?);
        cmd.args(args);
        self.output(&mut cmd)
    }

    /// Runs a prepared command (for a custom working directory), checking its exit status.
    pub fn output(&self, cmd: &mut Command) -> Result<Output, ToolError> {
        let out = cmd
            .output()
            .map_err(|source| ToolError::Spawn { name: self.name, source })?;
        if out.status.success() {
            return Ok(out);
        }
        let command = std::iter::once(cmd.get_program())
            .chain(cmd.get_args())
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        Err(ToolError::Failed { command, status: out.status, stderr: tail(&out.stderr, 20) })
    }
}

/// The last `lines` lines of some program output, lossily decoded.
pub fn tail(bytes: &[u8], lines: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_last_lines() {
        assert_eq!(tail(b"a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail(b"", 3), "");
    }

    #[test]
    fn missing_tool_names_its_package() {
        let t = Tool { name: "kvci-no-such-tool", package: "kvci-pkg" };
        let msg = t.locate().unwrap_err().to_string();
        assert!(msg.contains("kvci-pkg"), "{msg}");
    }
}
