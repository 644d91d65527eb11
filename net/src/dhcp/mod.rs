//! kvci's embedded DHCP server: every node gets a fixed address, as kubevirtci's dnsmasq gives
//! them, with no pool and no lease state to lose. One job per file:
//!
//! - `lease` — where leases are decided: the static MAC → address table, node numbering.
//! - `config` — what is handed out besides the address, and the checks on it.
//! - `parse` — reading a client packet: sanity checks, only the options the server uses.
//! - `server` — the protocol, pure: a packet in, a reply (or nothing) out, counters.
//! - `reply` — what a reply contains and where it is sent (RFC 2131 §4.1, §4.3.1).
//! - `serve` — the socket: binding it to the bridge, the receive/reply loop.

pub mod config;
pub mod lease;
mod parse;
mod reply;
pub mod serve;
pub mod server;

pub use config::{ConfigError, DhcpConfig, INFINITE};
pub use lease::{node_ip, node_mac, StaticLease};
pub use serve::{bind_socket, serve};
pub use server::{DhcpServer, Outcome, ReplyTo, Stats};

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod server_tests;
#[cfg(test)]
mod test_support;
