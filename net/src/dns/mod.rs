//! The cluster's embedded DNS server, kvci's replacement for kubevirtci's dnsmasq container:
//! it answers authoritatively for the cluster's own names (`node01`, `node01.<cluster>`,
//! `registry`, …, and their PTR records) and forwards every other name to the host's resolvers.
//!
//! [`records`] turns a [`ClusterZone`] into hickory zones; [`server`] runs them next to a
//! forwarder on sockets the caller bound inside the cluster's namespace; [`fast`] answers the
//! cluster's own names over UDP before hickory (the loop in `udp`).

mod error;
pub mod fast;
pub mod records;
pub mod server;
mod udp;

pub use error::DnsError;
pub use records::ClusterZone;
pub use server::{serve, upstreams_from_resolv_conf, DnsConfig};
