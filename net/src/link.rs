//! Links inside the cluster's namespace over netlink: loopback up, the bridge with its addresses,
//! each tap enslaved to it, and the egress link with its addresses and default routes. The
//! order lives in [`build`] and [`egress_link`], written against the [`Netlink`] trait so it is
//! unit-tested with a recording fake, without root.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures_util::TryStreamExt;
use rtnetlink::{Handle, LinkBridge, LinkUnspec, RouteMessageBuilder};

use crate::egress;
use crate::topology::{secondary_bridge, Topology, BRIDGE, BRIDGE_IP6, BRIDGE_MAC, SRIOV_BRIDGE};

/// A netlink request failed.
#[derive(Debug, thiserror::Error)]
#[error("netlink: {what}")]
pub struct LinkError {
    what: String,
    #[source]
    source: Option<rtnetlink::Error>,
}

/// The netlink operations kvci needs.
#[allow(async_fn_in_trait)]
pub trait Netlink {
    /// Creates a bridge.
    async fn add_bridge(&mut self, name: &str) -> Result<(), LinkError>;
    /// Adds an address to a link.
    async fn add_address(&mut self, link: &str, ip: IpAddr, prefix: u8) -> Result<(), LinkError>;
    /// Adds a route to `dest/prefix` out of `link`, through `via` when given.
    async fn add_route(&mut self, dest: IpAddr, prefix: u8, via: Option<IpAddr>, link: &str) -> Result<(), LinkError>;
    /// Sets a link's MTU.
    async fn set_mtu(&mut self, link: &str, mtu: u32) -> Result<(), LinkError>;
    /// Sets a link's MAC address.
    async fn set_mac(&mut self, link: &str, mac: [u8; 6]) -> Result<(), LinkError>;
    /// Makes `link` a port of `master`.
    async fn set_master(&mut self, link: &str, master: &str) -> Result<(), LinkError>;
    /// Sets a link up.
    async fn set_up(&mut self, link: &str) -> Result<(), LinkError>;
}

/// Builds the topology: loopback, bridge and its addresses (IPv6 `fd00::1/64` unless the
/// cluster is IPv4 only), taps on the bridge, all up.
pub async fn build(nl: &mut impl Netlink, topo: &Topology) -> Result<(), LinkError> {
    nl.set_up("lo").await?;
    nl.add_bridge(BRIDGE).await?;
    // A fixed MAC (a bridge otherwise takes its lowest port's, random per tap): a cluster
    // resumed from frozen RAM finds its router at the same MAC and IPv6 link-local address,
    // so the guests' neighbour caches and IPv6 default route stay right.
    nl.set_mac(BRIDGE, BRIDGE_MAC).await?;
    nl.add_address(BRIDGE, topo.bridge_ip.into(), topo.subnet.prefix).await?;
    if topo.stack.v6() {
        nl.add_address(BRIDGE, BRIDGE_IP6.into(), 64).await?;
    }
    nl.set_up(BRIDGE).await?;
    for node in &topo.nodes {
        nl.set_master(&node.tap, BRIDGE).await?;
        nl.set_up(&node.tap).await?;
    }
    if topo.nodes.iter().any(|n| n.sriov.is_some()) {
        nl.add_bridge(SRIOV_BRIDGE).await?;
        nl.set_up(SRIOV_BRIDGE).await?;
        for (tap, _) in topo.nodes.iter().filter_map(|n| n.sriov.as_ref()) {
            nl.set_master(tap, SRIOV_BRIDGE).await?;
            nl.set_up(tap).await?;
        }
    }
    // Secondary NICs: one bare bridge per NIC number (no address, so nothing served on it).
    for i in 0..topo.secondary_nics {
        let bridge = secondary_bridge(i);
        nl.add_bridge(&bridge).await?;
        nl.set_up(&bridge).await?;
        for (tap, _) in topo.nodes.iter().filter_map(|n| n.secondary.get(i as usize)) {
            nl.set_master(tap, &bridge).await?;
            nl.set_up(tap).await?;
        }
    }
    Ok(())
}

/// The egress link slirp4netns made: up, its addresses, and the default routes through slirp's
/// router (IPv6 through a host route, since slirp's router lies inside the bridge's /64).
pub async fn egress_link(nl: &mut impl Netlink, ipv6: bool) -> Result<(), LinkError> {
    nl.set_mtu(egress::TAP, egress::TAP_MTU).await?;
    nl.set_up(egress::TAP).await?;
    nl.add_address(egress::TAP, egress::TAP_IP.into(), 24).await?;
    nl.add_route(Ipv4Addr::UNSPECIFIED.into(), 0, Some(egress::GATEWAY.into()), egress::TAP).await?;
    if ipv6 {
        nl.add_address(egress::TAP, egress::TAP_IP6.into(), 128).await?;
        nl.add_route(egress::GATEWAY6.into(), 128, None, egress::TAP).await?;
        nl.add_route(Ipv6Addr::UNSPECIFIED.into(), 0, Some(egress::GATEWAY6.into()), egress::TAP).await?;
    }
    Ok(())
}

/// The real thing: rtnetlink on a connection opened inside the namespace.
pub struct RtNetlink {
    handle: Handle,
}

impl RtNetlink {
    /// Wraps a handle whose connection socket was created in the target namespace.
    pub fn new(handle: Handle) -> RtNetlink {
        RtNetlink { handle }
    }

    async fn index(&self, name: &str) -> Result<u32, LinkError> {
        let err = |source| LinkError { what: format!("looking up {name}"), source };
        let mut links = self.handle.link().get().match_name(name.to_string()).execute();
        match links.try_next().await {
            Ok(Some(msg)) => Ok(msg.header.index),
            Ok(None) => Err(err(None)),
            Err(e) => Err(err(Some(e))),
        }
    }
}

fn failed(what: String) -> impl FnOnce(rtnetlink::Error) -> LinkError {
    move |e| LinkError { what, source: Some(e) }
}

impl Netlink for RtNetlink {
    async fn add_bridge(&mut self, name: &str) -> Result<(), LinkError> {
        self.handle.link().add(LinkBridge::new(name).build()).execute().await.map_err(failed(format!("adding bridge {name}")))
    }

    async fn add_address(&mut self, link: &str, ip: IpAddr, prefix: u8) -> Result<(), LinkError> {
        let index = self.index(link).await?;
        self.handle.address().add(index, ip, prefix).execute().await.map_err(failed(format!("adding {ip}/{prefix} to {link}")))
    }

    async fn add_route(&mut self, dest: IpAddr, prefix: u8, via: Option<IpAddr>, link: &str) -> Result<(), LinkError> {
        let index = self.index(link).await?;
        let what = format!("adding a route to {dest}/{prefix} via {via:?} on {link}");
        let message = match (dest, via) {
            (IpAddr::V4(d), via) => {
                let mut b = RouteMessageBuilder::<Ipv4Addr>::new().destination_prefix(d, prefix).output_interface(index);
                if let Some(IpAddr::V4(g)) = via {
                    b = b.gateway(g);
                }
                b.build()
            }
            (IpAddr::V6(d), via) => {
                let mut b = RouteMessageBuilder::<Ipv6Addr>::new().destination_prefix(d, prefix).output_interface(index);
                if let Some(IpAddr::V6(g)) = via {
                    b = b.gateway(g);
                }
                b.build()
            }
        };
        self.handle.route().add(message).execute().await.map_err(failed(what))
    }

    async fn set_mac(&mut self, link: &str, mac: [u8; 6]) -> Result<(), LinkError> {
        let index = self.index(link).await?;
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).address(mac.to_vec()).build())
            .execute()
            .await
            .map_err(failed(format!("setting {link}'s MAC")))
    }

    async fn set_mtu(&mut self, link: &str, mtu: u32) -> Result<(), LinkError> {
        let index = self.index(link).await?;
        self.handle.link().set(LinkUnspec::new_with_index(index).mtu(mtu).build()).execute().await.map_err(failed(format!("setting {link}'s MTU")))
    }

    async fn set_master(&mut self, link: &str, master: &str) -> Result<(), LinkError> {
        let (index, master_index) = (self.index(link).await?, self.index(master).await?);
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).controller(master_index).build())
            .execute()
            .await
            .map_err(failed(format!("attaching {link} to {master}")))
    }

    async fn set_up(&mut self, link: &str) -> Result<(), LinkError> {
        let index = self.index(link).await?;
        self.handle.link().set(LinkUnspec::new_with_index(index).up().build()).execute().await.map_err(failed(format!("setting {link} up")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::{Subnet, DEFAULT_SUBNET};

    #[derive(Default)]
    struct Recorder(Vec<String>);

    impl Netlink for Recorder {
        async fn add_bridge(&mut self, name: &str) -> Result<(), LinkError> {
            self.0.push(format!("bridge {name}"));
            Ok(())
        }
        async fn add_address(&mut self, link: &str, ip: IpAddr, prefix: u8) -> Result<(), LinkError> {
            self.0.push(format!("addr {link} {ip}/{prefix}"));
            Ok(())
        }
        async fn add_route(&mut self, dest: IpAddr, prefix: u8, via: Option<IpAddr>, link: &str) -> Result<(), LinkError> {
            self.0.push(format!("route {dest}/{prefix} via {} dev {link}", via.map(|v| v.to_string()).unwrap_or("-".into())));
            Ok(())
        }
        async fn set_mtu(&mut self, link: &str, mtu: u32) -> Result<(), LinkError> {
            self.0.push(format!("mtu {link} {mtu}"));
            Ok(())
        }
        async fn set_mac(&mut self, link: &str, mac: [u8; 6]) -> Result<(), LinkError> {
            self.0.push(format!("mac {link} {}", crate::topology::mac_string(&mac)));
            Ok(())
        }
        async fn set_master(&mut self, link: &str, master: &str) -> Result<(), LinkError> {
            self.0.push(format!("master {link} {master}"));
            Ok(())
        }
        async fn set_up(&mut self, link: &str) -> Result<(), LinkError> {
            self.0.push(format!("up {link}"));
            Ok(())
        }
    }

    #[tokio::test]
    async fn secondary_bridges_get_their_taps_and_no_address() {
        let topo = Topology::new("kvci", Subnet::parse(DEFAULT_SUBNET).unwrap(), 2).with_secondary_nics(2);
        let mut r = Recorder::default();
        build(&mut r, &topo).await.unwrap();
        let tail = r.0.iter().skip_while(|l| *l != "bridge br1").cloned().collect::<Vec<_>>();
        assert_eq!(
            tail,
            [
                "bridge br1", "up br1", "master stap0-0 br1", "up stap0-0", "master stap1-0 br1", "up stap1-0",
                "bridge br2", "up br2", "master stap0-1 br2", "up stap0-1", "master stap1-1 br2", "up stap1-1",
            ]
        );
        assert!(!r.0.iter().any(|l| l.starts_with("addr br1") || l.starts_with("addr br2")));
    }

    #[tokio::test]
    async fn bridge_comes_before_its_ports() {
        let topo = Topology::new("kvci", Subnet::parse(DEFAULT_SUBNET).unwrap(), 2);
        let mut r = Recorder::default();
        build(&mut r, &topo).await.unwrap();
        assert_eq!(
            r.0,
            [
                "up lo",
                "bridge br0",
                "mac br0 52:55:00:d1:55:00",
                "addr br0 192.168.66.2/24",
                "addr br0 fd00::1/64",
                "up br0",
                "master tap01 br0",
                "up tap01",
                "master tap02 br0",
                "up tap02"
            ]
        );
    }

    #[tokio::test]
    async fn egress_link_routes_the_default_through_slirp() {
        let mut r = Recorder::default();
        egress_link(&mut r, true).await.unwrap();
        assert_eq!(
            r.0,
            [
                "mtu egress0 65520",
                "up egress0",
                "addr egress0 10.0.2.100/24",
                "route 0.0.0.0/0 via 10.0.2.2 dev egress0",
                "addr egress0 fd00::100/128",
                "route fd00::2/128 via - dev egress0",
                "route ::/0 via fd00::2 dev egress0",
            ]
        );
    }
}
