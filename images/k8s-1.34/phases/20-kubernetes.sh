#!/bin/sh
# kubeadm, kubelet and kubectl 1.34 from pkgs.k8s.io, held, with the control-plane images
# pre-pulled so `vm up` needs no downloads.
set -eu
export DEBIAN_FRONTEND=noninteractive
version=v1.34
mkdir -p /etc/apt/keyrings
curl -fsSL "https://pkgs.k8s.io/core:/stable:/$version/deb/Release.key" | gpg --dearmor -o /etc/apt/keyrings/kubernetes.gpg
echo "deb [signed-by=/etc/apt/keyrings/kubernetes.gpg] https://pkgs.k8s.io/core:/stable:/$version/deb/ /" > /etc/apt/sources.list.d/kubernetes.list
apt-get update
apt-get install -y --no-install-recommends kubelet kubeadm kubectl
apt-mark hold kubelet kubeadm kubectl
systemctl enable kubelet
systemctl start containerd
kubeadm config images pull
curl -fsSL -o /etc/kubernetes-flannel.yaml https://github.com/flannel-io/flannel/releases/latest/download/kube-flannel.yml
