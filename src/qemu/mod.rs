//! Driving QEMU: the command line ([`cmdline`]), the process ([`process`]), QMP ([`qmp`]) and
//! checking `--qemu-args` before a cluster boots ([`preflight`]).

pub mod cmdline;
pub mod preflight;
pub mod process;
pub mod qmp;
