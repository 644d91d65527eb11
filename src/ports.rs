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
    /// `prometheus` (node01:30007).
    #[serde(default)]
    pub prometheus: Option<u16>,
    /// `grafana` (node01:30008).
    #[serde(default)]
    pub grafana: Option<u16>,
    /// `dns` (node01:31111, UDP).
    #[serde(default)]
    pub dns: Option<u16>,
}

/// The transport of a forwarded port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// Connections.
    #[default]
    Tcp,
    /// Datagrams.
    Udp,
}

impl Proto {
    /// `tcp` or `udp`, as `kvci vm ports` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

impl std::fmt::Display for Proto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a port reaches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// A port of a node, inside the cluster network.
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
    /// TCP or UDP (the same on both sides).
    #[serde(default)]
    pub proto: Proto,
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
    /// `tcp` or `udp` ([`Proto`]).
    pub proto: String,
}

/// The ports of a cluster of `nodes` nodes: kubevirtci's names (gocli `ports`, `vm.sh`), the
/// older ones first and in the same order as before, then the ones added later.
pub fn plan(nodes: u32, fixed: &FixedPorts) -> Vec<PortPlan> {
    let node01 = |name: &str, guest_port, host_port| PortPlan {
        name: name.into(),
        node: "node01".into(),
        guest_port,
        proto: Proto::Tcp,
        target: Target::Node,
        host_port,
    };
    let ssh = |name: String, node: String| PortPlan { name, node, guest_port: 22, proto: Proto::Tcp, target: Target::Node, host_port: None };
    let mut v = vec![node01("ssh", 22, fixed.ssh)];
    for i in 1..=nodes {
        let node = format!("node{i:02}");
        v.push(ssh(format!("ssh-{node}"), node));
    }
    v.push(node01("k8s", 6443, fixed.k8s));
    v.push(node01("ocp", 8443, fixed.ocp));
    v.push(PortPlan {
        name: "registry".into(),
        node: String::new(),
        guest_port: 5000,
        proto: Proto::Tcp,
        target: Target::Bridge,
        host_port: fixed.registry,
    });
    v.push(PortPlan { name: "vnc".into(), node: "node01".into(), guest_port: 5900, proto: Proto::Tcp, target: Target::Vnc, host_port: fixed.vnc });
    v.push(node01("http", 80, fixed.http));
    v.push(node01("https", 443, fixed.https));
    // OpenShift's console: the same guest port as https, a host port of its own.
    v.push(node01("console", 443, None));
    v.push(node01("prometheus", 30007, fixed.prometheus));
    v.push(node01("grafana", 30008, fixed.grafana));
    v.push(node01("uploadproxy", 31001, None));
    v.push(node01("uploadproxy-lowerband", 30085, None));
    v.push(PortPlan { proto: Proto::Udp, ..node01("dns", 31111, fixed.dns) });
    if nodes >= 2 {
        v.push(ssh("ssh-worker".into(), "node02".into()));
    }
    v
}

/// Adds an image's own ports (e.g. `etcd` → node01:2379) that kubevirtci's names do not cover.
pub fn with_image_ports(mut plan: Vec<PortPlan>, image_ports: &std::collections::BTreeMap<String, u16>) -> Vec<PortPlan> {
    for (name, &guest_port) in image_ports {
        if !plan.iter().any(|p| &p.name == name) {
            plan.push(PortPlan {
                name: name.clone(),
                node: "node01".into(),
                guest_port,
                proto: Proto::Tcp,
                target: Target::Node,
                host_port: None,
            });
        }
    }
    plan
}

/// Two names asking for the same fixed host port (of the same protocol: UDP 53 and TCP 53 are
/// two ports).
pub fn duplicate_fixed(fixed: &FixedPorts) -> Option<u16> {
    let tcp = [fixed.ssh, fixed.k8s, fixed.ocp, fixed.registry, fixed.vnc, fixed.http, fixed.https, fixed.prometheus, fixed.grafana];
    let udp = [fixed.dns];
    let set: Vec<(u16, Proto)> = (tcp.iter().flatten().map(|&p| (p, Proto::Tcp))).chain(udp.iter().flatten().map(|&p| (p, Proto::Udp))).collect();
    set.iter().enumerate().find(|(i, p)| set[i + 1..].contains(p)).map(|(_, p)| p.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_follow_kubevirtci_names() {
        let p = plan(2, &FixedPorts { ssh: Some(2201), ..Default::default() });
        let names: Vec<&str> = p.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "ssh",
                "ssh-node01",
                "ssh-node02",
                "k8s",
                "ocp",
                "registry",
                "vnc",
                "http",
                "https",
                "console",
                "prometheus",
                "grafana",
                "uploadproxy",
                "uploadproxy-lowerband",
                "dns",
                "ssh-worker"
            ]
        );
        assert_eq!(p[0].host_port, Some(2201));
        assert_eq!(p[2].node, "node02");
        assert_eq!(p[3].guest_port, 6443);
        assert_eq!(p[5].target, Target::Bridge);
        let get = |name: &str| p.iter().find(|p| p.name == name).unwrap();
        for (name, port) in [("console", 443), ("prometheus", 30007), ("grafana", 30008), ("uploadproxy", 31001), ("uploadproxy-lowerband", 30085)] {
            assert_eq!((get(name).node.as_str(), get(name).guest_port, get(name).proto), ("node01", port, Proto::Tcp), "{name}");
        }
        assert_eq!((get("dns").node.as_str(), get("dns").guest_port, get("dns").proto), ("node01", 31111, Proto::Udp));
        assert_eq!((get("ssh-worker").node.as_str(), get("ssh-worker").guest_port), ("node02", 22));
    }

    #[test]
    fn one_node_has_no_ssh_worker() {
        assert!(!plan(1, &FixedPorts::default()).iter().any(|p| p.name == "ssh-worker"));
    }

    #[test]
    fn gocli_fixed_ports_reach_their_names() {
        let fixed = FixedPorts { prometheus: Some(9090), grafana: Some(3000), dns: Some(5353), ..Default::default() };
        let p = plan(1, &fixed);
        let host = |name: &str| p.iter().find(|p| p.name == name).unwrap().host_port;
        assert_eq!((host("prometheus"), host("grafana"), host("dns")), (Some(9090), Some(3000), Some(5353)));
    }

    #[test]
    fn launch_files_without_the_newer_ports_still_read() {
        let old = r#"{"ssh":2201,"k8s":null,"ocp":null,"registry":null,"vnc":null,"http":null,"https":null}"#;
        let f: FixedPorts = serde_json::from_str(old).unwrap();
        assert_eq!(f, FixedPorts { ssh: Some(2201), ..Default::default() });
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
        assert_eq!(duplicate_fixed(&FixedPorts { grafana: Some(7), https: Some(7), ..Default::default() }), Some(7));
        // UDP 53 and TCP 53 are two different ports.
        assert_eq!(duplicate_fixed(&FixedPorts { dns: Some(53), ssh: Some(53), ..Default::default() }), None);
    }

    #[test]
    fn protocols_serialise_lowercase() {
        assert_eq!(serde_json::to_string(&Proto::Udp).unwrap(), r#""udp""#);
        assert_eq!(Proto::Tcp.to_string(), "tcp");
    }
}
