//! The cluster's host ports: bound before anything boots (a taken port fails `up` at once),
//! relayed into the cluster once the nodes are ready.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use kvci_net::forward::{self, udp, ForwardError};
use kvci_net::netns::NetNs;
use kvci_net::topology::Topology;
use tokio::sync::watch;

use crate::cluster::layout::ClusterDir;
use crate::ports::{self, FixedPorts, PortBinding, PortPlan, Proto, Target};

/// A planned port could not be bound on the host.
#[derive(Debug, thiserror::Error)]
#[error("cannot forward {name}")]
pub struct BindError {
    /// The port's name (`ssh`, `dns`, …).
    pub name: String,
    /// Why.
    #[source]
    pub source: ForwardError,
}

/// A host socket, bound, not yet relaying.
enum HostSocket {
    Tcp(std::net::TcpListener),
    Udp(std::net::UdpSocket),
}

impl HostSocket {
    fn port(&self) -> u16 {
        match self {
            HostSocket::Tcp(l) => l.local_addr(),
            HostSocket::Udp(s) => s.local_addr(),
        }
        .map(|a| a.port())
        .unwrap_or(0)
    }
}

/// Host sockets, bound, not yet relaying.
pub struct Bound {
    sockets: Vec<(PortPlan, HostSocket)>,
}

/// Binds every planned port on 127.0.0.1.
pub fn bind(nodes: u32, fixed: &FixedPorts, image_ports: &std::collections::BTreeMap<String, u16>) -> Result<Bound, BindError> {
    let mut sockets = Vec::new();
    for p in ports::with_image_ports(ports::plan(nodes, fixed), image_ports) {
        let port = p.host_port.unwrap_or(0);
        let socket = match p.proto {
            Proto::Tcp => forward::bind_host_port(port).map(HostSocket::Tcp),
            Proto::Udp => forward::bind_host_udp_port(port).map(HostSocket::Udp),
        }
        .map_err(|source| BindError { name: p.name.clone(), source })?;
        sockets.push((p, socket));
    }
    Ok(Bound { sockets })
}

impl Bound {
    /// What was bound, for `kvci vm ports`.
    pub fn bindings(&self) -> Vec<PortBinding> {
        self.sockets
            .iter()
            .map(|(p, s)| PortBinding {
                name: p.name.clone(),
                node: p.node.clone(),
                host_port: s.port(),
                guest_port: p.guest_port,
                proto: p.proto.to_string(),
            })
            .collect()
    }

    /// Starts relaying; every forward ends when `stop` turns true.
    pub fn start(self, ns: &Arc<NetNs>, topo: &Topology, dir: &ClusterDir, stop: &watch::Receiver<bool>) -> std::io::Result<()> {
        for (p, socket) in self.sockets {
            let stop = stop.clone();
            let ip = match p.target {
                Target::Vnc => None,
                Target::Bridge => Some(topo.bridge_addr()),
                Target::Node => match topo.nodes.iter().find(|n| n.hostname == p.node) {
                    Some(n) => Some(topo.node_addr(n)),
                    None => continue,
                },
            };
            match (socket, ip) {
                (HostSocket::Tcp(l), None) => {
                    let listener = tokio::net::TcpListener::from_std(l)?;
                    let path: PathBuf = dir.node(&p.node).vnc_socket();
                    tokio::spawn(forward::serve_unix(listener, path, stop));
                }
                (HostSocket::Tcp(l), Some(ip)) => {
                    let listener = tokio::net::TcpListener::from_std(l)?;
                    tokio::spawn(forward::serve(listener, ns.clone(), SocketAddr::new(ip, p.guest_port), stop));
                }
                (HostSocket::Udp(s), Some(ip)) => {
                    let socket = tokio::net::UdpSocket::from_std(s)?;
                    let target = SocketAddr::new(ip, p.guest_port);
                    tokio::spawn(udp::serve(socket, ns.clone(), target, udp::UdpLimits::default(), stop));
                }
                (HostSocket::Udp(_), None) => tracing::warn!(port = %p.name, "no UDP forward to a VNC display"),
            }
        }
        Ok(())
    }
}
