//! Host ports of a cluster, named as kubevirtci names them: which guest port each one reaches,
//! and which host port it gets (random by default, fixed with `--ssh-port` and friends).

use serde::{Deserialize, Serialize};

/// Host ports asked for on the command line (`None`: a random free port).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixedPorts {
    /// `ssh` (node01:22).
    pub ssh: Option<u16>,
    /// `k8s` (node01:6443).
    pub k8s: Option<u16>,
    /// `ocp` (node01:8443).
    pub ocp: Option<u16>,
    /// `registry` (bridge:5000).
    pub registry: Option<u16>,
    /// `vnc` (node01's display).
    pub vnc: Option<u16>,
    /// `http` (node01:80).
    pub http: Option<u16>,
    /// `https` (node01:443).
    pub https: Option<u16>,
}

/// What a port reaches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// A TCP port of a node, inside the cluster network.
    Node,
    /// A TCP port on the bridge address (services kvci runs for the cluster, like the registry).
    Bridge,
    /// The node's VNC display (QEMU's own socket on the host).
    Vnc,
}

/// One forwarded port as planned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortPlan {
    /// `ssh`, `ssh-node02`, `k8s`, …
    pub name: String,
    /// The node it reaches (`node01`), or `""` for the bridge.
    pub node: String,
    /// Port inside the cluster.
    pub guest_port: u16,
    /// What it reaches.
    pub target: Target,
    /// Requested host port, if fixed.
    pub host_port: Option<u16>,
}

/// One forwarded port as bound (the JSON of `kvci vm ports`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortBinding {
    /// Port name.
    pub name: String,
    /// Node (empty for the bridge).
    pub node: String,
    /// Port on 127.0.0.1.
    pub host_port: u16,
    /// Port inside the cluster.
    pub guest_port: u16,
    /// Always `tcp` today.
    pub proto: String,
}

/// The ports of a cluster of `nodes` nodes.
pub fn plan(nodes: u32, fixed: &FixedPorts) -> Vec<PortPlan> {
    let node01 = |name: &str, guest_port, host_port| PortPlan {
        name: name.into(),
        node: "node01".into(),
        guest_port,
        target: Target::Node,
        host_port,
    };
    let mut v = vec![node01("ssh", 22, fixed.ssh)];
    for i in 1..=nodes {
        let node = format!("node{i:02}");
        v.push(PortPlan { name: format!("ssh-{node}"), node, guest_port: 22, target: Target::Node, host_port: None });
    }
    v.push(node01("k8s", 6443, fixed.k8s));
    v.push(node01("ocp", 8443, fixed.ocp));
    v.push(PortPlan { name: "registry".into(), node: String::new(), guest_port: 5000, target: Target::Bridge, host_port: fixed.registry });
    v.push(PortPlan { name: "vnc".into(), node: "node01".into(), guest_port: 5900, target: Target::Vnc, host_port: fixed.vnc });
    v.push(node01("http", 80, fixed.http));
    v.push(node01("https", 443, fixed.https));
    v
}

/// Adds an image's own ports (e.g. `etcd` → node01:2379) that kubevirtci's names do not cover.
pub fn with_image_ports(mut plan: Vec<PortPlan>, image_ports: &std::collections::BTreeMap<String, u16>) -> Vec<PortPlan> {
    for (name, &guest_port) in image_ports {
        if !plan.iter().any(|p| &p.name == name) {
            plan.push(PortPlan { name: name.clone(), node: "node01".into(), guest_port, target: Target::Node, host_port: None });
        }
    }
    plan
}

/// Two names asking for the same fixed host port.
pub fn duplicate_fixed(fixed: &FixedPorts) -> Option<u16> {
    let all = [fixed.ssh, fixed.k8s, fixed.ocp, fixed.registry, fixed.vnc, fixed.http, fixed.https];
    let set: Vec<u16> = all.iter().flatten().copied().collect();
    set.iter().enumerate().find(|(i, p)| set[i + 1..].contains(p)).map(|(_, p)| *p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_follow_kubevirtci_names() {
        let p = plan(2, &FixedPorts { ssh: Some(2201), ..Default::default() });
        let names: Vec<&str> = p.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["ssh", "ssh-node01", "ssh-node02", "k8s", "ocp", "registry", "vnc", "http", "https"]);
        assert_eq!(p[0].host_port, Some(2201));
        assert_eq!(p[2].node, "node02");
        assert_eq!(p[3].guest_port, 6443);
        assert_eq!(p[5].target, Target::Bridge);
    }

    #[test]
    fn image_ports_are_added_once() {
        let extra = [("etcd".to_string(), 2379u16), ("k8s".to_string(), 1)].into_iter().collect();
        let p = with_image_ports(plan(1, &FixedPorts::default()), &extra);
        assert_eq!(p.iter().filter(|p| p.name == "k8s").count(), 1);
        assert_eq!(p.last().unwrap().name, "etcd");
        assert_eq!(p.last().unwrap().guest_port, 2379);
    }

    #[test]
    fn the_same_fixed_port_twice_is_found() {
        assert_eq!(duplicate_fixed(&FixedPorts { ssh: Some(5), http: Some(5), ..Default::default() }), Some(5));
        assert_eq!(duplicate_fixed(&FixedPorts { ssh: Some(5), http: Some(6), ..Default::default() }), None);
    }
}
