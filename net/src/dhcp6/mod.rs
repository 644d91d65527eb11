//! kvci's embedded DHCPv6 server: stateful, static leases only, as kubevirtci's dnsmasq gives
//! them (node NN always gets `fd00::1NN`, lifetimes infinite). Guests learn the default router
//! and the on-link prefix from router advertisements ([`crate::ra`]), and their address, DNS
//! servers and search domain from here. One job per file:
//!
//! - `config` — what is handed out and to whom, and the checks on it.
//! - `ident` — which node sent a message: MAC from its link-local address or its DUID.
//! - `parse` — reading a client message by hand (why not dhcproto's decoder: see there).
//! - `server` — the protocol, pure: a message in, a reply (or nothing) out, counters.
//! - `reply` — what each reply contains, built with dhcproto's v6 types.
//! - `serve` — the socket: binding it to the bridge, the receive/reply loop.

pub mod config;
mod ident;
mod parse;
mod reply;
pub mod serve;
pub mod server;

pub use config::{duid_ll, ConfigError, Dhcp6Config, StaticLease6, DEFAULT_SERVER_MAC, INFINITE};
pub use serve::{bind_socket, serve};
pub use server::{Dhcp6Server, Stats};

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod server_tests;
#[cfg(test)]
mod test_support;
