#!/bin/sh
# Container runtime and the kernel settings Kubernetes expects.
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends containerd runc ca-certificates curl gpg conntrack socat ebtables ethtool
mkdir -p /etc/containerd
containerd config default | sed 's/SystemdCgroup = false/SystemdCgroup = true/' > /etc/containerd/config.toml
# Nodes pull from the cluster registry by name.
cat >> /etc/containerd/config.toml <<'TOML'
[plugins."io.containerd.grpc.v1.cri".registry.mirrors."registry:5000"]
  endpoint = ["http://registry:5000"]
TOML
systemctl enable containerd
printf 'overlay\nbr_netfilter\n' > /etc/modules-load.d/k8s.conf
printf 'net.bridge.bridge-nf-call-iptables = 1\nnet.ipv4.ip_forward = 1\n' > /etc/sysctl.d/k8s.conf
