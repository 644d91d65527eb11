//! Driving QEMU: the command line ([`cmdline`]), the process ([`process`]) and QMP ([`qmp`]).

pub mod cmdline;
pub mod process;
pub mod qmp;
