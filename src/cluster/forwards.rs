//! The cluster's host ports: bound before anything boots (a taken port fails `up` at once),
//! relayed into the cluster once the nodes are ready.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use kvci_net::forward::{self, ForwardError};
use kvci_net::netns::NetNs;
use kvci_net::topology::Topology;
use tokio::sync::watch;

use crate::cluster::layout::ClusterDir;
use crate::ports::{self, FixedPorts, PortBinding, PortPlan, Target};

/// Host listeners, bound, not yet relaying.
pub struct Bound {
    listeners: Vec<(PortPlan, std::net::TcpListener)>,
}

/// Binds every planned port on 127.0.0.1.
pub fn bind(nodes: u32, fixed: &FixedPorts, image_ports: &std::collections::BTreeMap<String, u16>) -> Result<Bound, ForwardError> {
    let mut listeners = Vec::new();
    for p in ports::with_image_ports(ports::plan(nodes, fixed), image_ports) {
        let l = forward::bind_host_port(p.host_port.unwrap_or(0))?;
        listeners.push((p, l));
    }
    Ok(Bound { listeners })
}

impl Bound {
    /// What was bound, for `kvci vm ports`.
    pub fn bindings(&self) -> Vec<PortBinding> {
        self.listeners
            .iter()
            .map(|(p, l)| PortBinding {
                name: p.name.clone(),
                node: p.node.clone(),
                host_port: l.local_addr().map(|a| a.port()).unwrap_or(0),
                guest_port: p.guest_port,
                proto: "tcp".into(),
            })
            .collect()
    }

    /// Starts relaying; every forward ends when `stop` turns true.
    pub fn start(self, ns: &Arc<NetNs>, topo: &Topology, dir: &ClusterDir, stop: &watch::Receiver<bool>) -> std::io::Result<()> {
        for (p, l) in self.listeners {
            let listener = tokio::net::TcpListener::from_std(l)?;
            let stop = stop.clone();
            match p.target {
                Target::Vnc => {
                    let path: PathBuf = dir.node(&p.node).vnc_socket();
                    tokio::spawn(forward::serve_unix(listener, path, stop));
                }
                Target::Node | Target::Bridge => {
                    let ip = if p.target == Target::Bridge {
                        topo.bridge_addr()
                    } else {
                        match topo.nodes.iter().find(|n| n.hostname == p.node) {
                            Some(n) => topo.node_addr(n),
                            None => continue,
                        }
                    };
                    let target = SocketAddr::new(ip, p.guest_port);
                    tokio::spawn(forward::serve(listener, ns.clone(), target, stop));
                }
            }
        }
        Ok(())
    }
}
