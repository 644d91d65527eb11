//! Router advertisements on the cluster bridge, since the kernel sends none unless it forwards:
//! they tell guests that the bridge is their default router, that `fd00::/64` is on-link, and
//! that addresses and other settings come from DHCPv6 ([`crate::dhcp6`]), like kubevirtci's
//! dnsmasq does with `enable-ra` and a static DHCPv6 range.
//!
//! - `message` — the RA built as bytes (pure), and router solicitations read.
//! - `serve` — the raw ICMPv6 socket on the bridge, and when advertisements go out.

mod message;
pub mod serve;

use std::net::Ipv6Addr;

use crate::topology::{Topology, BRIDGE_IP6, PREFIX6};

pub use message::advertisement;
pub use serve::{bind_socket, serve, RaSocket};

/// What the advertisements say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaConfig {
    /// The on-link prefix (`fd00::`), sent with L=1 and A=0: guests route it on the link but
    /// make no SLAAC address, so their one global address is the static one from DHCPv6.
    pub prefix: Ipv6Addr,
    /// Its length (64).
    pub prefix_len: u8,
    /// Guest MTU (MTU option); 0 leaves the option out.
    pub mtu: u16,
    /// Recursive DNS servers (RDNSS option, RFC 8106); empty leaves it out.
    pub dns: Vec<Ipv6Addr>,
    /// Search domain (DNSSL option); empty leaves it out.
    pub domain: String,
    /// How long guests keep the bridge as default router, seconds (0: not a default router).
    pub router_lifetime: u16,
}

/// The default router lifetime: RFC 4861's 3 × MaxRtrAdvInterval (600 s), far beyond the 200 s
/// between steady advertisements, so a guest may miss several and keep its route.
pub const ROUTER_LIFETIME: u16 = 1800;

impl RaConfig {
    /// Advertisements for `topology`'s bridge: `fd00::/64`, `fd00::1` as resolver, the cluster
    /// name as search domain, the guest MTU, the bridge as default router.
    pub fn for_topology(topology: &Topology, mtu: u16) -> RaConfig {
        RaConfig {
            prefix: PREFIX6,
            prefix_len: 64,
            mtu,
            dns: vec![BRIDGE_IP6],
            domain: topology.cluster.clone(),
            router_lifetime: ROUTER_LIFETIME,
        }
    }
}
