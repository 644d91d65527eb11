//! kvci's cluster network, kept apart from QEMU: one network namespace per cluster holding a
//! bridge and one tap per node, embedded DHCP, DHCPv6, router advertisement and DNS servers,
//! and the port forwarder that gives the host access. Nothing here knows about QEMU; the
//! supervisor hands taps to it as fds.

mod datagram;
pub mod dhcp;
pub mod dhcp6;
pub mod dns;
pub mod egress;
pub mod forward;
pub mod leases;
pub mod link;
pub mod netns;
pub mod network;
pub mod ra;
mod sys;
pub mod tap;
pub mod topology;
