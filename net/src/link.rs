//! Links inside the cluster's namespace over netlink: loopback up, the bridge with its address,
//! each tap enslaved to it. The order lives in [`build`], written against the [`Netlink`] trait
//! so it is unit-tested with a recording fake, without root.

use std::net::Ipv4Addr;

use futures_util::TryStreamExt;
use rtnetlink::{Handle, LinkBridge, LinkUnspec};

use crate::topology::{Topology, BRIDGE};

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
    /// Adds an IPv4 address to a link.
    async fn add_address(&mut self, link: &str, ip: Ipv4Addr, prefix: u8) -> Result<(), LinkError>;
    /// Makes `link` a port of `master`.
    async fn set_master(&mut self, link: &str, master: &str) -> Result<(), LinkError>;
    /// Sets a link up.
    async fn set_up(&mut self, link: &str) -> Result<(), LinkError>;
}

/// Builds the topology: loopback, bridge and address, taps on the bridge, all up.
pub async fn build(nl: &mut impl Netlink, topo: &Topology) -> Result<(), LinkError> {
    nl.set_up("lo").await?;
    nl.add_bridge(BRIDGE).await?;
    nl.add_address(BRIDGE, topo.bridge_ip, topo.subnet.prefix).await?;
    nl.set_up(BRIDGE).await?;
    for node in &topo.nodes {
        nl.set_master(&node.tap, BRIDGE).await?;
        nl.set_up(&node.tap).await?;
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

    async fn add_address(&mut self, link: &str, ip: Ipv4Addr, prefix: u8) -> Result<(), LinkError> {
        let index = self.index(link).await?;
        self.handle
            .address()
            .add(index, ip.into(), prefix)
            .execute()
            .await
            .map_err(failed(format!("adding {ip}/{prefix} to {link}")))
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
        async fn add_address(&mut self, link: &str, ip: Ipv4Addr, prefix: u8) -> Result<(), LinkError> {
            self.0.push(format!("addr {link} {ip}/{prefix}"));
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
    async fn bridge_comes_before_its_ports() {
        let topo = Topology::new("kvci", Subnet::parse(DEFAULT_SUBNET).unwrap(), 2);
        let mut r = Recorder::default();
        build(&mut r, &topo).await.unwrap();
        assert_eq!(
            r.0,
            [
                "up lo",
                "bridge br0",
                "addr br0 192.168.66.2/24",
                "up br0",
                "master tap01 br0",
                "up tap01",
                "master tap02 br0",
                "up tap02"
            ]
        );
    }
}
